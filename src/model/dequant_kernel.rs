//! One GPU kernel that dequantises a packed matrix ([`super::dequant::DeviceMatrix`]) in a
//! single pass: each thread reads its element's bits from the bit-plane words, its group's scale
//! (and offset) or the 16-bit float's tables, and writes the f32 value. The tensor formulation in
//! `model::dequant` (its reference twin, and what the CPU backend runs) takes a dozen operations
//! with `[rows, cols]` integer intermediates; this reads the stored bytes once and writes the
//! output once. CubeCL compiles it to WGSL for the browser's WebGPU and to SPIR-V/MSL natively.
//!
//! Reached through burn's backend extension (`Dispatch`), so it runs on burn's CubeCL backend
//! with or without kernel fusion; the caller checks the device first ([`applies`]).

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, backend_extension};
use burn::tensor::{DType, Device, Int, Shape, Tensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::{CubeDim, calculate_cube_count_elemwise};

/// How the words hold a matrix's codes, and how codes become values (all host numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Columns of the matrix.
    pub cols: u32,
    /// Words per row (all planes).
    pub row_words: u32,
    /// Planes in use (1 to 3).
    pub planes: u32,
    /// Per plane: bits per element.
    pub widths: [u32; 3],
    /// Per plane: where its bits go in the code.
    pub shifts: [u32; 3],
    /// Per plane: the first word of the plane within a row.
    pub starts: [u32; 3],
    /// How codes become values.
    pub values: ValueRule,
}

/// How a code becomes a value (see `packed::DeviceForm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueRule {
    /// `t(q)·s (+ o)`, per group of `group` elements of a row; `t(q) = book[q]` or `q − zero`.
    Codes {
        /// Elements per scale.
        group: u32,
        /// `t(q) = q − zero` without a codebook.
        zero: i32,
        /// Whether `t(q)` is looked up in the codebook.
        book: bool,
        /// Whether groups have offsets.
        offsets: bool,
    },
    /// A 16-bit float: `pow2[e]·(m + implicit[e])·(±1)`.
    Half {
        /// Mantissa bits (10 for f16, 7 for bf16).
        mantissa_bits: u32,
    },
}

/// The output's shape: `[rows, cols]` (what fusion registers before the kernel runs).
#[cfg(any(not(target_arch = "wasm32"), feature = "gpu-fusion"))]
fn output_shape(words: &Shape, layout: &Layout) -> Shape {
    Shape::from([words[0], layout.cols as usize])
}

/// The dequantising kernel as a backend operation.
#[backend_extension(Cube, Fusion: cfg(any(not(target_arch = "wasm32"), feature = "gpu-fusion")))]
pub trait DequantOps: Backend {
    /// The `[rows, cols]` f32 values of the matrix in `words` (`[rows, row_words]`, every plane
    /// of a row side by side). Codes: `a` the scales and `b` the offsets (`[rows, cols/group]`),
    /// `c` the codebook. Halves: `a` the powers of two and `b` the implicit bits, per exponent.
    /// An unused input may be any float tensor.
    #[fusion(dtype = a, shape = output_shape(words, layout))]
    fn dequantize_words(
        words: IntTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        layout: Layout,
    ) -> FloatTensor<Self>;
}

impl DequantOps for CubeBackend {
    fn dequantize_words(
        words: IntTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        layout: Layout,
    ) -> FloatTensor<Self> {
        launch(words, a, b, c, layout)
    }
}

fn launch(words: CubeTensor, a: CubeTensor, b: CubeTensor, c: CubeTensor, layout: Layout) -> CubeTensor {
    let rows = words.meta.shape()[0];
    let shape = Shape::from([rows, layout.cols as usize]);
    let out = empty_device_dtype(words.client.clone(), words.device.clone(), shape, DType::F32);
    let n = rows * layout.cols as usize;
    if n == 0 {
        return out;
    }
    let client = words.client.clone();
    let cube_dim = CubeDim::new(&client, n);
    let cube_count = calculate_cube_count_elemwise(&client, n, cube_dim);
    let (half, group, zero, book, offsets, mantissa) = match layout.values {
        ValueRule::Codes {
            group,
            zero,
            book,
            offsets,
        } => (false, group, zero, book, offsets, 0),
        ValueRule::Half { mantissa_bits } => (true, 1, 0, false, false, mantissa_bits),
    };
    kernel::dequantize_kernel::launch(
        &client,
        cube_count,
        cube_dim,
        words.into_tensor_arg(),
        a.into_tensor_arg(),
        b.into_tensor_arg(),
        c.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        layout.cols,
        layout.row_words,
        layout.planes,
        layout.widths[0],
        layout.widths[1],
        layout.widths[2],
        layout.shifts[0],
        layout.shifts[1],
        layout.shifts[2],
        layout.starts[0],
        layout.starts[1],
        layout.starts[2],
        group,
        zero,
        mantissa,
        half,
        book,
        offsets,
    );
    out
}

/// The kernel itself, in CubeCL.
mod kernel {
    use cubecl::prelude::*;

    /// Bits `shift ..` of element `j` of a plane of `width`-bit fields starting at word `start` of
    /// the row at `base`.
    #[cube]
    fn plane_bits(words: &Tensor<i32>, base: usize, j: u32, width: u32, start: u32, shift: u32) -> i32 {
        let per = 32 / width;
        let word = words[base + (start + j / per) as usize];
        let field = (word >> i32::cast_from((j % per) * width)) & ((1i32 << i32::cast_from(width)) - 1);
        field << i32::cast_from(shift)
    }

    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn dequantize_kernel(
        words: &Tensor<i32>,
        a: &Tensor<f32>,
        b: &Tensor<f32>,
        c: &Tensor<f32>,
        out: &mut Tensor<f32>,
        cols: u32,
        row_words: u32,
        planes: u32,
        w0: u32,
        w1: u32,
        w2: u32,
        s0: u32,
        s1: u32,
        s2: u32,
        p0: u32,
        p1: u32,
        p2: u32,
        group: u32,
        zero: i32,
        mantissa: u32,
        #[comptime] half: bool,
        #[comptime] book: bool,
        #[comptime] offsets: bool,
    ) {
        let pos = ABSOLUTE_POS;
        if pos >= out.len() {
            terminate!();
        }
        let row = pos / cols as usize;
        let j = (pos % cols as usize) as u32;
        let base = row * row_words as usize;
        let mut code = plane_bits(words, base, j, w0, p0, s0);
        if planes > 1 {
            code |= plane_bits(words, base, j, w1, p1, s1);
        }
        if planes > 2 {
            code |= plane_bits(words, base, j, w2, p2, s2);
        }
        if half {
            let exponent_mask = (1i32 << i32::cast_from(15 - mantissa)) - 1;
            let e = ((code >> i32::cast_from(mantissa)) & exponent_mask) as usize;
            let m = f32::cast_from(code & ((1i32 << i32::cast_from(mantissa)) - 1));
            let sign = f32::cast_from(1 - 2 * ((code >> 15) & 1));
            out[pos] = a[e] * (m + b[e]) * sign;
        } else {
            let t = if book {
                c[code as usize]
            } else {
                f32::cast_from(code - zero)
            };
            let g = row * (cols / group) as usize + (j / group) as usize;
            let x = t * a[g];
            if offsets {
                out[pos] = x + b[g];
            } else {
                out[pos] = x;
            }
        }
    }
}

/// Whether the kernel runs for tensors on `device`: burn's CubeCL backends (WebGPU, Vulkan,
/// Metal, DX12), not the CPU backend.
pub fn applies(device: &Device) -> bool {
    let device = device.clone().inner();
    device != Device::flex()
}

/// The kernel on tensors (see [`DequantOps::dequantize_words`]).
pub fn dequantize(words: Tensor<2, Int>, a: Tensor<1>, b: Tensor<1>, c: Tensor<1>, layout: Layout) -> Tensor<2> {
    use burn::backend::Dispatch;
    // The frozen matrix takes no gradient: inputs that picked up an autodiff context (rows
    // selected by a tracked index) go in without it, so the output is a constant to the graph.
    Tensor::from_dispatch(Dispatch::dequantize_words(
        words.inner().into_dispatch(),
        a.inner().into_dispatch(),
        b.inner().into_dispatch(),
        c.inner().into_dispatch(),
        layout,
    ))
}
