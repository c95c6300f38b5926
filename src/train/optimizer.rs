//! AdamW over flattened parameters (decoupled weight decay, as `torch.optim.AdamW`), with
//! global-norm gradient clipping done by the caller. The moments are plain tensors, so a
//! checkpoint stores them next to the parameters and a resumed run continues exactly.

use burn::tensor::Tensor;

use super::config::AdamWConfig;

/// The moments of one parameter, flattened.
#[derive(Debug, Clone)]
pub struct Moments {
    /// First moment m.
    pub m: Tensor<1>,
    /// Second moment v.
    pub v: Tensor<1>,
}

/// One AdamW update of a flattened parameter (plain tensors, no autodiff). `step` counts from 1.
///
/// `p ← p·(1 − lr·λ)`, `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `p ← p − lr · (m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε)`.
pub fn adamw_update(
    cfg: &AdamWConfig,
    p: Tensor<1>,
    g: Tensor<1>,
    state: Option<Moments>,
    lr: f64,
    step: usize,
) -> (Tensor<1>, Moments) {
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

/// The factor that scales gradients of global norm `norm` down to `max` (1 when below it), as
/// `torch.nn.utils.clip_grad_norm_`: `max / (norm + 1e-6)`.
pub fn clip_factor(norm: f64, max: Option<f64>) -> f64 {
    match max {
        Some(max) if norm > max => max / (norm + 1e-6),
        _ => 1.0,
    }
}
