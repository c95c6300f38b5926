//! The trainer: masked next-token loss, gradient accumulation, global-norm clipping, AdamW with
//! warmup + cosine, validation, and the NaN/Inf guard. It trains every parameter that requires
//! gradients (for LoRA: the adapter factors; the base is frozen) and knows nothing else about
//! them: parameters are named by their module path (`model.layers.0.self_attn.q_proj.…`), which
//! is also how checkpoints store them. One optimiser step per [`Trainer::step`] call; the loop
//! around it (pause, cancel, checkpoints) is `engine::train`.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use web_time::Instant;

use super::TrainError;
use super::checkpoint::TrainState;
use super::config::TrainConfig;
use super::data::{Batch, Example, TrainData, collate};
use super::metrics::StepMetrics;
use super::optimizer::{Moments, adamw_update, clip_factor};
use super::schedule::cosine_with_warmup;
use crate::hint::Setting;
use crate::model::weights::read_f32;
use crate::model::{LlamaForCausalLM, NoObserver, Projection};

/// Drives training of a model whose trainable parameters require gradients.
pub struct Trainer<L: Projection> {
    model: LlamaForCausalLM<L>,
    cfg: TrainConfig,
    data: TrainData,
    pad: u32,
    moments: BTreeMap<String, Moments>,
    step: usize,
    total_steps: usize,
    started: Instant,
    resumed_at: usize,
}

fn invalid(setting: Setting, what: &'static str, problem: String) -> TrainError {
    TrainError::Setting { setting, what, problem }
}

/// Checks the settings a run cannot start with.
pub fn check_config(cfg: &TrainConfig) -> Result<(), TrainError> {
    if cfg.batch == 0 {
        return Err(invalid(Setting::Batch, "the batch size", "must be at least 1".into()));
    }
    if cfg.grad_accum == 0 {
        return Err(invalid(
            Setting::GradAccum,
            "the gradient accumulation",
            "must be at least 1".into(),
        ));
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(invalid(
            Setting::LearningRate,
            "the learning rate",
            format!("must be a positive number, got {}", cfg.lr),
        ));
    }
    if cfg.steps == Some(0) {
        return Err(invalid(
            Setting::Steps,
            "the number of steps",
            "must be at least 1".into(),
        ));
    }
    Ok(())
}

impl<L: Projection> Trainer<L> {
    /// Prepares training of `model`'s parameters that require gradients. `pad` is the padding id.
    pub fn new(model: LlamaForCausalLM<L>, cfg: TrainConfig, data: TrainData, pad: u32) -> Result<Self, TrainError> {
        check_config(&cfg)?;
        let model = model.train();
        if trainable_paths(&model).is_empty() {
            return Err(TrainError::NothingToTrain);
        }
        let per_step = cfg.batch * cfg.grad_accum;
        let total_steps = match cfg.steps {
            Some(s) => s,
            None => ((data.train.len() as f64 * cfg.epochs) / per_step as f64)
                .ceil()
                .max(1.0) as usize,
        };
        Ok(Self {
            model,
            cfg,
            data,
            pad,
            moments: BTreeMap::new(),
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

    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Ends training, returning the model for inference (autodiff off).
    pub fn into_model(self) -> LlamaForCausalLM<L> {
        self.model.valid()
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
        let mut grads: BTreeMap<String, Tensor<1>> = BTreeMap::new();
        let mut loss_sum = 0.0;
        let blockwise = self
            .cfg
            .checkpoint_blocks
            .unwrap_or_else(|| self.model.has_packed_weights());
        let scale = 1.0 / scored.max(1) as f64;
        for batch in batches {
            let model = &self.model;
            let mut collect = |g: &burn::tensor::Gradients| {
                model.visit(&mut Collector {
                    path: Vec::new(),
                    grads: Some(g),
                    out: &mut grads,
                })
            };
            let nll = if blockwise {
                super::blockwise::blockwise_backward(model, &batch, scale, &mut collect)
            } else {
                super::blockwise::whole_graph_backward(model, &batch, scale, &mut collect)
            };
            loss_sum += read_f32(nll).await.map_err(TrainError::Device)?[0] as f64;
        }
        let loss = loss_sum / scored.max(1) as f64;
        let norm_sq: Tensor<1> = grads
            .values()
            .map(|g| g.clone().square().sum())
            .reduce(|a, b| a + b)
            .ok_or(TrainError::NothingToTrain)?;
        let grad_norm = (read_f32(norm_sq).await.map_err(TrainError::Device)?[0] as f64).sqrt();
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step: self.step + 1,
                loss,
                grad_norm,
            });
        }
        // The backward's transients are gone now: their pages go back before the adapter's new
        // values and moments, which live on, are made (`release_free_gpu_memory` says why).
        crate::device::release_free_gpu_memory(&device);
        let clip = clip_factor(grad_norm, self.cfg.max_grad_norm);
        let warmup = (self.cfg.warmup_ratio * self.total_steps as f64).ceil() as usize;
        let lr = cosine_with_warmup(self.cfg.lr, self.step, warmup, self.total_steps);
        let mut updates = BTreeMap::new();
        let current = self.trainable_values();
        for (path, grad) in grads {
            let Some(p) = current.get(&path) else { continue };
            let (new, m) = adamw_update(
                &self.cfg.adamw,
                p.clone(),
                grad.mul_scalar(clip),
                self.moments.remove(&path),
                lr,
                self.step + 1,
            );
            self.moments.insert(path.clone(), m);
            updates.insert(path, new);
        }
        self.set_values(updates);
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
            step_seconds,
            elapsed_seconds: elapsed,
            eta_seconds: per_step * (self.total_steps - self.step.min(self.total_steps)) as f64,
            val_loss: None,
            gpu_memory: super::metrics::GpuMemory::of(&device),
        })
    }

    /// Mean loss per scored token on the validation set (`None` if there is none).
    pub async fn validate(&self) -> Result<Option<f64>, TrainError> {
        if self.data.val.is_empty() {
            return Ok(None);
        }
        let model = self.model.clone().valid();
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

    /// The trainable parameters (flattened, without autodiff) by module path.
    fn trainable_values(&self) -> BTreeMap<String, Tensor<1>> {
        let mut out = BTreeMap::new();
        self.model.visit(&mut Collector {
            path: Vec::new(),
            grads: None,
            out: &mut out,
        });
        out
    }

    /// Replaces trainable parameters by path (flattened values; shapes are kept).
    fn set_values(&mut self, mut values: BTreeMap<String, Tensor<1>>) {
        let model = self.model.clone();
        self.model = model.map(&mut ValueSetter {
            path: Vec::new(),
            values: &mut values,
        });
    }

    /// Current parameters, optimiser moments and step, for a checkpoint.
    pub async fn checkpoint(&self) -> Result<TrainState, TrainError> {
        TrainState::capture(self.step, self.trainable_values(), &self.moments).await
    }

    /// Restores parameters, moments and the step counter from a checkpoint of the same run.
    pub fn restore(&mut self, state: &TrainState) -> Result<(), TrainError> {
        let device = self.model.device();
        let current = self.trainable_values();
        for (path, value) in &current {
            let saved = state
                .params
                .get(path)
                .ok_or_else(|| TrainError::CheckpointMismatch(format!("it has no `{path}`")))?;
            if saved.data.len() != value.dims()[0] {
                return Err(TrainError::CheckpointMismatch(format!(
                    "`{path}` has {} values there and {} here",
                    saved.data.len(),
                    value.dims()[0]
                )));
            }
        }
        if let Some(extra) = state.params.keys().find(|k| !current.contains_key(*k)) {
            return Err(TrainError::CheckpointMismatch(format!(
                "it trains `{extra}`, which this model does not"
            )));
        }
        let flat = |t: &crate::io::HostTensor| -> Tensor<1> {
            Tensor::from_data(burn::tensor::TensorData::new(t.data.clone(), [t.data.len()]), &device)
        };
        self.set_values(state.params.iter().map(|(k, t)| (k.clone(), flat(t))).collect());
        self.moments = state
            .moments
            .iter()
            .map(|(k, (m, v))| (k.clone(), Moments { m: flat(m), v: flat(v) }))
            .collect();
        self.step = state.step;
        self.resumed_at = state.step;
        self.started = Instant::now();
        Ok(())
    }
}

/// The module paths of the parameters that require gradients.
pub fn trainable_paths<L: Projection>(model: &LlamaForCausalLM<L>) -> Vec<String> {
    let mut out = BTreeMap::new();
    model.clone().train().visit(&mut Collector {
        path: Vec::new(),
        grads: None,
        out: &mut out,
    });
    out.into_keys().collect()
}

/// Collects, for each trainable parameter by module path, its gradient in `grads` (summed into
/// what `out` holds, over micro-batches) or, without `grads`, its value; flattened, no autodiff.
struct Collector<'a> {
    path: Vec<String>,
    grads: Option<&'a burn::tensor::Gradients>,
    out: &'a mut BTreeMap<String, Tensor<1>>,
}

impl ModuleVisitor for Collector<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let Some(t) = (match self.grads {
            Some(grads) => value.grad(grads),
            None => Some(value.inner()),
        }) else {
            return;
        };
        let n = t.shape().num_elements();
        let t: Tensor<1> = t.reshape([n]);
        let key = self.path.join(".");
        let sum = match self.out.remove(&key) {
            Some(prev) if self.grads.is_some() => prev + t,
            // A gradient lives until the update: off the page the backward left it on.
            _ if self.grads.is_some() => crate::device::on_own_page(t),
            _ => t,
        };
        self.out.insert(key, sum);
    }
}

/// Puts new values into trainable parameters (same id, same shape, gradients on).
struct ValueSetter<'a> {
    path: Vec<String>,
    values: &'a mut BTreeMap<String, Tensor<1>>,
}

impl ModuleMapper for ValueSetter<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.values.remove(&self.path.join(".")) {
            Some(new) => param.map(|old| {
                let dims: [usize; D] = old.dims();
                new.reshape(dims).autodiff().require_grad()
            }),
            None => param,
        }
    }
}

/// Sum of −log p(label) over the scored positions of a batch, the logits taken a vocabulary
/// piece at a time ([`LlamaForCausalLM::chunked_nll`]); no gradient.
pub fn masked_nll_sum<L: Projection>(model: &LlamaForCausalLM<L>, batch: &Batch) -> Tensor<1> {
    let normed = model.hidden_states(batch.ids.clone(), None, &mut NoObserver);
    let (normed, mask) = batch.label_rows(normed);
    model.chunked_nll(normed, &batch.label_ids, mask, None).0
}
