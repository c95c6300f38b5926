//! Argument parsing and dispatch.

mod adapt;
mod bench;
mod bench_eigen;
mod bench_matmul;
mod bench_packed;
mod experiment;
mod export;
mod files;
mod run;
mod train;
mod words;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// LoRA-Null Studio: load LLaMA-family models (GGUF or Hugging Face), generate, score, and
/// fine-tune with activation-aware LoRA initialisations.
#[derive(Parser)]
#[command(name = "lora-null", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command that loads a model.
#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// A .gguf file, or a Hugging Face folder (config.json, tokenizer.json, *.safetensors).
    #[arg(long)]
    pub model: std::path::PathBuf,
    /// Where to run: `auto` (a hardware GPU through wgpu if present, else the CPU backend),
    /// `cpu`, or `wgpu` (any adapter, software ones included).
    #[arg(long, default_value = "auto")]
    pub device: lora_null::device::DevicePreference,
    /// How the frozen base is held: `auto` (packed above 1 GiB of f32 weights), `f32` (decoded
    /// once at load: fastest), or `packed` (quantised and 16-bit matrices, of a GGUF or of
    /// F16/BF16 safetensors, stay as stored and are decoded when their layer runs: QLoRA-style
    /// memory; on a GPU they stay there and are dequantised there), or `packed-device` (the GPU's
    /// layout and operations even on the CPU backend: for tests and benchmarks).
    #[arg(long, default_value = "auto")]
    pub base: lora_null::engine::BaseStorage,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a continuation of a prompt (greedy unless --temperature/--top-p are given).
    Generate(run::GenerateArgs),
    /// Perplexity of a text file. Prints {"perplexity": f, "tokens": n, "seconds": s}.
    ///
    /// The text is tokenised as the model's tokenizer does by default, cut into consecutive
    /// non-overlapping windows of --seq-len tokens, and each window is scored independently:
    /// token t is predicted from tokens < t of its window, so the first token of each window is
    /// not scored. "tokens" counts all tokens used.
    Eval(run::EvalArgs),
    /// Print a model summary as JSON.
    Info(ModelArgs),
    /// Collect activation statistics and write spectra.json plus SVG plots.
    Analyze(adapt::AnalyzeArgs),
    /// Initialise adapters and write the untrained adapter and the residual base.
    Init(adapt::InitArgs),
    /// Fine-tune with an initialisation method and write a PEFT adapter for the original base.
    Train(train::TrainArgs),
    /// Convert an adapter directory to llama.cpp's LoRA adapter GGUF (llama.cpp, Ollama).
    Export(export::ExportArgs),
    /// List the wgpu adapters this machine offers.
    Devices,
    /// Knowledge probe: greedy answers scored by exact match. Prints {"exact_match", "contains", "n"}.
    Probe(run::ProbeArgs),
    /// Run the same fine-tuning for several methods and seeds; score task, probe and prose.
    Experiment(experiment::ExperimentArgs),
    /// Benchmarks (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Entry point: parse, run, and turn errors into one line on stderr and a non-zero exit.
pub fn main() -> ExitCode {
    quiet_headless_vulkan();
    keep_freed_memory();
    #[cfg(feature = "gpu-autotune")]
    lora_null::device::keep_gpu_tuning_per_machine();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => run::generate(a),
        Command::Eval(a) => run::eval(a),
        Command::Info(a) => run::info(a),
        Command::Analyze(a) => adapt::analyze(a),
        Command::Init(a) => adapt::init(a),
        Command::Train(a) => train::train(a),
        Command::Export(a) => export::export(a),
        Command::Devices => run::devices(),
        Command::Probe(a) => run::probe(a),
        Command::Experiment(a) => experiment::experiment(a),
        Command::Bench(b) => bench::bench(b),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", words::error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// glibc hands every freed block over 128 KiB (most tensors) back to the kernel at once, so the
/// next tensor of that size is fresh pages the kernel must fault in and zero: 1.7 M page faults
/// in `bench train`'s four steps of SmolLM2-135M. Keeping freed memory in the heap for reuse
/// leaves 0.5 M and takes a step from 4.6 to 3.7 s (BENCHMARKS.md, "Freed memory kept").
/// The process then keeps its peak memory until it exits, which suits a command-line run.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets glibc allocator parameters; called first thing in `main`,
    // before any other thread exists. A refused setting (return 0) leaves glibc's default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Mesa's Vulkan drivers print "error: XDG_RUNTIME_DIR is invalid or not set" on headless
/// machines when wgpu probes them, which would break the one-line error contract; give them a
/// private runtime directory when none is set.
fn quiet_headless_vulkan() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join("lora-null-xdg-runtime");
        if std::fs::create_dir_all(&dir).is_ok() {
            // SAFETY: called first thing in `main`, before any other thread exists.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}
