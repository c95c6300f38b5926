//! The LoRA adapter attached to a linear layer: `Δy = s · B (A x)` with PEFT's names and shapes.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

/// A low-rank update of one linear layer.
///
/// PEFT names: `lora_A` is the down projection `[r, in]`, `lora_B` the up projection `[out, r]`.
#[derive(Module, Debug)]
pub struct LoraAdapter {
    /// Down projection A (PEFT `lora_A.weight`), shape `[r, in_features]`.
    pub lora_a: Param<Tensor<2>>,
    /// Up projection B (PEFT `lora_B.weight`), shape `[out_features, r]`.
    pub lora_b: Param<Tensor<2>>,
    /// Scale `s` (`alpha / r`, or `alpha / sqrt(r)` with rsLoRA).
    pub scale: f64,
}

impl LoraAdapter {
    /// Wraps factors as parameters; `train_a`/`train_b` choose which get gradients
    /// (LoRA-Null-v2 freezes the down projection A).
    pub fn new(lora_a: Tensor<2>, lora_b: Tensor<2>, scale: f64, train_a: bool, train_b: bool) -> Self {
        Self {
            lora_a: Param::from_tensor(lora_a).set_require_grad(train_a),
            lora_b: Param::from_tensor(lora_b).set_require_grad(train_b),
            scale,
        }
    }

    /// Rank r.
    pub fn rank(&self) -> usize {
        self.lora_a.val().dims()[0]
    }

    /// `s · (x Aᵀ) Bᵀ`.
    ///
    /// # Shapes
    /// - x: `[..., in]` → `[..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let down = x.matmul(self.lora_a.val().transpose().unsqueeze());
        down.matmul(self.lora_b.val().transpose().unsqueeze())
            .mul_scalar(self.scale)
    }
}
