//! Training checkpoints: the adapter factors, the AdamW moments and the step, as one
//! safetensors blob (`__metadata__` holds the step), so a run can resume exactly.

use std::collections::{BTreeMap, HashMap};

use super::TrainError;
use super::trainer::{Factor, ParamKey, Trainer};
use crate::io::safetensors::{SafetensorsSource, SaveDtype, to_safetensors_bytes};
use crate::model::weights::read_f32;
use crate::model::{HostTensor, Target};

/// Everything needed to resume.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    /// Optimiser steps done.
    pub step: usize,
    /// Every adapter factor (trainable or frozen).
    pub factors: BTreeMap<ParamKey, HostTensor>,
    /// AdamW `(m, v)` of the trainable factors that have taken a step.
    pub moments: BTreeMap<ParamKey, (HostTensor, HostTensor)>,
}

async fn host(t: burn::tensor::Tensor<2>) -> Result<HostTensor, TrainError> {
    let shape = t.dims().to_vec();
    Ok(HostTensor::new(read_f32(t).await.map_err(TrainError::Device)?, shape))
}

fn name(key: &ParamKey, suffix: &str) -> String {
    let f = match key.2 {
        Factor::A => "lora_A",
        Factor::B => "lora_B",
    };
    format!("layers.{}.{}.{f}{suffix}", key.0, key.1.module_name())
}

fn parse_name(n: &str) -> Option<(ParamKey, &str)> {
    let rest = n.strip_prefix("layers.")?;
    let mut parts = rest.splitn(3, '.');
    let layer = parts.next()?.parse().ok()?;
    let target = Target::parse(parts.next()?).ok()?;
    let tail = parts.next()?;
    let (factor, suffix) = if let Some(s) = tail.strip_prefix("lora_A") {
        (Factor::A, s)
    } else {
        (Factor::B, tail.strip_prefix("lora_B")?)
    };
    Some(((layer, target, factor), suffix))
}

impl TrainState {
    /// Reads the trainer's factors and moments back to the host.
    pub async fn capture(trainer: &Trainer) -> Result<Self, TrainError> {
        let mut factors = BTreeMap::new();
        for key in trainer.all_factor_keys() {
            let t = trainer.factor(key).expect("invariant: key listed by the trainer");
            factors.insert(key, host(t).await?);
        }
        let mut moments = BTreeMap::new();
        for (key, m) in trainer.moments() {
            moments.insert(*key, (host(m.m.clone()).await?, host(m.v.clone()).await?));
        }
        Ok(Self {
            step: trainer.step_index(),
            factors,
            moments,
        })
    }

    /// Serialises to safetensors bytes (f32).
    pub fn to_bytes(&self) -> Result<Vec<u8>, TrainError> {
        let mut tensors = BTreeMap::new();
        for (k, t) in &self.factors {
            tensors.insert(name(k, ""), t.clone());
        }
        for (k, (m, v)) in &self.moments {
            tensors.insert(name(k, ".adam_m"), m.clone());
            tensors.insert(name(k, ".adam_v"), v.clone());
        }
        let meta = HashMap::from([
            ("format".to_string(), "lora-null-checkpoint".to_string()),
            ("step".to_string(), self.step.to_string()),
        ]);
        to_safetensors_bytes(&tensors, SaveDtype::F32, Some(meta)).map_err(TrainError::Checkpoint)
    }

    /// Parses bytes written by [`TrainState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TrainError> {
        let bad = |m: String| TrainError::Checkpoint(format!("not a lora-null checkpoint: {m}"));
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let step = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("step"))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no step in its metadata".into()))?;
        let src = SafetensorsSource::new(&[("checkpoint", bytes)], None).map_err(|e| bad(e.to_string()))?;
        let mut state = TrainState {
            step,
            factors: BTreeMap::new(),
            moments: BTreeMap::new(),
        };
        let mut m_parts: BTreeMap<ParamKey, HostTensor> = BTreeMap::new();
        let mut v_parts: BTreeMap<ParamKey, HostTensor> = BTreeMap::new();
        for n in src.names().map(str::to_string).collect::<Vec<_>>() {
            let (key, suffix) = parse_name(&n).ok_or_else(|| bad(format!("unexpected tensor `{n}`")))?;
            let t = src
                .read(&n)
                .map_err(|e| bad(e.to_string()))?
                .expect("invariant: listed name");
            match suffix {
                "" => state.factors.insert(key, t),
                ".adam_m" => m_parts.insert(key, t),
                ".adam_v" => v_parts.insert(key, t),
                _ => return Err(bad(format!("unexpected tensor `{n}`"))),
            };
        }
        for (key, m) in m_parts {
            let v = v_parts
                .remove(&key)
                .ok_or_else(|| bad("a moment without its pair".into()))?;
            state.moments.insert(key, (m, v));
        }
        Ok(state)
    }
}
