//! RMSNorm and the token embedding.

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};

use super::linear::frozen;
use super::weights::{VarBuilder, WeightError};

/// `y = x / sqrt(mean(x²) + eps) · weight` over the last axis (computed in f32, as transformers does).
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Scale, `[hidden]`.
    pub weight: Param<Tensor<1>>,
    /// Epsilon inside the square root.
    pub eps: f64,
}

impl RmsNorm {
    /// Loads `<prefix>.weight` of shape `[dim]`.
    pub fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Self, WeightError> {
        Ok(Self {
            weight: frozen(vb.get("weight", [dim])?),
            eps,
        })
    }

    /// Normalises over the last axis (of any rank: `[B, T, H]`, or `[B, T, heads, head_dim]`
    /// for Qwen3's per-head norms).
    ///
    /// # Shapes
    /// - x: `[..., dim]` → `[..., dim]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let variance = x.clone().square().mean_dim(D - 1);
        let normed = x * variance.add_scalar(self.eps).sqrt().recip();
        normed * self.weight.val().unsqueeze::<D>()
    }
}

/// Token embedding table.
#[derive(Module, Debug)]
pub struct Embedding {
    /// `[vocab, hidden]`.
    pub weight: Param<Tensor<2>>,
}

impl Embedding {
    /// Loads `<prefix>.weight` of shape `[vocab, hidden]`.
    pub fn load(vb: &VarBuilder, vocab: usize, hidden: usize) -> Result<Self, WeightError> {
        Ok(Self {
            weight: frozen(vb.get("weight", [vocab, hidden])?),
        })
    }

    /// # Shapes
    /// - ids: `[B, T]` → `[B, T, H]`
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        burn::tensor::module::embedding(self.weight.val(), ids)
    }
}
