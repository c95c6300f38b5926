//! The frozen base's projections on the CPU backend through faer's matrix multiply: burn's CPU
//! backend (the `gemm` crate) reaches about 40 GFLOP/s on this machine's two cores, faer about
//! 180 on the same shapes (`lora-null bench matmul-cpu`, BENCHMARKS.md). Used where no gradient
//! flows through the product (the input is not tracked and the weight is frozen): inference,
//! calibration, and the forward pass of block-by-block training; a tracked input takes burn's
//! matmul, whose backward autodiff records.
//!
//! The weight is read as `[in, out]` f32 values for the call (a dense weight copied out of its
//! tensor, a packed one decoded straight into the buffer faer reads), never kept.

use burn::tensor::{Device, Tensor, TensorData};

/// Whether `x · w` may run here: the CPU backend natively, and an input no gradient flows from.
pub fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    cfg!(not(target_arch = "wasm32"))
        && !x.is_tracked()
        && x.dtype() == burn::tensor::DType::F32
        && x.device() == Device::flex()
}

/// Every thread natively, one in wasm.
fn all_threads() -> faer::Par {
    #[cfg(not(target_arch = "wasm32"))]
    return faer::Par::rayon(0);
    #[cfg(target_arch = "wasm32")]
    return faer::Par::Seq;
}

/// A CPU-backend tensor's values, row-major (for a tensor that [`applies`], or a weight beside
/// one).
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec::<f32>()
        .expect("invariant: the CPU backend's tensors here are f32 (`applies` checks the input)")
}

/// `x · w + b` with `w` given as `[in, out]` row-major values, for an `x` that [`applies`].
///
/// # Shapes
/// - x: `[..., in]` → `[..., out]`
pub fn linear<const D: usize>(x: Tensor<D>, w: &[f32], out: usize, bias: Option<Tensor<1>>) -> Tensor<D> {
    let device = x.device();
    let dims = x.dims();
    let k = dims[D - 1];
    let m: usize = dims[..D - 1].iter().product();
    debug_assert_eq!(w.len(), k * out);
    let xs = values(x);
    let mut y = vec![0f32; m * out];
    matmul(&xs, w, &mut y, (m, k, out), all_threads());
    let mut shape = dims;
    shape[D - 1] = out;
    let y = Tensor::<D>::from_data(TensorData::new(y, shape), &device);
    match bias {
        Some(b) => y + b.unsqueeze::<D>(),
        None => y,
    }
}

/// `a · b` (or `a · bᵀ` when `transpose_b`) over the leading two dimensions: attention's
/// scores and context. Through faer, the `(batch, head)` products in parallel, when both inputs
/// [`apply`](applies); else burn's matmul.
///
/// # Shapes
/// - a: `[B, H, M, K]`, b: `[B, H, K, N]` (`[B, H, N, K]` when `transpose_b`) → `[B, H, M, N]`
pub fn batched_matmul(a: Tensor<4>, b: Tensor<4>, transpose_b: bool) -> Tensor<4> {
    if !(applies(&a) && applies(&b)) {
        return a.matmul(if transpose_b { b.swap_dims(2, 3) } else { b });
    }
    let device = a.device();
    let [bs, h, m, k] = a.dims();
    let n = if transpose_b { b.dims()[2] } else { b.dims()[3] };
    let (a, b) = (values(a), values(b));
    let mut y = vec![0f32; bs * h * m * n];
    let product = |(i, y): (usize, &mut [f32])| {
        let a = faer::MatRef::from_row_major_slice(&a[i * m * k..(i + 1) * m * k], m, k);
        let b_slice = &b[i * k * n..(i + 1) * k * n];
        // bᵀ of a row-major [n, k] block is the column-major [k, n] view of the same values.
        let b = if transpose_b {
            faer::MatRef::from_column_major_slice(b_slice, k, n)
        } else {
            faer::MatRef::from_row_major_slice(b_slice, k, n)
        };
        let y = faer::MatMut::from_row_major_slice_mut(y, m, n);
        faer::linalg::matmul::matmul(y, faer::Accum::Replace, a, b, 1.0f32, faer::Par::Seq);
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        y.par_chunks_mut(m * n).enumerate().for_each(product);
    }
    #[cfg(target_arch = "wasm32")]
    y.chunks_mut(m * n).enumerate().for_each(product);
    Tensor::from_data(TensorData::new(y, [bs, h, m, n]), &device)
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
pub fn matmul(x: &[f32], w: &[f32], y: &mut [f32], (m, k, n): (usize, usize, usize), par: faer::Par) {
    let x = faer::MatRef::from_row_major_slice(x, m, k);
    let w = faer::MatRef::from_row_major_slice(w, k, n);
    let y = faer::MatMut::from_row_major_slice_mut(y, m, n);
    faer::linalg::matmul::matmul(y, faer::Accum::Replace, x, w, 1.0f32, par);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_linear_is_burns_linear() {
        let device = Device::flex();
        let (m, k, n) = (37, 64, 48);
        let vals = |len: usize, s: usize| {
            (0..len)
                .map(|i| ((i * 7919 + s) % 1000) as f32 / 500.0 - 1.0)
                .collect::<Vec<_>>()
        };
        let x = Tensor::<3>::from_data(TensorData::new(vals(m * k, 1), [1, m, k]), &device);
        let w = vals(k * n, 2);
        let b = Tensor::<1>::from_data(TensorData::new(vals(n, 3), [n]), &device);
        assert!(applies(&x));
        let wt = Tensor::<2>::from_data(TensorData::new(w.clone(), [k, n]), &device);
        let want = burn::tensor::module::linear(x.clone(), wt, Some(b.clone()));
        let got = linear(x, &w, n, Some(b));
        let d = (want - got).abs().max().into_scalar::<f32>();
        assert!(d < 1e-5, "faer and burn differ by {d}");
        let (q, kk) = (
            Tensor::<4>::from_data(TensorData::new(vals(2 * 3 * 5 * 8, 4), [2, 3, 5, 8]), &device),
            Tensor::<4>::from_data(TensorData::new(vals(2 * 3 * 7 * 8, 5), [2, 3, 7, 8]), &device),
        );
        let want = q.clone().matmul(kk.clone().swap_dims(2, 3));
        let got = batched_matmul(q.clone(), kk.clone(), true);
        assert!((want - got).abs().max().into_scalar::<f32>() < 1e-5, "a · bᵀ");
        let v = Tensor::<4>::from_data(TensorData::new(vals(2 * 3 * 8 * 7, 6), [2, 3, 8, 7]), &device);
        let want = q.clone().matmul(v.clone());
        let got = batched_matmul(q, v, false);
        assert!((want - got).abs().max().into_scalar::<f32>() < 1e-5, "a · b");
        // XᵀX by halves, accumulated twice with a scale.
        let (n, d) = (11, 6);
        let xs = vals(n * d, 7);
        let mut acc = vec![0f32; d * d];
        add_gram_lower(&mut acc, &xs, (n, d), 0.5);
        add_gram_lower(&mut acc, &xs, (n, d), 0.5);
        mirror_lower(&mut acc, d);
        let xt = Tensor::<2>::from_data(TensorData::new(xs, [n, d]), &device);
        let want = xt
            .clone()
            .transpose()
            .matmul(xt)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let worst = acc.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "XᵀX differs by {worst}");
        let tracked = Tensor::<2>::zeros([2, 3], &device.clone().autodiff()).require_grad();
        assert!(!applies(&tracked), "a tracked input takes burn's matmul");
    }
}
