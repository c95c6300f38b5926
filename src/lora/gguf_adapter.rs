//! A LoRA adapter in llama.cpp's adapter GGUF (`general.type = adapter`, `adapter.type = lora`,
//! `adapter.lora.alpha`, tensors `blk.N.<tensor>.weight.lora_a` / `.lora_b`), for
//! `llama-cli -m base.gguf --lora adapter.gguf` and an Ollama Modelfile's `ADAPTER`. It is built
//! from the PEFT adapter for the ORIGINAL base (so methods that changed the base come at rank 2r,
//! as for PEFT), with the rows of the q/k up projections permuted as llama.cpp's converter
//! permutes `attn_q` / `attn_k` (llama, mistral), and shapes as llama.cpp checks them
//! (`src/llama-adapter.cpp`): `lora_a` is `[r, in]`, `lora_b` `[out, r]` in PyTorch order.

use super::export::ExportError;
use crate::io::gguf_model::{gguf_name, llama_cpp_permutes_qk, permute_rows};
use crate::io::gguf_write::{WriteTensor, WriteValue, write_gguf};
use crate::io::peft::{PeftAdapter, peft_prefix};
use crate::model::{Architecture, ModelConfig, Target};

/// llama.cpp's architecture name for a model of `arch` (its converter writes Mistral as llama).
pub fn llama_cpp_arch(arch: Architecture) -> &'static str {
    match arch {
        Architecture::Llama | Architecture::Mistral => "llama",
        Architecture::Qwen2 => "qwen2",
        Architecture::Qwen3 => "qwen3",
        Architecture::Phi3 => "phi3",
        Architecture::Gemma2 => "gemma2",
        Architecture::Gemma3 => "gemma3",
    }
}

/// The adapter GGUF's bytes. llama.cpp scales every module by `alpha / r` with one `alpha`; a
/// module whose PEFT scale differs (rsLoRA, `alpha_pattern`, `rank_pattern`) gets the ratio folded
/// into its `lora_b`, so each module's update `s·B·A` is exactly PEFT's.
pub fn gguf_adapter(adapter: &PeftAdapter, cfg: &ModelConfig, base_name: &str) -> Result<Vec<u8>, ExportError> {
    let scale_of =
        |(layer, target): (usize, Target), r: usize| adapter.config.scale_for(&peft_prefix(layer, target), r);
    let (&first, m0) = adapter.modules.iter().next().ok_or(ExportError::NoAdapters)?;
    let alpha = scale_of(first, m0.a.shape[0]) * m0.a.shape[0] as f64;
    let mut tensors = Vec::with_capacity(2 * adapter.modules.len());
    for (&(layer, target), m) in &adapter.modules {
        let r = m.a.shape[0];
        let key = format!("model.layers.{layer}.{}.weight", target.path());
        let name =
            gguf_name(&key, cfg.model_type).ok_or_else(|| ExportError::Gguf(format!("`{key}` has no GGUF name")))?;
        let fold = (scale_of((layer, target), r) / (alpha / r as f64)) as f32;
        let mut b = m.b.data.iter().map(|v| v * fold).collect::<Vec<f32>>();
        let heads = match target {
            Target::Q => Some(cfg.num_attention_heads),
            Target::K => Some(cfg.num_key_value_heads),
            _ => None,
        };
        if let Some(h) = heads.filter(|_| llama_cpp_permutes_qk(cfg.model_type)) {
            let (out, rank) = (m.b.shape[0], m.b.shape[1]);
            b = permute_rows(&b, out, rank, h)
                .ok_or_else(|| ExportError::Gguf(format!("{name}: {out} rows do not split into {h} heads")))?;
        }
        tensors.push(WriteTensor::f32(format!("{name}.lora_a"), m.a.shape.clone(), &m.a.data));
        tensors.push(WriteTensor::f32(format!("{name}.lora_b"), m.b.shape.clone(), &b));
    }
    let metadata = vec![
        (
            "general.architecture".to_string(),
            WriteValue::Str(llama_cpp_arch(cfg.model_type).into()),
        ),
        ("general.type".to_string(), WriteValue::Str("adapter".into())),
        (
            "general.name".to_string(),
            WriteValue::Str(format!("LoRA for {base_name}")),
        ),
        ("adapter.type".to_string(), WriteValue::Str("lora".into())),
        ("adapter.lora.alpha".to_string(), WriteValue::F32(alpha as f32)),
    ];
    Ok(write_gguf(&metadata, &tensors))
}
