//! Linear layers. The checkpoint stores `weight` as `[out, in]`; we keep it transposed,
//! `[in, out]`, because burn's CPU backend copies a transposed operand on every matmul with a
//! batched input (a 5× slowdown of decoding).
//!
//! The model's blocks are generic over [`Projection`]: the plain [`Linear`] here, or any layer
//! that wraps one (LoRA, in `lora::LoraLinear`), so this module knows nothing of adapters.
//!
//! A frozen weight is either a dense f32 tensor or [packed](super::packed): kept as the file
//! stores it and decoded when the layer runs (see [`Linear::weight_in_out`]).

use std::ops::Range;
use std::sync::Arc;

use burn::module::{Module, ModuleDisplay, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::dequant::DeviceMatrix;
use super::packed::PackedMatrix;
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

/// A frozen matrix kept in its stored precision: on the host and decoded there when used (the
/// CPU backend, whose device memory is host memory), or on the device in the layout its own
/// operations dequantise ([`DeviceMatrix`]: a GPU, where the base then never crosses back).
#[derive(Debug, Clone)]
pub enum PackedWeight {
    /// The `[out, in]` matrix as stored, and where its decoded values go.
    Host {
        /// The matrix as stored.
        matrix: Arc<PackedMatrix>,
        /// Where decoded values are uploaded.
        device: Device,
    },
    /// The `[out, in]` matrix on the device.
    Device(Box<DeviceMatrix>),
}

impl PackedWeight {
    /// Keeps `matrix` for `device`: on a GPU in the device layout when its format has one (or
    /// whenever `on_device`), else on the host.
    pub fn place(matrix: PackedMatrix, device: &Device, on_device: bool) -> Self {
        if (on_device || *device != Device::flex())
            && let Some(d) = DeviceMatrix::upload(&matrix, device)
        {
            return Self::Device(Box::new(d));
        }
        Self::Host {
            matrix: Arc::new(matrix),
            device: device.clone(),
        }
    }

    /// Whether the matrix lives on the device.
    pub fn is_on_device(&self) -> bool {
        matches!(self, Self::Device(_))
    }

    /// `(rows, cols)` of the `[out, in]` matrix.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Self::Host { matrix, .. } => matrix.dims(),
            Self::Device(d) => d.dims(),
        }
    }

    /// Bytes held: the stored encoding on the host, or the device layout.
    pub fn stored_bytes(&self) -> usize {
        match self {
            Self::Host { matrix, .. } => matrix.stored_bytes(),
            Self::Device(d) => d.device_bytes(),
        }
    }

    /// Rows `range` of the `[out, in]` matrix, transposed to `[in, range.len()]`, on the device.
    pub fn columns(&self, range: Range<usize>) -> Tensor<2> {
        match self {
            Self::Host { matrix, device } => {
                let (n, cols) = (range.len(), matrix.dims().1);
                Tensor::from_data(TensorData::new(matrix.decode_range(range), [n, cols]), device).transpose()
            }
            Self::Device(d) => d.narrow(range).dequantize().transpose(),
        }
    }

    /// The whole `[out, in]` matrix, on the device.
    pub fn out_in(&self) -> Tensor<2> {
        match self {
            Self::Host { matrix, device } => {
                let (rows, cols) = matrix.dims();
                Tensor::from_data(TensorData::new(matrix.decode_range(0..rows), [rows, cols]), device)
            }
            Self::Device(d) => d.dequantize(),
        }
    }

    /// Rows `ids` of the `[out, in]` matrix, `[ids.len(), in]`, on the device (callers pass ids
    /// below the row count; a stray one reads a zero row on the host, the last row on the device).
    pub fn gather(&self, ids: &[usize]) -> Tensor<2> {
        match self {
            Self::Host { matrix, device } => {
                let cols = matrix.dims().1;
                let mut out = vec![0f32; ids.len() * cols];
                matrix.decode_rows_into(ids, &mut out);
                Tensor::from_data(TensorData::new(out, [ids.len(), cols]), device)
            }
            Self::Device(d) => {
                let rows = d.dims().0;
                let index: Vec<i32> = ids.iter().map(|&i| i.min(rows.saturating_sub(1)) as i32).collect();
                let index = Tensor::<1, Int>::from_data(TensorData::new(index, [ids.len()]), &d.device());
                d.select(index).dequantize()
            }
        }
    }
}

/// A frozen low-rank term subtracted from a packed weight: `W − s·B·A` without writing the
/// difference out in f32 (how the initialisations that change the base keep a packed base).
#[derive(Module, Debug)]
pub struct LowRank {
    /// `A`, `[r, in]`.
    pub a: Param<Tensor<2>>,
    /// `B`, `[out, r]`.
    pub b: Param<Tensor<2>>,
    /// `s`.
    pub scale: f64,
}

impl LowRank {
    /// `s·Aᵀ·Bᵀ`, `[in, out]` (the stored layout).
    fn in_out(&self) -> Tensor<2> {
        self.a
            .val()
            .transpose()
            .matmul(self.b.val().transpose())
            .mul_scalar(self.scale)
    }
}

/// `y = x Wᵀ + b`; weight and bias are frozen.
#[derive(Module, Debug)]
pub struct Linear {
    /// Checkpoint key `<prefix>.weight`, stored TRANSPOSED: `[in_features, out_features]`;
    /// `None` when the weight is packed. Use [`Linear::weight_in_out`] / [`Linear::weight_out_in`]
    /// / [`Linear::set_weight`] rather than this field.
    pub weight: Option<Param<Tensor<2>>>,
    /// The weight in its stored encoding, decoded on use (instead of `weight`).
    #[module(skip)]
    pub packed: Option<PackedWeight>,
    /// Optional bias, `[out_features]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Subtracted from the weight (see [`Linear::subtract_low_rank`]).
    pub correction: Option<LowRank>,
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
    /// Loads `<prefix>.weight` (checkpoint shape `[out, in]`) and `<prefix>.bias` when `bias`;
    /// the weight stays packed when the builder packs and the source can.
    pub fn load(vb: &VarBuilder, in_features: usize, out_features: usize, bias: bool) -> Result<Self, WeightError> {
        let bias = if bias {
            Some(frozen(vb.get("bias", [out_features])?))
        } else {
            None
        };
        if let Some(packed) = vb.packed_weight("weight", [out_features, in_features])? {
            return Ok(Self {
                weight: None,
                packed: Some(packed),
                bias,
                correction: None,
            });
        }
        let w = vb.host("weight", &[out_features, in_features])?;
        let values = w
            .as_slice::<f32>()
            .map_err(|e| WeightError::Source(format!("{}: {e:?}", vb.key("weight"))))?;
        let weight = upload_transposed(values, out_features, in_features, vb.device());
        Ok(Self {
            weight: Some(frozen(weight)),
            packed: None,
            bias,
            correction: None,
        })
    }

    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        match (&self.weight, &self.packed) {
            (_, Some(p)) => p.dims(),
            (Some(w), None) => {
                let [i, o] = w.val().dims();
                (o, i)
            }
            (None, None) => (0, 0),
        }
    }

    /// Whether the weight is kept packed (decoded on use).
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// Bytes the frozen weight holds: its stored encoding when packed, else f32 (with a
    /// low-rank correction's factors).
    pub fn weight_bytes(&self) -> usize {
        let (o, i) = self.dims();
        let correction = self
            .correction
            .as_ref()
            .map_or(0, |c| c.a.val().dims()[0] * (o + i) * 4);
        correction
            + match &self.packed {
                Some(p) => p.stored_bytes(),
                None => o * i * 4,
            }
    }

    /// The frozen weight and the bias as [`cpu_low_rank`](super::cpu_low_rank)'s fused layer
    /// takes them: a dense one, or a packed one kept on the host; `None` for a corrected layer
    /// or one packed on a device.
    pub fn low_rank_base(&self) -> Option<(super::cpu_low_rank::Base, Option<Tensor<1>>)> {
        use super::cpu_low_rank::Base;
        let base = match (&self.weight, &self.packed, &self.correction) {
            (Some(w), None, None) => Base::Dense(w.val()),
            (_, Some(PackedWeight::Host { matrix, .. }), None) => Base::Packed(matrix.clone()),
            _ => return None,
        };
        Some((base, self.bias.as_ref().map(|b| b.val())))
    }

    /// The stored weight `[in, out]` as f32, without the correction (decoded now if packed).
    fn stored_in_out(&self) -> Tensor<2> {
        match (&self.weight, &self.packed) {
            (_, Some(p)) => p.columns(0..p.dims().0),
            (Some(w), None) => w.val(),
            (None, None) => unreachable!("invariant: a linear layer holds a dense or a packed weight"),
        }
    }

    /// The weight in the stored layout `[in, out]`, as f32 (decoded now if packed; with the
    /// low-rank correction applied).
    pub fn weight_in_out(&self) -> Tensor<2> {
        match &self.correction {
            Some(c) => self.stored_in_out() - c.in_out(),
            None => self.stored_in_out(),
        }
    }

    /// Makes the weight `W − s·B·A` (`a`: `[r, in]`, `b`: `[out, r]`). A dense weight takes the
    /// difference; a packed one keeps its bytes and subtracts `s·B·(A·x)` when it runs.
    pub fn subtract_low_rank(&mut self, a: Tensor<2>, b: Tensor<2>, scale: f64) {
        if self.is_packed() {
            let (a, b, scale) = match self.correction.take() {
                // A second correction (not something the initialisations do) stacks on the first.
                Some(c) => (
                    Tensor::cat(vec![c.a.val().mul_scalar(c.scale), a.mul_scalar(scale)], 0),
                    Tensor::cat(vec![c.b.val(), b], 1),
                    1.0,
                ),
                None => (a, b, scale),
            };
            self.correction = Some(LowRank {
                a: frozen(a),
                b: frozen(b),
                scale,
            });
        } else {
            let delta = a.transpose().matmul(b.transpose()).mul_scalar(-scale);
            self.add_to_weight(delta);
        }
    }

    /// Output features `range` of the weight, `[in, range.len()]` (a vocabulary chunk of the
    /// output layer), decoding only those rows when packed.
    pub fn weight_columns(&self, range: Range<usize>) -> Tensor<2> {
        match (&self.packed, &self.correction) {
            (Some(p), None) => p.columns(range),
            _ => self.weight_in_out().narrow(1, range.start, range.len()),
        }
    }

    /// Output features `ids` of the weight as rows, `[ids.len(), in]` (the output-layer rows of
    /// some labels), decoding only those rows when packed. Ids must be below `out_features`.
    pub fn weight_rows(&self, ids: &[usize]) -> Tensor<2> {
        match (&self.packed, &self.correction) {
            (Some(p), None) => p.gather(ids),
            _ => {
                let w = self.weight_in_out();
                let index: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
                let index = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(index, [ids.len()]), &w.device());
                w.select(1, index).transpose()
            }
        }
    }

    /// The weight in the checkpoint layout `[out, in]`.
    pub fn weight_out_in(&self) -> Tensor<2> {
        match (&self.packed, &self.correction) {
            (Some(p), None) => p.out_in(),
            _ => self.weight_in_out().transpose(),
        }
    }

    /// Replaces the base weight with `w` given as `[out, in]` (frozen, dense).
    pub fn set_weight(&mut self, w: &Matrix, device: &Device) {
        self.weight = Some(frozen(upload_transposed(&w.to_f32(), w.rows, w.cols, device)));
        self.packed = None;
        self.correction = None;
    }

    /// Adds `delta` (`[in, out]`, the stored layout) to the base weight (frozen; a packed weight
    /// becomes dense: its new values have no exact packed form).
    pub fn add_to_weight(&mut self, delta: Tensor<2>) {
        self.weight = Some(frozen(self.weight_in_out() + delta));
        self.packed = None;
        self.correction = None;
    }
}

impl Projection for Linear {
    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        let correction = self.correction.as_ref().map(|c| (c, x.clone()));
        let y = match &self.packed {
            Some(PackedWeight::Host { matrix, .. }) => super::cpu_linear::packed_linear(x, matrix, bias),
            Some(PackedWeight::Device(w)) => super::dequant::linear(x, w, bias),
            _ => super::cpu_linear::linear(x, self.stored_in_out(), bias),
        };
        match correction {
            Some((c, x)) => {
                let down = super::cpu_linear::linear(x, c.a.val().transpose(), None);
                y - super::cpu_linear::linear(down, c.b.val().transpose(), None).mul_scalar(c.scale)
            }
            None => y,
        }
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
