//! `lora-null train`: initialise, fine-tune, and export a PEFT adapter for the original base.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::ProgressBar;
use lora_null::engine::{CheckpointKind, TrainHooks};
use lora_null::io::safetensors::SaveDtype;
use lora_null::model::memory::{TrainSettings, gib};
use lora_null::train::{AdamWConfig, StepMetrics, TrainConfig, TrainData, TrainState};

use super::ModelArgs;
use super::adapt::{CalibArgs, LoraArgs, bar, calibrate_and_init};
use super::files::{read, read_dataset, write_files_atomically};
use super::run::load;

/// `train` options.
#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Training data: .txt (language modelling), .jsonl/.json/.csv with "text", instruction
    /// ("instruction"/"input"/"output", Alpaca prompt), "prompt"/"completion", or "messages".
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    lora: LoraArgs,
    #[command(flatten)]
    calib: CalibArgs,
    /// Optimiser steps (instead of --epochs).
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<usize>,
    /// Passes over the training set.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: f64,
    /// Peak learning rate (warmup, then cosine to zero).
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    lr: f64,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = TrainConfig::default().batch)]
    batch: usize,
    /// Micro-batches per optimiser step.
    #[arg(long, default_value_t = TrainConfig::default().grad_accum)]
    grad_accum: usize,
    /// Truncate examples to this many tokens.
    #[arg(long, default_value_t = TrainConfig::default().max_len)]
    max_len: usize,
    /// Seed for the data order and the validation split.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Fraction of examples held out for validation.
    #[arg(long, default_value_t = TrainConfig::default().val_fraction)]
    val_fraction: f64,
    /// Validate every N steps (0: only at the end).
    #[arg(long, default_value_t = TrainConfig::default().eval_every)]
    eval_every: usize,
    /// Warmup steps as a fraction of all steps.
    #[arg(long, default_value_t = TrainConfig::default().warmup_ratio)]
    warmup_ratio: f64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = AdamWConfig::default().weight_decay)]
    weight_decay: f64,
    /// Clip the global gradient norm (0 disables).
    #[arg(long, default_value_t = TrainConfig::default().max_grad_norm.unwrap_or(0.0))]
    max_grad_norm: f64,
    /// Write a checkpoint every N steps to OUT/checkpoints (0: never).
    #[arg(long, default_value_t = TrainConfig::default().checkpoint_every)]
    checkpoint_every: usize,
    /// Gradient checkpointing per block: one more forward pass per step, far less memory
    /// (default: on when the base is packed; `false` with a packed base on the CPU is about 1.5x
    /// faster per step and holds every block's activations, but no decoded weights).
    #[arg(long)]
    checkpoint_blocks: Option<bool>,
    /// Resume from a checkpoint written by --checkpoint-every (same model, data and settings).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Precision of exported tensors: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: SaveDtype,
    /// Also write the merged full model to OUT/merged (Hugging Face folder).
    #[arg(long)]
    merged: bool,
    /// Also write the untrained initialisation to OUT/init (residual base + init adapter).
    #[arg(long)]
    export_init: bool,
    /// Output folder for the adapter.
    #[arg(long)]
    out: PathBuf,
}

impl TrainArgs {
    /// The library's config: its defaults, with what was given.
    fn config(&self) -> TrainConfig {
        TrainConfig {
            lr: self.lr,
            steps: self.steps,
            epochs: self.epochs,
            batch: self.batch,
            grad_accum: self.grad_accum,
            max_len: self.max_len,
            val_fraction: self.val_fraction,
            warmup_ratio: self.warmup_ratio,
            max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
            adamw: AdamWConfig {
                weight_decay: self.weight_decay,
                ..AdamWConfig::default()
            },
            seed: self.seed,
            eval_every: self.eval_every,
            checkpoint_every: self.checkpoint_every,
            checkpoint_blocks: self.checkpoint_blocks,
        }
    }
}

/// The CLI's side of the training loop: a progress bar, train_log.jsonl, checkpoint files.
struct CliHooks {
    bar: ProgressBar,
    log: std::fs::File,
    out: PathBuf,
}

impl TrainHooks for CliHooks {
    fn on_step(&mut self, m: &StepMetrics) {
        // The log is a record, not a result: a full disk must not stop training.
        let _ = writeln!(self.log, "{}", serde_json::to_string(m).unwrap_or_default());
        self.bar.set_length(m.total_steps as u64);
        self.bar.set_position(m.step as u64);
        self.bar.set_message(format!("loss {:.3}", m.loss));
    }

    fn on_checkpoint(&mut self, kind: CheckpointKind, bytes: Vec<u8>) -> Result<(), String> {
        if kind == CheckpointKind::LastGood {
            self.bar.abandon();
        }
        write_files_atomically(&self.out.join("checkpoints"), &[(kind.file_name(), bytes)])
            .map_err(|e| format!("{e:#}"))
    }
}

fn describe_data(data: &TrainData, max_len: usize) {
    eprintln!(
        "data: {} training and {} validation examples ({} truncated to --max-len {}, {} dropped)",
        data.train.len(),
        data.val.len(),
        data.truncated,
        max_len,
        data.dropped
    );
}

/// Prints what the run will hold, and warns (naming settings that fit) when that passes the
/// memory this machine has free.
fn print_memory_plan(
    m: &lora_null::engine::LoadedModel,
    lora: &lora_null::lora::LoraConfig,
    cfg: &TrainConfig,
    data: &TrainData,
) -> anyhow::Result<()> {
    let basis = m.plan_basis(&lora.targets)?;
    let settings = TrainSettings {
        batch: cfg.batch,
        tokens: data.train.iter().map(|e| e.ids.len()).max().unwrap_or(cfg.max_len),
        rank: lora.rank,
        trains_down: lora.method.trains_down(),
        blockwise: cfg.checkpoint_blocks,
    };
    let plan = basis.plan(&settings);
    eprintln!(
        "memory plan: weights {} ({}), adapter and optimiser {}, activations {} (batch {} x {} tokens{}), about {} in all",
        gib(plan.weights),
        if basis.packed { "packed" } else { "f32" },
        gib(plan.adapter),
        gib(plan.activations),
        settings.batch,
        settings.tokens,
        if basis.blockwise(&settings) {
            ", block by block"
        } else {
            ""
        },
        gib(plan.total)
    );
    if let Some(Err(too_big)) = available_memory().map(|free| basis.check(&settings, free, "free on this machine")) {
        let flags = too_big.proposal.map_or_else(String::new, |(s, _)| {
            format!(
                " (--batch {} --max-len {}{})",
                s.batch,
                s.tokens,
                if s.blockwise == Some(true) {
                    " --checkpoint-blocks true"
                } else {
                    ""
                }
            )
        });
        let packing = if basis.packed {
            ""
        } else {
            "; a quantised GGUF with --base packed holds the base in its stored size"
        };
        eprintln!("warning: {too_big}{flags}{packing}");
    }
    Ok(())
}

/// `MemAvailable` from /proc/meminfo (Linux), bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// `lora-null train`.
pub fn train(a: TrainArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let lora_cfg = a.lora.config();
    let cfg = a.config();
    lora_cfg
        .check(a.calib.calib.is_some())
        .map_err(lora_null::engine::EngineError::from)?;
    let records = read_dataset(&a.data)?;
    let (mut m, choice) = load(&a.model)?;
    let data = m
        .training_data(&records, &cfg)
        .with_context(|| format!("training data {}", a.data.display()))?;
    describe_data(&data, a.max_len);
    print_memory_plan(&m, &lora_cfg, &cfg, &data)?;
    let mut summary = calibrate_and_init(&mut m, &a.calib, &lora_cfg, start)?;
    if let Some(map) = summary.as_object_mut() {
        map.remove("activation_energy_seen_by_A");
    }
    eprintln!("init: {summary}");
    if a.export_init {
        let files = pollster::block_on(m.export_init(a.dtype))?;
        write_files_atomically(&a.out.join("init"), &files)?;
    }
    let resume = match &a.resume {
        Some(path) => {
            Some(TrainState::from_bytes(&read(path)?).with_context(|| format!("resume from {}", path.display()))?)
        }
        None => None,
    };
    if let Some(state) = &resume {
        eprintln!("resuming at step {}", state.step);
    }
    eprintln!("training on {}", choice.description);
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(a.out.join("train_log.jsonl"))
        .context("cannot open train_log.jsonl")?;
    let mut hooks = CliHooks {
        bar: bar("training"),
        log,
        out: a.out.clone(),
    };
    let report = pollster::block_on(m.train(data, &cfg, resume.as_ref(), &mut hooks)).map_err(|e| {
        let diverged = matches!(
            e,
            lora_null::engine::EngineError::Train(lora_null::train::TrainError::NonFinite { .. })
        );
        let e = anyhow::Error::new(e);
        if diverged {
            e.context(format!(
                "the last good state is in {}/checkpoints/{} (resume with --resume)",
                a.out.display(),
                CheckpointKind::LastGood.file_name()
            ))
        } else {
            e
        }
    })?;
    hooks.bar.finish_and_clear();
    let (files, doubled) = pollster::block_on(m.export_peft(a.dtype))?;
    write_files_atomically(&a.out, &files)?;
    if a.merged {
        let files = pollster::block_on(m.hf_model_files(true, a.dtype))?;
        write_files_atomically(&a.out.join("merged"), &files)?;
    }
    if doubled {
        eprintln!(
            "note: the adapter is saved at rank {} (2 × {}) with lora_alpha {}: {} changed the base weights at initialisation, so the \
             export stores [A; A₀] and [B, −B₀], which applied to the ORIGINAL model gives exactly the trained one. Load it with \
             PeftModel.from_pretrained(original_base, \"{}\").",
            2 * lora_cfg.rank,
            lora_cfg.rank,
            if lora_cfg.use_rslora {
                lora_cfg.alpha * 2f64.sqrt()
            } else {
                2.0 * lora_cfg.alpha
            },
            lora_cfg.method.name(),
            a.out.display()
        );
    }
    let last = report.last.as_ref();
    let summary = serde_json::json!({
        "out": a.out.display().to_string(),
        "method": lora_cfg.method.name(),
        "steps": last.map(|x| x.step),
        "loss": last.map(|x| x.loss),
        "val_loss": last.and_then(|x| x.val_loss),
        "gpu_memory_after_last_step": last.and_then(|x| x.gpu_memory),
        "adapter_rank": if doubled { 2 * lora_cfg.rank } else { lora_cfg.rank },
        "seconds": start.elapsed().as_secs_f64(),
    });
    println!("{summary}");
    Ok(())
}
