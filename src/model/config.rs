//! The model configuration: a serde mirror of Hugging Face's `config.json` for the LLaMA family
//! (llama, mistral, qwen2), plus the derived quantities the modules need.

use serde::{Deserialize, Serialize};

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
}

/// The `model_type` strings we accept, for error messages.
pub const SUPPORTED_ARCHITECTURES: &str = "llama, mistral, qwen2, qwen3, phi3";

impl Architecture {
    /// Parses a `model_type` (config.json) or `general.architecture` (GGUF) value.
    pub fn parse(name: &str) -> Result<Self, ConfigError> {
        match name {
            "llama" | "LlamaForCausalLM" => Ok(Self::Llama),
            "mistral" | "MistralForCausalLM" => Ok(Self::Mistral),
            "qwen2" | "Qwen2ForCausalLM" => Ok(Self::Qwen2),
            "qwen3" | "Qwen3ForCausalLM" => Ok(Self::Qwen3),
            "phi3" | "Phi3ForCausalLM" => Ok(Self::Phi3),
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
        }
    }

    /// Whether attention normalises each query and key head (`q_norm`, `k_norm`).
    pub fn has_qk_norm(self) -> bool {
        self == Self::Qwen3
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
    /// Sliding-window attention width, if any (mistral).
    pub sliding_window: Option<usize>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids (config.json allows one or a list).
    pub eos_token_id: Vec<u32>,
}

/// The raw config.json, lenient about optional and version-specific fields.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    /// transformers ≥ 5 writes `rope_parameters: {rope_type, rope_theta, ...}`.
    rope_parameters: Option<serde_json::Value>,
    partial_rotary_factor: Option<f64>,
    original_max_position_embeddings: Option<f64>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    max_position_embeddings: Option<usize>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

impl ModelConfig {
    /// Parses a Hugging Face `config.json`.
    pub fn from_hf_json(json: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_str(json)?;
        let arch_name = raw
            .model_type
            .clone()
            .or_else(|| raw.architectures.first().cloned())
            .ok_or_else(|| ConfigError::Invalid("config.json has neither `model_type` nor `architectures`".into()))?;
        let model_type = Architecture::parse(&arch_name)?;
        let rope_params = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
        let rope_theta = raw
            .rope_theta
            .or_else(|| rope_params.and_then(|p| p.get("rope_theta")).and_then(|v| v.as_f64()))
            .unwrap_or(10_000.0);
        let max_position_embeddings = raw.max_position_embeddings.unwrap_or(2048);
        let rope_scaling = match rope_params {
            Some(p) => parse_rope_scaling(p, max_position_embeddings, raw.original_max_position_embeddings)?,
            None => RopeScaling::Default,
        };
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads.max(1));
        let partial = raw
            .partial_rotary_factor
            .or_else(|| {
                rope_params
                    .and_then(|p| p.get("partial_rotary_factor"))
                    .and_then(|v| v.as_f64())
            })
            .unwrap_or(1.0);
        // transformers: int(head_dim * partial_rotary_factor)
        let rotary_dim =
            ((head_dim as f64 * partial) as usize != head_dim).then_some((head_dim as f64 * partial) as usize);
        let sliding_window = match model_type {
            Architecture::Qwen2 | Architecture::Qwen3 if raw.use_sliding_window != Some(true) => None,
            Architecture::Llama => None,
            _ => raw.sliding_window,
        };
        let cfg = ModelConfig {
            model_type,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            head_dim,
            vocab_size: raw.vocab_size,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            rotary_dim,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias: raw.attention_bias.unwrap_or(model_type == Architecture::Qwen2),
            max_position_embeddings,
            sliding_window,
            bos_token_id: raw.bos_token_id,
            eos_token_id: match raw.eos_token_id {
                Some(OneOrMany::One(id)) => vec![id],
                Some(OneOrMany::Many(ids)) => ids,
                None => Vec::new(),
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

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
            "hidden_act": "silu",
            "torch_dtype": "float32",
        });
        let map = v.as_object_mut().expect("invariant: json! object");
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
        let block = h * q + 2 * h * kv + q * h + bias + qk_norm + 3 * h * i + 2 * h;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + h + self.num_hidden_layers * block
    }
}

fn parse_rope_scaling(
    p: &serde_json::Value,
    max_position_embeddings: usize,
    top_level_original: Option<f64>,
) -> Result<RopeScaling, ConfigError> {
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let num = |key: &str| {
        p.get(key)
            .and_then(|v| v.as_f64())
            .ok_or_else(|| ConfigError::Invalid(format!("rope scaling `{kind}` needs a numeric `{key}`")))
    };
    match kind {
        "default" => Ok(RopeScaling::Default),
        "linear" => Ok(RopeScaling::Linear { factor: num("factor")? }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        }),
        "longrope" | "su" => {
            let factors = |key: &str| -> Result<Vec<f64>, ConfigError> {
                p.get(key)
                    .and_then(|v| v.as_array())
                    .and_then(|a| a.iter().map(|x| x.as_f64()).collect::<Option<Vec<f64>>>())
                    .ok_or_else(|| {
                        ConfigError::Invalid(format!("rope scaling `{kind}` needs a list of numbers `{key}`"))
                    })
            };
            // Phi-3 keeps `original_max_position_embeddings` at the top level of config.json.
            let original = num("original_max_position_embeddings")
                .ok()
                .or(top_level_original)
                .ok_or_else(|| ConfigError::Invalid("longrope needs `original_max_position_embeddings`".into()))?;
            // transformers' `_compute_longrope_parameters`.
            let factor = p
                .get("factor")
                .and_then(|v| v.as_f64())
                .unwrap_or(max_position_embeddings as f64 / original);
            let attention_factor = match p.get("attention_factor").and_then(|v| v.as_f64()) {
                Some(a) => a,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / original.ln()).sqrt(),
            };
            Ok(RopeScaling::Longrope {
                short_factor: factors("short_factor")?,
                long_factor: factors("long_factor")?,
                original_max_position_embeddings: original,
                attention_factor,
            })
        }
        other => Err(ConfigError::UnsupportedRope(other.to_string())),
    }
}
