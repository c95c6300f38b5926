//! The training settings and their defaults, defined once: the CLI's flags, the page's form,
//! the experiment runner and the benchmarks all start from [`TrainConfig::default`].

use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters (the PyTorch defaults; the learning rate comes from the schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay λ: `p ← p − lr·λ·p` before the Adam step.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Data and optimisation settings of a fine-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Peak learning rate (default 2e-4).
    pub lr: f64,
    /// Optimiser steps; `None` (default) derives them from `epochs`.
    pub steps: Option<usize>,
    /// Passes over the training set when `steps` is `None` (default 1).
    pub epochs: f64,
    /// Examples per micro-batch (default 4).
    pub batch: usize,
    /// Micro-batches per optimiser step (default 1).
    pub grad_accum: usize,
    /// Examples are cut to this many tokens (default 512).
    pub max_len: usize,
    /// Share of the examples held out for validation (default 0.05; at least one example when
    /// positive and there are two or more).
    pub val_fraction: f64,
    /// Warmup as a fraction of the steps (default 0.03, as the reference scripts).
    pub warmup_ratio: f64,
    /// Clip the global gradient norm to this (default 1.0; `None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// AdamW moments and decay (PyTorch's defaults, no decay).
    pub adamw: AdamWConfig,
    /// Seed of the data order and the validation split (default 42).
    pub seed: u64,
    /// Validate every N steps (default 0: only at the end).
    pub eval_every: usize,
    /// Checkpoint every N steps (default 0: never).
    pub checkpoint_every: usize,
    /// Gradient checkpointing per block (`train::blockwise`): one more forward pass per step for
    /// far less memory. `None` (default): on when the base weights are packed.
    pub checkpoint_blocks: Option<bool>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lr: 2e-4,
            steps: None,
            epochs: 1.0,
            batch: 4,
            grad_accum: 1,
            max_len: 512,
            val_fraction: 0.05,
            warmup_ratio: 0.03,
            max_grad_norm: Some(1.0),
            adamw: AdamWConfig::default(),
            seed: 42,
            eval_every: 0,
            checkpoint_every: 0,
            checkpoint_blocks: None,
        }
    }
}

impl TrainConfig {
    /// Whether step `step` (1-based) of `total` validates: every `eval_every` steps, and the last.
    pub fn validates_at(&self, step: usize, total: usize) -> bool {
        (self.eval_every > 0 && step.is_multiple_of(self.eval_every)) || step >= total
    }

    /// Whether step `step` (1-based) writes a checkpoint.
    pub fn checkpoints_at(&self, step: usize) -> bool {
        self.checkpoint_every > 0 && step.is_multiple_of(self.checkpoint_every)
    }
}
