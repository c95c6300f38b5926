//! The page's reactive state: plain data in signals (Copy, so closures can capture it).

use leptos::prelude::*;

use crate::calib::SpectraReport;
use crate::eval::probe::ProbeScore;
use crate::model::ModelSummary;
use crate::train::StepMetrics;

/// Every signal the views read and the flows write.
#[derive(Clone, Copy)]
pub struct Ui {
    /// One line: what the page is doing or did last.
    pub status: RwSignal<String>,
    /// The current error, shown in the page.
    pub error: RwSignal<Option<String>>,
    /// A task is running (buttons disabled).
    pub busy: RwSignal<bool>,
    /// Progress of the running task: label and fraction.
    pub progress: RwSignal<Option<(String, f64)>>,
    /// Device description.
    pub gpu: RwSignal<Option<String>>,
    /// Adapter limits.
    pub gpu_limits: RwSignal<Option<String>>,
    /// Loaded model.
    pub summary: RwSignal<Option<ModelSummary>>,
    /// Fine-tuning dataset.
    pub data_info: RwSignal<Option<String>>,
    /// Calibration text.
    pub calib_info: RwSignal<Option<String>>,
    /// Spectra of the last calibration.
    pub spectra: RwSignal<Option<SpectraReport>>,
    /// (step, loss).
    pub losses: RwSignal<Vec<(usize, f64)>>,
    /// Last step's metrics.
    pub metrics: RwSignal<Option<StepMetrics>>,
    /// Training paused.
    pub paused: RwSignal<bool>,
    /// Text generated before training.
    pub before: RwSignal<String>,
    /// Text generated after training.
    pub after: RwSignal<String>,
    /// Probe score and prose perplexity before training.
    pub probe_before: RwSignal<Option<(ProbeScore, f64)>>,
    /// The same after training.
    pub probe_after: RwSignal<Option<(ProbeScore, f64)>>,
    /// Files downloaded by the last export.
    pub exported: RwSignal<Vec<String>>,
}

impl Ui {
    /// Fresh state.
    pub fn new() -> Self {
        Self {
            status: RwSignal::new("start the GPU, then load a model".into()),
            error: RwSignal::new(None),
            busy: RwSignal::new(false),
            progress: RwSignal::new(None),
            gpu: RwSignal::new(None),
            gpu_limits: RwSignal::new(None),
            summary: RwSignal::new(None),
            data_info: RwSignal::new(None),
            calib_info: RwSignal::new(None),
            spectra: RwSignal::new(None),
            losses: RwSignal::new(Vec::new()),
            metrics: RwSignal::new(None),
            paused: RwSignal::new(false),
            before: RwSignal::new(String::new()),
            after: RwSignal::new(String::new()),
            probe_before: RwSignal::new(None),
            probe_after: RwSignal::new(None),
            exported: RwSignal::new(Vec::new()),
        }
    }
}

impl Default for Ui {
    fn default() -> Self {
        Self::new()
    }
}
