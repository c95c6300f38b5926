//! What tells the architectures apart inside the one decoder, beyond shapes: the MLP's
//! activation, whether each layer attends globally or within a sliding window, and the values
//! Gemma 2 / 3 assume when config.json leaves them out.

use serde::{Deserialize, Serialize};

use super::config::{Architecture, ConfigError};

/// The MLP's gate activation (`hidden_act` / `hidden_activation` in config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `silu` (SwiGLU): the LLaMA family.
    #[serde(rename = "silu")]
    Silu,
    /// `gelu_pytorch_tanh` (GeGLU with the tanh approximation of GELU): Gemma.
    #[serde(rename = "gelu_pytorch_tanh")]
    GeluTanh,
}

/// Whether a layer attends globally or within the sliding window (config.json `layer_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerType {
    /// `full_attention`: every earlier position.
    FullAttention,
    /// `sliding_attention`: the last `sliding_window` positions, with the local RoPE base.
    SlidingAttention,
}

/// Gemma 2 / 3 defaults where config.json leaves a field out (transformers' `Gemma2Config`,
/// `Gemma3TextConfig`): the sliding-window pattern (every `n`-th layer global), window, RoPE bases,
/// query scalar and soft-caps.
pub(super) struct GemmaDefaults {
    pub(super) pattern: usize,
    pub(super) sliding_window: usize,
    pub(super) rope_theta: f64,
    pub(super) rope_local_base_freq: Option<f64>,
    pub(super) query_pre_attn_scalar: f64,
    pub(super) attn_logit_softcapping: Option<f64>,
    pub(super) final_logit_softcapping: Option<f64>,
}

pub(super) fn gemma_defaults(arch: Architecture) -> GemmaDefaults {
    match arch {
        Architecture::Gemma3 => GemmaDefaults {
            pattern: 6,
            sliding_window: 4096,
            rope_theta: 1_000_000.0,
            rope_local_base_freq: Some(10_000.0),
            query_pre_attn_scalar: 256.0,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
        },
        _ => GemmaDefaults {
            pattern: 2,
            sliding_window: 4096,
            rope_theta: 10_000.0,
            rope_local_base_freq: None,
            query_pre_attn_scalar: 256.0,
            attn_logit_softcapping: Some(50.0),
            final_logit_softcapping: Some(30.0),
        },
    }
}

/// Gemma's layer kinds for `n` layers: every `pattern`-th layer global, the others sliding
/// (transformers: `sliding_attention if (i + 1) % pattern else full_attention`).
pub fn gemma_layer_types(n: usize, pattern: usize) -> Vec<LayerType> {
    (0..n)
        .map(|i| {
            if pattern > 0 && (i + 1) % pattern == 0 {
                LayerType::FullAttention
            } else {
                LayerType::SlidingAttention
            }
        })
        .collect()
}

pub(super) fn parse_activation(name: &str) -> Result<Activation, ConfigError> {
    match name {
        "silu" | "swish" => Ok(Activation::Silu),
        "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
        other => Err(ConfigError::Invalid(format!(
            "hidden activation `{other}` is not supported; supported: silu, gelu_pytorch_tanh"
        ))),
    }
}

pub(super) fn default_activation() -> Activation {
    Activation::Silu
}
