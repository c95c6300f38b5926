//! Matrix products on the CPU backend through faer's matmul: burn's CPU backend (the `gemm`
//! crate) reaches about 40 GFLOP/s on this machine's two cores, faer about 180 on the same shapes
//! (`lora-null bench matmul-cpu`, BENCHMARKS.md).
//!
//! [`matmul`] (and [`linear`] and [`batched_matmul`] on it) takes every product whose operands
//! live on the CPU backend in f32, tracked by autodiff or not: a tracked one records its own
//! backward (`∂a = g·bᵀ`, `∂b = aᵀ·g`, both through faer again), so inference, calibration and
//! training all run on it. faer reads the backend's buffers in place through their strides (a
//! transposed weight is a view, not a copy); only the product is allocated. [`packed_linear`]
//! does the same for a packed (quantised) layer, decoding it for each use and again in its
//! backward, never keeping it decoded. Everything else (a GPU, another precision) takes burn's
//! matmul. The wasm build takes the same path on one thread (faer's products there are the
//! `gemm` crate's SIMD128 kernels, `wasm::use_simd_products`).

use burn::tensor::{Device, Tensor, TensorData};

/// Whether `x` is an input the host-side products here take untracked (calibration's `XᵀX`):
/// the CPU backend, f32, and no gradient flowing from it.
pub fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    !x.is_tracked() && x.dtype() == burn::tensor::DType::F32 && x.device() == Device::flex()
}

/// Every thread natively, one in wasm.
fn all_threads() -> faer::Par {
    #[cfg(not(target_arch = "wasm32"))]
    return faer::Par::rayon(0);
    #[cfg(target_arch = "wasm32")]
    return faer::Par::Seq;
}

/// A CPU-backend tensor's values, row-major (for a tensor that [`applies`]).
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec::<f32>()
        .expect("invariant: the CPU backend's tensors here are f32 (`applies` checks the input)")
}

/// `a · b` over the last two dimensions, the leading ones matched (or 1 on one side, broadcast):
/// through faer on the CPU backend (with its own backward when tracked), else burn's matmul.
///
/// # Shapes
/// - a: `[..., m, k]`, b: `[..., k, n]` → `[..., m, n]`
pub fn matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if D >= 2 && on_cpu_f32(&a) && on_cpu_f32(&b) {
        let (da, db) = (a.dims(), b.dims());
        let batch = |d: &[usize; D]| d[..D - 2].iter().product::<usize>();
        let (ba, bb) = (batch(&da), batch(&db));
        // (burn's reshape reads a 0 as "keep this dimension": empty products stay with burn.)
        let empty = da.iter().chain(&db).any(|&d| d == 0);
        if !empty && (da[..D - 2] == db[..D - 2] || ba == 1 || bb == 1) {
            let lead = if ba >= bb { da } else { db };
            let a3 = a.clone().reshape([ba, da[D - 2], da[D - 1]]);
            let b3 = b.clone().reshape([bb, db[D - 2], db[D - 1]]);
            if let Some(y) = faer_product::product(a3, b3) {
                let mut shape = lead;
                shape[D - 2] = da[D - 2];
                shape[D - 1] = db[D - 1];
                return y.reshape(shape);
            }
        }
    }
    a.matmul(b)
}

/// Whether `t` lives on the CPU backend in f32 (what the products here and `cpu_ops` take).
pub(crate) fn on_cpu_f32<const D: usize>(t: &Tensor<D>) -> bool {
    t.dtype() == burn::tensor::DType::F32 && t.device() == Device::flex()
}

/// `x · w + b` with `w` given as `[in, out]` (any strides: a transposed `[out, in]` weight is
/// read in place).
///
/// # Shapes
/// - x: `[..., in]` → `[..., out]`
pub fn linear<const D: usize>(x: Tensor<D>, w: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<D> {
    let dims = x.dims();
    let (k, out) = (dims[D - 1], w.dims()[1]);
    let m: usize = dims[..D - 1].iter().product();
    let y = matmul(x.reshape([m, k]), w);
    let mut shape = dims;
    shape[D - 1] = out;
    let y = y.reshape(shape);
    match bias {
        Some(b) => y + b.unsqueeze::<D>(),
        None => y,
    }
}

/// `x · Wᵀ + b` for a packed `[out, in]` matrix `W` kept on the host (a quantised layer):
/// on the CPU backend each use decodes `W` into a scratch buffer that the product reads and
/// drops, and a tracked `x` records a backward that decodes it again for `∂x = g·W`, so no
/// decoded copy outlives the call (the QLoRA linear). Elsewhere `W` is decoded into a tensor.
///
/// # Shapes
/// - x: `[..., in]` → `[..., out]`
pub fn packed_linear<const D: usize>(
    x: Tensor<D>,
    w: &std::sync::Arc<super::packed::PackedMatrix>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let (out, k) = w.dims();
    let dims = x.dims();
    let m = dims[..D - 1].iter().product::<usize>();
    if on_cpu_f32(&x)
        && m * k * out > 0
        && dims[D - 1] == k
        && let Some(y) = faer_product::packed(x.clone().reshape([1, m, k]), w.clone())
    {
        let mut shape = dims;
        shape[D - 1] = out;
        let y = y.reshape(shape);
        return match bias {
            Some(b) => y + b.unsqueeze::<D>(),
            None => y,
        };
    }
    let decoded = Tensor::<2>::from_data(TensorData::new(w.decode_range(0..out), [out, k]), &x.device());
    linear(x, decoded.transpose(), bias)
}

/// `a · b` (or `a · bᵀ` when `transpose_b`) over the leading two dimensions: attention's
/// scores and context, through [`matmul`].
///
/// # Shapes
/// - a: `[B, H, M, K]`, b: `[B, H, K, N]` (`[B, H, N, K]` when `transpose_b`) → `[B, H, M, N]`
pub fn batched_matmul(a: Tensor<4>, b: Tensor<4>, transpose_b: bool) -> Tensor<4> {
    matmul(a, if transpose_b { b.swap_dims(2, 3) } else { b })
}

/// The product through faer on burn's CPU backend (`Flex`), plain or under autodiff.
pub(crate) mod faer_product {
    use burn::backend::autodiff::NodeId;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary, unary};
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{DType, Tensor, TensorData};
    use burn_flex::FlexTensor;
    use std::sync::Arc;

    use crate::model::packed::PackedMatrix;

    /// The CPU backend under autodiff (the default checkpointing strategy).
    pub(crate) type Tracked = Autodiff<Flex>;

    /// Two operands as plain CPU tensors, or both under autodiff.
    pub(crate) enum Pair {
        Plain(FlexTensor, FlexTensor),
        Tracked(FloatTensor<Tracked>, FloatTensor<Tracked>),
    }

    /// `a` and `b` as a [`Pair`]: under autodiff when either is (the other joins it untracked);
    /// `None` when they are not CPU tensors of the default strategy.
    pub(crate) fn pair<const D: usize, const E: usize>(a: Tensor<D>, b: Tensor<E>) -> Option<Pair> {
        if a.is_autodiff() || b.is_autodiff() {
            let a = a.autodiff().try_into_primitive::<Tracked>().ok()?;
            let b = b.autodiff().try_into_primitive::<Tracked>().ok()?;
            return Some(Pair::Tracked(a, b));
        }
        Some(Pair::Plain(
            a.try_into_primitive::<Flex>().ok()?,
            b.try_into_primitive::<Flex>().ok()?,
        ))
    }

    /// `a · b` batched (`[ba, m, k] · [bb, k, n]`, `ba == bb` or one of them 1), or `None` when
    /// the two are not both plain CPU tensors or both autodiff ones of the default strategy.
    pub fn product(a: Tensor<3>, b: Tensor<3>) -> Option<Tensor<3>> {
        Some(match pair(a, b)? {
            Pair::Plain(a, b) => Tensor::from_primitive::<Flex>(plain(a, b)),
            Pair::Tracked(a, b) => Tensor::from_primitive::<Tracked>(tracked(a, b)),
        })
    }

    /// The product recorded for autodiff: its backward is two more faer products.
    fn tracked(a: FloatTensor<Tracked>, b: FloatTensor<Tracked>) -> FloatTensor<Tracked> {
        /// Keeps the operands (by checkpoint id) that the other one's gradient needs, and the
        /// batch sizes to sum a broadcast operand's gradient back to.
        #[derive(Debug)]
        struct ProductBackward;

        impl Backward<Flex, 2> for ProductBackward {
            type State = (Option<NodeId>, Option<NodeId>, [usize; 2]);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let (a, b, [ba, bb]) = ops.state;
                let a: Option<FlexTensor> = a.map(|id| checkpointer.retrieve_node_output(id));
                let b: Option<FlexTensor> = b.map(|id| checkpointer.retrieve_node_output(id));
                binary::<Flex, _, _>(
                    ops.parents,
                    ops.node,
                    grads,
                    |g| {
                        let b = b.expect("invariant: b is kept when a is tracked");
                        reduce_batch(plain(g, b.transpose(1, 2)), ba)
                    },
                    |g| {
                        let a = a.expect("invariant: a is kept when b is tracked");
                        reduce_batch(plain(a.transpose(1, 2), g), bb)
                    },
                );
            }
        }

        let (a_tracked, b_tracked) = (a.is_tracked(), b.is_tracked());
        let batches = [a.primitive().layout().shape()[0], b.primitive().layout().shape()[0]];
        match ProductBackward
            .prepare::<NoCheckpointing>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let a_state = b_tracked.then(|| prep.checkpoint(&a));
                let b_state = a_tracked.then(|| prep.checkpoint(&b));
                let y = plain(a.into_primitive(), b.into_primitive());
                prep.finish((a_state, b_state, batches), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(plain(a.into_primitive(), b.into_primitive())),
        }
    }

    /// `x · Wᵀ` for a packed `[out, in]` `W` (`[1, m, in]` → `[1, m, out]`), tracked or not; a
    /// tracked product keeps only the packed matrix for its backward.
    pub fn packed(x: Tensor<3>, w: Arc<PackedMatrix>) -> Option<Tensor<3>> {
        if x.is_autodiff() {
            let x = x.try_into_primitive::<Tracked>().ok()?;
            return Some(Tensor::from_primitive::<Tracked>(packed_tracked(x, w)));
        }
        let x = x.try_into_primitive::<Flex>().ok()?;
        Some(Tensor::from_primitive::<Flex>(packed_plain(x, &w, false)))
    }

    fn packed_tracked(x: FloatTensor<Tracked>, w: Arc<PackedMatrix>) -> FloatTensor<Tracked> {
        /// Keeps the packed matrix; the input's gradient decodes it again.
        #[derive(Debug)]
        struct PackedBackward;

        impl Backward<Flex, 1> for PackedBackward {
            type State = Arc<PackedMatrix>;

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let w = ops.state;
                unary::<Flex, _>(ops.parents, ops.node, grads, |g| packed_plain(g, &w, true));
            }
        }

        match PackedBackward
            .prepare::<NoCheckpointing>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = packed_plain(x.into_primitive(), &w, false);
                prep.finish(w, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(packed_plain(x.into_primitive(), &w, false)),
        }
    }

    /// `x · Wᵀ` (or `x · W` when `transpose`) with `W` decoded into a scratch buffer for the call.
    fn packed_plain(x: FlexTensor, w: &PackedMatrix, transpose: bool) -> FlexTensor {
        let decoded = decode(w);
        plain(x, if transpose { decoded } else { decoded.transpose(1, 2) })
    }

    /// A packed `[out, in]` matrix decoded into a scratch `[1, out, in]` tensor.
    pub(crate) fn decode(w: &PackedMatrix) -> FlexTensor {
        let (rows, cols) = w.dims();
        FlexTensor::from_data(TensorData::new(w.decode_range(0..rows), [1, rows, cols]))
    }

    /// Sums a gradient `[batch, ..]` over its batch when the operand it belongs to had one.
    fn reduce_batch(g: FlexTensor, batch: usize) -> FlexTensor {
        let shape = g.layout().shape();
        if batch == 1 && shape[0] != 1 {
            Flex::float_sum_dim(g, 0)
        } else {
            g
        }
    }

    /// `[ba, m, k] · [bb, k, n]` through faer, reading both in place when their last two
    /// dimensions are row- or column-major with any row/column stride (else a contiguous copy).
    pub(crate) fn plain(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        if a.dtype() != DType::F32 || b.dtype() != DType::F32 {
            return Flex::float_matmul(a, b);
        }
        let (sa, sb) = (a.layout().shape(), b.layout().shape());
        let (batch, m, n) = (sa[0].max(sb[0]), sa[1], sb[2]);
        let mut y = vec![0f32; batch * m * n];
        product_into(&mut y, a, b, 1.0, faer::Accum::Replace);
        FlexTensor::from_data(TensorData::new(y, [batch, m, n]))
    }

    /// `y = α·a·b` (`Replace`) or `y += α·a·b` (`Add`) for f32 `[ba, m, k] · [bb, k, n]` into the
    /// row-major `[max(ba, bb), m, n]` values `y`, reading `a` and `b` as [`plain`] does.
    pub(crate) fn product_into(y: &mut [f32], a: FlexTensor, b: FlexTensor, alpha: f32, accum: faer::Accum) {
        let (a, b) = (readable(a), readable(b));
        let (sa, sb) = (a.layout().shape().clone(), b.layout().shape().clone());
        let (ba, m, k, bb, n) = (sa[0], sa[1], sa[2], sb[0], sb[2]);
        if m * n == 0 {
            return;
        }
        if k == 0 {
            if accum == faer::Accum::Replace {
                y.fill(0.0);
            }
            return;
        }
        let (av, bv) = (View::of(&a), View::of(&b));
        let (a_data, b_data) = (a.storage::<f32>(), b.storage::<f32>());
        // A wide output (the output layer, the loss's vocabulary pieces) goes one slab of
        // columns per thread: 1.15–1.2x faer's own threading on 512 × 576 × 49152 here
        // (`bench matmul-cpu`, "faer-split"); the other shapes measured the same either way.
        let split = n >= 4096 && n >= 2 * m;
        let one = |i: usize, y: &mut [f32], par: faer::Par| {
            let a = av.matrix(a_data, if ba == 1 { 0 } else { i }, m, k);
            let b = bv.matrix(b_data, if bb == 1 { 0 } else { i }, k, n);
            let y = faer::MatMut::from_row_major_slice_mut(y, m, n);
            if split && par != faer::Par::Seq {
                super::split_product(y, accum, a, b, alpha);
            } else {
                faer::linalg::matmul::matmul(y, accum, a, b, alpha, par);
            }
        };
        // Many small products (attention's heads): one per thread; else each on every thread
        // (wasm has one).
        #[cfg(not(target_arch = "wasm32"))]
        if ba.max(bb) >= rayon::current_num_threads() {
            use rayon::prelude::*;
            y.par_chunks_mut(m * n)
                .enumerate()
                .for_each(|(i, y)| one(i, y, faer::Par::Seq));
            return;
        }
        for (i, y) in y.chunks_mut(m * n).enumerate() {
            one(i, y, super::all_threads());
        }
    }

    /// How a rank-3 tensor's matrices sit in its buffer (one [`readable`] returned).
    struct View {
        offset: usize,
        batch_stride: usize,
        /// The row stride of row-major matrices, or the column stride of column-major ones.
        stride: usize,
        row_major: bool,
    }

    impl View {
        fn of(t: &FlexTensor) -> Self {
            let layout = t.layout();
            let s = layout.strides();
            let row_major = is_row_major(s, layout.shape()[2]);
            Self {
                offset: layout.start_offset(),
                batch_stride: s[0] as usize,
                stride: if row_major { s[1] } else { s[2] } as usize,
                row_major,
            }
        }

        /// Matrix `i` as a `[rows, cols]` faer view of `data`.
        fn matrix<'a>(&self, data: &'a [f32], i: usize, rows: usize, cols: usize) -> faer::MatRef<'a, f32> {
            let data = &data[self.offset + i * self.batch_stride..];
            if self.row_major {
                faer::MatRef::from_row_major_slice_with_stride(data, rows, cols, self.stride)
            } else {
                faer::MatRef::from_column_major_slice_with_stride(data, rows, cols, self.stride)
            }
        }
    }

    /// Unit column stride, row stride at least the row's length.
    fn is_row_major(s: &[isize], cols: usize) -> bool {
        s[2] == 1 && s[1] >= cols.max(1) as isize
    }

    /// `t` itself when its last two dimensions are row-major (unit column stride, row stride ≥
    /// columns) or column-major (unit row stride, column stride ≥ rows) with a non-negative batch
    /// stride; else a contiguous copy.
    fn readable(t: FlexTensor) -> FlexTensor {
        let layout = t.layout();
        let (s, shape) = (layout.strides(), layout.shape());
        let column_major = s[1] == 1 && s[2] >= shape[1].max(1) as isize;
        if s[0] >= 0 && (is_row_major(s, shape[2]) || column_major) {
            t
        } else {
            t.to_contiguous()
        }
    }
}

/// `acc += α·XᵀX` on the lower triangle of the `[d, d]` row-major `acc` (X `[n, d]` row-major):
/// a symmetric rank-n update, half the products of the full one. [`mirror_lower`] fills the
/// upper triangle afterwards.
pub fn add_gram_lower(acc: &mut [f32], x: &[f32], (n, d): (usize, usize), alpha: f32) {
    use faer::linalg::matmul::triangular::{BlockStructure, matmul};
    let dst = faer::MatMut::from_row_major_slice_mut(acc, d, d);
    // Xᵀ of a row-major [n, d] block is the column-major [d, n] view of the same values.
    let xt = faer::MatRef::from_column_major_slice(x, d, n);
    let x = faer::MatRef::from_row_major_slice(x, n, d);
    matmul(
        dst,
        BlockStructure::TriangularLower,
        faer::Accum::Add,
        xt,
        BlockStructure::Rectangular,
        x,
        BlockStructure::Rectangular,
        alpha,
        all_threads(),
    );
}

/// Copies the lower triangle of a `[d, d]` row-major matrix onto its upper triangle.
pub fn mirror_lower(m: &mut [f32], d: usize) {
    for i in 0..d {
        for j in i + 1..d {
            m[i * d + j] = m[j * d + i];
        }
    }
}

/// `y = x · w` through faer on `par`, all row-major: x `[m, k]`, w `[k, n]`, y `[m, n]`.
pub fn matmul_into(x: &[f32], w: &[f32], y: &mut [f32], (m, k, n): (usize, usize, usize), par: faer::Par) {
    let x = faer::MatRef::from_row_major_slice(x, m, k);
    let w = faer::MatRef::from_row_major_slice(w, k, n);
    let y = faer::MatMut::from_row_major_slice_mut(y, m, n);
    faer::linalg::matmul::matmul(y, faer::Accum::Replace, x, w, 1.0f32, par);
}

/// `y = x · w` as [`matmul_into`], the output cut into one slab of columns (or rows, when
/// there are more rows than columns) per thread, each slab faer's product on one thread: no
/// synchronisation inside the product.
pub fn matmul_split_into(x: &[f32], w: &[f32], y: &mut [f32], (m, k, n): (usize, usize, usize)) {
    let x = faer::MatRef::from_row_major_slice(x, m, k);
    let w = faer::MatRef::from_row_major_slice(w, k, n);
    let y = faer::MatMut::from_row_major_slice_mut(y, m, n);
    split_product(y, faer::Accum::Replace, x, w, 1.0);
}

/// `y (+)= α·a·b` on every thread, one slab of `y` per thread (see [`matmul_split_into`]).
pub(crate) fn split_product(
    y: faer::MatMut<'_, f32>,
    accum: faer::Accum,
    a: faer::MatRef<'_, f32>,
    b: faer::MatRef<'_, f32>,
    alpha: f32,
) {
    #[cfg(target_arch = "wasm32")]
    faer::linalg::matmul::matmul(y, accum, a, b, alpha, faer::Par::Seq);
    #[cfg(not(target_arch = "wasm32"))]
    split_product_over(rayon::current_num_threads(), y, accum, a, b, alpha);
}

/// [`split_product`] in `slabs` slabs (at most), on rayon's threads.
#[cfg(not(target_arch = "wasm32"))]
fn split_product_over(
    slabs: usize,
    y: faer::MatMut<'_, f32>,
    accum: faer::Accum,
    a: faer::MatRef<'_, f32>,
    b: faer::MatRef<'_, f32>,
    alpha: f32,
) {
    use rayon::prelude::*;
    let (m, n) = (y.nrows(), y.ncols());
    if slabs < 2 || m * n < 64 * 64 {
        faer::linalg::matmul::matmul(y, accum, a, b, alpha, faer::Par::Seq);
        return;
    }
    // Slabs a multiple of 16 wide (whole SIMD registers).
    let along_columns = n >= m;
    let len = if along_columns { n } else { m };
    let width = len.div_ceil(slabs).next_multiple_of(16);
    let mut parts = Vec::new();
    let mut rest = y;
    let mut start = 0;
    while start < len {
        let w = width.min(len - start);
        let (head, tail) = if along_columns {
            rest.split_at_col_mut(w)
        } else {
            rest.split_at_row_mut(w)
        };
        parts.push((start, w, head));
        rest = tail;
        start += w;
    }
    parts.into_par_iter().for_each(|(start, w, y)| {
        if along_columns {
            faer::linalg::matmul::matmul(y, accum, a, b.subcols(start, w), alpha, faer::Par::Seq);
        } else {
            faer::linalg::matmul::matmul(y, accum, a.subrows(start, w), b, alpha, faer::Par::Seq);
        }
    });
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::model::test_support::{max_diff, packed_matrix, tensor, vals};
    use burn::tensor::TensorData;

    #[test]
    fn the_cpu_products_are_burns_products() {
        let device = Device::flex();
        let (m, k, n) = (37, 64, 48);
        let x = tensor([1, m, k], 1, &device);
        let w = tensor([k, n], 2, &device);
        let b = tensor([n], 3, &device);
        assert!(applies(&x));
        assert!(faer_product::product(x.clone(), w.clone().unsqueeze()).is_some());
        let want = burn::tensor::module::linear(x.clone(), w.clone(), Some(b.clone()));
        assert!(
            max_diff(want, linear(x.clone(), w.clone(), Some(b))) < 1e-5,
            "x · w + b"
        );
        // A transposed weight is read in place, column-major.
        let w_out_in = tensor([n, k], 4, &device);
        let want = x.clone().matmul(w_out_in.clone().transpose().unsqueeze());
        assert!(
            max_diff(want, linear(x.clone(), w_out_in.transpose(), None)) < 1e-5,
            "x · wᵀ"
        );
        // A row-narrowed operand (row stride above its width).
        let wide = tensor([k, 2 * n], 5, &device).narrow(1, 3, n);
        let want = x.clone().matmul(wide.clone().unsqueeze());
        assert!(max_diff(want, linear(x, wide, None)) < 1e-5, "strided rows");
        let (q, kk) = (tensor([2, 3, 5, 8], 6, &device), tensor([2, 3, 7, 8], 7, &device));
        let want = q.clone().matmul(kk.clone().swap_dims(2, 3));
        assert!(max_diff(want, batched_matmul(q.clone(), kk, true)) < 1e-5, "a · bᵀ");
        let v = tensor([2, 3, 8, 7], 8, &device);
        let want = q.clone().matmul(v.clone());
        assert!(max_diff(want, batched_matmul(q.clone(), v, false)) < 1e-5, "a · b");
        // A broadcast right-hand side, and empty products.
        let r = tensor([1, 1, 8, 4], 9, &device);
        let want = q.clone().matmul(r.clone());
        assert!(max_diff(want, matmul(q, r)) < 1e-5, "broadcast");
        let empty = matmul(tensor([3, 0], 10, &device), tensor([0, 4], 11, &device));
        assert_eq!(empty.dims(), [3, 4]);
        assert_eq!(empty.abs().max().into_scalar::<f32>(), 0.0);
    }

    /// The gradients of `Σ r ⊙ (a · b)` through [`matmul`] and through burn's matmul, for a
    /// tracked `a` (always) and `b` (when `train_b`), `b` possibly broadcast over the batch.
    fn gradients(
        a_shape: [usize; 3],
        b_shape: [usize; 3],
        train_b: bool,
        ours: bool,
    ) -> (Tensor<3>, Option<Tensor<3>>) {
        let device = Device::flex().autodiff();
        let a = tensor(a_shape, 1, &device).require_grad();
        let b = tensor(b_shape, 2, &device);
        let b = if train_b { b.require_grad() } else { b };
        if ours {
            let taken = faer_product::product(a.clone(), b.clone()).is_some();
            assert!(taken, "tracked CPU products go through faer, not burn's matmul");
        }
        let y = if ours {
            matmul(a.clone(), b.clone())
        } else {
            a.clone().matmul(b.clone())
        };
        let r = tensor(y.dims(), 3, &device);
        let grads = (y * r).sum().backward();
        let ga = a.grad(&grads).expect("a is tracked");
        (ga, b.grad(&grads))
    }

    /// The product cut into slabs (wide outputs by columns, tall ones by rows, uneven last
    /// slabs, accumulating or not) is the product on one thread.
    #[test]
    fn a_product_in_slabs_is_the_product() {
        for (m, k, n) in [(9, 16, 4100), (300, 20, 70), (64, 8, 64)] {
            let (x, w) = (vals(m * k, 1), vals(k * n, 2));
            let mut want = vals(m * n, 3);
            let mut got = want.clone();
            let (xm, wm) = (
                faer::MatRef::from_row_major_slice(&x, m, k),
                faer::MatRef::from_row_major_slice(&w, k, n),
            );
            faer::linalg::matmul::matmul(
                faer::MatMut::from_row_major_slice_mut(&mut want, m, n),
                faer::Accum::Add,
                xm,
                wm,
                0.5,
                faer::Par::Seq,
            );
            let y = faer::MatMut::from_row_major_slice_mut(&mut got, m, n);
            split_product_over(3, y, faer::Accum::Add, xm, wm, 0.5);
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "{m} × {k} × {n}: {worst}");
            let mut replaced = vec![f32::NAN; m * n];
            matmul_split_into(&x, &w, &mut replaced, (m, k, n));
            let mut once = vec![0f32; m * n];
            matmul_into(&x, &w, &mut once, (m, k, n), faer::Par::Seq);
            let worst = replaced
                .iter()
                .zip(&once)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{m} × {k} × {n}, replaced: {worst}");
        }
    }

    #[test]
    fn tracked_products_have_burns_gradients() {
        for (a, b, train_b) in [
            ([1, 9, 16], [1, 16, 5], false),
            ([1, 9, 16], [1, 16, 5], true),
            ([4, 9, 16], [4, 16, 5], true),
            ([4, 9, 16], [1, 16, 5], true),
            // A wide output: the product and ∂b go in slabs of columns.
            ([1, 9, 16], [1, 16, 4100], true),
        ] {
            let (ga, gb) = gradients(a, b, train_b, true);
            let (wa, wb) = gradients(a, b, train_b, false);
            // 1e-4 relative to the largest gradient (∂a sums n products: ~30 for n = 4100).
            let scale = |t: &Tensor<3>| t.clone().abs().max().into_scalar::<f32>().max(1.0);
            let tol = 1e-4 * scale(&wa);
            assert!(max_diff(ga, wa) < tol, "∂a for {a:?} · {b:?}");
            match (gb, wb) {
                (Some(g), Some(w)) => {
                    assert_eq!(g.dims(), b);
                    let tol = 1e-4 * scale(&w);
                    assert!(max_diff(g, w) < tol, "∂b for {a:?} · {b:?}");
                }
                (None, None) => assert!(!train_b),
                _ => panic!("∂b present on one side only for {a:?} · {b:?}"),
            }
        }
    }

    #[test]
    fn the_packed_linear_is_the_decoded_linear_and_has_its_input_gradient() {
        let (out, k) = (24, 40);
        let (w, values) = packed_matrix(out, k);
        for device in [Device::flex(), Device::flex().autodiff()] {
            let x = tensor([2, 7, k], 1, &device);
            let x = if device.is_autodiff() { x.require_grad() } else { x };
            let dense = Tensor::<2>::from_data(TensorData::new(values.clone(), [out, k]), &device);
            let bias = tensor([out], 2, &device);
            let y = packed_linear(x.clone(), &w, Some(bias.clone()));
            let want = x.clone().matmul(dense.clone().transpose().unsqueeze()) + bias.clone().unsqueeze();
            assert!(max_diff(y.clone(), want.clone()) < 1e-5, "forward on {device:?}");
            if device.is_autodiff() {
                assert!(
                    faer_product::packed(x.clone().reshape([1, 14, k]), w.clone()).is_some(),
                    "a tracked input takes the packed product"
                );
                let r = tensor([2, 7, out], 3, &device);
                let got = x.grad(&(y * r.clone()).sum().backward()).unwrap();
                let want = x.grad(&(want * r).sum().backward()).unwrap();
                assert!(max_diff(got, want) < 1e-4, "∂x");
            }
        }
    }

    #[test]
    fn the_lower_gram_is_xtx() {
        let device = Device::flex();
        // XᵀX by halves, accumulated twice with a scale.
        let (n, d) = (11, 6);
        let xs = vals(n * d, 7);
        let mut acc = vec![0f32; d * d];
        add_gram_lower(&mut acc, &xs, (n, d), 0.5);
        add_gram_lower(&mut acc, &xs, (n, d), 0.5);
        mirror_lower(&mut acc, d);
        let xt = Tensor::<2>::from_data(TensorData::new(xs, [n, d]), &device);
        let want = values(xt.clone().transpose().matmul(xt));
        let worst = acc.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "XᵀX differs by {worst}");
        let tracked = Tensor::<2>::zeros([2, 3], &device.autodiff()).require_grad();
        assert!(!applies(&tracked), "calibration's host sums take untracked inputs only");
    }
}
