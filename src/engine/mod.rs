//! The engine: the one door the CLI, the page's worker, the experiment runner, the benchmarks
//! and the tests all go through. It loads a model (with progress and the device's limits),
//! generates and scores, collects statistics and spectra, initialises adapters, drives training
//! (pause, cancel, validation, checkpoints, the NaN stop) and writes the export files. GPU reads
//! are async; the CLI blocks on the same futures. Heavy maths goes through an [`Executor`]
//! (inline natively, a worker in the browser).
//!
//! | question | file |
//! |---|---|
//! | how is a model loaded? | `load.rs` |
//! | where is training driven? | `train.rs` |
//! | where do decompositions run? | `jobs.rs` |
//! | statistics and spectra | `analyze.rs` |
//! | initialising and attaching adapters | `adapt.rs` |
//! | export files | `export.rs` |
//! | calibrating and initialising block by block (big models) | `stream.rs` |

mod adapt;
mod analyze;
mod eval;
mod export;
pub mod jobs;
mod load;
mod stream;
mod train;

pub use adapt::AdapterState;
pub use analyze::{CalibOptions, Calibration};
pub use export::ExportFiles;
#[cfg(not(target_arch = "wasm32"))]
pub use jobs::Threads;
pub use jobs::{EighCache, Executor, Inline, JobError};
pub use load::{BaseStorage, LoadProgress};
pub use stream::{STREAM_ABOVE_BYTES, StreamedCalibration};
pub use train::{CheckpointKind, Control, TrainHooks, TrainReport};

use crate::hint::Hint;
use crate::io::{Format, LoadError, Tokenizer};
use crate::lora::LoraModel;
use crate::model::ModelConfig;

/// Errors surfaced to the CLI and the app. [`EngineError::hints`] says what the user can do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model files could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The model does not fit the device.
    #[error(
        "this model's largest tensor needs {needed_mib} MiB in f32, above this GPU's storage-binding limit of {limit_mib} MiB; use a smaller model or the CPU backend"
    )]
    TooLarge {
        /// MiB the largest tensor needs.
        needed_mib: u64,
        /// The device's limit.
        limit_mib: u64,
    },
    /// Tokenisation or chat templating failed.
    #[error(transparent)]
    Tokenizer(#[from] crate::io::tokenizer::TokenizerError),
    /// Evaluation failed.
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    /// Calibration failed.
    #[error(transparent)]
    Calib(#[from] crate::calib::CalibError),
    /// A decomposition or initialisation job failed.
    #[error("{context}: {source}")]
    Job {
        /// What the job was for ("layer 3 attn_input").
        context: String,
        /// Why it failed.
        source: JobError,
    },
    /// Adapter initialisation failed.
    #[error(transparent)]
    Init(#[from] crate::lora::InitError),
    /// A requested target is not a layer of this architecture.
    #[error("{0}")]
    Targets(String),
    /// Export failed.
    #[error(transparent)]
    Export(#[from] crate::lora::export::ExportError),
    /// A PEFT adapter could not be read or attached.
    #[error(transparent)]
    Peft(#[from] crate::io::peft::PeftError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    /// Training data could not be built.
    #[error(transparent)]
    Data(#[from] crate::train::data::DataError),
}

impl EngineError {
    /// What the user can do about it, in neutral terms (each front end words them).
    pub fn hints(&self) -> Vec<Hint> {
        match self {
            EngineError::Tokenizer(e) => e.hints(),
            EngineError::Eval(e) => e.hints(),
            EngineError::Init(e) => e.hints(),
            EngineError::Train(e) => e.hints(),
            EngineError::Data(e) => e.hints(),
            _ => Vec::new(),
        }
    }

    /// Whether the user cancelled the work (not a failure to report).
    pub fn is_cancelled(&self) -> bool {
        matches!(
            self,
            EngineError::Calib(crate::calib::CalibError::Cancelled)
                | EngineError::Job {
                    source: JobError::Cancelled,
                    ..
                }
        )
    }

    fn job(context: impl Into<String>) -> impl FnOnce(JobError) -> Self {
        let context = context.into();
        move |source| EngineError::Job { context, source }
    }
}

/// A loaded model with its tokenizer, and the adapters initialisation attached.
#[derive(Debug)]
pub struct LoadedModel {
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// Tokenizer.
    pub tokenizer: Tokenizer,
    /// The burn model; its adaptable layers can carry LoRA adapters.
    pub model: LoraModel,
    /// Source format.
    pub format: Format,
    /// Storage types of the source file.
    pub storage: std::collections::BTreeMap<String, usize>,
    /// What exports name as the base model (`base_model_name_or_path`).
    pub base_name: String,
    /// The adapters attached by initialisation (with what the export needs), if any.
    pub adapter: Option<AdapterState>,
}
