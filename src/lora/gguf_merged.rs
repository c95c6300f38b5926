//! The fine-tuned model as one GGUF file for llama.cpp, Ollama or LM Studio: every adapter
//! merged into its weight, the weights written at the chosen precision through our own
//! quantisers (llama.cpp's reference rounding, `io::quants::quantize`), and everything else of
//! the source GGUF kept: its metadata (tokenizer, chat template, rope settings) copied as stored,
//! and tensors the model does not hold (e.g. `rope_freqs.weight`) copied byte for byte.

use std::collections::BTreeMap;

use super::export::{ExportError, model_tensors};
use super::linear::LoraModel;
use crate::io::HostTensor;
use crate::io::gguf::GgufFile;
use crate::io::gguf_model::{gguf_name, llama_cpp_permutes_qk, permute_rows};
use crate::io::gguf_write::{WriteTensor, WriteValue, write_gguf};
use crate::io::quants::QuantType;
use crate::io::quants::quantize::quantize;
use crate::model::ModelConfig;

/// The precision of a merged GGUF's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergedQuant {
    /// Every matrix in IEEE half precision.
    F16,
    /// Every matrix in Q8_0 (8-bit blocks of 32).
    Q8_0,
    /// llama-quantize's Q4_K_M mix: Q4_K, with Q6_K for the output/embedding and for `attn_v` and
    /// `ffn_down` of the layers llama.cpp gives more bits.
    Q4KM,
}

impl std::str::FromStr for MergedQuant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(Self::F16),
            "q8_0" => Ok(Self::Q8_0),
            "q4_k_m" => Ok(Self::Q4KM),
            other => Err(format!("unknown GGUF precision `{other}`; use f16, q8_0 or q4_k_m")),
        }
    }
}

impl MergedQuant {
    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_*`).
    fn file_type(self) -> u32 {
        match self {
            MergedQuant::F16 => 1,
            MergedQuant::Q8_0 => 7,
            MergedQuant::Q4KM => 15,
        }
    }
}

/// ggml's type id of IEEE half precision.
const F16: u32 = 1;

/// llama.cpp's `use_more_bits(i_layer, n_layers)`: the first and last eighth of the layers and
/// every third one between get the larger type in the `_M` mixes.
fn more_bits(layer: usize, n_layers: usize) -> bool {
    layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2
}

/// The type a tensor of `row` values per row gets, falling back where a K-quant's 256-value
/// blocks do not fit the rows (llama.cpp falls back the same way, to types of 32-value blocks).
fn pick(quant: MergedQuant, gguf: &str, row: usize, n_layers: usize) -> Option<QuantType> {
    let wanted = match quant {
        MergedQuant::F16 => return None,
        MergedQuant::Q8_0 => QuantType::Q8_0,
        MergedQuant::Q4KM => {
            let layer = gguf
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|l| l.parse().ok());
            let is = |t: &str| gguf.contains(&format!(".{t}."));
            match layer {
                None => QuantType::Q6_K,
                // llama-quantize treats Phi-3's fused `attn_qkv` as `attn_v`.
                Some(l) if (is("attn_v") || is("attn_qkv") || is("ffn_down")) && more_bits(l, n_layers) => {
                    QuantType::Q6_K
                }
                Some(_) => QuantType::Q4_K,
            }
        }
    };
    Some(if row.is_multiple_of(wanted.block_elems()) {
        wanted
    } else {
        QuantType::Q8_0
    })
}

/// One tensor's bytes at the chosen precision (1-D tensors stay F32, as llama.cpp keeps them).
fn encode(name: &str, t: &HostTensor, quant: MergedQuant, n_layers: usize) -> Result<WriteTensor, ExportError> {
    let row = *t.shape.last().unwrap_or(&1);
    if t.shape.len() < 2 {
        return Ok(WriteTensor::f32(name, t.shape.clone(), &t.data));
    }
    match pick(quant, name, row, n_layers).filter(|q| row.is_multiple_of(q.block_elems())) {
        Some(q) => Ok(WriteTensor {
            name: name.to_string(),
            shape: t.shape.clone(),
            ggml_type: q.id(),
            bytes: quantize(q, &t.data).ok_or_else(|| ExportError::Gguf(format!("{name}: cannot quantise")))?,
        }),
        None => Ok(WriteTensor {
            name: name.to_string(),
            shape: t.shape.clone(),
            ggml_type: F16,
            bytes: t
                .data
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        }),
    }
}

/// The merged model as GGUF bytes, laid out like `source` (the GGUF the base came from).
pub async fn gguf_merged(
    model: &LoraModel,
    cfg: &ModelConfig,
    source: &GgufFile<'_>,
    quant: MergedQuant,
) -> Result<Vec<u8>, ExportError> {
    let tensors = model_tensors(model, true).await?;
    let by_gguf: BTreeMap<String, (&String, &HostTensor)> = tensors
        .iter()
        .filter_map(|(hf, t)| gguf_name(hf, cfg.model_type).map(|g| (g, (hf, t))))
        .collect();
    let permute = llama_cpp_permutes_qk(cfg.model_type);
    let mut out = Vec::with_capacity(source.tensors.len());
    for info in &source.tensors {
        let Some(&(hf, t)) = by_gguf.get(&info.name) else {
            // Not part of the model we hold (e.g. rope_freqs): as stored.
            let bytes = source
                .tensor_bytes(info)
                .map_err(|e| ExportError::Gguf(e.to_string()))?;
            out.push(WriteTensor {
                name: info.name.clone(),
                shape: info.shape(),
                ggml_type: info.ggml_type.id(),
                bytes: bytes.to_vec(),
            });
            continue;
        };
        let heads = if hf.ends_with("self_attn.q_proj.weight") {
            Some(cfg.num_attention_heads)
        } else if hf.ends_with("self_attn.k_proj.weight") {
            Some(cfg.num_key_value_heads)
        } else {
            None
        };
        let t = match heads.filter(|_| permute) {
            Some(h) => {
                let (rows, cols) = (t.shape[0], t.shape.get(1).copied().unwrap_or(1));
                let data = permute_rows(&t.data, rows, cols, h)
                    .ok_or_else(|| ExportError::Gguf(format!("{}: rows do not split into {h} heads", info.name)))?;
                HostTensor::new(data, t.shape.clone())
            }
            // Gemma: llama.cpp stores norms with the 1 of `1 + w` added (GgufSource took it off).
            None if hf.ends_with("norm.weight") && cfg.model_type.norm_offset() != 0.0 => {
                let offset = cfg.model_type.norm_offset() as f32;
                HostTensor::new(t.data.iter().map(|v| v + offset).collect(), t.shape.clone())
            }
            None => t.clone(),
        };
        out.push(encode(&info.name, &t, quant, cfg.num_hidden_layers)?);
    }
    let metadata: Vec<(String, WriteValue)> = source
        .raw_metadata
        .iter()
        .map(|(key, ty, bytes)| {
            let value = match key.as_str() {
                "general.file_type" => WriteValue::U32(quant.file_type()),
                _ => WriteValue::Raw(*ty, bytes.to_vec()),
            };
            (key.clone(), value)
        })
        .collect();
    Ok(write_gguf(&metadata, &out))
}

/// An Ollama Modelfile for a merged GGUF (`ollama create NAME -f Modelfile` beside it); the
/// chat template and stop tokens come from the GGUF's metadata.
pub fn modelfile_merged(gguf_file_name: &str) -> String {
    format!("# ollama create my-model -f Modelfile\nFROM ./{gguf_file_name}\n")
}

/// An Ollama Modelfile applying an adapter GGUF to a base GGUF.
pub fn modelfile_adapter(base: &str, adapter_file_name: &str) -> String {
    format!("# ollama create my-model -f Modelfile\nFROM {base}\nADAPTER ./{adapter_file_name}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_q4_k_m_mix_gives_more_bits_where_llama_cpp_does() {
        let n = 16;
        let layers: Vec<usize> = (0..n).filter(|&l| more_bits(l, n)).collect();
        assert_eq!(layers, vec![0, 1, 4, 7, 10, 13, 14, 15]);
        let q = MergedQuant::Q4KM;
        assert_eq!(pick(q, "blk.0.attn_v.weight", 256, n), Some(QuantType::Q6_K));
        assert_eq!(pick(q, "blk.2.attn_v.weight", 256, n), Some(QuantType::Q4_K));
        assert_eq!(pick(q, "blk.2.attn_q.weight", 256, n), Some(QuantType::Q4_K));
        assert_eq!(pick(q, "blk.0.attn_qkv.weight", 256, n), Some(QuantType::Q6_K));
        assert_eq!(pick(q, "blk.2.attn_qkv.weight", 256, n), Some(QuantType::Q4_K));
        assert_eq!(pick(q, "token_embd.weight", 256, n), Some(QuantType::Q6_K));
        assert_eq!(
            pick(q, "blk.2.attn_q.weight", 576, n),
            Some(QuantType::Q8_0),
            "576 is not a multiple of 256"
        );
        assert_eq!(pick(MergedQuant::F16, "blk.2.attn_q.weight", 576, n), None);
        assert_eq!("Q4_K_M".parse::<MergedQuant>(), Ok(MergedQuant::Q4KM));
        assert!("q2_k".parse::<MergedQuant>().unwrap_err().contains("q4_k_m"));
    }
}
