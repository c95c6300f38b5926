//! Linear layers. The checkpoint stores `weight` as `[out, in]`; we keep it transposed,
//! `[in, out]`, because burn's CPU backend copies a transposed operand on every matmul with a
//! batched input (a 5× slowdown of decoding).
//!
//! The model's blocks are generic over [`Projection`]: the plain [`Linear`] here, or any layer
//! that wraps one (LoRA, in `lora::LoraLinear`), so this module knows nothing of adapters.

use burn::module::{Module, ModuleDisplay, Param};
use burn::tensor::{Device, Tensor, TensorData};

use super::weights::{VarBuilder, WeightError};
use crate::linalg::Matrix;

/// What a block needs of a linear layer: apply it, and reach the frozen layer it is built on.
pub trait Projection: Module + ModuleDisplay {
    /// Applies the layer.
    ///
    /// # Shapes
    /// - x: `[..., in]` → `[..., out]`
    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>;

    /// The plain linear layer underneath (the frozen base weight and bias).
    fn base(&self) -> &Linear;

    /// The plain linear layer underneath, mutably (to replace the base weight).
    fn base_mut(&mut self) -> &mut Linear;
}

/// `y = x Wᵀ + b`; weight and bias are frozen.
#[derive(Module, Debug)]
pub struct Linear {
    /// Checkpoint key `<prefix>.weight`, stored TRANSPOSED: `[in_features, out_features]`.
    /// Use [`Linear::weight_out_in`] / [`Linear::set_weight`] for the checkpoint layout.
    pub weight: Param<Tensor<2>>,
    /// Optional bias, `[out_features]`.
    pub bias: Option<Param<Tensor<1>>>,
}

/// Uploads `[rows, cols]` row-major values transposed, as a contiguous `[cols, rows]` tensor.
fn upload_transposed(data: &[f32], rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    let mut t = vec![0f32; data.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = data[i * cols + j];
        }
    }
    Tensor::from_data(TensorData::new(t, [cols, rows]), device)
}

impl Linear {
    /// Loads `<prefix>.weight` (checkpoint shape `[out, in]`) and `<prefix>.bias` when `bias`.
    pub fn load(vb: &VarBuilder, in_features: usize, out_features: usize, bias: bool) -> Result<Self, WeightError> {
        let w = vb.host("weight", &[out_features, in_features])?;
        let values = w
            .as_slice::<f32>()
            .map_err(|e| WeightError::Source(format!("{}: {e:?}", vb.key("weight"))))?;
        let weight = upload_transposed(values, out_features, in_features, vb.device());
        let bias = if bias {
            Some(frozen(vb.get("bias", [out_features])?))
        } else {
            None
        };
        Ok(Self {
            weight: frozen(weight),
            bias,
        })
    }

    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        let [i, o] = self.weight.val().dims();
        (o, i)
    }

    /// The weight in the checkpoint layout `[out, in]` (a transposed view).
    pub fn weight_out_in(&self) -> Tensor<2> {
        self.weight.val().transpose()
    }

    /// Replaces the base weight with `w` given as `[out, in]` (frozen).
    pub fn set_weight(&mut self, w: &Matrix, device: &Device) {
        self.weight = frozen(upload_transposed(&w.to_f32(), w.rows, w.cols, device));
    }

    /// Adds `delta` (`[in, out]`, the stored layout) to the base weight (frozen).
    pub fn add_to_weight(&mut self, delta: Tensor<2>) {
        self.weight = frozen(self.weight.val() + delta);
    }
}

impl Projection for Linear {
    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }

    fn base(&self) -> &Linear {
        self
    }

    fn base_mut(&mut self) -> &mut Linear {
        self
    }
}

/// A parameter that never receives gradients (base weights).
pub fn frozen<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(t).set_require_grad(false)
}
