//! AdamW over the adapter factors (decoupled weight decay, as `torch.optim.AdamW`), with
//! global-norm gradient clipping. The moments are plain tensors, so a checkpoint stores them
//! next to the factors and a resumed run continues exactly.

use burn::tensor::Tensor;

/// AdamW hyper-parameters (the PyTorch defaults except the learning rate, which the schedule
/// gives per step).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay λ: `p ← p − lr·λ·p` before the Adam step.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The moments of one parameter.
#[derive(Debug, Clone)]
pub struct Moments {
    /// First moment m.
    pub m: Tensor<2>,
    /// Second moment v.
    pub v: Tensor<2>,
}

/// One AdamW update of a parameter (plain tensors, no autodiff). `step` counts from 1.
///
/// `p ← p·(1 − lr·λ)`, `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `p ← p − lr · (m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε)`.
pub fn adamw_update(
    cfg: &AdamWConfig,
    p: Tensor<2>,
    g: Tensor<2>,
    state: Option<Moments>,
    lr: f64,
    step: usize,
) -> (Tensor<2>, Moments) {
    let state = state.unwrap_or_else(|| Moments {
        m: g.zeros_like(),
        v: g.zeros_like(),
    });
    let m = state.m.mul_scalar(cfg.beta1) + g.clone().mul_scalar(1.0 - cfg.beta1);
    let v = state.v.mul_scalar(cfg.beta2) + g.square().mul_scalar(1.0 - cfg.beta2);
    let bc1 = 1.0 - cfg.beta1.powi(step as i32);
    let bc2 = 1.0 - cfg.beta2.powi(step as i32);
    let denom = v.clone().div_scalar(bc2).sqrt().add_scalar(cfg.eps);
    let update = m.clone().div_scalar(bc1) / denom;
    let p = p.mul_scalar(1.0 - lr * cfg.weight_decay) - update.mul_scalar(lr);
    (p, Moments { m, v })
}

/// Squared L2 norm of one gradient, as a one-element tensor (summed across parameters by the
/// caller, read back once per step).
pub fn grad_sq_norm(g: &Tensor<2>) -> Tensor<1> {
    g.clone().square().sum()
}
