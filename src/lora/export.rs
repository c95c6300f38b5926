//! From an adapted model to files the Hugging Face ecosystem uses as they are: a PEFT adapter
//! for the original base (with the rank-2r conversion where the base was changed), a merged
//! full model, and the untrained initialisation as residual base + init adapter. Also the
//! reverse: attaching any PEFT LoRA adapter to a loaded model.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};

use super::apply::{InitRecord, LoraConfig};
use super::{InitMethod, LoraAdapter};
use crate::io::peft::{AdapterConfig, ModuleAdapter, PeftAdapter, PeftError, peft_prefix};
use crate::linalg::Matrix;
use crate::model::weights::read_f32;
use crate::model::{HostTensor, LlamaForCausalLM, Target};

/// Errors exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading from the device failed.
    #[error("reading from the device failed: {0}")]
    Device(String),
    /// The model has no adapters.
    #[error("the model has no LoRA adapters to export")]
    NoAdapters,
    /// The initial factors of a module are missing (needed for the conversion).
    #[error("the initial factors of layer {0} {1} are missing; the export of a {2} adapter needs them")]
    MissingInit(usize, &'static str, &'static str),
}

async fn host(t: Tensor<2>) -> Result<HostTensor, ExportError> {
    let shape = t.dims().to_vec();
    Ok(HostTensor::new(read_f32(t).await.map_err(ExportError::Device)?, shape))
}

/// Rows of `a` then rows of `b` (`[A; A₀]`).
fn stack_rows(a: &HostTensor, b: &HostTensor) -> HostTensor {
    HostTensor::new(
        [a.data.as_slice(), &b.data].concat(),
        vec![a.shape[0] + b.shape[0], a.shape[1]],
    )
}

/// Columns of `a` then columns of `−b` (`[B, −B₀]`).
fn concat_cols_neg(a: &HostTensor, b: &HostTensor) -> HostTensor {
    let (m, ra, rb) = (a.shape[0], a.shape[1], b.shape[1]);
    let mut data = Vec::with_capacity(m * (ra + rb));
    for i in 0..m {
        data.extend_from_slice(&a.data[i * ra..(i + 1) * ra]);
        data.extend(b.data[i * rb..(i + 1) * rb].iter().map(|v| -v));
    }
    HostTensor::new(data, vec![m, ra + rb])
}

/// The trained factors `(A, B)` of every adapted module.
pub async fn trained_factors(
    model: &LlamaForCausalLM,
) -> Result<BTreeMap<(usize, Target), (HostTensor, HostTensor)>, ExportError> {
    let mut out = BTreeMap::new();
    for layer in 0..model.model.layers.len() {
        for target in Target::ALL {
            if let Some(lora) = &model.linear(layer, target).lora {
                let a = host(lora.lora_a.val()).await?;
                let b = host(lora.lora_b.val()).await?;
                out.insert((layer, target), (a, b));
            }
        }
    }
    if out.is_empty() {
        return Err(ExportError::NoAdapters);
    }
    Ok(out)
}

/// The PEFT adapter that reproduces the trained model on the ORIGINAL base weights.
/// Returns the adapter and whether the rank was doubled (to tell the user why).
pub async fn peft_adapter(
    model: &LlamaForCausalLM,
    cfg: &LoraConfig,
    init: &InitRecord,
    base_name: &str,
) -> Result<(PeftAdapter, bool), ExportError> {
    let trained = trained_factors(model).await?;
    let doubled = cfg.method.changes_base() && cfg.method != InitMethod::NullV2;
    let mut modules = BTreeMap::new();
    for ((layer, target), (a, b)) in trained {
        let initial = || {
            init.factors.get(&(layer, target)).ok_or(ExportError::MissingInit(
                layer,
                target.module_name(),
                cfg.method.name(),
            ))
        };
        let m = if doubled {
            let (a0, b0) = initial()?;
            ModuleAdapter {
                a: stack_rows(&a, a0),
                b: concat_cols_neg(&b, b0),
            }
        } else if cfg.method == InitMethod::NullV2 {
            // A is frozen, so A = A₀ and ΔW = s·(B − B₀)·A₀.
            let (a0, b0) = initial()?;
            let diff = b.data.iter().zip(&b0.data).map(|(x, y)| x - y).collect();
            ModuleAdapter {
                a: a0.clone(),
                b: HostTensor::new(diff, b.shape.clone()),
            }
        } else {
            ModuleAdapter { a, b }
        };
        modules.insert((layer, target), m);
    }
    let (r, alpha) = if doubled {
        let alpha_factor = if cfg.use_rslora { 2f64.sqrt() } else { 2.0 };
        (2 * cfg.rank, cfg.alpha * alpha_factor)
    } else {
        (cfg.rank, cfg.alpha)
    };
    let config = AdapterConfig::new(r, alpha, &cfg.targets, base_name, cfg.use_rslora);
    Ok((PeftAdapter { modules, config }, doubled))
}

/// The untrained initial adapter at its native rank (to train further on the residual base).
pub fn init_adapter(cfg: &LoraConfig, init: &InitRecord, base_name: &str) -> PeftAdapter {
    let modules = init
        .factors
        .iter()
        .map(|(&k, (a, b))| {
            (
                k,
                ModuleAdapter {
                    a: a.clone(),
                    b: b.clone(),
                },
            )
        })
        .collect();
    PeftAdapter {
        modules,
        config: AdapterConfig::new(cfg.rank, cfg.alpha, &cfg.targets, base_name, cfg.use_rslora),
    }
}

/// Every tensor of the model under its Hugging Face key, with `W + s·B·A` merged into each
/// adapted module when `merge` is set (else the base weights as they are: for methods that
/// change the base, that is the residual model).
pub async fn model_tensors(model: &LlamaForCausalLM, merge: bool) -> Result<BTreeMap<String, HostTensor>, ExportError> {
    let mut out = BTreeMap::new();
    let m = &model.model;
    out.insert(
        "model.embed_tokens.weight".into(),
        host(m.embed_tokens.weight.val()).await?,
    );
    out.insert(
        "model.norm.weight".into(),
        host(m.norm.weight.val().unsqueeze::<2>()).await?,
    );
    for (i, layer) in m.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        out.insert(
            format!("{p}.input_layernorm.weight"),
            host(layer.input_layernorm.weight.val().unsqueeze::<2>()).await?,
        );
        out.insert(
            format!("{p}.post_attention_layernorm.weight"),
            host(layer.post_attention_layernorm.weight.val().unsqueeze::<2>()).await?,
        );
        for target in Target::ALL {
            let lin = model.linear(i, target);
            let mut w = host(lin.weight_out_in()).await?;
            if merge && let Some(lora) = &lin.lora {
                let a = host(lora.lora_a.val()).await?;
                let b = host(lora.lora_b.val()).await?;
                w = merge_weight(&w, &a, &b, lora.scale);
            }
            out.insert(format!("{p}.{}.weight", target.path()), w);
            if let Some(bias) = &lin.bias {
                out.insert(
                    format!("{p}.{}.bias", target.path()),
                    host(bias.val().unsqueeze::<2>()).await?,
                );
            }
        }
    }
    if let Some(head) = &model.lm_head {
        out.insert("lm_head.weight".into(), host(head.weight_out_in()).await?);
    }
    // Vectors were read as [1, n]: store them as 1-D.
    for t in out.values_mut() {
        if t.shape.first() == Some(&1) && t.shape.len() == 2 {
            t.shape = vec![t.shape[1]];
        }
    }
    Ok(out)
}

/// `W + s·B·A` in f64, stored f32.
pub fn merge_weight(w: &HostTensor, a: &HostTensor, b: &HostTensor, scale: f64) -> HostTensor {
    let a = Matrix::from_f32(a.shape[0], a.shape[1], &a.data).expect("invariant: a is [r, n]");
    let b = Matrix::from_f32(b.shape[0], b.shape[1], &b.data).expect("invariant: b is [m, r]");
    let delta = b.matmul(&a);
    let data = w
        .data
        .iter()
        .zip(&delta.data)
        .map(|(&x, &d)| (x as f64 + scale * d) as f32)
        .collect();
    HostTensor::new(data, w.shape.clone())
}

/// Attaches a PEFT adapter (frozen) to a model loaded from the original base.
pub fn attach_adapter(model: &mut LlamaForCausalLM, adapter: &PeftAdapter, device: &Device) -> Result<(), PeftError> {
    let layers = model.model.layers.len();
    for (&(layer, target), m) in &adapter.modules {
        let name = peft_prefix(layer, target);
        if layer >= layers {
            return Err(PeftError::Shape {
                name,
                got: vec![layer],
                expected: format!("a layer index below {layers}"),
                module: "model".into(),
            });
        }
        let lin = model.linear_mut(layer, target);
        let (out_f, in_f) = lin.dims();
        let r = m.a.shape[0];
        if m.a.shape != [r, in_f] || m.b.shape != [out_f, r] {
            return Err(PeftError::Shape {
                name,
                got: [m.a.shape.clone(), m.b.shape.clone()].concat(),
                expected: format!("lora_A [{r}, {in_f}] and lora_B [{out_f}, {r}]"),
                module: target.path().into(),
            });
        }
        let scale = adapter.config.scale_for(&name, r);
        let upload = |t: &HostTensor| Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device);
        lin.lora = Some(LoraAdapter::new(upload(&m.a), upload(&m.b), scale, false, false));
    }
    Ok(())
}

/// The weight update of every adapted module on the ORIGINAL base, `ΔW = s·(B·A − B₀·A₀)`
/// (B₀A₀ = 0 for the methods that leave W unchanged), in f64.
pub async fn weight_updates(
    model: &LlamaForCausalLM,
    init: &InitRecord,
) -> Result<BTreeMap<(usize, Target), Matrix>, ExportError> {
    let mut out = BTreeMap::new();
    for ((layer, target), (a, b)) in trained_factors(model).await? {
        let scale = model.linear(layer, target).lora.as_ref().map_or(1.0, |l| l.scale);
        let m = |t: &HostTensor| Matrix::from_f32(t.shape[0], t.shape[1], &t.data).expect("invariant: 2-D factor");
        let mut delta = m(&b).matmul(&m(&a));
        if let Some((a0, b0)) = init.factors.get(&(layer, target)) {
            delta = delta.sub(&m(b0).matmul(&m(a0)));
        }
        out.insert((layer, target), delta.scale(scale));
    }
    Ok(out)
}
