//! Linear layers in Hugging Face layout (`weight: [out, in]`), with an optional LoRA adapter.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use super::weights::{VarBuilder, WeightError};
use crate::lora::LoraAdapter;

/// `y = x Wᵀ + b (+ s·B A x)`; the base weight and bias are frozen.
#[derive(Module, Debug)]
pub struct Linear {
    /// Weight, `[out_features, in_features]` (checkpoint key `<prefix>.weight`).
    pub weight: Param<Tensor<2>>,
    /// Optional bias, `[out_features]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Optional low-rank adapter.
    pub lora: Option<LoraAdapter>,
}

impl Linear {
    /// Loads `<prefix>.weight` (and `<prefix>.bias` when `bias`) with shape `[out, in]`.
    pub fn load(vb: &VarBuilder, in_features: usize, out_features: usize, bias: bool) -> Result<Self, WeightError> {
        let weight = vb.get("weight", [out_features, in_features])?;
        let bias = if bias {
            Some(frozen(vb.get("bias", [out_features])?))
        } else {
            None
        };
        Ok(Self {
            weight: frozen(weight),
            bias,
            lora: None,
        })
    }

    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        let [o, i] = self.weight.shape().dims();
        (o, i)
    }

    /// Applies the layer.
    ///
    /// # Shapes
    /// - x: `[..., in]` → `[..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let base = burn::tensor::module::linear(
            x.clone(),
            self.weight.val().transpose(),
            self.bias.as_ref().map(|b| b.val()),
        );
        match &self.lora {
            Some(lora) => base + lora.forward(x),
            None => base,
        }
    }
}

/// A parameter that never receives gradients (base weights).
pub fn frozen<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(t).set_require_grad(false)
}
