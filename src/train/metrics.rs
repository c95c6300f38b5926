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
    /// What the GPU's memory pools held after the step (`None` on the CPU backend).
    #[serde(default)]
    pub gpu_memory: Option<GpuMemory>,
}

/// What burn's memory pools held on a GPU device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuMemory {
    /// Bytes in live tensors and buffers.
    pub in_use: u64,
    /// Bytes taken from the device: the live ones, the pages' unused ends, and pages kept for
    /// reuse.
    pub reserved: u64,
}

impl GpuMemory {
    /// What the memory pools of `device` hold now; `None` on the CPU backend.
    #[cfg(feature = "engine")]
    pub fn of(device: &burn::tensor::Device) -> Option<Self> {
        use burn::backend::{Backend, Dispatch};
        let usage = Dispatch::memory_pool_usage(device.as_dispatch())?;
        Some(Self {
            in_use: usage.bytes_in_use,
            reserved: usage.bytes_reserved,
        })
    }

    /// "0.73 GiB in use, 1.17 GiB reserved".
    pub fn describe(&self) -> String {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        format!(
            "{:.2} GiB in use, {:.2} GiB reserved",
            gib(self.in_use),
            gib(self.reserved)
        )
    }
}
