//! The LoRA linear layer: a plain [`Linear`] wrapped with an optional low-rank update,
//! `y = x Wᵀ + b + s · B (A x)`, with PEFT's names and shapes. Built from a plain layer
//! ([`LoraLinear::from_linear`]) and turned back into one ([`LoraLinear::merge`]), like mlx-lm's
//! `LoRALinear.from_linear` / `to_linear`.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use crate::model::{Linear, LlamaForCausalLM, Projection, cpu_linear};

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
        let down = cpu_linear::linear(x, self.lora_a.val().transpose(), None);
        cpu_linear::linear(down, self.lora_b.val().transpose(), None).mul_scalar(self.scale)
    }

    /// `s · Aᵀ Bᵀ = (s · B A)ᵀ`: the update in the stored (transposed) weight layout `[in, out]`.
    pub fn delta_in_out(&self) -> Tensor<2> {
        self.lora_a
            .val()
            .transpose()
            .matmul(self.lora_b.val().transpose())
            .mul_scalar(self.scale)
    }
}

/// A linear layer that may carry a LoRA adapter.
#[derive(Module, Debug)]
pub struct LoraLinear {
    /// The frozen base layer (for methods that change the base: the residual).
    pub base: Linear,
    /// The adapter, if this module is adapted.
    pub adapter: Option<LoraAdapter>,
}

impl LoraLinear {
    /// A plain layer, not adapted yet.
    pub fn from_linear(base: Linear) -> Self {
        Self { base, adapter: None }
    }

    /// The layer with its update folded in: `W + s·B·A` as a plain [`Linear`].
    pub fn merge(self) -> Linear {
        let mut base = self.base;
        if let Some(adapter) = &self.adapter {
            base.add_to_weight(adapter.delta_in_out());
        }
        base
    }
}

impl Projection for LoraLinear {
    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let Some(adapter) = &self.adapter else {
            return Projection::forward(&self.base, x);
        };
        match self.base.low_rank_base() {
            // One operation: the adapter's product lands in the base product's output.
            Some((w, bias)) => crate::model::cpu_low_rank::low_rank_linear(
                x,
                w,
                bias,
                adapter.lora_a.val().transpose(),
                adapter.lora_b.val().transpose(),
                adapter.scale,
            ),
            None => Projection::forward(&self.base, x.clone()) + adapter.forward(x),
        }
    }

    fn base(&self) -> &Linear {
        &self.base
    }

    fn base_mut(&mut self) -> &mut Linear {
        &mut self.base
    }
}

/// A model whose adaptable layers can carry LoRA adapters (what the engine holds).
pub type LoraModel = LlamaForCausalLM<LoraLinear>;

/// Wraps every adaptable layer of a plain model (no adapters yet).
pub fn wrap(model: LlamaForCausalLM) -> LoraModel {
    model.map_projections(&mut |_, _, linear| LoraLinear::from_linear(linear))
}

/// Merges every adapter into its base weight: the plain model that computes the same function.
pub fn merge(model: LoraModel) -> LlamaForCausalLM {
    model.map_projections(&mut |_, _, layer: LoraLinear| layer.merge())
}
