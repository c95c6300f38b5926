//! What the page and the engine worker say to each other.
//!
//! The engine (model, statistics, training) runs in a dedicated worker so that no GPU kernel
//! compilation, upload or readback ever blocks the page. The page sends [`Command`]s and draws the
//! [`Event`]s the worker sends back. A message is a JS array `[json, payload]`: the JSON is the
//! enum, the payload carries what should not go through JSON (the user's `File`s, download
//! bytes, transferred without a copy).

use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;

use crate::calib::SpectraReport;
use crate::eval::probe::ProbeScore;
use crate::lora::InitMethod;
use crate::model::ModelSummary;
use crate::model::Target;
use crate::train::StepMetrics;

/// Training options from the form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Initialisation.
    pub method: InitMethod,
    /// Rank.
    pub rank: usize,
    /// Learning rate.
    pub lr: f64,
    /// Optimiser steps.
    pub steps: usize,
    /// Batch size.
    pub batch: usize,
    /// Truncation length.
    pub max_len: usize,
    /// Adapted modules.
    pub targets: Vec<Target>,
    /// Block by block (`Some(true)`), the whole graph (`Some(false)`), or the default (block
    /// by block exactly when the base is packed).
    #[serde(default)]
    pub blockwise: Option<bool>,
}

/// Calibration options from the form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrateOptions {
    /// Rank r: the size of the null space shaded in the spectra.
    pub rank: usize,
    /// Calibration windows.
    pub samples: usize,
    /// Tokens per window.
    pub seq_len: usize,
    /// Modules whose statistics are collected.
    pub targets: Vec<Target>,
}

/// Page → engine. Every command except [`Command::Pause`] and [`Command::Cancel`] is a task: the
/// worker answers it with exactly one [`Event::Done`] carrying the same id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Start WebGPU (or the CPU backend when `cpu`).
    InitDevice {
        /// Use burn's CPU backend instead of WebGPU.
        cpu: bool,
    },
    /// Load a model from the `File`s in the payload.
    LoadModel,
    /// Read datasets from the `File`s in the payload (`calib`: the calibration slot).
    SetDataset {
        /// Calibration text rather than fine-tuning data.
        calib: bool,
    },
    /// The one-button default: SmolLM2 and the sample data from assets/.
    LoadDefault,
    /// Collect statistics and the spectra.
    Calibrate(CalibrateOptions),
    /// Generate from a prompt into the "before" or "after" box.
    Generate {
        /// The prompt.
        prompt: String,
        /// Which box.
        after: bool,
    },
    /// Initialise and train.
    Train(TrainOptions),
    /// Pause or resume training between steps.
    Pause(bool),
    /// Stop the running task at its next checkpoint (training: between steps; calibration:
    /// between windows), keeping what is done.
    Cancel,
    /// Download the PEFT adapter (and the merged model when `merged`, llama.cpp's adapter GGUF
    /// when `gguf`).
    Export {
        /// Also the merged model.
        merged: bool,
        /// Also the adapter as llama.cpp's LoRA GGUF (llama.cpp, Ollama, LM Studio).
        #[serde(default)]
        gguf: bool,
        /// Also the model merged into one GGUF at this precision (`f16`, `q8_0`, `q4_k_m`); the
        /// base must have come from a GGUF.
        #[serde(default)]
        gguf_merged: Option<String>,
    },
    /// The forgetting check on the first `questions` probe items.
    Forgetting {
        /// Into the "after" slot.
        after: bool,
        /// Questions to ask.
        questions: usize,
    },
}

/// Engine → page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Event {
    /// One line: what the engine is doing or did last.
    Status(String),
    /// Progress of the running task: label and fraction, or none.
    Progress(Option<(String, f64)>),
    /// The device in use.
    Device {
        /// Backend and adapter.
        description: String,
        /// Adapter limits, when a GPU.
        limits: Option<String>,
    },
    /// The loaded model.
    Summary(ModelSummary),
    /// A dataset was read.
    DataInfo {
        /// Calibration slot.
        calib: bool,
        /// File name and record count.
        info: String,
    },
    /// Spectra of the last calibration (none: cleared by a new model).
    Spectra(Option<Box<SpectraReport>>),
    /// A training run starts: clear the loss curve.
    TrainStarted,
    /// One optimiser step.
    Step(StepMetrics),
    /// Generated text so far.
    Generated {
        /// Which box.
        after: bool,
        /// The text.
        text: String,
    },
    /// Forgetting check result: probe score and prose perplexity.
    Probe {
        /// Which slot.
        after: bool,
        /// Probe score.
        score: ProbeScore,
        /// Prose perplexity.
        perplexity: f64,
    },
    /// Offer the payload (a `Uint8Array`) as a download.
    Download(String),
    /// Files the last export offered.
    Exported(Vec<String>),
    /// A task ended: `error` says why it failed.
    Done {
        /// The command's id.
        id: u32,
        /// The failure, shown in the page.
        error: Option<String>,
    },
}

/// Encodes `(id, message)` with an optional payload as `[id, json, payload]`.
pub fn encode<T: Serialize>(id: u32, msg: &T, payload: &JsValue) -> Result<JsValue, String> {
    let json = serde_json::to_string(msg).map_err(|e| format!("cannot encode a message: {e}"))?;
    Ok(js_sys::Array::of3(&id.into(), &json.into(), payload).into())
}

/// Decodes `[id, json, payload]`.
pub fn decode<T: for<'de> Deserialize<'de>>(data: &JsValue) -> Result<(u32, T, JsValue), String> {
    let msg = js_sys::Array::from(data);
    let id = msg.get(0).as_f64().ok_or("a message without an id")? as u32;
    let json = msg.get(1).as_string().ok_or("a message without a body")?;
    let body = serde_json::from_str(&json).map_err(|e| format!("malformed message: {e}"))?;
    Ok((id, body, msg.get(2)))
}
