//! The commands: each parses its files, calls the library, and presents the result.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lora_null::device::{DeviceChoice, list_adapters, select_device};
use lora_null::engine::{LoadProgress, LoadedModel};
use lora_null::eval::GenerateOptions;
use lora_null::model::memory::RunShape;

use super::ModelArgs;
use super::files::{read, read_model_files, read_text};

/// `--adapter`: a PEFT adapter to apply on top of the model.
#[derive(Args, Clone)]
pub struct AdapterArg {
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors), ours or
    /// anyone's, applied on top of --model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}

/// `generate` options.
#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    adapter: AdapterArg,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Wrap the prompt as a user turn of the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Sampling temperature (greedy when absent or 0).
    #[arg(long)]
    temperature: Option<f32>,
    /// Nucleus sampling mass (implies sampling; temperature defaults to 1).
    #[arg(long)]
    top_p: Option<f32>,
    /// Seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `eval` options.
#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    adapter: AdapterArg,
    /// A UTF-8 text file.
    #[arg(long)]
    text: PathBuf,
    /// Use only the first N tokens of the text.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Window length in tokens (windows do not overlap; the first token of each is not scored).
    #[arg(long, default_value_t = 512)]
    seq_len: usize,
    /// Also write the logits of the first window to this safetensors file (tensor "logits",
    /// [tokens, vocab], f32), for comparisons with other implementations (scripts/check_peft.py).
    #[arg(long)]
    dump_logits: Option<PathBuf>,
}

fn device(pref: lora_null::device::DevicePreference) -> DeviceChoice {
    let choice = pollster::block_on(select_device(pref));
    if let Some(w) = &choice.warning {
        eprintln!("warning: {w}");
    }
    choice
}

/// Loads the model, then applies `--adapter` if given.
pub fn load_with_adapter(args: &ModelArgs, adapter: &AdapterArg) -> anyhow::Result<(LoadedModel, DeviceChoice)> {
    let (mut m, choice) = load(args)?;
    if let Some(dir) = &adapter.adapter {
        let config = read(&dir.join("adapter_config.json"))?;
        let weights = read(&dir.join("adapter_model.safetensors"))?;
        let a = m
            .attach_peft(&config, &weights)
            .with_context(|| format!("cannot apply the adapter in {}", dir.display()))?;
        eprintln!(
            "adapter: {} modules from {} (r = {})",
            a.modules.len(),
            dir.display(),
            a.config.r
        );
    }
    Ok((m, choice))
}

/// Loads the model named by the arguments on the chosen device, with a bar over its blocks.
pub fn load(args: &ModelArgs) -> anyhow::Result<(LoadedModel, DeviceChoice)> {
    load_files(args, &read_model_files(&args.model)?)
}

/// Loads already-read model files on the device the arguments choose.
pub fn load_files(args: &ModelArgs, files: &lora_null::io::ModelFiles) -> anyhow::Result<(LoadedModel, DeviceChoice)> {
    let choice = device(args.device);
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} blocks").expect("invariant: static template"),
    );
    bar.set_message(format!("loading {} on {}", args.model.display(), choice.description));
    let loaded = pollster::block_on(LoadedModel::load_with_progress(
        files,
        &choice,
        args.base,
        &mut |p| match p {
            LoadProgress::Note(note) => bar.println(format!("note: {note}")),
            LoadProgress::Blocks(done, total) => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
        },
    ))
    .with_context(|| format!("cannot load {}", args.model.display()));
    bar.finish_and_clear();
    Ok((loaded?, choice))
}

/// `lora-null generate`.
pub fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    let (m, _) = load_with_adapter(&a.model, &a.adapter)?;
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature.or(a.top_p.map(|_| 1.0)),
        top_p: a.top_p,
        seed: a.seed,
        stop_ids: Vec::new(),
    };
    let mut printed = 0;
    let text = pollster::block_on(m.generate_text(&a.prompt, a.chat, &opts, &mut |so_far| {
        // Stream only whole characters that will not change as more tokens arrive.
        if so_far.len() > printed && !so_far.ends_with('\u{FFFD}') {
            use std::io::Write;
            print!("{}", &so_far[printed..]);
            let _ = std::io::stdout().flush();
            printed = so_far.len();
        }
    }))?;
    if text.len() > printed {
        print!("{}", &text[printed..]);
    }
    println!();
    Ok(())
}

/// `lora-null eval`.
pub fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let text = read_text(&a.text)?;
    if text.trim().is_empty() {
        anyhow::bail!(
            "{} is empty; give a text file with at least a few sentences",
            a.text.display()
        );
    }
    let (m, _) = load_with_adapter(&a.model, &a.adapter)?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} windows, ETA {eta}").expect("invariant: static template"),
    );
    let start = Instant::now();
    let report = pollster::block_on(m.perplexity_text(&text, a.max_tokens, a.seq_len, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }))?;
    bar.finish_and_clear();
    if let Some(path) = &a.dump_logits {
        let mut ids = m.tokenizer.encode(&text)?;
        ids.truncate(a.max_tokens.unwrap_or(usize::MAX).min(a.seq_len));
        let logits = pollster::block_on(lora_null::eval::logits(&m.model, &ids))?;
        let tensors = std::collections::BTreeMap::from([("logits".to_string(), logits)]);
        let bytes = lora_null::io::safetensors::to_safetensors_bytes(
            &tensors,
            lora_null::io::safetensors::SaveDtype::F32,
            None,
        )
        .map_err(anyhow::Error::msg)?;
        std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let out = serde_json::json!({
        "perplexity": report.perplexity,
        "tokens": report.tokens,
        "seconds": start.elapsed().as_secs_f64(),
    });
    println!("{out}");
    Ok(())
}

/// `lora-null info`.
pub fn info(a: ModelArgs) -> anyhow::Result<()> {
    let (m, choice) = load(&a)?;
    let mut v = serde_json::to_value(m.summary())?;
    v["device"] = choice.description.into();
    v["weight_bytes_as_loaded"] = m.weight_bytes().into();
    v["packed"] = m.model.has_packed_weights().into();
    // The plans of the defaults: eval's window, and train's batch and length with LoRA r 16.
    let packed = m.model.has_packed_weights();
    let train = lora_null::train::TrainConfig::default();
    let lora = lora_null::lora::LoraConfig::new(lora_null::lora::InitMethod::Lora, 16);
    let shape = |batch, tokens, trainable| RunShape {
        batch,
        tokens,
        trainable,
        blockwise: packed,
        packed,
        vocab_chunk: m.model.vocab_chunk,
        keeps_decoded: m.keeps_decoded(),
        keeps_scores: m.keeps_scores(),
    };
    v["memory_plan"] = serde_json::json!({
        "eval_1x512": m.memory_plan(&shape(1, 512, 0), false),
        format!("train_lora_r16_{}x{}", train.batch, train.max_len):
            m.memory_plan(&shape(train.batch, train.max_len, m.trainable_values(&lora)?), true),
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// `lora-null devices`.
pub fn devices() -> anyhow::Result<()> {
    let adapters = pollster::block_on(list_adapters());
    println!("{}", serde_json::to_string_pretty(&adapters)?);
    Ok(())
}

/// `probe` options.
#[derive(Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    adapter: AdapterArg,
    /// Questions, one JSON object per line: {"question": "...", "answers": ["...", ...]}.
    #[arg(long)]
    qa: PathBuf,
    /// Ask through the chat template instead of the plain prompt "Question: {q}\nAnswer:".
    #[arg(long)]
    chat: bool,
    /// Score only the first N questions.
    #[arg(long)]
    limit: Option<usize>,
    /// Also write each question's answer to this JSON Lines file.
    #[arg(long)]
    answers_out: Option<PathBuf>,
}

/// `lora-null probe`: greedy answers (cut at the first newline), exact match after lm-eval's
/// normalisation (case, punctuation, articles, whitespace; accents folded) against any answer,
/// and "answer contained". Prints {"exact_match": f, "contains": f, "n": n}.
pub fn probe(a: ProbeArgs) -> anyhow::Result<()> {
    let text = read_text(&a.qa)?;
    let mut items = lora_null::eval::probe::parse_probe(&a.qa.display().to_string(), &text)?;
    if let Some(n) = a.limit {
        items.truncate(n);
    }
    let (m, _) = load_with_adapter(&a.model, &a.adapter)?;
    let bar = ProgressBar::new(items.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} questions, ETA {eta}").expect("invariant: static template"),
    );
    let (score, answers) = pollster::block_on(m.probe(&items, a.chat, &mut |d, _| bar.set_position(d as u64)))?;
    bar.finish_and_clear();
    if let Some(path) = &a.answers_out {
        let lines: Vec<String> = items
            .iter()
            .zip(&answers)
            .map(|(q, ans)| {
                serde_json::json!({"question": q.question, "answers": q.answers, "output": ans}).to_string()
            })
            .collect();
        std::fs::write(path, lines.join("\n") + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{}", serde_json::to_string(&score)?);
    Ok(())
}
