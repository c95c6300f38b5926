//! The training loop: masked next-token loss, gradient accumulation, global-norm clipping,
//! AdamW with warmup + cosine, validation, NaN/Inf guard, and checkpoint state. Only the adapter
//! factors train; the base stays frozen. One optimiser step per [`Trainer::step`] call, so the
//! app can interleave steps with rendering, pause, and cancel.

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use web_time::Instant;

use super::TrainError;
use super::data::{Batch, Example, TrainData, collate};
use super::optimizer::{AdamWConfig, Moments, adamw_update, grad_sq_norm};
use super::schedule::cosine_with_warmup;
use crate::model::weights::read_f32;
use crate::model::{LlamaForCausalLM, Target};

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Optimiser steps; `None` derives them from `epochs`.
    pub steps: Option<usize>,
    /// Passes over the training set when `steps` is `None`.
    pub epochs: f64,
    /// Examples per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Warmup as a fraction of the steps (0.03 in the reference scripts).
    pub warmup_ratio: f64,
    /// Clip the global gradient norm to this (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// AdamW moments and decay.
    pub adamw: AdamWConfig,
    /// Seed for the data order.
    pub seed: u64,
    /// Validate every N steps (0: only at the end).
    pub eval_every: usize,
    /// Checkpoint every N steps (0: never).
    pub checkpoint_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lr: 2e-4,
            steps: None,
            epochs: 1.0,
            batch: 4,
            grad_accum: 1,
            warmup_ratio: 0.03,
            max_grad_norm: Some(1.0),
            adamw: AdamWConfig::default(),
            seed: 42,
            eval_every: 0,
            checkpoint_every: 0,
        }
    }
}

/// What one optimiser step reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Seconds since the trainer started.
    pub elapsed_seconds: f64,
    /// Estimated seconds left.
    pub eta_seconds: f64,
    /// Validation loss, when this step validated.
    pub val_loss: Option<f64>,
}

/// Which factor of which module.
pub type ParamKey = (usize, Target, Factor);

/// The down (A) or up (B) projection of an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Factor {
    /// `lora_A`.
    A,
    /// `lora_B`.
    B,
}

/// Drives training of an adapted model.
pub struct Trainer {
    model: LlamaForCausalLM,
    cfg: TrainConfig,
    data: TrainData,
    pad: u32,
    moments: BTreeMap<ParamKey, Moments>,
    trainable: Vec<ParamKey>,
    step: usize,
    total_steps: usize,
    started: Instant,
    resumed_at: usize,
}

fn param_of(model: &LlamaForCausalLM, key: ParamKey) -> Option<&Param<Tensor<2>>> {
    let lora = model.linear(key.0, key.1).lora.as_ref()?;
    Some(match key.2 {
        Factor::A => &lora.lora_a,
        Factor::B => &lora.lora_b,
    })
}

impl Trainer {
    /// Prepares training. `model` must carry adapters; `trains_down` is false for LoRA-Null-v2
    /// (its down projections stay frozen). `pad` is the padding id.
    pub fn new(
        model: LlamaForCausalLM,
        cfg: TrainConfig,
        data: TrainData,
        pad: u32,
        trains_down: bool,
    ) -> Result<Self, TrainError> {
        if cfg.batch == 0 || cfg.grad_accum == 0 {
            return Err(TrainError::Config("--batch and --grad-accum must be at least 1".into()));
        }
        if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
            return Err(TrainError::Config(format!(
                "--lr must be a positive number, got {}",
                cfg.lr
            )));
        }
        let mut trainable = Vec::new();
        for layer in 0..model.model.layers.len() {
            for target in Target::ALL {
                if model.linear(layer, target).lora.is_some() {
                    if trains_down {
                        trainable.push((layer, target, Factor::A));
                    }
                    trainable.push((layer, target, Factor::B));
                }
            }
        }
        if trainable.is_empty() {
            return Err(TrainError::Config("the model has no LoRA adapters to train".into()));
        }
        let per_step = cfg.batch * cfg.grad_accum;
        let total_steps = match cfg.steps {
            Some(s) if s > 0 => s,
            Some(_) => return Err(TrainError::Config("--steps must be at least 1".into())),
            None => ((data.train.len() as f64 * cfg.epochs) / per_step as f64)
                .ceil()
                .max(1.0) as usize,
        };
        Ok(Self {
            model: model.train(),
            cfg,
            data,
            pad,
            moments: BTreeMap::new(),
            trainable,
            step: 0,
            total_steps,
            started: Instant::now(),
            resumed_at: 0,
        })
    }

    /// Steps planned.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// Steps done.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// Whether all planned steps are done.
    pub fn finished(&self) -> bool {
        self.step >= self.total_steps
    }

    /// The model (autodiff-enabled) as trained so far.
    pub fn model(&self) -> &LlamaForCausalLM {
        &self.model
    }

    /// Ends training, returning the model for inference (autodiff off).
    pub fn into_model(self) -> LlamaForCausalLM {
        self.model.valid()
    }

    /// The trainable parameters (for checkpoints).
    pub fn trainable(&self) -> &[ParamKey] {
        &self.trainable
    }

    /// The examples of micro-batch `micro` of optimiser step `step`: an endless sequence of
    /// epochs, each a seeded permutation of the training set, so a resumed run sees the same order.
    fn micro_batch(&self, step: usize, micro: usize) -> Vec<&Example> {
        let n = self.data.train.len();
        let start = (step * self.cfg.grad_accum + micro) * self.cfg.batch;
        let mut out = Vec::with_capacity(self.cfg.batch);
        let mut perm_epoch = usize::MAX;
        let mut perm: Vec<usize> = Vec::new();
        for pos in start..start + self.cfg.batch {
            let (epoch, idx) = (pos / n, pos % n);
            if epoch != perm_epoch {
                perm = (0..n).collect();
                crate::linalg::Rng::new(self.cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9)).shuffle(&mut perm);
                perm_epoch = epoch;
            }
            out.push(&self.data.train[perm[idx]]);
        }
        out
    }

    /// Runs one optimiser step. On a non-finite loss or gradient it returns an error and leaves
    /// the model as it was after the last good step.
    pub async fn step(&mut self) -> Result<StepMetrics, TrainError> {
        let t0 = Instant::now();
        let device = self.model.device();
        let batches: Vec<Batch> = (0..self.cfg.grad_accum)
            .map(|m| collate(&self.micro_batch(self.step, m), self.pad, &device))
            .collect();
        let scored: usize = batches.iter().map(|b| b.scored).sum();
        let tokens: usize = batches.iter().map(|b| b.tokens).sum();
        let mut grads: BTreeMap<ParamKey, Tensor<2>> = BTreeMap::new();
        let mut loss_sum = 0.0;
        for batch in batches {
            let nll = masked_nll_sum(&self.model, &batch);
            let loss = nll.clone().div_scalar(scored.max(1) as f64);
            let g = loss.backward();
            for &key in &self.trainable {
                let p = param_of(&self.model, key).expect("invariant: trainable keys have adapters");
                if let Some(grad) = p.val().grad(&g) {
                    let acc = match grads.remove(&key) {
                        Some(prev) => prev + grad,
                        None => grad,
                    };
                    grads.insert(key, acc);
                }
            }
            loss_sum += read_f32(nll.inner()).await.map_err(TrainError::Device)?[0] as f64;
        }
        let loss = loss_sum / scored.max(1) as f64;
        let norm_sq: Tensor<1> = grads
            .values()
            .map(grad_sq_norm)
            .reduce(|a, b| a + b)
            .ok_or_else(|| TrainError::Config("no gradients reached the adapters".into()))?;
        let grad_norm = (read_f32(norm_sq).await.map_err(TrainError::Device)?[0] as f64).sqrt();
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step: self.step + 1,
                loss,
                grad_norm,
            });
        }
        let clip = match self.cfg.max_grad_norm {
            Some(max) if grad_norm > max => max / (grad_norm + 1e-6),
            _ => 1.0,
        };
        let warmup = (self.cfg.warmup_ratio * self.total_steps as f64).ceil() as usize;
        let lr = cosine_with_warmup(self.cfg.lr, self.step, warmup, self.total_steps);
        for (key, grad) in grads {
            let p = param_of(&self.model, key).expect("invariant: trainable keys have adapters");
            let (new, m) = adamw_update(
                &self.cfg.adamw,
                p.val().inner(),
                grad.mul_scalar(clip),
                self.moments.remove(&key),
                lr,
                self.step + 1,
            );
            self.moments.insert(key, m);
            set_param(&mut self.model, key, new, true);
        }
        self.step += 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        let step_seconds = t0.elapsed().as_secs_f64();
        let per_step = elapsed / (self.step - self.resumed_at).max(1) as f64;
        Ok(StepMetrics {
            step: self.step,
            total_steps: self.total_steps,
            loss,
            lr,
            grad_norm,
            tokens_per_second: tokens as f64 / step_seconds.max(1e-9),
            elapsed_seconds: elapsed,
            eta_seconds: per_step * (self.total_steps - self.step.min(self.total_steps)) as f64,
            val_loss: None,
        })
    }

    /// Mean loss per scored token on the validation set (`None` if there is none).
    pub async fn validate(&self) -> Result<Option<f64>, TrainError> {
        if self.data.val.is_empty() {
            return Ok(None);
        }
        let model = self.model.valid();
        let device = model.device();
        let (mut nll, mut scored) = (0.0, 0usize);
        for chunk in self.data.val.chunks(self.cfg.batch) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let batch = collate(&refs, self.pad, &device);
            scored += batch.scored;
            nll += read_f32(masked_nll_sum(&model, &batch))
                .await
                .map_err(TrainError::Device)?[0] as f64;
        }
        Ok(Some(nll / scored.max(1) as f64))
    }

    /// Current factors and optimiser moments, for a checkpoint.
    pub async fn checkpoint(&self) -> Result<super::checkpoint::TrainState, TrainError> {
        super::checkpoint::TrainState::capture(self).await
    }

    /// Restores factors, moments and the step counter from a checkpoint.
    pub fn restore(&mut self, state: &super::checkpoint::TrainState) -> Result<(), TrainError> {
        let device = self.model.device();
        for (&key, t) in &state.factors {
            if param_of(&self.model, key).is_none() {
                return Err(TrainError::Checkpoint(format!(
                    "the checkpoint has an adapter on layer {} {} that this model does not; use the same --targets",
                    key.0,
                    key.1.module_name()
                )));
            }
            let trainable = self.trainable.contains(&key);
            set_param(&mut self.model, key, t.to_tensor(&device), trainable);
        }
        self.moments = state
            .moments
            .iter()
            .map(|(k, (m, v))| {
                (
                    *k,
                    Moments {
                        m: m.to_tensor(&device),
                        v: v.to_tensor(&device),
                    },
                )
            })
            .collect();
        self.step = state.step;
        self.resumed_at = state.step;
        self.started = Instant::now();
        Ok(())
    }

    pub(super) fn moments(&self) -> &BTreeMap<ParamKey, Moments> {
        &self.moments
    }

    pub(super) fn all_factor_keys(&self) -> Vec<ParamKey> {
        let mut keys = Vec::new();
        for layer in 0..self.model.model.layers.len() {
            for target in Target::ALL {
                if self.model.linear(layer, target).lora.is_some() {
                    keys.push((layer, target, Factor::A));
                    keys.push((layer, target, Factor::B));
                }
            }
        }
        keys
    }

    pub(super) fn factor(&self, key: ParamKey) -> Option<Tensor<2>> {
        param_of(&self.model, key).map(|p| p.val().inner())
    }

    pub(super) fn step_index(&self) -> usize {
        self.step
    }
}

fn set_param(model: &mut LlamaForCausalLM, key: ParamKey, value: Tensor<2>, trainable: bool) {
    let lora = model
        .linear_mut(key.0, key.1)
        .lora
        .as_mut()
        .expect("invariant: trainable keys have adapters");
    let param = Param::from_tensor(value.autodiff()).set_require_grad(trainable);
    match key.2 {
        Factor::A => lora.lora_a = param,
        Factor::B => lora.lora_b = param,
    }
}

/// Sum of −log p(label) over the scored positions of a batch.
pub fn masked_nll_sum(model: &LlamaForCausalLM, batch: &Batch) -> Tensor<1> {
    let [_, t] = batch.ids.dims();
    let logits = model.forward(batch.ids.clone()).narrow(1, 0, t - 1);
    let logp = log_softmax(logits, 2)
        .gather(2, batch.labels.clone())
        .squeeze_dim::<2>(2);
    (logp * batch.mask.clone()).sum().neg()
}
