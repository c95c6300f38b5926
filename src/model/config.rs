//! The model configuration: a serde mirror of Hugging Face's `config.json` for the LLaMA family
//! (llama, mistral, qwen2, qwen3) and Gemma 2 / Gemma 3 (text), plus the derived quantities the
//! modules need.

use serde::{Deserialize, Serialize};

use super::variant::default_activation;
pub use super::variant::{Activation, LayerType, gemma_layer_types};

/// Architectures this crate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama 2/3/3.x, SmolLM/SmolLM2, TinyLlama (`LlamaForCausalLM`).
    Llama,
    /// Mistral (`MistralForCausalLM`): Llama with an optional sliding window.
    Mistral,
    /// Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`): Llama with q/k/v biases.
    Qwen2,
    /// Qwen3 (`Qwen3ForCausalLM`): Llama with an RMSNorm over each query and key head.
    Qwen3,
    /// Phi-3, 3.5 and 4-mini (`Phi3ForCausalLM`): Llama with q/k/v fused in `qkv_proj`, gate/up
    /// in `gate_up_proj`, partial rotary dimensions and LongRoPE scaling.
    Phi3,
    /// Gemma 2 (`Gemma2ForCausalLM`): scaled embeddings, `(1 + w)` norms around attention and
    /// MLP, GeGLU, alternating sliding-window and global layers, soft-capped scores and logits.
    Gemma2,
    /// Gemma 3 text (`Gemma3ForCausalLM`, `gemma3_text`): Gemma 2 without soft-capping, with
    /// per-head q/k norms and a separate RoPE base for its sliding-window layers.
    #[serde(rename = "gemma3_text")]
    Gemma3,
}

/// The `model_type` strings we accept, for error messages.
pub const SUPPORTED_ARCHITECTURES: &str = "llama, mistral, qwen2, qwen3, phi3, gemma2, gemma3 (text)";

/// More decoder layers than any real model has (Llama 3.1 405B: 126); a larger count is a
/// corrupt file, refused before anything is allocated per layer.
pub const MAX_LAYERS: usize = 4096;

/// Refuses a layer count above [`MAX_LAYERS`].
pub fn check_layer_count(n: usize) -> Result<(), ConfigError> {
    if n > MAX_LAYERS {
        return Err(ConfigError::Invalid(format!(
            "{n} layers is more than any model has (at most {MAX_LAYERS}); the file is corrupt"
        )));
    }
    Ok(())
}

impl Architecture {
    /// Parses a `model_type` (config.json) or `general.architecture` (GGUF) value.
    pub fn parse(name: &str) -> Result<Self, ConfigError> {
        match name {
            "llama" | "LlamaForCausalLM" => Ok(Self::Llama),
            "mistral" | "MistralForCausalLM" => Ok(Self::Mistral),
            "qwen2" | "Qwen2ForCausalLM" => Ok(Self::Qwen2),
            "qwen3" | "Qwen3ForCausalLM" => Ok(Self::Qwen3),
            "phi3" | "Phi3ForCausalLM" => Ok(Self::Phi3),
            "gemma2" | "Gemma2ForCausalLM" => Ok(Self::Gemma2),
            // GGUF calls it `gemma3`; Gemma3ForConditionalGeneration (`gemma3`, with vision) nests its
            // text config under `text_config`, which we do not read, so only the text model is accepted.
            "gemma3_text" | "Gemma3ForCausalLM" | "gemma3" => Ok(Self::Gemma3),
            other => Err(ConfigError::UnsupportedArchitecture(other.to_string())),
        }
    }

    /// The `model_type` string.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Phi3 => "phi3",
            Self::Gemma2 => "gemma2",
            Self::Gemma3 => "gemma3_text",
        }
    }

    /// The `architectures[0]` class name.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::Phi3 => "Phi3ForCausalLM",
            Self::Gemma2 => "Gemma2ForCausalLM",
            Self::Gemma3 => "Gemma3ForCausalLM",
        }
    }

    /// Whether attention normalises each query and key head (`q_norm`, `k_norm`).
    pub fn has_qk_norm(self) -> bool {
        matches!(self, Self::Qwen3 | Self::Gemma3)
    }

    /// Whether this is a Gemma: RMSNorm scales by `1 + w`, embeddings are multiplied by
    /// `√hidden`, and each block norms the outputs of attention and MLP too
    /// (`post_attention_layernorm` on attention's output, `pre_feedforward_layernorm` before the
    /// MLP, `post_feedforward_layernorm` after it).
    pub fn is_gemma(self) -> bool {
        matches!(self, Self::Gemma2 | Self::Gemma3)
    }

    /// What RMSNorm adds to its weight: 1 for Gemma (`x̂ · (1 + w)`), else 0 (`x̂ · w`).
    pub fn norm_offset(self) -> f64 {
        if self.is_gemma() { 1.0 } else { 0.0 }
    }

    /// Whether q/k/v and gate/up are fused layers (`qkv_proj`, `gate_up_proj`).
    pub fn fuses_projections(self) -> bool {
        self == Self::Phi3
    }
}

/// Errors in a model configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The architecture is not one we implement.
    #[error("architecture `{0}` is not supported; supported: {SUPPORTED_ARCHITECTURES}")]
    UnsupportedArchitecture(String),
    /// config.json did not parse or misses a field.
    #[error("config.json: {0}; the file is incomplete or not a Hugging Face model config")]
    Json(#[from] serde_json::Error),
    /// A value is out of range.
    #[error("config: {0}")]
    Invalid(String),
    /// A RoPE scaling type we do not implement.
    #[error("rope scaling type `{0}` is not supported; supported: default, linear, llama3, longrope")]
    UnsupportedRope(String),
}

/// RoPE frequency scaling (`rope_scaling` / `rope_parameters` in config.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Positions divided by `factor`.
    Linear {
        /// Scale factor.
        factor: f64,
    },
    /// Llama 3.1's piecewise frequency scaling.
    Llama3 {
        /// Scale factor for low frequencies.
        factor: f64,
        /// Wavelength threshold, as a fraction of the original context.
        low_freq_factor: f64,
        /// Wavelength threshold, as a fraction of the original context.
        high_freq_factor: f64,
        /// Context length the model was pre-trained with.
        original_max_position_embeddings: f64,
    },
    /// Phi-3's LongRoPE (also called `su`): per-frequency divisors, `short_factor` while every
    /// position is within the pre-training context and `long_factor` beyond it, and cos/sin
    /// multiplied by `attention_factor`.
    #[serde(alias = "su")]
    Longrope {
        /// Divisors for sequences within `original_max_position_embeddings`.
        short_factor: Vec<f64>,
        /// Divisors for longer sequences.
        long_factor: Vec<f64>,
        /// Context length the model was pre-trained with.
        original_max_position_embeddings: f64,
        /// Scale of cos and sin (default `√(1 + ln f / ln original)`, f = context / original).
        attention_factor: f64,
    },
}

/// The model hyper-parameters, field names as in config.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Which architecture.
    pub model_type: Architecture,
    /// Residual stream width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA); equals `num_attention_heads` for MHA.
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// Head dimensions that are rotated, from the first (`head_dim · partial_rotary_factor`);
    /// `None` rotates all of them.
    #[serde(default)]
    pub rotary_dim: Option<usize>,
    /// Whether `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Whether q/k/v/o have biases (`attention_bias`; always true for q/k/v on qwen2).
    pub attention_bias: bool,
    /// Context length.
    pub max_position_embeddings: usize,
    /// Sliding-window attention width, if any (mistral: every layer; Gemma: the layers whose
    /// `layer_types` entry is `sliding_attention`).
    pub sliding_window: Option<usize>,
    /// The MLP's gate activation.
    #[serde(default = "default_activation")]
    pub hidden_act: Activation,
    /// Per-layer attention kind, one per layer (all `full_attention` unless the architecture
    /// interleaves sliding-window layers; mistral's window applies to every layer regardless).
    #[serde(default)]
    pub layer_types: Vec<LayerType>,
    /// RoPE base of the sliding-window layers where it differs from `rope_theta` (Gemma 3's
    /// `rope_local_base_freq`; no scaling applies to it).
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    /// Attention scores are scaled by `query_pre_attn_scalar^-½` (Gemma) instead of `head_dim^-½`.
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma 2's attention soft-cap `c`: scores become `tanh(s / c) · c`.
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma 2's final soft-cap `c`: logits become `tanh(z / c) · c`.
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids (config.json allows one or a list).
    pub eos_token_id: Vec<u32>,
}

impl ModelConfig {
    /// Checks the invariants the modules rely on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("`{name}` must be positive")));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(ConfigError::Invalid(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            )));
        }
        if self.layer_types.len() != self.num_hidden_layers {
            return Err(ConfigError::Invalid(format!(
                "`layer_types` has {} entries for {} layers",
                self.layer_types.len(),
                self.num_hidden_layers
            )));
        }
        let positive_or_none = [
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
            ("attn_logit_softcapping", self.attn_logit_softcapping),
            ("final_logit_softcapping", self.final_logit_softcapping),
            ("rope_local_base_freq", self.rope_local_base_freq),
        ];
        if let Some((name, Some(v))) = positive_or_none
            .iter()
            .find(|(_, v)| v.is_some_and(|v| v.is_nan() || v <= 0.0))
        {
            return Err(ConfigError::Invalid(format!("`{name}` must be positive, got {v}")));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(ConfigError::Invalid(format!(
                "head_dim ({}) must be even for rotary embeddings",
                self.head_dim
            )));
        }
        let rot = self.rotary_dim();
        if rot == 0 || rot > self.head_dim || !rot.is_multiple_of(2) {
            return Err(ConfigError::Invalid(format!(
                "the rotary dimensions ({rot}) must be even and within head_dim ({})",
                self.head_dim
            )));
        }
        if let RopeScaling::Longrope {
            short_factor,
            long_factor,
            ..
        } = &self.rope_scaling
            && (short_factor.len() != rot / 2 || long_factor.len() != rot / 2)
        {
            return Err(ConfigError::Invalid(format!(
                "longrope needs {} short and long factors (one per rotated pair), got {} and {}",
                rot / 2,
                short_factor.len(),
                long_factor.len()
            )));
        }
        Ok(())
    }

    /// The config.json we write for exported or merged models (transformers-compatible).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "architectures": [self.model_type.class_name()],
            "model_type": self.model_type.model_type(),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "torch_dtype": "float32",
        });
        let map = v.as_object_mut().expect("invariant: json! object");
        let act = serde_json::to_value(self.hidden_act).expect("invariant: plain data");
        if self.model_type.is_gemma() {
            // Gemma's configs default the soft-caps to 50 / 30: write `null` where there is none.
            map.insert("hidden_activation".into(), act);
            map.insert("attention_bias".into(), self.attention_bias.into());
            map.insert(
                "layer_types".into(),
                serde_json::to_value(&self.layer_types).expect("invariant: plain data"),
            );
            // transformers' strict config wants an int here (Gemma2Config: `query_pre_attn_scalar: int`).
            let scalar = match self.query_pre_attn_scalar {
                Some(q) if q.fract() == 0.0 && q > 0.0 && q < u32::MAX as f64 => serde_json::json!(q as u64),
                other => serde_json::json!(other),
            };
            map.insert("query_pre_attn_scalar".into(), scalar);
            map.insert("attn_logit_softcapping".into(), self.attn_logit_softcapping.into());
            map.insert("final_logit_softcapping".into(), self.final_logit_softcapping.into());
            if let Some(local) = self.rope_local_base_freq {
                map.insert("rope_local_base_freq".into(), local.into());
            }
        } else {
            map.insert("hidden_act".into(), act);
        }
        if self.model_type == Architecture::Llama {
            map.insert("attention_bias".into(), self.attention_bias.into());
        }
        if self.rope_scaling != RopeScaling::Default {
            map.insert(
                "rope_scaling".into(),
                serde_json::to_value(&self.rope_scaling).expect("invariant: plain data"),
            );
        }
        if let RopeScaling::Longrope {
            original_max_position_embeddings,
            ..
        } = &self.rope_scaling
        {
            map.insert(
                "original_max_position_embeddings".into(),
                (*original_max_position_embeddings as usize).into(),
            );
        }
        if let Some(rot) = self.rotary_dim {
            map.insert(
                "partial_rotary_factor".into(),
                (rot as f64 / self.head_dim as f64).into(),
            );
        }
        if let Some(w) = self.sliding_window {
            map.insert("sliding_window".into(), w.into());
        }
        if let Some(bos) = self.bos_token_id {
            map.insert("bos_token_id".into(), bos.into());
        }
        match self.eos_token_id.as_slice() {
            [] => {}
            [one] => {
                map.insert("eos_token_id".into(), (*one).into());
            }
            many => {
                map.insert("eos_token_id".into(), many.into());
            }
        }
        v
    }

    /// Head dimensions that are rotated.
    pub fn rotary_dim(&self) -> usize {
        self.rotary_dim.unwrap_or(self.head_dim)
    }

    /// Number of parameters of the base model.
    pub fn num_parameters(&self) -> usize {
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let q = self.num_attention_heads * hd;
        let kv = self.num_key_value_heads * hd;
        let bias = if self.attention_bias { q + 2 * kv } else { 0 };
        let qk_norm = if self.model_type.has_qk_norm() { 2 * hd } else { 0 };
        let norms = if self.model_type.is_gemma() { 4 * h } else { 2 * h };
        let block = h * q + 2 * h * kv + q * h + bias + qk_norm + 3 * h * i + norms;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + h + self.num_hidden_layers * block
    }
}
