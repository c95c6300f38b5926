//! What one optimiser step reports (plain data: the CLI logs it, the page plots it).

use serde::{Deserialize, Serialize};

/// What one optimiser step reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Steps done (1-based).
    pub step: usize,
    /// Steps planned.
    pub total_steps: usize,
    /// Mean loss per scored token over the step's micro-batches.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens (incl. prompts, excl. padding) per second over this step.
    pub tokens_per_second: f64,
    /// Seconds this step took.
    #[serde(default)]
    pub step_seconds: f64,
    /// Seconds since the trainer started.
    pub elapsed_seconds: f64,
    /// Estimated seconds left.
    pub eta_seconds: f64,
    /// Validation loss, when this step validated.
    pub val_loss: Option<f64>,
}
