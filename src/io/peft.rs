//! Hugging Face PEFT adapters (algorithm.md §4): writing `adapter_model.safetensors` +
//! `adapter_config.json` that `PeftModel.from_pretrained(base, dir)` loads onto the ORIGINAL
//! base model, and reading any PEFT LoRA adapter back.
//!
//! Methods that move part of W into the adapter (PiSSA, MiLoRA, OLoRA, CorDA, LoRA-Null v1)
//! train on the residual `W_res = W − s·B₀A₀`. On the original W the trained model is
//! `W + s·(BA − B₀A₀)`, which PEFT expresses at rank 2r: `lora_A = [A; A₀]`,
//! `lora_B = [B, −B₀]`, with `r` and `lora_alpha` doubled so the scale is unchanged. LoRA-Null-v2
//! freezes A (= A₀), so `ΔW = s·(B − B₀)·A₀` stays at rank r.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::host::HostTensor;
use super::safetensors::{SafetensorsSource, SaveDtype, to_safetensors_bytes};
use crate::model::Target;

/// The adapter of one module, ready to write (already converted for the original base).
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleAdapter {
    /// `lora_A.weight`, `[r, in]`.
    pub a: HostTensor,
    /// `lora_B.weight`, `[out, r]`.
    pub b: HostTensor,
}

/// A PEFT LoRA adapter in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftAdapter {
    /// Per (layer, module).
    pub modules: BTreeMap<(usize, Target), ModuleAdapter>,
    /// The config that goes with it.
    pub config: AdapterConfig,
}

/// `adapter_config.json` (the fields PEFT needs; unknown fields are ignored on load).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// Always "LORA".
    pub peft_type: String,
    /// Always "CAUSAL_LM" in ours (PEFT may write null).
    #[serde(default = "causal_lm", deserialize_with = "null_as_causal_lm")]
    pub task_type: String,
    /// Rank.
    pub r: usize,
    /// Alpha.
    pub lora_alpha: f64,
    /// Module names (`q_proj`, ...), or a regex string in configs written by others.
    pub target_modules: serde_json::Value,
    /// The base model this adapter applies to.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// `true` (the factors are final; PEFT must not re-initialise).
    #[serde(default = "json_true")]
    pub init_lora_weights: serde_json::Value,
    /// rsLoRA scaling (`alpha/√r`).
    #[serde(default)]
    pub use_rslora: bool,
    /// Dropout (0: none).
    #[serde(default)]
    pub lora_dropout: f64,
    /// Always "none".
    #[serde(default = "none_str")]
    pub bias: String,
    /// Always false for Llama linears.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Per-module rank overrides.
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides.
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
    /// DoRA (not supported when reading).
    #[serde(default)]
    pub use_dora: bool,
    /// Inference mode flag PEFT writes.
    #[serde(default = "bool_true")]
    pub inference_mode: bool,
}

fn causal_lm() -> String {
    "CAUSAL_LM".into()
}
fn null_as_causal_lm<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_else(causal_lm))
}
fn json_true() -> serde_json::Value {
    serde_json::Value::Bool(true)
}
fn none_str() -> String {
    "none".into()
}
fn bool_true() -> bool {
    true
}

impl AdapterConfig {
    /// A config for our adapters.
    pub fn new(r: usize, lora_alpha: f64, targets: &[Target], base: &str, use_rslora: bool) -> Self {
        Self {
            peft_type: "LORA".into(),
            task_type: causal_lm(),
            r,
            lora_alpha,
            target_modules: serde_json::Value::Array(
                targets
                    .iter()
                    .map(|t| serde_json::Value::String(t.module_name().into()))
                    .collect(),
            ),
            base_model_name_or_path: Some(base.to_string()),
            init_lora_weights: json_true(),
            use_rslora,
            lora_dropout: 0.0,
            bias: none_str(),
            fan_in_fan_out: false,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            use_dora: false,
            inference_mode: true,
        }
    }

    /// The scale of a module of rank `r` named `name` (honouring the patterns).
    pub fn scale_for(&self, key: &str, r: usize) -> f64 {
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(pat, _)| key.ends_with(pat.as_str()) || key.contains(pat.as_str()))
            .map_or(self.lora_alpha, |(_, a)| *a);
        if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        }
    }
}

/// Errors reading or writing PEFT adapters.
#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    /// A required file is missing.
    #[error(
        "the adapter directory has no {0}; a PEFT adapter needs adapter_config.json and adapter_model.safetensors (adapter_model.bin pickles are not supported: convert with PEFT's save_pretrained(safe_serialization=True))"
    )]
    MissingFile(&'static str),
    /// adapter_config.json is invalid.
    #[error("adapter_config.json: {0}")]
    Config(String),
    /// An unsupported PEFT feature.
    #[error("adapter_config.json: {0} is not supported; only plain LoRA adapters can be loaded")]
    Unsupported(String),
    /// The weights file is invalid.
    #[error("adapter_model.safetensors: {0}")]
    Weights(String),
    /// A tensor does not fit the model.
    #[error("adapter tensor `{name}` has shape {got:?}, but the model's {module} expects {expected}")]
    Shape {
        /// Tensor name.
        name: String,
        /// What was found.
        got: Vec<usize>,
        /// What the model needs.
        expected: String,
        /// Module.
        module: String,
    },
    /// The adapter adapts a layer the model does not have (another architecture's).
    #[error(
        "the adapter adapts `{module}`, which this model does not have (its adaptable layers are {have}); the adapter was made for another architecture"
    )]
    NoModule {
        /// The adapter's module name.
        module: String,
        /// The model's module names.
        have: String,
    },
}

/// The PEFT key prefix of a module: `base_model.model.model.layers.{i}.self_attn.q_proj`.
pub fn peft_prefix(layer: usize, target: Target) -> String {
    format!("base_model.model.model.layers.{layer}.{}", target.path())
}

/// The two files of an adapter directory.
pub fn write_adapter(adapter: &PeftAdapter, dtype: SaveDtype) -> Result<Vec<(String, Vec<u8>)>, PeftError> {
    let mut tensors = BTreeMap::new();
    for (&(layer, target), m) in &adapter.modules {
        let prefix = peft_prefix(layer, target);
        tensors.insert(format!("{prefix}.lora_A.weight"), m.a.clone());
        tensors.insert(format!("{prefix}.lora_B.weight"), m.b.clone());
    }
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let weights = to_safetensors_bytes(&tensors, dtype, Some(meta)).map_err(PeftError::Weights)?;
    let config = serde_json::to_vec_pretty(&adapter.config).map_err(|e| PeftError::Config(e.to_string()))?;
    Ok(vec![
        ("adapter_model.safetensors".into(), weights),
        ("adapter_config.json".into(), config),
    ])
}

/// Parses an adapter directory's two files (ours or anyone's PEFT LoRA).
pub fn read_adapter(config_json: &[u8], weights: &[u8]) -> Result<PeftAdapter, PeftError> {
    let config: AdapterConfig = serde_json::from_slice(config_json).map_err(|e| PeftError::Config(e.to_string()))?;
    if config.peft_type != "LORA" {
        return Err(PeftError::Unsupported(format!("peft_type {}", config.peft_type)));
    }
    if config.use_dora {
        return Err(PeftError::Unsupported("DoRA (use_dora: true)".into()));
    }
    let src = SafetensorsSource::new(&[("adapter_model.safetensors", weights)], None)
        .map_err(|e| PeftError::Weights(e.to_string()))?;
    let mut a_parts: BTreeMap<(usize, Target), HostTensor> = BTreeMap::new();
    let mut b_parts: BTreeMap<(usize, Target), HostTensor> = BTreeMap::new();
    for name in src.names().map(str::to_string).collect::<Vec<_>>() {
        let Some((key, factor)) = parse_peft_name(&name) else {
            if name.contains("lora_magnitude_vector") {
                return Err(PeftError::Unsupported("DoRA magnitude vectors".into()));
            }
            if name.contains("lora_") {
                return Err(PeftError::Unsupported(format!("tensor `{name}`")));
            }
            continue;
        };
        let t = src
            .read(&name)
            .map_err(|e| PeftError::Weights(e.to_string()))?
            .expect("invariant: listed name");
        if t.shape.len() != 2 {
            return Err(PeftError::Weights(format!("`{name}` is not a matrix")));
        }
        if factor == 'A' {
            a_parts.insert(key, t);
        } else {
            b_parts.insert(key, t);
        }
    }
    let mut modules = BTreeMap::new();
    for (key, a) in a_parts {
        let b = b_parts
            .remove(&key)
            .ok_or_else(|| PeftError::Weights(format!("{}: lora_A without lora_B", peft_prefix(key.0, key.1))))?;
        if a.shape[0] != b.shape[1] {
            return Err(PeftError::Weights(format!(
                "{}: lora_A has rank {} but lora_B has rank {}",
                peft_prefix(key.0, key.1),
                a.shape[0],
                b.shape[1]
            )));
        }
        modules.insert(key, ModuleAdapter { a, b });
    }
    if let Some((key, _)) = b_parts.into_iter().next() {
        return Err(PeftError::Weights(format!(
            "{}: lora_B without lora_A",
            peft_prefix(key.0, key.1)
        )));
    }
    if modules.is_empty() {
        return Err(PeftError::Weights("no lora_A/lora_B tensors found".into()));
    }
    Ok(PeftAdapter { modules, config })
}

/// `...layers.{i}.self_attn.q_proj.lora_A[.default].weight` → ((i, Q), 'A').
fn parse_peft_name(name: &str) -> Option<((usize, Target), char)> {
    let rest = &name[name.find("layers.")? + "layers.".len()..];
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let target = Target::ALL.into_iter().find(|t| rest.starts_with(t.path()))?;
    let tail = &rest[target.path().len()..];
    let factor = if tail.starts_with(".lora_A") {
        'A'
    } else if tail.starts_with(".lora_B") {
        'B'
    } else {
        return None;
    };
    tail.ends_with(".weight").then_some(((layer, target), factor))
}
