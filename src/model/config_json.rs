//! Reading Hugging Face's `config.json` into a [`ModelConfig`]: lenient about optional and
//! version-specific fields (`rope_scaling` or `rope_parameters`, Gemma 3's per-kind RoPE
//! parameters, `hidden_act` or `hidden_activation`), filling in what transformers' config
//! classes default to.

use serde::Deserialize;

use super::config::{Architecture, ConfigError, ModelConfig, RopeScaling};
use super::variant::{Activation, LayerType, gemma_defaults, gemma_layer_types, parse_activation};

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
    hidden_act: Option<String>,
    /// Gemma's name for `hidden_act`.
    hidden_activation: Option<String>,
    layer_types: Option<Vec<LayerType>>,
    sliding_window_pattern: Option<usize>,
    rope_local_base_freq: Option<f64>,
    query_pre_attn_scalar: Option<f64>,
    /// Missing (`None`: Gemma 2's default applies) differs from `null` (`Some(None)`: no cap).
    #[serde(default, deserialize_with = "present")]
    attn_logit_softcapping: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    final_logit_softcapping: Option<Option<f64>>,
}

/// Deserialises a field that is present (possibly `null`) as `Some(value)`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
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
        refuse_multimodal(json)?;
        let raw: RawConfig = serde_json::from_str(json)?;
        let arch_name = raw
            .model_type
            .clone()
            .or_else(|| raw.architectures.first().cloned())
            .ok_or_else(|| ConfigError::Invalid("config.json has neither `model_type` nor `architectures`".into()))?;
        let model_type = Architecture::parse(&arch_name)?;
        let gemma = model_type.is_gemma().then(|| gemma_defaults(model_type));
        // transformers ≥ 5 writes Gemma 3's `rope_parameters` per layer kind.
        let per_kind = raw
            .rope_parameters
            .as_ref()
            .filter(|p| p.get("full_attention").is_some());
        let rope_params = match per_kind {
            Some(p) => p.get("full_attention"),
            None => raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref()),
        };
        let rope_theta = raw
            .rope_theta
            .or_else(|| rope_params.and_then(|p| p.get("rope_theta")).and_then(|v| v.as_f64()))
            .unwrap_or(gemma.as_ref().map_or(10_000.0, |g| g.rope_theta));
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
        let local_theta = per_kind
            .and_then(|p| p.get("sliding_attention"))
            .and_then(|p| p.get("rope_theta"))
            .and_then(|v| v.as_f64());
        let sliding_window = match model_type {
            Architecture::Qwen2 | Architecture::Qwen3 if raw.use_sliding_window != Some(true) => None,
            Architecture::Llama => None,
            Architecture::Gemma2 | Architecture::Gemma3 => Some(
                raw.sliding_window
                    .unwrap_or(gemma.as_ref().map_or(4096, |g| g.sliding_window)),
            ),
            _ => raw.sliding_window,
        };
        let n = raw.num_hidden_layers;
        super::config::check_layer_count(n)?;
        let layer_types = match (&gemma, raw.layer_types) {
            (Some(_), Some(types)) => types,
            (Some(g), None) => gemma_layer_types(n, raw.sliding_window_pattern.unwrap_or(g.pattern)),
            // Mistral's (and Qwen's, when enabled) window applies to every layer.
            (None, _) if sliding_window.is_some() => vec![LayerType::SlidingAttention; n],
            (None, _) => vec![LayerType::FullAttention; n],
        };
        let act_name = raw.hidden_activation.or(raw.hidden_act);
        let hidden_act = match (act_name, &gemma) {
            (Some(name), _) => parse_activation(&name)?,
            (None, Some(_)) => Activation::GeluTanh,
            (None, None) => Activation::Silu,
        };
        let cap = |v: Option<Option<f64>>, default: Option<f64>| v.unwrap_or(default);
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
            // Gemma ties the output layer to the embeddings unless config.json says otherwise.
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(gemma.is_some()),
            attention_bias: raw.attention_bias.unwrap_or(model_type == Architecture::Qwen2),
            max_position_embeddings,
            sliding_window,
            hidden_act,
            layer_types,
            rope_local_base_freq: gemma
                .as_ref()
                .and_then(|g| local_theta.or(raw.rope_local_base_freq).or(g.rope_local_base_freq))
                .filter(|_| model_type == Architecture::Gemma3),
            query_pre_attn_scalar: gemma
                .as_ref()
                .map(|g| raw.query_pre_attn_scalar.unwrap_or(g.query_pre_attn_scalar)),
            attn_logit_softcapping: gemma
                .as_ref()
                .and_then(|g| cap(raw.attn_logit_softcapping, g.attn_logit_softcapping)),
            final_logit_softcapping: gemma
                .as_ref()
                .and_then(|g| cap(raw.final_logit_softcapping, g.final_logit_softcapping)),
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
}

/// Gemma 3 with vision (`Gemma3ForConditionalGeneration`, `model_type` `gemma3`) nests its text
/// model under `text_config`: say so, rather than that `hidden_size` is missing.
fn refuse_multimodal(json: &str) -> Result<(), ConfigError> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    if v.get("text_config").is_some() && v.get("hidden_size").is_none() {
        let name = v.get("model_type").and_then(|m| m.as_str()).unwrap_or("?");
        return Err(ConfigError::UnsupportedArchitecture(format!(
            "{name} (with a vision tower under `text_config`; its text model, gemma3_text, is supported)"
        )));
    }
    Ok(())
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
