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
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::{CubeCount, CubeDim, calculate_cube_count_elemwise};

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

/// The fused product's output shape: `[m, rows]`, or `[m, cols]` when `transpose`.
#[cfg(any(not(target_arch = "wasm32"), feature = "gpu-fusion"))]
fn product_shape(x: &Shape, words: &Shape, layout: &Layout, transpose: &bool) -> Shape {
    let n = if *transpose { layout.cols as usize } else { words[0] };
    Shape::from([x[0], n])
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

    /// `x · Wᵀ` (`[m, cols]` → `[m, rows]`), or `x · W` when `transpose` (`[m, rows]` →
    /// `[m, cols]`), for the matrix `W` in `words`, `a`, `b`, `c` as in
    /// [`DequantOps::dequantize_words`], dequantised inside the product: no f32 copy of `W`.
    #[fusion(dtype = x, shape = product_shape(x, words, layout, transpose))]
    fn dequantize_product(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        layout: Layout,
        transpose: bool,
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

    fn dequantize_product(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        layout: Layout,
        transpose: bool,
    ) -> FloatTensor<Self> {
        launch_product(x, words, a, b, c, layout, transpose)
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
    let (half, group, zero, book, offsets, mantissa) = layout.values.parts();
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

impl ValueRule {
    /// `(half, group, zero, book, offsets, mantissa_bits)`, the kernels' arguments.
    fn parts(self) -> (bool, u32, i32, bool, bool, u32) {
        match self {
            ValueRule::Codes {
                group,
                zero,
                book,
                offsets,
            } => (false, group, zero, book, offsets, 0),
            ValueRule::Half { mantissa_bits } => (true, 1, 0, false, false, mantissa_bits),
        }
    }
}

/// Units per side of one cube of the fused product.
const UNITS: u32 = 16;
/// Outputs per side of one unit's block: a cube computes a 64 × 64 tile.
const PER: u32 = 4;
/// Inner indices per step: x's and W's blocks take 2 × 16 × 65 f32 of shared memory (8.3 KB,
/// within WebGPU's default 16 KiB).
const DEPTH: u32 = 16;

fn launch_product(
    x: CubeTensor,
    words: CubeTensor,
    a: CubeTensor,
    b: CubeTensor,
    c: CubeTensor,
    layout: Layout,
    transpose: bool,
) -> CubeTensor {
    let x = into_contiguous(x);
    let (m, kx) = (x.meta.shape()[0], x.meta.shape()[1]);
    let rows = words.meta.shape()[0];
    let (n, k) = if transpose {
        (layout.cols as usize, rows)
    } else {
        (rows, layout.cols as usize)
    };
    debug_assert_eq!(kx, k, "the product's inner dimensions");
    let out = empty_device_dtype(x.client.clone(), x.device.clone(), Shape::from([m, n]), DType::F32);
    if m * n == 0 {
        return out;
    }
    let client = x.client.clone();
    let tiles = |d: usize| d.div_ceil((UNITS * PER) as usize) as u32;
    let cube_count = CubeCount::Static(tiles(n), tiles(m), 1);
    let (half, group, zero, book, offsets, mantissa) = layout.values.parts();
    kernel::dequantize_product_kernel::launch(
        &client,
        cube_count,
        CubeDim::new_2d(UNITS, UNITS),
        x.into_tensor_arg(),
        words.into_tensor_arg(),
        a.into_tensor_arg(),
        b.into_tensor_arg(),
        c.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        m as u32,
        n as u32,
        k as u32,
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
        transpose,
        UNITS as usize,
        PER as usize,
        DEPTH as usize,
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

    /// The value of element `j` of row `row` of the matrix.
    #[allow(clippy::too_many_arguments)]
    #[cube]
    fn value(
        words: &Tensor<i32>,
        a: &Tensor<f32>,
        b: &Tensor<f32>,
        c: &Tensor<f32>,
        row: usize,
        j: u32,
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
    ) -> f32 {
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
            a[e] * (m + b[e]) * sign
        } else {
            let t = if book {
                c[code as usize]
            } else {
                f32::cast_from(code - zero)
            };
            let g = row * (cols / group) as usize + (j / group) as usize;
            let v = t * a[g];
            if offsets { v + b[g] } else { v }
        }
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
        out[pos] = value(
            words, a, b, c, row, j, cols, row_words, planes, w0, w1, w2, s0, s1, s2, p0, p1, p2, group, zero, mantissa,
            half, book, offsets,
        );
    }

    /// One `tile × tile` block of `out = x · Wᵀ` (`[m, n]`, W `[n, k]`), or of `out = x · W`
    /// when `transpose` (W `[k, n]`), `tile = per · units`: the cube walks the inner dimension
    /// `depth` at a time, loading x's block and dequantising W's into shared memory (inner index
    /// outermost, so that neighbouring units read neighbouring words), each of its
    /// `units × units` units summing a `per × per` block of outputs strided by `units`.
    /// Out-of-range elements load as zeros.
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn dequantize_product_kernel(
        x: &Tensor<f32>,
        words: &Tensor<i32>,
        a: &Tensor<f32>,
        b: &Tensor<f32>,
        c: &Tensor<f32>,
        out: &mut Tensor<f32>,
        m: u32,
        n: u32,
        k: u32,
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
        #[comptime] transpose: bool,
        #[comptime] units: usize,
        #[comptime] per: usize,
        #[comptime] depth: usize,
    ) {
        let tile = units * per;
        // One padding column against shared-memory bank conflicts on the strided stores.
        let stride = tile + 1;
        let mut xs = Shared::<[f32]>::new_slice(depth * (tile + 1));
        let mut ws = Shared::<[f32]>::new_slice(depth * (tile + 1));
        let tx = UNIT_POS_X as usize;
        let ty = UNIT_POS_Y as usize;
        let unit = ty * units + tx;
        let n0 = CUBE_POS_X * tile as u32;
        let m0 = CUBE_POS_Y * tile as u32;
        let loads = tile * depth / (units * units);
        let mut acc = Array::<f32>::new(per * per);
        #[unroll]
        for i in 0..per * per {
            acc[i] = 0f32;
        }
        let mut xr = Array::<f32>::new(per);
        let mut wr = Array::<f32>::new(per);
        let mut k0 = 0u32;
        while k0 < k {
            #[unroll]
            for e in 0..loads {
                let idx = unit + e * units * units;
                // x's block: row m0 + r, inner index k0 + q, read along x's rows.
                let r = (idx / depth) as u32;
                let q = (idx % depth) as u32;
                let mut xv = 0f32;
                if m0 + r < m && k0 + q < k {
                    xv = x[((m0 + r) * k + k0 + q) as usize];
                }
                xs[q as usize * stride + r as usize] = xv;
                // W's block, output index n0 + r, inner index k0 + q, read along the stored rows:
                // W [n, k] is stored row n0 + r, column k0 + q; when `transpose`, W [k, n] is
                // stored row k0 + q, column n0 + r, neighbouring units taking neighbouring columns.
                let mut q = (idx % depth) as u32;
                let mut r = (idx / depth) as u32;
                let mut row = n0 + r;
                let mut col = k0 + q;
                if transpose {
                    q = (idx / tile) as u32;
                    r = (idx % tile) as u32;
                    row = k0 + q;
                    col = n0 + r;
                }
                let mut wv = 0f32;
                if n0 + r < n && k0 + q < k {
                    wv = value(
                        words,
                        a,
                        b,
                        c,
                        row as usize,
                        col,
                        cols,
                        row_words,
                        planes,
                        w0,
                        w1,
                        w2,
                        s0,
                        s1,
                        s2,
                        p0,
                        p1,
                        p2,
                        group,
                        zero,
                        mantissa,
                        half,
                        book,
                        offsets,
                    );
                }
                ws[q as usize * stride + r as usize] = wv;
            }
            sync_cube();
            #[unroll]
            for kk in 0..depth {
                #[unroll]
                for i in 0..per {
                    xr[i] = xs[kk * stride + ty + i * units];
                    wr[i] = ws[kk * stride + tx + i * units];
                }
                #[unroll]
                for i in 0..per {
                    #[unroll]
                    for j in 0..per {
                        acc[i * per + j] += xr[i] * wr[j];
                    }
                }
            }
            sync_cube();
            k0 += depth as u32;
        }
        #[unroll]
        for i in 0..per {
            #[unroll]
            for j in 0..per {
                let row = m0 + (ty + i * units) as u32;
                let col = n0 + (tx + j * units) as u32;
                if row < m && col < n {
                    out[(row * n + col) as usize] = acc[i * per + j];
                }
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

/// The fused product on tensors (see [`DequantOps::dequantize_product`]).
#[allow(clippy::too_many_arguments)]
pub fn dequantize_product(
    x: Tensor<2>,
    words: Tensor<2, Int>,
    a: Tensor<1>,
    b: Tensor<1>,
    c: Tensor<1>,
    layout: Layout,
    transpose: bool,
) -> Tensor<2> {
    use burn::backend::Dispatch;
    Tensor::from_dispatch(Dispatch::dequantize_product(
        x.inner().into_dispatch(),
        words.inner().into_dispatch(),
        a.inner().into_dispatch(),
        b.inner().into_dispatch(),
        c.inner().into_dispatch(),
        layout,
        transpose,
    ))
}
