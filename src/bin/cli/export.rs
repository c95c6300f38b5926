//! `lora-null export`: an adapter directory (PEFT format, ours or anyone's) as llama.cpp's LoRA
//! adapter GGUF (`llama-cli -m base.gguf --lora OUT.gguf`, an Ollama Modelfile's `ADAPTER`), or
//! merged into the base as one GGUF (llama.cpp, Ollama, LM Studio), each with a Modelfile beside it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use lora_null::lora::gguf_merged::{MergedQuant, modelfile_adapter, modelfile_merged};

use super::ModelArgs;
use super::files::{read, read_model_files, write_file_atomically};
use super::run::load_files;

/// `export` options.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("out").required(true).args(["gguf_adapter", "gguf_merged"])))]
pub struct ExportArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The adapter directory (adapter_config.json + adapter_model.safetensors), trained for --model.
    #[arg(long)]
    adapter: PathBuf,
    /// Write llama.cpp's LoRA adapter GGUF here (and a Modelfile beside it).
    #[arg(long)]
    gguf_adapter: Option<PathBuf>,
    /// Write the adapter merged into the base as one GGUF here (and a Modelfile beside it); --model
    /// must be a .gguf (its tokenizer and settings are kept).
    #[arg(long)]
    gguf_merged: Option<PathBuf>,
    /// Precision of the merged GGUF's weights: f16, q8_0 or q4_k_m (llama.cpp's reference rounding).
    #[arg(long, default_value = "q8_0")]
    quant: MergedQuant,
}

/// The file name of `path`, for the Modelfile beside it.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// Writes `bytes` to `path` and a Modelfile beside it, and says how to use them.
fn write_with_modelfile(path: &Path, bytes: &[u8], modelfile: String) -> anyhow::Result<()> {
    write_file_atomically(path, bytes)?;
    let beside = path.with_file_name("Modelfile");
    write_file_atomically(&beside, modelfile.as_bytes())?;
    println!(
        "{}",
        serde_json::json!({"gguf": path.display().to_string(), "bytes": bytes.len(), "modelfile": beside.display().to_string()})
    );
    Ok(())
}

/// `lora-null export`.
pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    let config = read(&a.adapter.join("adapter_config.json"))?;
    let weights = read(&a.adapter.join("adapter_model.safetensors"))?;
    let files = read_model_files(&a.model.model)?;
    let (mut m, _) = load_files(&a.model, &files)?;
    let context = || format!("cannot export the adapter in {}", a.adapter.display());
    if let Some(out) = &a.gguf_adapter {
        let bytes = m.peft_to_gguf_adapter(&config, &weights).with_context(context)?;
        let base = a.model.model.canonicalize().unwrap_or_else(|_| a.model.model.clone());
        write_with_modelfile(
            out,
            &bytes,
            modelfile_adapter(&base.display().to_string(), &file_name(out)),
        )?;
        eprintln!(
            "use it with: llama-cli -m {} --lora {}",
            a.model.model.display(),
            out.display()
        );
    }
    if let Some(out) = &a.gguf_merged {
        m.attach_peft(&config, &weights).with_context(context)?;
        let bytes = pollster::block_on(m.export_gguf_merged(&files, a.quant)).with_context(context)?;
        write_with_modelfile(out, &bytes, modelfile_merged(&file_name(out)))?;
        eprintln!(
            "use it with: llama-cli -m {0}, or: ollama create my-model -f {1}",
            out.display(),
            out.with_file_name("Modelfile").display()
        );
    }
    Ok(())
}
