//! Training checkpoints: every trainable parameter, its AdamW moments and the step, as one
//! safetensors blob (`__metadata__` holds the step), so a run resumes exactly. Parameters are
//! named by their module path (`model.layers.0.self_attn.q_proj.adapter.lora_a`); the moments
//! add `.adam_m` / `.adam_v`. Values are stored flattened.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::Tensor;

use super::TrainError;
use super::optimizer::Moments;
use crate::io::HostTensor;
use crate::io::safetensors::{SafetensorsSource, SaveDtype, to_safetensors_bytes};

/// The `format` metadata value of a checkpoint (version 2: parameters by module path).
const FORMAT: &str = "lora-null-checkpoint-2";

/// Everything needed to resume.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    /// Optimiser steps done.
    pub step: usize,
    /// Every trainable parameter, flattened, by module path.
    pub params: BTreeMap<String, HostTensor>,
    /// AdamW `(m, v)` of the parameters that have taken a step.
    pub moments: BTreeMap<String, (HostTensor, HostTensor)>,
}

async fn host(t: Tensor<1>) -> Result<HostTensor, TrainError> {
    HostTensor::read(t).await.map_err(TrainError::Device)
}

impl TrainState {
    /// Reads parameters and moments back to the host.
    pub async fn capture(
        step: usize,
        params: BTreeMap<String, Tensor<1>>,
        moments: &BTreeMap<String, Moments>,
    ) -> Result<Self, TrainError> {
        let mut state = TrainState {
            step,
            params: BTreeMap::new(),
            moments: BTreeMap::new(),
        };
        for (path, t) in params {
            state.params.insert(path, host(t).await?);
        }
        for (path, m) in moments {
            state
                .moments
                .insert(path.clone(), (host(m.m.clone()).await?, host(m.v.clone()).await?));
        }
        Ok(state)
    }

    /// Serialises to safetensors bytes (f32).
    pub fn to_bytes(&self) -> Result<Vec<u8>, TrainError> {
        let mut tensors = BTreeMap::new();
        for (k, t) in &self.params {
            tensors.insert(k.clone(), t.clone());
        }
        for (k, (m, v)) in &self.moments {
            tensors.insert(format!("{k}.adam_m"), m.clone());
            tensors.insert(format!("{k}.adam_v"), v.clone());
        }
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("step".to_string(), self.step.to_string()),
        ]);
        to_safetensors_bytes(&tensors, SaveDtype::F32, Some(meta)).map_err(TrainError::Checkpoint)
    }

    /// Parses bytes written by [`TrainState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TrainError> {
        let bad = |m: String| TrainError::Checkpoint(format!("not a lora-null checkpoint: {m}"));
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        match meta.get("format").map(String::as_str) {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(bad(format!(
                    "its format is `{other}` (written by another version); start the run again"
                )));
            }
            None => return Err(bad("no format in its metadata".into())),
        }
        let step = meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no step in its metadata".into()))?;
        let src = SafetensorsSource::new(&[("checkpoint", bytes)], None).map_err(|e| bad(e.to_string()))?;
        let mut state = TrainState {
            step,
            params: BTreeMap::new(),
            moments: BTreeMap::new(),
        };
        let mut m_parts: BTreeMap<String, HostTensor> = BTreeMap::new();
        let mut v_parts: BTreeMap<String, HostTensor> = BTreeMap::new();
        for n in src.names().map(str::to_string).collect::<Vec<_>>() {
            let t = src
                .read(&n)
                .map_err(|e| bad(e.to_string()))?
                .expect("invariant: listed name");
            if let Some(k) = n.strip_suffix(".adam_m") {
                m_parts.insert(k.to_string(), t);
            } else if let Some(k) = n.strip_suffix(".adam_v") {
                v_parts.insert(k.to_string(), t);
            } else {
                state.params.insert(n, t);
            }
        }
        for (key, m) in m_parts {
            let v = v_parts
                .remove(&key)
                .ok_or_else(|| bad(format!("`{key}` has a first moment without a second")))?;
            if !state.params.contains_key(&key) {
                return Err(bad(format!("moments for `{key}`, which it does not hold")));
            }
            state.moments.insert(key, (m, v));
        }
        if let Some(key) = v_parts.into_keys().next() {
            return Err(bad(format!("`{key}` has a second moment without a first")));
        }
        Ok(state)
    }
}
