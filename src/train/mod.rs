//! Fine-tuning: examples and batches, AdamW, the learning-rate schedule, the training loop
//! with its progress callback, and checkpoints.

pub mod checkpoint;
pub mod data;
pub mod optimizer;
pub mod schedule;
pub mod trainer;

pub use checkpoint::TrainState;
pub use data::{TrainData, prepare};
pub use trainer::{StepMetrics, TrainConfig, Trainer};

/// Errors while training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
    /// The loss or gradient became NaN or infinite; the model keeps its last good state.
    #[error(
        "training diverged at step {step}: loss {loss}, gradient norm {grad_norm}; the adapter keeps its last good state (step {}). Lower --lr, or raise --grad-accum",
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
}
