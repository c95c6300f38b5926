//! Frozen matrices kept on the device in their stored precision and dequantised there when a
//! layer runs: on a GPU the base never passes through the host again after loading, and only the
//! layer being computed exists in f32.
//!
//! The layout ([`super::packed::HostPlanes`]) is the same for every format: each element an
//! unsigned integer code split into bit planes packed in 32-bit words, and per group of a row a
//! scale (and an offset); a 16-bit float is a 16-bit code whose sign, exponent and mantissa
//! become the value through exact power-of-two tables. Everything here is integer shifts and
//! masks, one lookup and one or two f32 products per element, and gives the host decoder's
//! numbers bit for bit (the tests compare them). On a GPU one kernel does it in a single pass
//! (`model::dequant_kernel`, CubeCL: WGSL for WebGPU, SPIR-V/MSL natively); its reference twin
//! here is plain tensor operations ([`DeviceMatrix::dequantize_by_tensors`]), which the CPU
//! backend runs (`--base packed-device`).

use std::ops::Range;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::packed::{DeviceForm, PackedMatrix};

/// A `[rows, cols]` matrix on the device in its stored precision.
#[derive(Debug, Clone)]
pub struct DeviceMatrix {
    rows: usize,
    cols: usize,
    /// `[rows, row_words]`: each row's planes side by side.
    words: Tensor<2, Int>,
    planes: Vec<Plane>,
    values: Values,
    device: Device,
}

/// A bit plane: words `start .. start + cols·width/32` of each row, bits `shift .. shift + width`
/// of each code.
#[derive(Debug, Clone, Copy)]
struct Plane {
    start: usize,
    width: u32,
    shift: u32,
}

/// How codes become values.
// One per matrix, a few hundred per model: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Values {
    /// `t(q)·s + o` per group ([`DeviceForm::Codes`]).
    Codes {
        group: usize,
        zero: i32,
        codebook: Option<Tensor<1>>,
        /// `[rows, cols/group]`.
        scales: Tensor<2>,
        /// `[rows, cols/group]`.
        offsets: Option<Tensor<2>>,
    },
    /// A 16-bit float: `pow2[e]·(m + implicit[e])·(±1)`.
    Half {
        mantissa_bits: u32,
        exponent_mask: i32,
        pow2: Tensor<1>,
        implicit: Tensor<1>,
    },
}

/// `2^k` exactly, as f32 (a subnormal for `k < −126`).
fn pow2(k: i32) -> f32 {
    2f64.powi(k) as f32
}

impl DeviceMatrix {
    /// Uploads `m` in its device layout; `None` if it has no [`DeviceForm`].
    pub fn upload(m: &PackedMatrix, device: &Device) -> Option<Self> {
        let form = m.device_form()?.clone();
        let host = m.device_planes()?;
        let (rows, cols) = host.dims;
        // Every plane of a row side by side, so that one tensor (and one kernel input) holds them.
        let row_words: usize = host.planes.iter().map(|(w, ..)| w.len() / rows.max(1)).sum();
        let mut words = Vec::with_capacity(rows * row_words);
        for r in 0..rows {
            for (w, ..) in &host.planes {
                let n = w.len() / rows;
                words.extend_from_slice(&w[r * n..(r + 1) * n]);
            }
        }
        let mut start = 0;
        let planes = host
            .planes
            .iter()
            .map(|(w, width, shift)| {
                let plane = Plane {
                    start,
                    width: *width,
                    shift: *shift,
                };
                start += w.len() / rows.max(1);
                plane
            })
            .collect();
        let words = Tensor::from_data(TensorData::new(words, [rows, row_words]), device);
        let floats = |v: Vec<f32>, shape: [usize; 2]| Tensor::<2>::from_data(TensorData::new(v, shape), device);
        let table = |v: Vec<f32>| {
            let n = v.len();
            Tensor::<1>::from_data(TensorData::new(v, [n]), device)
        };
        let values = match form {
            DeviceForm::Codes {
                group, zero, codebook, ..
            } => {
                let shape = [rows, cols / group];
                Values::Codes {
                    group,
                    zero,
                    codebook: codebook.map(|c| table(c.to_vec())),
                    scales: floats(host.scales, shape),
                    offsets: host.offsets.map(|o| floats(o, shape)),
                }
            }
            DeviceForm::Half { exponent_bits } => {
                let mantissa_bits = 15 - exponent_bits;
                let emax = (1i32 << exponent_bits) - 1;
                let bias = (1i32 << (exponent_bits - 1)) - 1;
                // Exponent 0 (subnormal) scales like exponent 1 without the implicit bit; the
                // all-ones exponent (inf / NaN, never in weights) decodes as ±inf.
                let scale = |e: i32| match e {
                    e if e == emax => f32::INFINITY,
                    e => pow2(e.max(1) - bias - mantissa_bits as i32),
                };
                Values::Half {
                    mantissa_bits,
                    exponent_mask: emax,
                    pow2: table((0..=emax).map(scale).collect()),
                    implicit: table(
                        (0..=emax)
                            .map(|e| if e == 0 { 0.0 } else { pow2(mantissa_bits as i32) })
                            .collect(),
                    ),
                }
            }
        };
        Some(Self {
            rows,
            cols,
            words,
            planes,
            values,
            device: device.clone(),
        })
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The device it lives on.
    pub fn device(&self) -> Device {
        self.device.clone()
    }

    /// Whether its tensors live under autodiff (a matrix uploaded to an autodiff device).
    pub fn is_autodiff(&self) -> bool {
        self.words.is_autodiff()
    }

    /// Bytes held on the device (words, scales and offsets).
    pub fn device_bytes(&self) -> usize {
        let plane_bits: usize = self.planes.iter().map(|p| p.width as usize).sum();
        let codes = self.rows * self.cols * plane_bits / 8;
        codes
            + match &self.values {
                Values::Codes { group, offsets, .. } => {
                    self.rows * self.cols / group * 4 * if offsets.is_some() { 2 } else { 1 }
                }
                Values::Half { .. } => 0,
            }
    }

    /// Applies `f` to every per-row tensor (words, scales, offsets).
    fn map_rows(
        &self,
        rows: usize,
        f: impl Fn(Tensor<2>) -> Tensor<2>,
        g: impl Fn(Tensor<2, Int>) -> Tensor<2, Int>,
    ) -> Self {
        let words = g(self.words.clone());
        let mut values = self.values.clone();
        if let Values::Codes { scales, offsets, .. } = &mut values {
            *scales = f(scales.clone());
            if let Some(o) = offsets {
                *o = f(o.clone());
            }
        }
        Self {
            rows,
            cols: self.cols,
            words,
            planes: self.planes.clone(),
            values,
            device: self.device.clone(),
        }
    }

    /// Rows `range`.
    pub fn narrow(&self, range: Range<usize>) -> Self {
        let (start, len) = (range.start, range.len());
        self.map_rows(len, |t| t.narrow(0, start, len), |t| t.narrow(0, start, len))
    }

    /// Rows `ids` (`[n]`, each below `rows`), in that order.
    pub fn select(&self, ids: Tensor<1, Int>) -> Self {
        let n = ids.dims()[0];
        self.map_rows(n, |t| t.select(0, ids.clone()), |t| t.select(0, ids.clone()))
    }

    /// Every element's code, `[rows, cols]`.
    fn codes(&self) -> Tensor<2, Int> {
        let (n, cols) = (self.rows, self.cols);
        let mut acc: Option<Tensor<2, Int>> = None;
        for p in &self.planes {
            let per = (32 / p.width) as usize;
            let words = cols / per;
            let shifts: Vec<i32> = (0..per as i32).map(|k| k * p.width as i32).collect();
            let shifts = Tensor::<1, Int>::from_data(TensorData::new(shifts, [per]), &self.device)
                .reshape([1, 1, per])
                .expand([n, words, per]);
            let bits = self
                .words
                .clone()
                .narrow(1, p.start, words)
                .unsqueeze_dim::<3>(2)
                .expand([n, words, per])
                .bitwise_right_shift(shifts)
                .bitwise_and_scalar((1i64 << p.width) - 1)
                .reshape([n, cols]);
            let bits = if p.shift > 0 {
                bits.bitwise_left_shift_scalar(p.shift as i64)
            } else {
                bits
            };
            acc = Some(match acc {
                Some(a) => a.bitwise_or(bits),
                None => bits,
            });
        }
        acc.expect("invariant: a device matrix has at least one plane")
    }

    /// Looks `index` (`[rows, cols]`) up in `table`.
    fn lookup(table: &Tensor<1>, index: Tensor<2, Int>) -> Tensor<2> {
        let [n, cols] = index.dims();
        table.clone().select(0, index.reshape([n * cols])).reshape([n, cols])
    }

    /// The values as f32, `[rows, cols]` (the checkpoint's `[out, in]` layout): on a GPU by one
    /// kernel ([`super::dequant_kernel`]), else by tensor operations
    /// ([`DeviceMatrix::dequantize_by_tensors`]); the same values.
    pub fn dequantize(&self) -> Tensor<2> {
        match self.kernel_inputs() {
            Some((layout, a, b, c)) => super::dequant_kernel::dequantize(self.words.clone(), a, b, c, layout),
            None => self.dequantize_by_tensors(),
        }
    }

    /// `x · Wᵀ` (`[m, cols]` → `[m, rows]`), or `x · W` when `transpose` (`[m, rows]` →
    /// `[m, cols]`), with `W` dequantised inside the product by one GPU kernel
    /// ([`super::dequant_kernel::dequantize_product`]): no f32 copy of the matrix is made. `None`
    /// where that kernel does not run (the CPU backend, a layout beyond the kernel, or x's width
    /// not the product's inner dimension). Whether a layer takes it: [`use_fused_product`].
    pub fn fused_product(&self, x: Tensor<2>, transpose: bool) -> Option<Tensor<2>> {
        let inner = if transpose { self.rows } else { self.cols };
        if x.dims()[1] != inner {
            return None;
        }
        let (layout, a, b, c) = self.kernel_inputs()?;
        Some(super::dequant_kernel::dequantize_product(
            x,
            self.words.clone(),
            a,
            b,
            c,
            layout,
            transpose,
        ))
    }

    /// The GPU kernels' layout and inputs (scales, offsets and codebook, or a 16-bit float's
    /// tables; an unused input repeats another), where they run for this matrix.
    fn kernel_inputs(&self) -> Option<(super::dequant_kernel::Layout, Tensor<1>, Tensor<1>, Tensor<1>)> {
        let layout = self.kernel_layout()?;
        if !super::dequant_kernel::applies(&self.device) {
            return None;
        }
        let flat = |t: &Tensor<2>| t.clone().reshape([t.dims()[0] * t.dims()[1]]);
        let (a, b, c) = match &self.values {
            Values::Codes {
                codebook,
                scales,
                offsets,
                ..
            } => {
                let a = flat(scales);
                let b = offsets.as_ref().map(flat).unwrap_or_else(|| a.clone());
                let c = codebook.clone().unwrap_or_else(|| a.clone());
                (a, b, c)
            }
            Values::Half { pow2, implicit, .. } => (pow2.clone(), implicit.clone(), pow2.clone()),
        };
        Some((layout, a, b, c))
    }

    /// What the kernel needs to know of the layout; `None` beyond its three planes.
    fn kernel_layout(&self) -> Option<super::dequant_kernel::Layout> {
        use super::dequant_kernel::{Layout, ValueRule};
        if self.planes.is_empty() || self.planes.len() > 3 {
            return None;
        }
        let mut layout = Layout {
            cols: u32::try_from(self.cols).ok()?,
            row_words: u32::try_from(self.words.dims()[1]).ok()?,
            planes: self.planes.len() as u32,
            widths: [32; 3],
            shifts: [0; 3],
            starts: [0; 3],
            values: match &self.values {
                Values::Codes {
                    group,
                    zero,
                    codebook,
                    offsets,
                    ..
                } => ValueRule::Codes {
                    group: u32::try_from(*group).ok()?,
                    zero: *zero,
                    book: codebook.is_some(),
                    offsets: offsets.is_some(),
                },
                Values::Half { mantissa_bits, .. } => ValueRule::Half {
                    mantissa_bits: *mantissa_bits,
                },
            },
        };
        for (k, p) in self.planes.iter().enumerate() {
            layout.widths[k] = p.width;
            layout.shifts[k] = p.shift;
            layout.starts[k] = u32::try_from(p.start).ok()?;
        }
        Some(layout)
    }

    /// [`DeviceMatrix::dequantize`] by tensor operations: the kernel's reference twin, and the
    /// path of the CPU backend.
    pub fn dequantize_by_tensors(&self) -> Tensor<2> {
        let (n, cols) = (self.rows, self.cols);
        let codes = self.codes();
        match &self.values {
            Values::Codes {
                group,
                zero,
                codebook,
                scales,
                offsets,
            } => {
                let t = match codebook {
                    Some(book) => Self::lookup(book, codes),
                    None => codes.sub_scalar(*zero as i64).float(),
                };
                let shape = [n, cols / group, *group];
                let per_group = |s: &Tensor<2>| s.clone().unsqueeze_dim::<3>(2).expand(shape);
                let x = t.reshape(shape) * per_group(scales);
                let x = match offsets {
                    Some(o) => x + per_group(o),
                    None => x,
                };
                x.reshape([n, cols])
            }
            Values::Half {
                mantissa_bits,
                exponent_mask,
                pow2,
                implicit,
            } => {
                let exponent = codes
                    .clone()
                    .bitwise_right_shift_scalar(*mantissa_bits as i64)
                    .bitwise_and_scalar(*exponent_mask as i64);
                let mantissa = codes.clone().bitwise_and_scalar((1i64 << mantissa_bits) - 1).float();
                let sign = codes
                    .bitwise_right_shift_scalar(15)
                    .mul_scalar(-2)
                    .add_scalar(1)
                    .float();
                let magnitude = Self::lookup(pow2, exponent.clone()) * (mantissa + Self::lookup(implicit, exponent));
                magnitude * sign
            }
        }
    }
}

/// Whether a packed matrix's products on a GPU dequantise inside the product (off by default);
/// see [`use_fused_product`].
static FUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Switches the fused dequantising product on or off for the whole process. Off (the default),
/// a packed matrix on a GPU is dequantised by its own kernel into an f32 matrix, multiplied by
/// burn's product and dropped; on, [`DeviceMatrix::fused_product`] multiplies it without that
/// copy. On lavapipe the first is 3–4x faster, burn's product being tuned where the fused one
/// is a plain tiled loop (`lora-null bench dequant-device`, BENCHMARKS.md; SwiftShader untimed);
/// the fused one reads 0.6–2 bytes per weight instead of writing and reading 4, which on a real
/// GPU is unmeasured yet.
pub fn use_fused_product(on: bool) {
    FUSED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// `x · Wᵀ + b` for a device matrix `W` (`[out, in]`), dequantised for the product and dropped
/// after it. On a GPU a tracked `x` records its own backward, which dequantises `W` again for
/// `∂x = g·W`: the graph keeps the stored matrix, not an f32 copy, so a training step holds one
/// layer's decoded weight at a time instead of the whole base in f32 (the QLoRA linear; burn's
/// product would keep its f32 operand until the backward). Elsewhere (untracked, or the CPU
/// backend) it is the product with the dequantised matrix.
///
/// # Shapes
/// - x: `[..., in]` → `[..., out]`
pub fn linear<const D: usize>(x: Tensor<D>, w: &DeviceMatrix, bias: Option<Tensor<1>>) -> Tensor<D> {
    linear_by(x, w, bias, FUSED.load(std::sync::atomic::Ordering::Relaxed))
}

/// [`linear`], on a GPU through the fused dequantising product when `fused` (whatever
/// [`use_fused_product`] says), else through the dequantised matrix.
pub fn linear_by<const D: usize>(x: Tensor<D>, w: &DeviceMatrix, bias: Option<Tensor<1>>, fused: bool) -> Tensor<D> {
    let (out, k) = w.dims();
    let dims = x.dims();
    let m: usize = dims[..D - 1].iter().product();
    let tracked = (x.is_autodiff() && m * k * out > 0 && dims[D - 1] == k)
        .then(|| tracked::product(x.clone().reshape([1, m, k]), w, fused))
        .flatten();
    let y = match tracked {
        Some(y) => {
            let mut shape = dims;
            shape[D - 1] = out;
            y.reshape(shape)
        }
        None => {
            let mut shape = dims;
            shape[D - 1] = out;
            let flat = (fused && !x.is_autodiff() && m > 0).then(|| x.clone().reshape([m, dims[D - 1]]));
            match flat.and_then(|x| w.fused_product(x, false)) {
                Some(y) => y.reshape(shape),
                None => super::cpu_linear::linear(x, w.dequantize().transpose(), None),
            }
        }
    };
    match bias {
        Some(b) => y + b.unsqueeze::<D>(),
        None => y,
    }
}

/// The dequantising product recorded for autodiff on the GPU backends (burn's `Cube`).
mod tracked {
    use burn::backend::Cube;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::Tensor;

    use super::DeviceMatrix;
    use crate::model::gpu_ops::tracked::Tracked;

    /// `x · Wᵀ` (`[1, m, in]` → `[1, m, out]`) for an `x` under autodiff on a GPU; `None`
    /// elsewhere, or when `W` itself lives under autodiff.
    pub(super) fn product(x: Tensor<3>, w: &DeviceMatrix, fused: bool) -> Option<Tensor<3>> {
        if w.is_autodiff() {
            return None;
        }
        let x = x.try_into_primitive::<Tracked>().ok()?;
        Some(Tensor::from_primitive::<Tracked>(record(x, w.clone(), fused)))
    }

    fn record(x: FloatTensor<Tracked>, w: DeviceMatrix, fused: bool) -> FloatTensor<Tracked> {
        /// Keeps the stored matrix; the input's gradient dequantises it again (inside the fused
        /// product when `fused`).
        #[derive(Debug)]
        struct DequantBackward;

        impl Backward<Cube, 1> for DequantBackward {
            type State = (DeviceMatrix, bool);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let (w, fused) = ops.state;
                unary::<Cube, _>(ops.parents, ops.node, grads, |g| plain(g, &w, true, fused));
            }
        }

        match DequantBackward
            .prepare::<NoCheckpointing>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = plain(x.into_primitive(), &w, false, fused);
                prep.finish((w, fused), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(plain(x.into_primitive(), &w, false, fused)),
        }
    }

    /// `x · Wᵀ` (or `x · W` when `transpose`) on the plain GPU backend, `W` dequantised for the
    /// call: inside the product when `fused`, else into an f32 matrix dropped after it.
    fn plain(x: FloatTensor<Cube>, w: &DeviceMatrix, transpose: bool, fused: bool) -> FloatTensor<Cube> {
        let x = Tensor::<3>::from_primitive::<Cube>(x);
        let [_, m, k] = x.dims();
        let y = fused
            .then(|| w.fused_product(x.clone().reshape([m, k]), transpose))
            .flatten();
        if let Some(y) = y {
            let n = y.dims()[1];
            return y
                .reshape([1, m, n])
                .try_into_primitive::<Cube>()
                .expect("invariant: the fused product of a plain GPU tensor is a plain GPU tensor");
        }
        let w = w.dequantize();
        let w = if transpose { w } else { w.transpose() };
        x.matmul(w.unsqueeze::<3>())
            .try_into_primitive::<Cube>()
            .expect("invariant: a plain GPU tensor times a plain matrix on its device is a plain GPU tensor")
    }
}
