//! `lora-null export`: an adapter directory (PEFT format, ours or anyone's) as llama.cpp's LoRA
//! adapter GGUF, for `llama-cli -m base.gguf --lora OUT.gguf` or an Ollama Modelfile's `ADAPTER`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::ModelArgs;
use super::files::{read, write_file_atomically};
use super::run::load;

/// `export` options.
#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The adapter directory (adapter_config.json + adapter_model.safetensors), trained for --model.
    #[arg(long)]
    adapter: PathBuf,
    /// Write llama.cpp's LoRA adapter GGUF here.
    #[arg(long)]
    gguf_adapter: PathBuf,
}

/// `lora-null export`.
pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    let config = read(&a.adapter.join("adapter_config.json"))?;
    let weights = read(&a.adapter.join("adapter_model.safetensors"))?;
    let (m, _) = load(&a.model)?;
    let bytes = m
        .peft_to_gguf_adapter(&config, &weights)
        .with_context(|| format!("cannot convert the adapter in {}", a.adapter.display()))?;
    write_file_atomically(&a.gguf_adapter, &bytes)?;
    println!(
        "{}",
        serde_json::json!({"gguf_adapter": a.gguf_adapter.display().to_string(), "bytes": bytes.len(),
            "architecture": lora_null::lora::gguf_adapter::llama_cpp_arch(m.config.model_type)})
    );
    eprintln!(
        "use it with: llama-cli -m <the base .gguf> --lora {0}   (Ollama Modelfile: FROM <base>, ADAPTER {0})",
        a.gguf_adapter.display()
    );
    Ok(())
}
