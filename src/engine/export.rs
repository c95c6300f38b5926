//! The export files: the PEFT adapter for the ORIGINAL base, the untrained initialisation
//! (residual base + init adapter), and a full Hugging Face model folder (optionally merged).
//! Everything is built in memory first: the CLI writes the files atomically, the page offers
//! them as downloads only once all are built.

use super::{EngineError, LoadedModel};
use crate::io::ModelFiles;
use crate::io::peft::write_adapter;
use crate::io::safetensors::{SaveDtype, to_safetensors_bytes};
use crate::lora::export::{ExportError, init_adapter, model_tensors, peft_adapter};
use crate::lora::gguf_adapter::gguf_adapter;
use crate::lora::gguf_merged::{MergedQuant, gguf_merged};

/// Named files to write (relative paths).
pub type ExportFiles = Vec<(String, Vec<u8>)>;

impl LoadedModel {
    fn adapter_state(&self) -> Result<&super::AdapterState, EngineError> {
        self.adapter
            .as_ref()
            .ok_or(EngineError::Export(ExportError::NoAdapters))
    }

    /// The PEFT adapter files for the ORIGINAL base model, and whether the rank was doubled
    /// (methods that changed the base are exported at rank 2r).
    pub async fn export_peft(&self, dtype: SaveDtype) -> Result<(ExportFiles, bool), EngineError> {
        let state = self.adapter_state()?;
        let (adapter, doubled) = peft_adapter(&self.model, &state.config, &state.init, &self.base_name).await?;
        Ok((write_adapter(&adapter, dtype)?, doubled))
    }

    /// The trained adapter as llama.cpp's LoRA adapter GGUF for the ORIGINAL base (rank 2r for
    /// methods that changed the base, as for PEFT), and whether the rank was doubled.
    pub async fn export_gguf_adapter(&self) -> Result<(Vec<u8>, bool), EngineError> {
        let state = self.adapter_state()?;
        let (adapter, doubled) = peft_adapter(&self.model, &state.config, &state.init, &self.base_name).await?;
        Ok((gguf_adapter(&adapter, &self.config, &self.base_name)?, doubled))
    }

    /// The fine-tuned model as one GGUF (adapters merged, weights at `quant`), laid out like the
    /// GGUF in `source` (the files the base was loaded from), whose tokenizer, chat template and
    /// settings it keeps. `lora::gguf_merged::modelfile_merged` writes its Ollama Modelfile.
    pub async fn export_gguf_merged(&self, source: &ModelFiles, quant: MergedQuant) -> Result<Vec<u8>, EngineError> {
        let name = source.names().find(|n| n.ends_with(".gguf")).ok_or_else(|| {
            ExportError::Gguf(
                "a merged GGUF copies the base GGUF's tokenizer and settings: load the base from a .gguf \
                 (llama.cpp's convert_hf_to_gguf.py converts a Hugging Face folder)"
                    .into(),
            )
        })?;
        let file = source.gguf(name)?;
        Ok(gguf_merged(&self.model, &self.config, &file, quant).await?)
    }

    /// A PEFT adapter directory's two files (ours or anyone's) as llama.cpp's LoRA adapter GGUF
    /// for this model.
    pub fn peft_to_gguf_adapter(&self, config_json: &[u8], weights: &[u8]) -> Result<Vec<u8>, EngineError> {
        let adapter = crate::io::peft::read_adapter(config_json, weights)?;
        Ok(gguf_adapter(&adapter, &self.config, &self.base_name)?)
    }

    /// The untrained initialisation as a residual base model plus an init adapter (native rank,
    /// `init_lora_weights: true`), for continuing with PEFT elsewhere. Files are prefixed with
    /// `residual_model/` and `init_adapter/`. Must be called before training changes the factors.
    pub async fn export_init(&self, dtype: SaveDtype) -> Result<ExportFiles, EngineError> {
        let state = self.adapter_state()?;
        let mut files = Vec::new();
        let adapter = init_adapter(&state.config, &state.init, &self.base_name);
        for (name, bytes) in write_adapter(&adapter, dtype)? {
            files.push((format!("init_adapter/{name}"), bytes));
        }
        for (name, bytes) in self.hf_model_files(false, dtype).await? {
            files.push((format!("residual_model/{name}"), bytes));
        }
        Ok(files)
    }

    /// A full Hugging Face model folder: `config.json`, `model.safetensors`, `tokenizer.json`,
    /// `tokenizer_config.json`; with `merge`, every adapter is merged into its weight.
    pub async fn hf_model_files(&self, merge: bool, dtype: SaveDtype) -> Result<ExportFiles, EngineError> {
        let tensors = model_tensors(&self.model, merge).await?;
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        let weights = to_safetensors_bytes(&tensors, dtype, Some(meta)).map_err(crate::io::peft::PeftError::Weights)?;
        let mut config = self.config.to_hf_json();
        config["torch_dtype"] = match dtype {
            SaveDtype::F32 => "float32",
            SaveDtype::F16 => "float16",
            SaveDtype::Bf16 => "bfloat16",
        }
        .into();
        Ok(vec![
            ("config.json".into(), pretty(&config)),
            ("model.safetensors".into(), weights),
            ("tokenizer.json".into(), self.tokenizer.to_json()?.into_bytes()),
            ("tokenizer_config.json".into(), pretty(&self.tokenizer.config_json())),
        ])
    }
}

fn pretty(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("invariant: JSON values serialise")
}
