//! Fine-tuning: examples and batches, AdamW, the learning-rate schedule, the trainer (one
//! optimiser step at a time, over whatever parameters require gradients), and checkpoints.
//! The loop that drives it (pause, cancel, validation, checkpoints) is `engine::train`.
//! `config` and `metrics` are plain data (the page reads them).

pub mod config;
pub mod metrics;

#[cfg(feature = "engine")]
pub mod blockwise;
#[cfg(feature = "engine")]
pub mod checkpoint;
#[cfg(feature = "engine")]
pub mod data;
#[cfg(feature = "engine")]
pub mod optimizer;
#[cfg(feature = "engine")]
pub mod schedule;
#[cfg(feature = "engine")]
pub mod trainer;

pub use config::{AdamWConfig, TrainConfig};
pub use metrics::StepMetrics;

#[cfg(feature = "engine")]
pub use checkpoint::TrainState;
#[cfg(feature = "engine")]
pub use data::{TrainData, prepare};
#[cfg(feature = "engine")]
pub use trainer::Trainer;

use crate::hint::{Hint, Setting};

/// Errors while training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting is out of range.
    #[error("{what}: {problem}")]
    Setting {
        /// Which setting.
        setting: Setting,
        /// Its name in the message ("the learning rate").
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The model has nothing to train.
    #[error("the model has no trainable parameters; attach adapters before training")]
    NothingToTrain,
    /// The loss or gradient became NaN or infinite; the model keeps its last good state.
    #[error(
        "training diverged at step {step}: loss {loss}, gradient norm {grad_norm}; the adapter keeps its last good state (step {})",
        step - 1
    )]
    NonFinite {
        /// The step that failed (1-based).
        step: usize,
        /// Its loss.
        loss: f64,
        /// Its gradient norm.
        grad_norm: f64,
    },
    /// Reading from the device failed.
    #[error("reading from the device failed: {0}; the GPU may have been lost or run out of memory")]
    Device(String),
    /// A checkpoint could not be written or read.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A checkpoint does not fit this run (another model, other targets).
    #[error("the checkpoint does not fit this run: {0}")]
    CheckpointMismatch(String),
}

impl TrainError {
    /// What the user can do about it.
    pub fn hints(&self) -> Vec<Hint> {
        match self {
            TrainError::Setting { setting, .. } => vec![Hint::Fix(*setting)],
            TrainError::NonFinite { .. } => vec![Hint::Lower(Setting::LearningRate), Hint::Raise(Setting::GradAccum)],
            TrainError::CheckpointMismatch(_) => vec![Hint::KeepSame(Setting::Targets)],
            _ => Vec::new(),
        }
    }
}
