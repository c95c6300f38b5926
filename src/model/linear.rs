//! Linear layers with an optional LoRA adapter. The checkpoint stores `weight` as
//! `[out, in]`; we keep it transposed, `[in, out]`, because burn's CPU backend copies a
//! transposed operand on every matmul with a batched input (a 5× slowdown of decoding).

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};

use super::weights::{HostTensor, VarBuilder, WeightError};
use crate::linalg::Matrix;
use crate::lora::LoraAdapter;

/// `y = x Wᵀ + b (+ s·B A x)`; the base weight and bias are frozen.
#[derive(Module, Debug)]
pub struct Linear {
    /// Checkpoint key `<prefix>.weight`, stored TRANSPOSED: `[in_features, out_features]`.
    /// Use [`Linear::weight_out_in`] / [`Linear::set_weight`] for the checkpoint layout.
    pub weight: Param<Tensor<2>>,
    /// Optional bias, `[out_features]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Optional low-rank adapter.
    pub lora: Option<LoraAdapter>,
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
        let w: HostTensor = vb.host("weight", &[out_features, in_features])?;
        let weight = upload_transposed(&w.data, out_features, in_features, vb.device());
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

    /// Applies the layer.
    ///
    /// # Shapes
    /// - x: `[..., in]` → `[..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let base = burn::tensor::module::linear(x.clone(), self.weight.val(), self.bias.as_ref().map(|b| b.val()));
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
