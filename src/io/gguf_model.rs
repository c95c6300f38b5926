//! A GGUF file as a complete model: config from llama.cpp's metadata keys, tensors under their
//! Hugging Face names (with llama.cpp's q/k row permutation and Gemma's norm shift undone), and
//! the tokenizer.

use std::sync::Arc;

use super::file_bytes::TensorBytes;
use super::gguf::{GgmlType, GgufError, GgufFile};
use crate::model::config::{Activation, LayerType, gemma_layer_types};
use crate::model::packed::{DeviceForm, PackedMatrix, RowDecoder, bf16_rows, f16_rows};
use crate::model::weights::{WeightError, Weights};
use crate::model::{Architecture, ConfigError, ModelConfig, RopeScaling, Target};

/// Reads the model configuration from `{arch}.*` metadata.
pub fn config_from_gguf(file: &GgufFile) -> Result<ModelConfig, GgufError> {
    let arch_name = file.get_str("general.architecture")?;
    let model_type = Architecture::parse(arch_name).map_err(|e| match e {
        ConfigError::UnsupportedArchitecture(a) => GgufError::MissingKey {
            key: format!(
                "general.architecture (`{a}` is not supported; supported: {})",
                crate::model::config::SUPPORTED_ARCHITECTURES
            ),
            expected: "a supported architecture",
        },
        _ => GgufError::Truncated(e.to_string()),
    })?;
    let key = |k: &str| format!("{arch_name}.{k}");
    let usize_key = |k: &str| -> Result<usize, GgufError> {
        usize::try_from(file.get_int(&key(k))?).map_err(|_| GgufError::MissingKey {
            key: key(k),
            expected: "a non-negative integer",
        })
    };
    let opt_usize = |k: &str| {
        file.get(&key(k))
            .and_then(|v| v.as_int())
            .and_then(|v| usize::try_from(v).ok())
    };
    let opt_f64 = |k: &str| file.get(&key(k)).and_then(|v| v.as_f64());
    let heads = usize_key("attention.head_count")?;
    let hidden = usize_key("embedding_length")?;
    let vocab_size = match opt_usize("vocab_size") {
        Some(v) => v,
        None => file.get_str_array("tokenizer.ggml.tokens")?.len(),
    };
    let head_dim = opt_usize("attention.key_length").unwrap_or(hidden / heads.max(1));
    let max_position_embeddings = opt_usize("context_length").unwrap_or(2048);
    let rope_scaling = match file.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
        Some("linear") => RopeScaling::Linear {
            factor: opt_f64("rope.scaling.factor").unwrap_or(1.0),
        },
        _ => match longrope_from_gguf(file, max_position_embeddings, opt_usize, opt_f64)? {
            Some(longrope) => longrope,
            None => RopeScaling::Default,
        },
    };
    // llama.cpp's `rope.dimension_count`: Phi-3's partial rotation (Phi-4-mini rotates 3/4).
    let rotary_dim = opt_usize("rope.dimension_count").filter(|&d| d != head_dim);
    // Phi-3's converter writes 0 for "no window" (Phi-4); Mistral's window is real.
    let sliding_window = match model_type {
        Architecture::Mistral | Architecture::Phi3 | Architecture::Gemma2 | Architecture::Gemma3 => {
            opt_usize("attention.sliding_window").filter(|&w| w > 0)
        }
        _ => None,
    };
    let token_id = |k: &str| file.get(k).and_then(|v| v.as_int()).and_then(|v| u32::try_from(v).ok());
    let layers = usize_key("block_count")?;
    crate::model::config::check_layer_count(layers).map_err(|e| GgufError::Truncated(e.to_string()))?;
    let gemma = model_type
        .is_gemma()
        .then(|| gemma_from_gguf(file, arch_name, model_type, layers, sliding_window));
    let cfg = ModelConfig {
        model_type,
        hidden_size: hidden,
        intermediate_size: usize_key("feed_forward_length")?,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: opt_usize("attention.head_count_kv").unwrap_or(heads),
        head_dim,
        vocab_size,
        rms_norm_eps: opt_f64("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        rope_theta: opt_f64("rope.freq_base").unwrap_or(10_000.0),
        rope_scaling,
        rotary_dim,
        tie_word_embeddings: file.tensor_info("output.weight").is_none(),
        attention_bias: file.tensor_info("blk.0.attn_q.bias").is_some(),
        max_position_embeddings,
        sliding_window,
        hidden_act: if model_type.is_gemma() {
            Activation::GeluTanh
        } else {
            Activation::Silu
        },
        layer_types: match (&gemma, sliding_window) {
            (Some(g), _) => g.layer_types.clone(),
            // Mistral's (and Phi-3's) window applies to every layer.
            (None, Some(_)) => vec![LayerType::SlidingAttention; layers],
            (None, None) => vec![LayerType::FullAttention; layers],
        },
        rope_local_base_freq: gemma.as_ref().and_then(|g| g.rope_local_base_freq),
        // llama.cpp stores no query_pre_attn_scalar: it scales by 1/√head_dim, and by
        // 1/√(hidden/heads) for the 27B models (models/gemma2.cpp, gemma3.cpp: LLM_TYPE_27B).
        query_pre_attn_scalar: gemma.as_ref().map(|g| {
            if g.is_27b {
                (hidden / heads.max(1)) as f64
            } else {
                head_dim as f64
            }
        }),
        attn_logit_softcapping: gemma.as_ref().and_then(|_| opt_f64("attn_logit_softcapping")),
        final_logit_softcapping: gemma.as_ref().and_then(|_| opt_f64("final_logit_softcapping")),
        bos_token_id: token_id("tokenizer.ggml.bos_token_id"),
        eos_token_id: token_id("tokenizer.ggml.eos_token_id").into_iter().collect(),
    };
    cfg.validate().map_err(|e| GgufError::Truncated(e.to_string()))?;
    Ok(cfg)
}

/// What a Gemma GGUF says (or llama.cpp assumes) beyond the LLaMA keys.
struct GemmaGguf {
    layer_types: Vec<LayerType>,
    rope_local_base_freq: Option<f64>,
    is_27b: bool,
}

/// Gemma's layer kinds and local RoPE base as llama.cpp reads them (`load_swa_pattern`:
/// `attention.sliding_window_pattern` as a per-layer array or a period, else 2 for gemma2 and 6
/// for gemma3; no window means every layer is global), and its 27B rule.
fn gemma_from_gguf(
    file: &GgufFile,
    arch_name: &str,
    arch: Architecture,
    layers: usize,
    window: Option<usize>,
) -> GemmaGguf {
    let key = |k: &str| format!("{arch_name}.{k}");
    let pattern = file.get(&key("attention.sliding_window_pattern"));
    let from_array = pattern.and_then(|v| v.as_array()).map(|a| {
        a.iter()
            .map(|v| match v.as_bool() {
                Some(true) => LayerType::SlidingAttention,
                _ => LayerType::FullAttention,
            })
            .collect::<Vec<_>>()
    });
    let period = pattern
        .and_then(|v| v.as_int())
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(if arch == Architecture::Gemma2 { 2 } else { 6 });
    let layer_types = match (window, from_array) {
        (None, _) => vec![LayerType::FullAttention; layers],
        (Some(_), Some(types)) => types,
        (Some(_), None) => gemma_layer_types(layers, period),
    };
    // llama.cpp: gemma3's sliding layers use `rope.freq_base_swa`, default 10000 (llama-hparams.h);
    // gemma2's use the global base.
    let rope_local_base_freq = (arch == Architecture::Gemma3).then(|| {
        file.get(&key("rope.freq_base_swa"))
            .and_then(|v| v.as_f64())
            .unwrap_or(10_000.0)
    });
    let is_27b = matches!((arch, layers), (Architecture::Gemma2, 46) | (Architecture::Gemma3, 62));
    GemmaGguf {
        layer_types,
        rope_local_base_freq,
        is_27b,
    }
}

/// Phi-3's LongRoPE as llama.cpp's converter stores it: the factor lists as the tensors
/// `rope_factors_short.weight` / `rope_factors_long.weight`, with `rope.scaling.attn_factor` and
/// `rope.scaling.original_context_length`. `None` when the file has no factor tensors.
fn longrope_from_gguf(
    file: &GgufFile,
    max_position_embeddings: usize,
    opt_usize: impl Fn(&str) -> Option<usize>,
    opt_f64: impl Fn(&str) -> Option<f64>,
) -> Result<Option<RopeScaling>, GgufError> {
    let (short, long) = ("rope_factors_short.weight", "rope_factors_long.weight");
    if file.tensor_info(long).is_none() {
        return Ok(None);
    }
    let factors = |name: &str| -> Result<Vec<f64>, GgufError> {
        Ok(file.tensor_f32(name)?.0.into_iter().map(f64::from).collect())
    };
    let original = opt_usize("rope.scaling.original_context_length").ok_or_else(|| GgufError::MissingKey {
        key: "rope.scaling.original_context_length".into(),
        expected: "the pre-training context of a LongRoPE model",
    })? as f64;
    let factor = max_position_embeddings as f64 / original;
    let attention_factor = opt_f64("rope.scaling.attn_factor").unwrap_or(if factor <= 1.0 {
        1.0
    } else {
        (1.0 + factor.ln() / original.ln()).sqrt()
    });
    Ok(Some(RopeScaling::Longrope {
        short_factor: factors(short)?,
        long_factor: factors(long)?,
        original_max_position_embeddings: original,
        attention_factor,
    }))
}

/// Serves Hugging Face keys from a GGUF file.
pub struct GgufSource<'a> {
    file: &'a GgufFile<'a>,
    arch: Architecture,
    /// Query and key/value head counts for undoing llama.cpp's q/k permutation (llama only).
    permute_heads: Option<(usize, usize)>,
}

impl<'a> GgufSource<'a> {
    /// A source over `file`; `cfg` decides whether q/k rows need un-permuting.
    pub fn new(file: &'a GgufFile<'a>, cfg: &ModelConfig) -> Self {
        let permute_heads =
            llama_cpp_permutes_qk(cfg.model_type).then_some((cfg.num_attention_heads, cfg.num_key_value_heads));
        Self {
            file,
            arch: cfg.model_type,
            permute_heads,
        }
    }

    /// How many q/k heads llama.cpp's permutation of this tensor spans, if it permuted it.
    fn permuted_heads(&self, name: &str) -> Option<usize> {
        let (nh, nkv) = self.permute_heads?;
        if name.contains("self_attn.q_proj") {
            Some(nh)
        } else if name.contains("self_attn.k_proj") {
            Some(nkv)
        } else {
            None
        }
    }

    /// GGUF's `rope_freqs.weight` (Llama 3.1 frequency divisors), if present.
    pub fn rope_freq_factors(&self) -> Result<Option<Vec<f32>>, GgufError> {
        match self.file.tensor_info("rope_freqs.weight") {
            Some(_) => Ok(Some(self.file.tensor_f32("rope_freqs.weight")?.0)),
            None => Ok(None),
        }
    }
}

/// The GGUF tensor name for a Hugging Face key of a model of `arch`, or `None` if it has no
/// counterpart. Gemma's `post_attention_layernorm` norms attention's output (llama.cpp:
/// `post_attention_norm`), where the LLaMA family's is the norm before the MLP (`ffn_norm`).
pub fn gguf_name(hf: &str, arch: Architecture) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, param) = rest.rsplit_once('.')?;
    let short = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" if arch.is_gemma() => "post_attention_norm",
        "post_attention_layernorm" => "ffn_norm",
        "pre_feedforward_layernorm" if arch.is_gemma() => "ffn_norm",
        "post_feedforward_layernorm" if arch.is_gemma() => "post_ffw_norm",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        path => Target::ALL.into_iter().find(|t| t.path() == path)?.spec().gguf,
    };
    Some(format!("blk.{layer}.{short}.{param}"))
}

impl Weights for GgufSource<'_> {
    fn tensor(&self, name: &str) -> Result<Option<burn::tensor::TensorData>, WeightError> {
        let Some(gname) = gguf_name(name, self.arch) else {
            return Ok(None);
        };
        if self.file.tensor_info(&gname).is_none() {
            return Ok(None);
        }
        let (mut data, shape) = self
            .file
            .tensor_f32(&gname)
            .map_err(|e| WeightError::Source(e.to_string()))?;
        if let Some(h) = self.permuted_heads(name) {
            let cols = if shape.len() == 2 { shape[1] } else { 1 };
            data = unpermute_rows(&data, shape[0], cols, h).ok_or_else(|| WeightError::Shape {
                name: name.to_string(),
                expected: vec![h * 2, cols],
                got: shape.clone(),
            })?;
        }
        // llama.cpp's converter stores Gemma's norm weights with the 1 of `x̂ · (1 + w)` added
        // (conversion/gemma.py, modify_tensors): take it off, so the weight means what the
        // Hugging Face checkpoint's does.
        let offset = self.arch.norm_offset();
        if offset != 0.0 && name.ends_with("norm.weight") {
            data.iter_mut().for_each(|v| *v -= offset as f32);
        }
        Ok(Some(burn::tensor::TensorData::new(data, shape)))
    }

    fn packed(&self, name: &str) -> Result<Option<PackedMatrix>, WeightError> {
        let Some(gname) = gguf_name(name, self.arch) else {
            return Ok(None);
        };
        let Some(info) = self.file.tensor_info(&gname) else {
            return Ok(None);
        };
        let Some(decode) = row_decoder(info.ggml_type) else {
            return Ok(None);
        };
        if info.dims.len() != 2 {
            return Ok(None);
        }
        let source = |e: String| WeightError::Source(format!("{gname}: {e}"));
        // Packed matrices share the file's bytes: a file parsed from borrowed bytes serves none.
        let TensorBytes::Shared(bytes) = self.file.tensor_bytes(info).map_err(|e| source(e.to_string()))? else {
            return Ok(None);
        };
        let (rows, cols) = (info.dims[1], info.dims[0]);
        let mut m = PackedMatrix::new(bytes, rows, cols, &info.ggml_type.name(), decode).map_err(source)?;
        if let Some(form) = device_form(info.ggml_type) {
            m = m.with_device_form(form);
        }
        if let Some(h) = self.permuted_heads(name) {
            let order = unpermute_order(rows, h).ok_or_else(|| WeightError::Shape {
                name: name.to_string(),
                expected: vec![h * 2, cols],
                got: vec![rows, cols],
            })?;
            m = m.with_row_order(order).map_err(source)?;
        }
        Ok(Some(m))
    }

    fn describe(&self, name: &str) -> String {
        gguf_name(name, self.arch).map_or_else(String::new, |g| format!(" (GGUF tensor `{g}`)"))
    }
}

/// Decodes rows of a stored type that is worth keeping packed: the block-quantised types and the
/// 16-bit floats (f32 gains nothing).
fn row_decoder(t: GgmlType) -> Option<RowDecoder> {
    match t {
        GgmlType::F16 => Some(f16_rows()),
        GgmlType::Bf16 => Some(bf16_rows()),
        GgmlType::Quant(q) => Some(Arc::new(move |b, o| super::quants::dequantize_into(q, b, o))),
        _ => None,
    }
}

/// How a device reads a stored type without the host (see [`DeviceForm`]).
fn device_form(t: GgmlType) -> Option<DeviceForm> {
    match t {
        GgmlType::F16 => Some(DeviceForm::Half { exponent_bits: 5 }),
        GgmlType::Bf16 => Some(DeviceForm::Half { exponent_bits: 8 }),
        GgmlType::Quant(q) => {
            let form = q.code_form();
            Some(DeviceForm::Codes {
                bits: form.bits,
                group: form.group,
                zero: form.zero,
                codebook: form.codebook.map(|c| c.iter().map(|&v| f32::from(v)).collect()),
                offsets: form.offsets,
                split: Arc::new(move |b, c, s, o| super::quants::split::split_into(q, b, c, s, o)),
            })
        }
        _ => None,
    }
}

/// For each Hugging Face row of an un-permuted q/k matrix, the row llama.cpp stored it in (what
/// [`unpermute_rows`] moves), or `None` if `rows` is not a multiple of `2·heads`.
pub fn unpermute_order(rows: usize, heads: usize) -> Option<Vec<u32>> {
    let ids: Vec<f32> = (0..rows).map(|r| r as f32).collect();
    let moved = unpermute_rows(&ids, rows, 1, heads)?;
    Some(moved.into_iter().map(|r| r as u32).collect())
}

/// Whether llama.cpp's converter permutes the rows of `attn_q` / `attn_k` for this architecture
/// (its interleaved rotary layout: llama and mistral; qwen2 and qwen3 keep Hugging Face's).
pub fn llama_cpp_permutes_qk(arch: Architecture) -> bool {
    matches!(arch, Architecture::Llama | Architecture::Mistral)
}

/// llama.cpp's rotary permutation of q/k rows (what its converter does; the inverse of
/// [`unpermute_rows`]): within each head, halves `(j, i)` become interleaved pairs `(i, j)`.
/// Returns `None` if `rows` is not a multiple of `2·heads`.
pub fn permute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Option<Vec<f32>> {
    move_rows(data, rows, cols, heads, true)
}

/// Undoes llama.cpp's rotary permutation of q/k rows: within each head, rows stored as
/// interleaved pairs `(i, j)` go back to halves `(j, i)`:
/// `w.reshape(h, d/2, 2, cols).swapaxes(1, 2).reshape(rows, cols)` (transformers'
/// `reverse_permute_weights`). Returns `None` if `rows` is not a multiple of `2·heads`.
pub fn unpermute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Option<Vec<f32>> {
    move_rows(data, rows, cols, heads, false)
}

/// Within each head, row `j·half + i` (halves) ↔ row `2i + j` (interleaved pairs);
/// `interleave` picks the direction.
fn move_rows(data: &[f32], rows: usize, cols: usize, heads: usize, interleave: bool) -> Option<Vec<f32>> {
    if heads == 0 || !rows.is_multiple_of(2 * heads) || data.len() != rows * cols {
        return None;
    }
    let half = rows / heads / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let halves = h * 2 * half + j * half + i;
                let pairs = h * 2 * half + i * 2 + j;
                let (src, dst) = if interleave { (halves, pairs) } else { (pairs, halves) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
#[path = "gguf_device_tests.rs"]
mod device_tests;
