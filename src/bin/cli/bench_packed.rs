//! `bench packed`: the packed base (decoded when each layer runs; training block by block)
//! against the same model decoded to f32 once, in one invocation: forward pass and LoRA training
//! step, same tokens, same device. On the CPU backend the packed base runs twice: decoded on the
//! host (what `packed` does there) and dequantised by the device operations a GPU runs
//! (`packed-device`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use lora_null::engine::{BaseStorage, LoadedModel};

use super::bench::{median, time_forward, time_train};
use super::files::{read_model_files, read_text};

/// `bench packed` options.
#[derive(Args)]
pub struct BenchPackedArgs {
    /// A .gguf model (its quantised and 16-bit matrices are what stays packed).
    #[arg(long)]
    model: PathBuf,
    /// Text to take the tokens from.
    #[arg(long)]
    text: PathBuf,
    /// Tokens per forward pass.
    #[arg(long, default_value_t = 512)]
    tokens: usize,
    /// LoRA rank of the training step.
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// Sequences per training step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Tokens per training sequence.
    #[arg(long, default_value_t = 128)]
    train_tokens: usize,
    /// Timed repetitions (forward passes and steps) after one warm-up.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// `cpu` (burn's CPU backend) or `wgpu` (any adapter, software ones included).
    #[arg(long, default_value = "cpu")]
    device: lora_null::device::DevicePreference,
}

/// Runs the storages on one device and prints one JSON line with their medians and ratios.
pub fn packed(a: BenchPackedArgs) -> anyhow::Result<()> {
    let text = read_text(&a.text)?;
    let files = read_model_files(&a.model)?;
    let choice = pollster::block_on(lora_null::device::select_device(a.device));
    let on_cpu = choice.adapter.is_none();
    let mut out = serde_json::Map::new();
    out.insert("device".into(), choice.description.clone().into());
    // (storage, name, block checkpointing in training: None is the trainer's default.)
    let storages: &[(BaseStorage, &str, Option<bool>)] = if on_cpu {
        &[
            (BaseStorage::F32, "f32", None),
            (BaseStorage::Packed, "packed", None),
            (BaseStorage::Packed, "packed-whole-graph", Some(false)),
            (BaseStorage::PackedDevice, "packed-device", None),
        ]
    } else {
        &[(BaseStorage::F32, "f32", None), (BaseStorage::Packed, "packed", None)]
    };
    for &(base, name, checkpoint_blocks) in storages {
        let device = choice.device.clone();
        let mut m = LoadedModel::load_as(&files, &device, base)
            .with_context(|| format!("cannot load {}", a.model.display()))?;
        let mut ids = m.tokenizer.encode(&text)?;
        anyhow::ensure!(
            ids.len() >= a.tokens.max(a.batch * a.train_tokens),
            "{} has {} tokens: too few for --tokens / --batch × --train-tokens",
            a.text.display(),
            ids.len()
        );
        ids.truncate(a.tokens);
        let (_, forward) = time_forward(&m, &ids, a.repeats)?;
        let (_, steps) = time_train(
            &mut m,
            &text,
            (a.rank, a.batch, a.train_tokens),
            a.repeats,
            checkpoint_blocks,
        )?;
        out.insert(
            name.into(),
            serde_json::json!({
                "forward_median_seconds": median(forward.clone()), "forward_seconds": forward,
                "step_median_seconds": median(steps.clone()), "step_seconds": steps,
            }),
        );
    }
    let ratio = |name: &str, key: &str| {
        out["f32"][key].as_f64().unwrap_or(f64::NAN) / out[name][key].as_f64().unwrap_or(f64::NAN)
    };
    let ratios: Vec<(String, f64)> = storages[1..]
        .iter()
        .flat_map(|&(_, name, _)| {
            [
                (
                    format!("forward_speed_{name}_vs_f32"),
                    ratio(name, "forward_median_seconds"),
                ),
                (format!("step_speed_{name}_vs_f32"), ratio(name, "step_median_seconds")),
            ]
        })
        .collect();
    out.insert("bench".into(), "packed".into());
    out.insert("tokens".into(), a.tokens.into());
    out.insert(
        "train".into(),
        serde_json::json!({"rank": a.rank, "batch": a.batch, "tokens": a.train_tokens}),
    );
    for (key, r) in ratios {
        out.insert(key, r.into());
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
