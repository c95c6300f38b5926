//! The adaptation half of the facade: calibration statistics, spectra, adapter initialisation,
//! attaching PEFT adapters, and the export files.

use std::collections::BTreeMap;

use super::{EngineError, LoadedModel};
use crate::calib::{CovarianceAccumulator, Covariances, EighCache, Normalization, SpectraReport, draw_windows};
use crate::io::dataset::Record;
use crate::io::peft::{PeftAdapter, read_adapter, write_adapter};
use crate::io::safetensors::{SaveDtype, to_safetensors_bytes};
use crate::linalg::jobs::Executor;
use crate::lora::export::{attach_adapter, init_adapter, model_tensors, peft_adapter};
use crate::lora::{InitRecord, LoraConfig, initialize};
use crate::model::{Site, Target};

/// Calibration settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalibOptions {
    /// Windows to draw.
    pub samples: usize,
    /// Tokens per window.
    pub seq_len: usize,
    /// Sampler seed (the reference uses 233).
    pub seed: u64,
    /// Per-window normalisation.
    pub normalization: Normalization,
    /// Modules whose inputs to collect.
    pub targets: Vec<Target>,
}

impl Default for CalibOptions {
    fn default() -> Self {
        Self {
            samples: 128,
            seq_len: 512,
            seed: 233,
            normalization: Normalization::SignedMax,
            targets: Target::ALL.to_vec(),
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

/// Adapters attached by initialisation, with what the export conversion needs.
#[derive(Debug, Clone)]
pub struct AdapterState {
    /// Method, rank, alpha, targets.
    pub config: LoraConfig,
    /// The initial factors, f32.
    pub init: InitRecord,
}

/// Named files to write (the CLI writes them atomically; the app offers them as downloads).
pub type ExportFiles = Vec<(String, Vec<u8>)>;

fn sites_of(targets: &[Target]) -> Vec<Site> {
    let mut sites: Vec<Site> = targets.iter().map(|t| t.site()).collect();
    sites.sort();
    sites.dedup();
    sites
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

    /// [`Self::calibrate`], stopping with [`CalibError::Cancelled`](crate::calib::CalibError)
    /// between windows once `cancelled()` says so. In the browser each window ends with a turn
    /// of the event loop, so a cancel message can arrive.
    pub async fn calibrate_until(
        &self,
        records: &[Record],
        opts: &CalibOptions,
        progress: &mut dyn FnMut(usize, usize),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Calibration, EngineError> {
        let windows = draw_windows(records, &self.tokenizer, opts.samples, opts.seq_len, opts.seed)?;
        if windows.windows.is_empty() {
            return Err(crate::calib::CalibError::Data(format!(
                "the calibration text has {} tokens; give at least a few sentences",
                windows.corpus_tokens
            ))
            .into());
        }
        let mut acc = CovarianceAccumulator::new(sites_of(&opts.targets), opts.normalization);
        let total = windows.windows.len();
        for (i, w) in windows.windows.iter().enumerate() {
            acc.run_window(&self.model, w);
            progress(i + 1, total);
            crate::device::yield_now().await;
            if cancelled() {
                return Err(crate::calib::CalibError::Cancelled.into());
            }
        }
        let covariances = acc.finish().await.map_err(crate::calib::CalibError::Device)?;
        Ok(Calibration {
            covariances,
            note: windows.note,
            corpus_tokens: windows.corpus_tokens,
        })
    }

    /// Spectra of every layer (`spectra.json`); `progress(done, total)` after each layer.
    pub async fn analyze(
        &self,
        calib: &Calibration,
        eighs: &mut EighCache,
        targets: &[Target],
        rank: usize,
        exec: &dyn Executor,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<SpectraReport, EngineError> {
        Ok(crate::calib::analyze(&self.model, &calib.covariances, eighs, targets, rank, exec, progress).await?)
    }

    /// Initialises adapters on the model (changing its base weights for the methods that do).
    pub async fn init_adapters(
        &mut self,
        config: LoraConfig,
        calib: Option<&Calibration>,
        eighs: &mut EighCache,
        exec: &dyn Executor,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<&AdapterState, EngineError> {
        if self.adapter.is_some() {
            return Err(crate::lora::InitError::Calib(crate::calib::CalibError::Data(
                "the model already has adapters; reload the base model to initialise again".into(),
            ))
            .into());
        }
        let init = initialize(
            &mut self.model,
            &config,
            calib.map(|c| &c.covariances),
            eighs,
            exec,
            progress,
        )
        .await?;
        Ok(self.adapter.insert(AdapterState { config, init }))
    }

    /// Attaches a PEFT adapter directory's files (ours or anyone's) to the base model.
    pub fn attach_peft(&mut self, config_json: &[u8], weights: &[u8]) -> Result<PeftAdapter, EngineError> {
        let adapter = read_adapter(config_json, weights)?;
        let device = self.model.device();
        attach_adapter(&mut self.model, &adapter, &device)?;
        Ok(adapter)
    }

    /// The PEFT adapter files for the ORIGINAL base model, and whether the rank was doubled.
    pub async fn export_peft(&self, base_name: &str, dtype: SaveDtype) -> Result<(ExportFiles, bool), EngineError> {
        let state = self.adapter_state()?;
        let (adapter, doubled) = peft_adapter(&self.model, &state.config, &state.init, base_name).await?;
        Ok((write_adapter(&adapter, dtype)?, doubled))
    }

    /// The untrained initialisation as a residual base model plus an init adapter (native rank,
    /// `init_lora_weights: true`), for continuing with PEFT elsewhere. Files are prefixed with
    /// `residual_model/` and `init_adapter/`. Must be called before training changes the factors.
    pub async fn export_init(&self, base_name: &str, dtype: SaveDtype) -> Result<ExportFiles, EngineError> {
        let state = self.adapter_state()?;
        let mut files = Vec::new();
        let adapter = init_adapter(&state.config, &state.init, base_name);
        for (name, bytes) in write_adapter(&adapter, dtype)? {
            files.push((format!("init_adapter/{name}"), bytes));
        }
        for (name, bytes) in self.hf_model_files(false, dtype).await? {
            files.push((format!("residual_model/{name}"), bytes));
        }
        Ok(files)
    }

    /// A full Hugging Face model folder: `config.json`, `model.safetensors`, `tokenizer.json`,
    /// `tokenizer_config.json`; with `merge`, every adapter is merged into its weight.
    pub async fn hf_model_files(&self, merge: bool, dtype: SaveDtype) -> Result<ExportFiles, EngineError> {
        let tensors = model_tensors(&self.model, merge).await?;
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        let weights = to_safetensors_bytes(&tensors, dtype, Some(meta))
            .map_err(|e| crate::io::peft::PeftError::Weights(e.to_string()))?;
        let mut config = self.config.to_hf_json();
        config["torch_dtype"] = match dtype {
            SaveDtype::F32 => "float32",
            SaveDtype::F16 => "float16",
            SaveDtype::Bf16 => "bfloat16",
        }
        .into();
        Ok(vec![
            ("config.json".into(), pretty(&config)),
            ("model.safetensors".into(), weights),
            ("tokenizer.json".into(), self.tokenizer.to_json()?.into_bytes()),
            ("tokenizer_config.json".into(), pretty(&self.tokenizer.config_json())),
        ])
    }

    fn adapter_state(&self) -> Result<&AdapterState, EngineError> {
        self.adapter
            .as_ref()
            .ok_or(EngineError::Export(crate::lora::export::ExportError::NoAdapters))
    }

    /// Per-module numbers about the initialised adapters for the summary: the share of the
    /// calibration activations' energy in span(Aᵀ) (how "silent" the adapter starts).
    pub fn adapter_summary(&self) -> BTreeMap<String, serde_json::Value> {
        let mut out = BTreeMap::new();
        if let Some(s) = &self.adapter {
            out.insert("method".into(), s.config.method.name().into());
            out.insert("rank".into(), s.config.rank.into());
            out.insert("alpha".into(), s.config.alpha.into());
            out.insert("modules".into(), s.init.factors.len().into());
        }
        out
    }
}

fn pretty(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("invariant: JSON values serialise")
}
