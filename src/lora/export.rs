//! From an adapted model to files the Hugging Face ecosystem uses as they are: a PEFT adapter
//! for the original base (with the rank-2r conversion where the base was changed), a merged
//! full model, and the untrained initialisation as residual base + init adapter. Also the
//! reverse: attaching any PEFT LoRA adapter to a loaded model.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};

use super::init::{InitRecord, LoraConfig};
use super::linear::{LoraAdapter, LoraModel};
use super::method::ExportForm;
use crate::io::HostTensor;
use crate::io::peft::{AdapterConfig, ModuleAdapter, PeftAdapter, PeftError, peft_prefix};
use crate::model::{Projection, Target};

/// Errors exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading from the device failed.
    #[error("reading from the device failed: {0}")]
    Device(String),
    /// The model has no adapters.
    #[error("the model has no LoRA adapters to export")]
    NoAdapters,
    /// The adapter cannot be written as GGUF.
    #[error("GGUF adapter: {0}")]
    Gguf(String),
    /// The initial factors of a module are missing (needed for the conversion).
    #[error("the initial factors of layer {0} {1} are missing; the export of a {2} adapter needs them")]
    MissingInit(usize, &'static str, &'static str),
}

async fn host<const D: usize>(t: Tensor<D>) -> Result<HostTensor, ExportError> {
    HostTensor::read(t).await.map_err(ExportError::Device)
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
    model: &LoraModel,
) -> Result<BTreeMap<(usize, Target), (HostTensor, HostTensor)>, ExportError> {
    let mut out = BTreeMap::new();
    for layer in 0..model.num_layers() {
        for target in Target::ALL {
            if let Some(lora) = model.linear(layer, target).and_then(|l| l.adapter.as_ref()) {
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
    model: &LoraModel,
    cfg: &LoraConfig,
    init: &InitRecord,
    base_name: &str,
) -> Result<(PeftAdapter, bool), ExportError> {
    let trained = trained_factors(model).await?;
    let form = cfg.method.spec().export;
    let doubled = form == ExportForm::Doubled;
    let mut modules = BTreeMap::new();
    for ((layer, target), (a, b)) in trained {
        let initial = || {
            init.factors.get(&(layer, target)).ok_or(ExportError::MissingInit(
                layer,
                target.module_name(),
                cfg.method.name(),
            ))
        };
        let m = match form {
            ExportForm::Doubled => {
                let (a0, b0) = initial()?;
                ModuleAdapter {
                    a: stack_rows(&a, a0),
                    b: concat_cols_neg(&b, b0),
                }
            }
            ExportForm::FrozenDown => {
                // A is frozen, so A = A₀ and ΔW = s·(B − B₀)·A₀.
                let (a0, b0) = initial()?;
                let diff = b.data.iter().zip(&b0.data).map(|(x, y)| x - y).collect();
                ModuleAdapter {
                    a: a0.clone(),
                    b: HostTensor::new(diff, b.shape.clone()),
                }
            }
            ExportForm::Native => ModuleAdapter { a, b },
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
pub async fn model_tensors(model: &LoraModel, merge: bool) -> Result<BTreeMap<String, HostTensor>, ExportError> {
    let mut out = BTreeMap::new();
    let m = &model.model;
    out.insert("model.embed_tokens.weight".into(), host(m.embed_tokens.table()).await?);
    out.insert("model.norm.weight".into(), host(m.norm.weight.val()).await?);
    for (i, layer) in m.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        out.insert(
            format!("{p}.input_layernorm.weight"),
            host(layer.input_layernorm.weight.val()).await?,
        );
        out.insert(
            format!("{p}.post_attention_layernorm.weight"),
            host(layer.post_attention_layernorm.weight.val()).await?,
        );
        for (name, norm) in [
            ("pre_feedforward_layernorm", &layer.pre_feedforward_layernorm),
            ("post_feedforward_layernorm", &layer.post_feedforward_layernorm),
        ] {
            if let Some(norm) = norm {
                out.insert(format!("{p}.{name}.weight"), host(norm.weight.val()).await?);
            }
        }
        let attn = &layer.self_attn;
        for (name, norm) in [("q_norm", &attn.q_norm), ("k_norm", &attn.k_norm)] {
            if let Some(norm) = norm {
                out.insert(format!("{p}.self_attn.{name}.weight"), host(norm.weight.val()).await?);
            }
        }
        for target in Target::ALL {
            let Some(lin) = model.linear(i, target) else {
                continue;
            };
            let w = if merge {
                lin.clone().merge().weight_out_in()
            } else {
                lin.base().weight_out_in()
            };
            out.insert(format!("{p}.{}.weight", target.path()), host(w).await?);
            if let Some(bias) = &lin.base().bias {
                out.insert(format!("{p}.{}.bias", target.path()), host(bias.val()).await?);
            }
        }
    }
    if let Some(head) = &model.lm_head {
        out.insert("lm_head.weight".into(), host(head.weight_out_in()).await?);
    }
    Ok(out)
}

/// Attaches a PEFT adapter (frozen) to a model loaded from the original base.
pub fn attach_adapter(model: &mut LoraModel, adapter: &PeftAdapter, device: &Device) -> Result<(), PeftError> {
    let layers = model.num_layers();
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
        if model.linear(layer, target).is_none() {
            let have: Vec<&str> = Target::ALL
                .into_iter()
                .filter(|&t| model.linear(layer, t).is_some())
                .map(|t| t.module_name())
                .collect();
            return Err(PeftError::NoModule {
                module: target.module_name().into(),
                have: have.join(", "),
            });
        }
        let lin = model.linear_mut(layer, target).expect("invariant: checked just above");
        let (out_f, in_f) = lin.base.dims();
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
        lin.adapter = Some(LoraAdapter::new(
            m.a.to_tensor(device),
            m.b.to_tensor(device),
            scale,
            false,
            false,
        ));
    }
    Ok(())
}
