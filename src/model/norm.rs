//! RMSNorm and the token embedding.

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};

use super::linear::{PackedWeight, frozen};
use super::weights::{VarBuilder, WeightError};

/// `y = x / sqrt(mean(x²) + eps) · (offset + weight)` over the last axis (computed in f32, as
/// transformers does). `offset` is 0 for the LLaMA family and 1 for Gemma, whose checkpoints store
/// the scale minus one (`Gemma2RMSNorm`: `output * (1.0 + self.weight.float())`).
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Scale, `[hidden]` (as the checkpoint stores it: without the offset).
    pub weight: Param<Tensor<1>>,
    /// Epsilon inside the square root.
    pub eps: f64,
    /// Added to `weight` before scaling: 0, or 1 for Gemma.
    pub offset: f64,
}

impl RmsNorm {
    /// Loads `<prefix>.weight` of shape `[dim]` (scale = weight).
    pub fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Self, WeightError> {
        Self::load_with_offset(vb, dim, eps, 0.0)
    }

    /// Loads `<prefix>.weight` of shape `[dim]`; the scale is `offset + weight`.
    pub fn load_with_offset(vb: &VarBuilder, dim: usize, eps: f64, offset: f64) -> Result<Self, WeightError> {
        Ok(Self {
            weight: frozen(vb.get("weight", [dim])?),
            eps,
            offset,
        })
    }

    /// Normalises over the last axis (of any rank: `[B, T, H]`, or `[B, T, heads, head_dim]`
    /// for Qwen3's per-head norms).
    ///
    /// # Shapes
    /// - x: `[..., dim]` → `[..., dim]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        super::cpu_ops::rms_norm(x, self.weight.val(), self.eps, self.offset)
    }
}

/// Token embedding table, its rows multiplied by `scale` on lookup (1, or `√hidden` for Gemma).
#[derive(Module, Debug)]
pub struct Embedding {
    /// `[vocab, hidden]`; `None` when the table is packed.
    pub weight: Option<Param<Tensor<2>>>,
    /// The table in its stored encoding: a lookup decodes only the rows it needs.
    #[module(skip)]
    pub packed: Option<PackedWeight>,
    /// Multiplies the looked-up rows (not the table, which the tied output layer shares).
    pub scale: f64,
}

impl Embedding {
    /// Loads `<prefix>.weight` of shape `[vocab, hidden]`, unscaled; packed when the builder
    /// packs and the source can.
    pub fn load(vb: &VarBuilder, vocab: usize, hidden: usize) -> Result<Self, WeightError> {
        if let Some(p) = vb.packed_lookup("weight", [vocab, hidden])? {
            return Ok(Self {
                weight: None,
                packed: Some(p),
                scale: 1.0,
            });
        }
        Ok(Self {
            weight: Some(frozen(vb.get("weight", [vocab, hidden])?)),
            packed: None,
            scale: 1.0,
        })
    }

    /// The whole table `[vocab, hidden]` as f32 (decoded now if packed).
    pub fn table(&self) -> Tensor<2> {
        match (&self.weight, &self.packed) {
            (_, Some(p)) => p.out_in(),
            (Some(w), None) => w.val(),
            (None, None) => unreachable!("invariant: an embedding holds a dense or a packed table"),
        }
    }

    /// Gemma's scale `√hidden`, rounded to f32 as transformers rounds it
    /// (`torch.tensor(hidden ** 0.5, dtype=float32)`).
    pub fn gemma_scale(hidden: usize) -> f64 {
        f64::from((hidden as f64).sqrt() as f32)
    }

    /// # Shapes
    /// - ids: `[B, T]` → `[B, T, H]`
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let x = match (&self.weight, &self.packed) {
            (_, Some(p)) => lookup_packed(p, ids),
            (Some(w), None) => burn::tensor::module::embedding(w.val(), ids),
            (None, None) => unreachable!("invariant: an embedding holds a dense or a packed table"),
        };
        if self.scale == 1.0 { x } else { x.mul_scalar(self.scale) }
    }
}

/// Decodes only the looked-up rows of a packed table: on the device by selecting them there; on
/// the host after reading the ids back, a synchronous read, which natively always works (the
/// browser keeps host tables dense).
fn lookup_packed(p: &PackedWeight, ids: Tensor<2, Int>) -> Tensor<3> {
    let [b, t] = ids.dims();
    let hidden = p.dims().1;
    if let PackedWeight::Device(d) = p {
        return d.select(ids.reshape([b * t])).dequantize().reshape([b, t, hidden]);
    }
    // Ids come from our tokenizer and are below the vocabulary size; a stray one decodes as a
    // zero row rather than panicking.
    let rows: Vec<usize> = ids
        .into_data()
        .iter::<i64>()
        .map(|i| usize::try_from(i).unwrap_or(usize::MAX))
        .collect();
    p.gather(&rows).reshape([b, t, hidden])
}
