//! Statistics and spectra: calibration windows through the model (covariances accumulated on
//! the device), then the eigendecompositions and SVDs through the executor, assembled into the
//! spectra report.

use super::jobs::{EighCache, Executor, InFlight, wrong_kind};
use super::{EngineError, LoadedModel};
use crate::calib::report::{LayerSpectra, SCHEMA, module_spectrum, site_spectrum};
use crate::calib::windows::Windows;
use crate::calib::{CalibError, CovarianceAccumulator, Covariances, Normalization, SpectraReport, draw_windows};
use crate::io::dataset::Record;
use crate::linalg::jobs::{Job, JobOutput};
use crate::model::arch::sites_of;
use crate::model::weights::read_matrix;
use crate::model::{Projection, Site, Target};

/// Calibration settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalibOptions {
    /// Windows to draw (default 128).
    pub samples: usize,
    /// Tokens per window (default 512).
    pub seq_len: usize,
    /// Sampler seed (default 233, as the reference).
    pub seed: u64,
    /// Per-window normalisation (default signed-max, as the reference).
    pub normalization: Normalization,
    /// Modules whose inputs to collect (default all seven).
    pub targets: Vec<Target>,
}

impl Default for CalibOptions {
    fn default() -> Self {
        Self {
            samples: 128,
            seq_len: 512,
            seed: 233,
            normalization: Normalization::SignedMax,
            targets: Target::DEFAULT.to_vec(),
        }
    }
}

/// The result of a calibration run.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Covariances per (layer, site).
    pub covariances: Covariances,
    /// Set when the corpus was shorter than asked.
    pub note: Option<String>,
    /// Tokens in the corpus.
    pub corpus_tokens: usize,
}

impl LoadedModel {
    /// Runs calibration windows through the model and accumulates the covariances of the
    /// inputs of `opts.targets`. `progress(done, total)` after each window.
    pub async fn calibrate(
        &self,
        records: &[Record],
        opts: &CalibOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Calibration, EngineError> {
        self.calibrate_until(records, opts, progress, &|| false).await
    }

    /// [`Self::calibrate`], stopping with [`CalibError::Cancelled`] between windows once
    /// `cancelled()` says so. In the browser each window ends with a turn of the event loop, so a
    /// cancel message can arrive.
    pub async fn calibrate_until(
        &self,
        records: &[Record],
        opts: &CalibOptions,
        progress: &mut dyn FnMut(usize, usize),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Calibration, EngineError> {
        let windows = self.calibration_windows(records, opts)?;
        let mut acc = CovarianceAccumulator::new(sites_of(&opts.targets), opts.normalization);
        let total = windows.windows.len();
        for (i, w) in windows.windows.iter().enumerate() {
            acc.run_window(&self.model, w);
            progress(i + 1, total);
            crate::device::yield_now().await;
            if cancelled() {
                return Err(CalibError::Cancelled.into());
            }
        }
        let covariances = acc.finish().await.map_err(CalibError::Device)?;
        Ok(Calibration {
            covariances,
            note: windows.note,
            corpus_tokens: windows.corpus_tokens,
        })
    }

    /// The calibration windows of `opts` drawn from `records`; an error when there are none.
    pub(super) fn calibration_windows(&self, records: &[Record], opts: &CalibOptions) -> Result<Windows, EngineError> {
        let windows = draw_windows(records, &self.tokenizer, opts.samples, opts.seq_len, opts.seed)?;
        if windows.windows.is_empty() {
            return Err(CalibError::Data(format!(
                "the calibration text has {} tokens; give at least a few sentences",
                windows.corpus_tokens
            ))
            .into());
        }
        Ok(windows)
    }

    /// Spectra of every layer (`spectra.json`). The decompositions go through `exec` several at
    /// a time ([`InFlight`]): first every site's eigendecomposition, then every weight's singular
    /// values, each weight read from the model just before its job is sent. `progress(done,
    /// total)` after each decomposition.
    pub async fn analyze(
        &self,
        calib: &Calibration,
        eighs: &mut EighCache,
        targets: &[Target],
        rank: usize,
        exec: &dyn Executor,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<SpectraReport, EngineError> {
        let targets = &self.resolve_targets(targets)?;
        let n = self.model.num_layers();
        let covs = &calib.covariances;
        let sites = sites_of(targets);
        let keys: Vec<(usize, Site)> = (0..n).flat_map(|l| sites.iter().map(move |&s| (l, s))).collect();
        for &(layer, site) in &keys {
            if !covs.sites.contains_key(&(layer, site)) {
                return Err(CalibError::MissingStats(layer, site).into());
            }
        }
        let total = keys.len() + n * targets.len();
        eighs.fill(covs, &keys, exec, &mut |d, _| progress(d, total)).await?;
        let mut layers: Vec<LayerSpectra> = (0..n)
            .map(|layer| LayerSpectra {
                layer,
                sites: Default::default(),
                modules: Default::default(),
            })
            .collect();
        for &(layer, site) in &keys {
            let (stats, e) = eighs.site(covs, layer, site, exec).await?;
            layers[layer].sites.insert(site, site_spectrum(e, stats.trace, rank));
        }
        let mut done = keys.len();
        let mut jobs = InFlight::new(exec);
        let modules: Vec<(usize, Target)> = (0..n).flat_map(|l| targets.iter().map(move |&t| (l, t))).collect();
        for (i, &(layer, target)) in modules.iter().enumerate() {
            let w = read_matrix(self.linear(layer, target)?.base().weight_out_in())
                .await
                .map_err(CalibError::Device)?;
            jobs.send(exec, (layer, target, w.clone()), Job::SingularValues(w));
            while let Some(((layer, target, w), job)) = jobs.due(i + 1 == modules.len()) {
                let context = || format!("layer {layer} {}", target.module_name());
                let sv = match job.await.map_err(EngineError::job(context()))? {
                    JobOutput::Values(v) => v,
                    _ => return Err(EngineError::job(context())(wrong_kind())),
                };
                let site = target.site();
                let (stats, e) = eighs.site(covs, layer, site, exec).await?;
                layers[layer]
                    .modules
                    .insert(target, module_spectrum(site, &w, sv, &stats.covariance, e, rank));
                done += 1;
                progress(done, total);
            }
        }
        Ok(SpectraReport {
            schema: SCHEMA,
            rank,
            normalization: covs.normalization,
            windows: covs.windows,
            tokens: covs.tokens,
            targets: targets.to_vec(),
            layers,
        })
    }
}
