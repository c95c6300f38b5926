//! `lora-null train`: initialise, fine-tune, and export a PEFT adapter for the original base.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use lora_null::calib::EighCache;
use lora_null::io::safetensors::SaveDtype;
use lora_null::linalg::jobs::Inline;
use lora_null::train::optimizer::AdamWConfig;
use lora_null::train::{TrainConfig, TrainError, TrainState, Trainer, prepare};

use super::ModelArgs;
use super::adapt::{CalibArgs, LoraArgs, bar, base_name, calibrate, init_summary};
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
    #[arg(long, default_value_t = 1.0)]
    epochs: f64,
    /// Peak learning rate (warmup, then cosine to zero).
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Micro-batches per optimiser step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Truncate examples to this many tokens.
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    /// Seed for the data order and the validation split.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fraction of examples held out for validation.
    #[arg(long, default_value_t = 0.05)]
    val_fraction: f64,
    /// Validate every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    eval_every: usize,
    /// Warmup steps as a fraction of all steps.
    #[arg(long, default_value_t = 0.03)]
    warmup_ratio: f64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Clip the global gradient norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Write a checkpoint every N steps to OUT/checkpoints (0: never).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: usize,
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

/// `lora-null train`.
pub fn train(a: TrainArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let lora_cfg = a.lora.config();
    if lora_cfg.method.needs_calibration() && a.calib.calib.is_none() {
        anyhow::bail!(
            "method {} initialises from activation statistics: pass --calib FILE (text of the kind whose knowledge you want to keep)",
            lora_cfg.method.name()
        );
    }
    let records = read_dataset(&a.data)?;
    let (mut m, choice) = load(&a.model)?;
    let data = prepare(&records, &m.tokenizer, a.max_len, a.val_fraction, a.seed)
        .with_context(|| format!("training data {}", a.data.display()))?;
    eprintln!(
        "data: {} training and {} validation examples ({} truncated to --max-len {}, {} dropped)",
        data.train.len(),
        data.val.len(),
        data.truncated,
        a.max_len,
        data.dropped
    );
    let calib = calibrate(&m, &a.calib, &lora_cfg.targets)?;
    let pb = bar("initialising");
    pollster::block_on(m.init_adapters(
        lora_cfg.clone(),
        calib.as_ref(),
        &mut EighCache::default(),
        &Inline,
        &mut |d, t| {
            pb.set_length(t as u64);
            pb.set_position(d as u64);
        },
    ))?;
    pb.finish_and_clear();
    let mut summary = init_summary(&m, calib.as_ref(), start.elapsed().as_secs_f64());
    if let Some(map) = summary.as_object_mut() {
        map.remove("activation_energy_seen_by_A");
    }
    eprintln!("init: {summary}");
    let base = base_name(&a.model.model);
    if a.export_init {
        let files = pollster::block_on(m.export_init(&base, a.dtype))?;
        write_files_atomically(&a.out.join("init"), &files)?;
    }
    let cfg = TrainConfig {
        lr: a.lr,
        steps: a.steps,
        epochs: a.epochs,
        batch: a.batch,
        grad_accum: a.grad_accum,
        warmup_ratio: a.warmup_ratio,
        max_grad_norm: (a.max_grad_norm > 0.0).then_some(a.max_grad_norm),
        adamw: AdamWConfig {
            weight_decay: a.weight_decay,
            ..AdamWConfig::default()
        },
        seed: a.seed,
        eval_every: a.eval_every,
        checkpoint_every: a.checkpoint_every,
    };
    let pad = m.tokenizer.pad_or_eos();
    let mut trainer = Trainer::new(m.model.clone(), cfg.clone(), data, pad, lora_cfg.method.trains_down())?;
    if let Some(path) = &a.resume {
        let state = TrainState::from_bytes(&read(path)?).with_context(|| format!("resume from {}", path.display()))?;
        trainer.restore(&state)?;
        eprintln!("resumed at step {} of {}", state.step, trainer.total_steps());
    }
    eprintln!("training {} steps on {}", trainer.total_steps(), choice.description);
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(a.out.join("train_log.jsonl"))
        .context("cannot open train_log.jsonl")?;
    let pb = bar("training");
    pb.set_length(trainer.total_steps() as u64);
    pb.set_position(trainer.steps_done() as u64);
    let mut last = None;
    while !trainer.finished() {
        let mut metrics = match pollster::block_on(trainer.step()) {
            Ok(mt) => mt,
            Err(e @ TrainError::NonFinite { .. }) => {
                pb.abandon();
                let state = pollster::block_on(trainer.checkpoint())?;
                write_files_atomically(
                    &a.out.join("checkpoints"),
                    &[("last-good.safetensors".into(), state.to_bytes()?)],
                )?;
                return Err(anyhow::Error::new(e).context(format!(
                    "the last good state is in {}/checkpoints/last-good.safetensors (resume with --resume)",
                    a.out.display()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let step = metrics.step;
        if (cfg.eval_every > 0 && step.is_multiple_of(cfg.eval_every)) || trainer.finished() {
            metrics.val_loss = pollster::block_on(trainer.validate())?;
        }
        writeln!(log, "{}", serde_json::to_string(&metrics)?)?;
        pb.set_position(step as u64);
        pb.set_message(format!("loss {:.3}", metrics.loss));
        if cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every) {
            let bytes = pollster::block_on(trainer.checkpoint())?.to_bytes()?;
            write_files_atomically(
                &a.out.join("checkpoints"),
                &[(format!("step-{step:06}.safetensors"), bytes)],
            )?;
        }
        last = Some(metrics);
    }
    pb.finish_and_clear();
    m.model = trainer.into_model();
    let (files, doubled) = pollster::block_on(m.export_peft(&base, a.dtype))?;
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
    let summary = serde_json::json!({
        "out": a.out.display().to_string(),
        "method": lora_cfg.method.name(),
        "steps": last.as_ref().map(|x| x.step),
        "loss": last.as_ref().map(|x| x.loss),
        "val_loss": last.as_ref().and_then(|x| x.val_loss),
        "adapter_rank": if doubled { 2 * lora_cfg.rank } else { lora_cfg.rank },
        "seconds": start.elapsed().as_secs_f64(),
    });
    println!("{summary}");
    Ok(())
}
