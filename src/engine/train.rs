//! Where training is driven. [`LoadedModel::fine_tune`] is the whole run (examples → adapters →
//! steps); [`LoadedModel::train`] is the step loop on a model that already carries adapters:
//! one optimiser step at a time, with the front end's [`TrainHooks`] told after every step and
//! asked before it (pause, stop), validation and checkpoints at the configured steps, and the
//! NaN stop, which hands over the last good state before failing. The CLI's `train`, the
//! experiment, the benchmark, the page's worker and the tests all train through here; the
//! defaults are [`TrainConfig::default`] and [`LoraConfig::new`](crate::lora::LoraConfig::new).

use super::analyze::Calibration;
use super::jobs::{EighCache, Executor};
use super::{EngineError, LoadedModel};
use crate::io::dataset::Record;
use crate::lora::LoraConfig;
use crate::train::{StepMetrics, TrainConfig, TrainData, TrainError, TrainState, Trainer, prepare};

/// Which checkpoint the loop hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// The scheduled checkpoint after this step (`checkpoint_every`).
    Step(usize),
    /// The last good state, when training diverged.
    LastGood,
}

impl CheckpointKind {
    /// The file name the CLI gives it.
    pub fn file_name(self) -> String {
        match self {
            CheckpointKind::Step(s) => format!("step-{s:06}.safetensors"),
            CheckpointKind::LastGood => "last-good.safetensors".into(),
        }
    }
}

/// What the front end wants before the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Take the step.
    Run,
    /// Wait (asked again every 100 ms).
    Pause,
    /// End the run, keeping the steps done.
    Stop,
}

/// The front end's side of a run: what it is told and what it is asked.
pub trait TrainHooks {
    /// The examples were built (counts for the user).
    fn on_data(&mut self, data: &TrainData) {
        let _ = data;
    }
    /// Adapter initialisation progress (modules done, in all).
    fn on_init(&mut self, done: usize, total: usize) {
        let _ = (done, total);
    }
    /// After every optimiser step (with the validation loss when the step validated).
    fn on_step(&mut self, metrics: &StepMetrics) {
        let _ = metrics;
    }
    /// A checkpoint to keep (safetensors bytes of [`TrainState`]); an error stops training.
    fn on_checkpoint(&mut self, kind: CheckpointKind, bytes: Vec<u8>) -> Result<(), String> {
        let _ = (kind, bytes);
        Ok(())
    }
    /// Asked before every step.
    fn control(&mut self) -> Control {
        Control::Run
    }
}

/// Hooks that do nothing (tests, scripts).
impl TrainHooks for () {}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Steps done (including those of a resumed checkpoint).
    pub steps: usize,
    /// Steps planned.
    pub total_steps: usize,
    /// The last step's metrics.
    pub last: Option<StepMetrics>,
    /// Whether the front end stopped the run early.
    pub stopped: bool,
}

impl LoadedModel {
    /// The run's examples, split into training and validation (fails before any other work
    /// when the data cannot train).
    pub fn training_data(&self, records: &[Record], cfg: &TrainConfig) -> Result<TrainData, EngineError> {
        crate::train::trainer::check_config(cfg)?;
        Ok(prepare(records, &self.tokenizer, cfg)?)
    }

    /// A whole fine-tuning run: examples, adapters (`lora`, from `calib` where the method needs
    /// statistics), then the step loop. The model keeps the trained adapters.
    #[allow(clippy::too_many_arguments)]
    pub async fn fine_tune(
        &mut self,
        records: &[Record],
        lora: LoraConfig,
        cfg: &TrainConfig,
        calib: Option<&Calibration>,
        eighs: &mut EighCache,
        exec: &dyn Executor,
        hooks: &mut dyn TrainHooks,
    ) -> Result<TrainReport, EngineError> {
        lora.check(calib.is_some())?;
        let data = self.training_data(records, cfg)?;
        hooks.on_data(&data);
        self.init_adapters(lora, calib, eighs, exec, &mut |d, t| hooks.on_init(d, t))
            .await?;
        self.train(data, cfg, None, hooks).await
    }

    /// The step loop over the adapters already attached: resumes from `resume` if given, takes
    /// steps until the plan is done or the hooks stop it, validating and checkpointing as `cfg`
    /// says. The model keeps the steps done, also when training diverges (the error follows the
    /// last good state, handed to [`TrainHooks::on_checkpoint`]).
    pub async fn train(
        &mut self,
        data: TrainData,
        cfg: &TrainConfig,
        resume: Option<&TrainState>,
        hooks: &mut dyn TrainHooks,
    ) -> Result<TrainReport, EngineError> {
        let pad = self.tokenizer.pad_or_eos();
        let mut trainer = Trainer::new(self.model.clone(), cfg.clone(), data, pad)?;
        if let Some(state) = resume {
            trainer.restore(state)?;
        }
        let result = drive(&mut trainer, hooks).await;
        self.model = trainer.into_model();
        result
    }
}

async fn drive(
    trainer: &mut Trainer<crate::lora::LoraLinear>,
    hooks: &mut dyn TrainHooks,
) -> Result<TrainReport, EngineError> {
    let mut report = TrainReport {
        steps: trainer.steps_done(),
        total_steps: trainer.total_steps(),
        last: None,
        stopped: false,
    };
    while !trainer.finished() {
        match hooks.control() {
            Control::Stop => {
                report.stopped = true;
                break;
            }
            Control::Pause => {
                crate::device::sleep_ms(100).await;
                continue;
            }
            Control::Run => {}
        }
        let mut metrics = match trainer.step().await {
            Ok(m) => m,
            Err(e @ TrainError::NonFinite { .. }) => {
                let bytes = trainer.checkpoint().await?.to_bytes()?;
                hooks
                    .on_checkpoint(CheckpointKind::LastGood, bytes)
                    .map_err(TrainError::Checkpoint)?;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let step = metrics.step;
        if trainer.config().validates_at(step, trainer.total_steps()) {
            metrics.val_loss = trainer.validate().await?;
        }
        hooks.on_step(&metrics);
        if trainer.config().checkpoints_at(step) {
            let bytes = trainer.checkpoint().await?.to_bytes()?;
            hooks
                .on_checkpoint(CheckpointKind::Step(step), bytes)
                .map_err(TrainError::Checkpoint)?;
        }
        report.steps = step;
        report.last = Some(metrics);
        crate::device::yield_now().await;
    }
    Ok(report)
}
