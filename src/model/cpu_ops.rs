//! Fused element-wise operations on the CPU backend: SwiGLU's `silu(gate)·up`, RMSNorm and
//! attention's masked softmax, each one pass over its input where burn's tensor formulation takes
//! three to seven, each writing a new tensor. Their loops are compiled for the CPU's widest SIMD
//! at run time, with an exp of our own that vectorises (libm's does not). Under autodiff each is
//! one recorded operation whose backward is again one pass per input's gradient (the same
//! machinery as `cpu_linear`'s product). In wasm they are compiled for SIMD128 the same way
//! (pulp's run-time flag, which `wasm::use_simd_products` sets). Off the CPU backend, or for
//! another dtype, the tensor formulation runs.

use burn::tensor::Tensor;

use super::cpu_linear::on_cpu_f32;

/// `silu(gate) · up`, elementwise (`silu(g) = g·σ(g)`): one pass on the CPU backend (`fused`),
/// one kernel per direction on a GPU (`gpu_ops`), else by tensors.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    if gate.dims() == up.dims()
        && on_cpu_f32(&gate)
        && on_cpu_f32(&up)
        && let Some(y) = fused::swiglu(gate.clone(), up.clone())
    {
        return y;
    }
    if let Some(y) = super::gpu_ops::swiglu(gate.clone(), up.clone()) {
        return y;
    }
    swiglu_by_tensors(gate, up)
}

/// [`swiglu`] by burn's tensor operations: the kernels' reference twin, and what any other
/// backend runs.
pub fn swiglu_by_tensors<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::silu(gate) * up
}

/// RMSNorm over the last axis: `x / sqrt(mean(x²) + eps) · (offset + w)`: one pass on the CPU
/// backend (`fused`), one kernel per direction on a GPU (`gpu_ops`), else by tensors.
///
/// # Shapes
/// - x: `[..., dim]`, w: `[dim]` → `[..., dim]`
pub fn rms_norm<const D: usize>(x: Tensor<D>, w: Tensor<1>, eps: f64, offset: f64) -> Tensor<D> {
    if x.dims()[D - 1] == w.dims()[0]
        && on_cpu_f32(&x)
        && on_cpu_f32(&w)
        && let Some(y) = fused::rms_norm(x.clone(), w.clone(), eps as f32, offset as f32)
    {
        return y;
    }
    if let Some(y) = super::gpu_ops::rms_norm(x.clone(), w.clone(), eps as f32, offset as f32) {
        return y;
    }
    rms_norm_by_tensors(x, w, eps, offset)
}

/// [`rms_norm`] by burn's tensor operations: the kernels' reference twin, and what any other
/// backend runs.
pub fn rms_norm_by_tensors<const D: usize>(x: Tensor<D>, w: Tensor<1>, eps: f64, offset: f64) -> Tensor<D> {
    let variance = x.clone().square().mean_dim(D - 1);
    let normed = x * variance.add_scalar(eps).sqrt().recip();
    let scale = if offset == 0.0 { w } else { w.add_scalar(offset) };
    normed * scale.unsqueeze::<D>()
}

/// Attention's probabilities `softmax(scale·s + mask)` over the last axis, `mask` broadcast over
/// the batch and heads (a constant: no gradient flows to it): one pass per row with a
/// vectorised exp, and under autodiff a backward that keeps only the probabilities. (With the
/// exp of libm it was slower than burn's softmax without autodiff; BENCHMARKS.md.)
///
/// # Shapes
/// - s: `[B, H, T, S]`, mask: `[T, S]` → `[B, H, T, S]`
pub fn masked_softmax(s: Tensor<4>, mask: Tensor<2>, scale: f64) -> Tensor<4> {
    if s.dims()[2..] == mask.dims()
        && on_cpu_f32(&s)
        && on_cpu_f32(&mask)
        && let Some(p) = fused::masked_softmax(s.clone(), mask.clone(), scale as f32)
    {
        return p;
    }
    burn::tensor::activation::softmax(s.mul_scalar(scale) + mask.unsqueeze::<4>(), 3)
}

/// One vocabulary piece of the loss's online log-sum-exp, row by row: for the piece's logits `z`
/// and the running row maxima `m` and sums `s`, returns `(m', α, p, s')` with
/// `m' = max(m, maxⱼ z)`, `α = e^(m − m')`, `p = e^(z − m')` and `s' = α·s + Σⱼ p`. No gradient
/// flows through it (the loss's gradient is computed directly).
///
/// # Shapes
/// - z: `[N, c]`, m and s: `[N, 1]` → `[N, 1]`, `[N, 1]`, `[N, c]`, `[N, 1]`
pub fn softmax_piece(z: Tensor<2>, m: Tensor<2>, s: Tensor<2>) -> [Tensor<2>; 4] {
    if z.dims()[0] == m.dims()[0]
        && m.dims() == s.dims()
        && m.dims()[1] == 1
        && on_cpu_f32(&z)
        && on_cpu_f32(&m)
        && on_cpu_f32(&s)
        && let Some(out) = fused::softmax_piece(&z, &m, &s)
    {
        return out;
    }
    let m_new = m.clone().max_pair(z.clone().max_dim(1));
    let alpha = (m - m_new.clone()).exp();
    let p = (z - m_new.clone()).exp();
    let s = s * alpha.clone() + p.clone().sum_dim(1);
    [m_new, alpha, p, s]
}

/// The fused kernels on burn's CPU backend (`Flex`), plain or under autodiff.
pub(crate) mod fused {
    use burn::backend::Flex;
    use burn::backend::autodiff::NodeId;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary, unary};
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::{Tensor, TensorData};
    use burn_flex::FlexTensor;

    use crate::model::cpu_linear::faer_product::{Pair, Tracked, pair};

    /// `t`'s values in order: its own buffer when contiguous, else a contiguous copy.
    pub(crate) fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
        match t.as_slice::<f32>() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(
                t.to_contiguous()
                    .as_slice::<f32>()
                    .expect("invariant: a contiguous f32 tensor has a slice")
                    .to_vec(),
            ),
        }
    }

    /// A tensor of `like`'s shape holding `v`.
    fn like(like: &FlexTensor, v: Vec<f32>) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(v, like.layout().shape().clone()))
    }

    /// Runs `f` compiled for the widest SIMD this CPU has (pulp's run-time dispatch: AVX2 and
    /// FMA on x86-64), so that the loops inlined into it are vectorised. Everything `f` calls
    /// in its loops must be `#[inline(always)]` to be compiled that way too.
    #[inline(always)]
    pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
        pulp::Arch::new().dispatch(f)
    }

    /// `eˣ` within 2 ulp, in a form the compiler vectorises (selects, no call into libm):
    /// `x = k·ln2 + r` with `k` the nearest integer and `|r| ≤ ln2/2`, `eʳ` by Cephes'
    /// degree-7 polynomial, `2ᵏ` built in the exponent bits. 0 below −87.3 (where `eˣ` leaves
    /// the normal floats), ∞ above 88.37 (`e^88.37` is within a third of the largest float;
    /// softmax and sigmoid never need more); NaN stays NaN.
    #[inline(always)]
    pub(super) fn exp(x: f32) -> f32 {
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        let c = x.clamp(-87.3, 88.37);
        // Adding 1.5·2²³ rounds to the nearest integer k and leaves k in the low bits of `t`
        // (no conversion instruction, which kept the compiler from vectorising).
        const ROUND: f32 = 12_582_912.0;
        let t = c * std::f32::consts::LOG2_E + ROUND;
        let k = t - ROUND;
        let r = c - k * LN2_HI - k * LN2_LO;
        let mut p = 1.987_569_1e-4;
        p = p * r + 1.398_199_9e-3;
        p = p * r + 8.333_452e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 1.666_666_5e-1;
        p = p * r + 0.5;
        // 2ᵏ: the exponent field k + 127 (1..=254 after the clamp).
        let two_k = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits() - 127) << 23);
        let e = (p * r * r + r + 1.0) * two_k;
        if x < -87.3 {
            0.0
        } else if x > 88.37 {
            f32::INFINITY
        } else {
            e
        }
    }

    /// `Σ xs` with eight running sums (a float sum in order does not vectorise).
    #[inline(always)]
    fn sum(xs: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        let chunks = xs.chunks_exact(8);
        let tail: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v;
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    /// `Σ a·b`, as [`sum`].
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(a, b)| a * b).sum();
        for (ca, cb) in ca.zip(cb) {
            for ((acc, &a), &b) in acc.iter_mut().zip(ca).zip(cb) {
                *acc += a * b;
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    /// `max xs` (−∞ when empty), with eight running maxima.
    #[inline(always)]
    fn max(xs: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; 8];
        let chunks = xs.chunks_exact(8);
        let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a = if v > *a { v } else { *a };
            }
        }
        acc.iter().fold(tail, |m, &v| m.max(v))
    }

    /// `(σ(g), silu(g))`.
    #[inline(always)]
    fn sigmoid_silu(g: f32) -> (f32, f32) {
        let s = 1.0 / (1.0 + exp(-g));
        (s, g * s)
    }

    /// `out[i] = f(a[i], b[i])` over equal-length slices, vectorised. (On one thread: faer's
    /// workers spin for a while after each product, and rayon loops here then ran 2x slower
    /// than alone.)
    fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
        let mut out = vec![0f32; a.len()];
        simd(
            #[inline(always)]
            || {
                for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                    *o = f(a, b);
                }
            },
        );
        out
    }

    /// `out[i] = f(a[i], b[i], c[i])`, as [`zip_map`].
    fn zip3_map(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> Vec<f32> {
        let mut out = vec![0f32; a.len()];
        simd(
            #[inline(always)]
            || {
                for (((o, &a), &b), &c) in out.iter_mut().zip(a).zip(b).zip(c) {
                    *o = f(a, b, c);
                }
            },
        );
        out
    }

    fn swiglu_plain(gate: &FlexTensor, up: &FlexTensor) -> FlexTensor {
        let v = zip_map(&values(gate), &values(up), |g, u| sigmoid_silu(g).1 * u);
        like(gate, v)
    }

    /// `silu(gate) · up` on the CPU backend; `None` when the operands are not both plain or both
    /// autodiff CPU tensors.
    pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Option<Tensor<D>> {
        Some(match pair(gate, up)? {
            Pair::Plain(g, u) => Tensor::from_primitive::<Flex>(swiglu_plain(&g, &u)),
            Pair::Tracked(g, u) => Tensor::from_primitive::<Tracked>(swiglu_tracked(g, u)),
        })
    }

    fn swiglu_tracked(g: FloatTensor<Tracked>, u: FloatTensor<Tracked>) -> FloatTensor<Tracked> {
        /// Keeps both inputs: `∂g = ∂y·u·σ(g)·(1 + g·(1 − σ(g)))`, `∂u = ∂y·silu(g)`.
        #[derive(Debug)]
        struct SwigluBackward;

        impl Backward<Flex, 2> for SwigluBackward {
            type State = (NodeId, NodeId);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let gate: FlexTensor = checkpointer.retrieve_node_output(ops.state.0);
                let up: FlexTensor = checkpointer.retrieve_node_output(ops.state.1);
                binary::<Flex, _, _>(
                    ops.parents,
                    ops.node,
                    grads,
                    |dy| {
                        let v = zip3_map(&values(&dy), &values(&gate), &values(&up), |dy, g, u| {
                            let (s, _) = sigmoid_silu(g);
                            dy * u * s * (1.0 + g * (1.0 - s))
                        });
                        like(&gate, v)
                    },
                    |dy| {
                        let v = zip_map(&values(&dy), &values(&gate), |dy, g| dy * sigmoid_silu(g).1);
                        like(&gate, v)
                    },
                );
            }
        }

        match SwigluBackward
            .prepare::<NoCheckpointing>([g.node(), u.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&g), prep.checkpoint(&u));
                let y = swiglu_plain(g.primitive(), u.primitive());
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => {
                let y = swiglu_plain(g.primitive(), u.primitive());
                prep.finish(y)
            }
        }
    }

    /// `1 / sqrt(mean(x²) + eps)` of one row.
    #[inline(always)]
    fn rstd(row: &[f32], eps: f32) -> f32 {
        1.0 / (dot(row, row) / row.len() as f32 + eps).sqrt()
    }

    fn rms_norm_plain(x: &FlexTensor, w: &FlexTensor, eps: f32, offset: f32) -> FlexTensor {
        let (xs, ws) = (values(x), values(w));
        let dim = ws.len();
        let mut out = vec![0f32; xs.len()];
        simd(
            #[inline(always)]
            || {
                for (o, x) in out.chunks_mut(dim).zip(xs.chunks(dim)) {
                    let r = rstd(x, eps);
                    for ((o, &x), &w) in o.iter_mut().zip(x).zip(ws.iter()) {
                        *o = x * r * (w + offset);
                    }
                }
            },
        );
        like(x, out)
    }

    /// RMSNorm on the CPU backend; `None` when the operands are not both plain or both autodiff
    /// CPU tensors.
    pub fn rms_norm<const D: usize>(x: Tensor<D>, w: Tensor<1>, eps: f32, offset: f32) -> Option<Tensor<D>> {
        Some(match pair(x, w)? {
            Pair::Plain(x, w) => Tensor::from_primitive::<Flex>(rms_norm_plain(&x, &w, eps, offset)),
            Pair::Tracked(x, w) => Tensor::from_primitive::<Tracked>(rms_norm_tracked(x, w, eps, offset)),
        })
    }

    fn rms_norm_tracked(
        x: FloatTensor<Tracked>,
        w: FloatTensor<Tracked>,
        eps: f32,
        offset: f32,
    ) -> FloatTensor<Tracked> {
        /// Keeps both inputs. With `x̂ = x·r`, `r = 1/sqrt(mean(x²) + eps)` and `γ = ∂y·(w + offset)`:
        /// `∂x = r·(γ − x̂·mean(γ·x̂))` per row, `∂w = Σ_rows ∂y·x̂`.
        #[derive(Debug)]
        struct RmsNormBackward;

        impl Backward<Flex, 2> for RmsNormBackward {
            type State = (NodeId, NodeId, f32, f32);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let (x_id, w_id, eps, offset) = ops.state;
                let x: FlexTensor = checkpointer.retrieve_node_output(x_id);
                let w: FlexTensor = checkpointer.retrieve_node_output(w_id);
                binary::<Flex, _, _>(
                    ops.parents,
                    ops.node,
                    grads,
                    |dy| {
                        let (dys, xs, ws) = (values(&dy), values(&x), values(&w));
                        let dim = ws.len();
                        let mut out = vec![0f32; xs.len()];
                        let mut gamma = vec![0f32; dim];
                        simd(
                            #[inline(always)]
                            || {
                                for (o, (x, dy)) in out.chunks_mut(dim).zip(xs.chunks(dim).zip(dys.chunks(dim))) {
                                    let r = rstd(x, eps);
                                    for ((g, &dy), &w) in gamma.iter_mut().zip(dy).zip(ws.iter()) {
                                        *g = dy * (w + offset);
                                    }
                                    let mean = dot(&gamma, x) * r / dim as f32;
                                    for ((o, &x), &g) in o.iter_mut().zip(x).zip(&gamma) {
                                        *o = r * (g - x * r * mean);
                                    }
                                }
                            },
                        );
                        like(&x, out)
                    },
                    |dy| {
                        let (dys, xs) = (values(&dy), values(&x));
                        let dim = w.layout().shape().num_elements();
                        let mut dw = vec![0f32; dim];
                        simd(
                            #[inline(always)]
                            || {
                                for (x, dy) in xs.chunks(dim).zip(dys.chunks(dim)) {
                                    let r = rstd(x, eps);
                                    for ((d, &x), &dy) in dw.iter_mut().zip(x).zip(dy) {
                                        *d += dy * x * r;
                                    }
                                }
                            },
                        );
                        like(&w, dw)
                    },
                );
            }
        }

        match RmsNormBackward
            .prepare::<NoCheckpointing>([x.node(), w.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&w), eps, offset);
                let y = rms_norm_plain(x.primitive(), w.primitive(), eps, offset);
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => {
                let y = rms_norm_plain(x.primitive(), w.primitive(), eps, offset);
                prep.finish(y)
            }
        }
    }
    /// [`super::softmax_piece`] on plain CPU tensors; `None` under autodiff or when empty.
    pub fn softmax_piece(z: &Tensor<2>, m: &Tensor<2>, s: &Tensor<2>) -> Option<[Tensor<2>; 4]> {
        let plain = |t: &Tensor<2>| t.clone().try_into_primitive::<Flex>().ok();
        let (z, m, s) = (plain(z)?, plain(m)?, plain(s)?);
        let (zs, ms, ss) = (values(&z), values(&m), values(&s));
        let (n, c) = (ms.len(), zs.len() / ms.len().max(1));
        if n == 0 || c == 0 {
            return None; // nothing to fuse; the tensor formulation handles empty pieces
        }
        let (mut m_new, mut alpha, mut p, mut s_new) = (vec![0f32; n], vec![0f32; n], vec![0f32; n * c], vec![0f32; n]);
        simd(
            #[inline(always)]
            || {
                for (i, (p, z)) in p.chunks_mut(c).zip(zs.chunks(c)).enumerate() {
                    let top = max(z).max(ms[i]);
                    for (p, &z) in p.iter_mut().zip(z) {
                        *p = exp(z - top);
                    }
                    alpha[i] = exp(ms[i] - top);
                    s_new[i] = ss[i] * alpha[i] + sum(p);
                    m_new[i] = top;
                }
            },
        );
        let tensor = |v: Vec<f32>, shape: [usize; 2]| {
            Tensor::from_primitive::<Flex>(FlexTensor::from_data(TensorData::new(v, shape)))
        };
        Some([
            tensor(m_new, [n, 1]),
            tensor(alpha, [n, 1]),
            tensor(p, [n, c]),
            tensor(s_new, [n, 1]),
        ])
    }

    /// `softmax(scale·s + mask)` row by row (rows of `s` cycle through the mask's rows).
    fn masked_softmax_plain(s: &FlexTensor, mask: &[f32], scale: f32) -> FlexTensor {
        let ss = values(s);
        let width = s.layout().shape()[3];
        let mut out = vec![0f32; ss.len()];
        let rows = out
            .chunks_mut(width)
            .zip(ss.chunks(width))
            .zip(mask.chunks(width).cycle());
        simd(
            #[inline(always)]
            || {
                for ((o, row), m) in rows {
                    for ((o, &v), &m) in o.iter_mut().zip(row).zip(m) {
                        *o = v * scale + m;
                    }
                    let top = max(o);
                    o.iter_mut().for_each(|o| *o = exp(*o - top));
                    let inv = 1.0 / sum(o);
                    o.iter_mut().for_each(|o| *o *= inv);
                }
            },
        );
        like(s, out)
    }

    /// Attention's probabilities on the CPU backend; `None` when the operands are not both
    /// plain or both autodiff CPU tensors.
    pub fn masked_softmax(s: Tensor<4>, mask: Tensor<2>, scale: f32) -> Option<Tensor<4>> {
        Some(match pair(s, mask)? {
            Pair::Plain(s, m) => Tensor::from_primitive::<Flex>(masked_softmax_plain(&s, &values(&m), scale)),
            Pair::Tracked(s, m) => Tensor::from_primitive::<Tracked>(masked_softmax_tracked(s, m, scale)),
        })
    }

    fn masked_softmax_tracked(s: FloatTensor<Tracked>, m: FloatTensor<Tracked>, scale: f32) -> FloatTensor<Tracked> {
        /// Keeps the probabilities p: `∂s = scale·p·(g − Σ g·p)` per row; the mask gets none.
        #[derive(Debug)]
        struct SoftmaxBackward;

        impl Backward<Flex, 1> for SoftmaxBackward {
            type State = (FlexTensor, f32);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let (p, scale) = ops.state;
                unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
                    let (gs, ps) = (values(&g), values(&p));
                    let width = p.layout().shape()[3];
                    let mut out = vec![0f32; ps.len()];
                    let rows = out.chunks_mut(width).zip(gs.chunks(width)).zip(ps.chunks(width));
                    simd(
                        #[inline(always)]
                        || {
                            for ((o, g), p) in rows {
                                let dot = dot(g, p);
                                for ((o, &g), &p) in o.iter_mut().zip(g).zip(p) {
                                    *o = scale * p * (g - dot);
                                }
                            }
                        },
                    );
                    like(&p, out)
                });
            }
        }

        let mask = values(m.primitive());
        match SoftmaxBackward
            .prepare::<NoCheckpointing>([s.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let p = masked_softmax_plain(s.primitive(), &mask, scale);
                prep.finish((p.clone(), scale), p)
            }
            OpsKind::UnTracked(prep) => {
                let p = masked_softmax_plain(s.primitive(), &mask, scale);
                prep.finish(p)
            }
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn tensor<const D: usize>(shape: [usize; D], seed: usize, device: &Device) -> Tensor<D> {
        let len: usize = shape.iter().product();
        let v: Vec<f32> = (0..len)
            .map(|i| ((i * 7919 + seed) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// The vectorisable `exp` against f64's, over the whole range of f32 it maps to normal
    /// floats, and at its edges.
    #[test]
    fn the_fused_exp_is_within_two_ulp() {
        let worst = (0..=200_000)
            .map(|i| -87.0 + 175.3 * i as f32 / 200_000.0)
            .map(|x| {
                let want = (x as f64).exp();
                ((fused::exp(x) as f64 - want) / want).abs()
            })
            .fold(0f64, f64::max);
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(fused::exp(-100.0), 0.0);
        assert_eq!(fused::exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fused::exp(100.0), f32::INFINITY);
        assert!(fused::exp(f32::NAN).is_nan());
        assert_eq!(fused::exp(0.0), 1.0);
    }

    /// The loss's fused log-sum-exp piece against its tensor formulation, from the first piece
    /// (maxima far below any logit) and from a later one.
    #[test]
    fn the_fused_softmax_piece_is_the_tensor_formulation() {
        let device = Device::flex();
        let z = tensor([5, 37], 11, &device).mul_scalar(10.0);
        let formulation = |z: Tensor<2>, m: Tensor<2>, s: Tensor<2>| {
            let m_new = m.clone().max_pair(z.clone().max_dim(1));
            let alpha = (m - m_new.clone()).exp();
            let p = (z - m_new.clone()).exp();
            let s = s * alpha.clone() + p.clone().sum_dim(1);
            [m_new, alpha, p, s]
        };
        let starts = [
            (
                Tensor::<2>::full([5, 1], -1.0e30, &device),
                Tensor::<2>::zeros([5, 1], &device),
            ),
            (
                tensor([5, 1], 12, &device).mul_scalar(10.0),
                tensor([5, 1], 13, &device).abs(),
            ),
        ];
        for (m, s) in starts {
            let ours = fused::softmax_piece(&z, &m, &s).expect("plain CPU tensors take the fused path");
            let want = formulation(z.clone(), m.clone(), s.clone());
            for (i, (a, b)) in ours.into_iter().zip(want).enumerate() {
                assert!(max_diff(a, b) < 1e-5, "output {i}");
            }
            let via_public = softmax_piece(z.clone(), m.clone(), s.clone());
            assert!(
                fused::softmax_piece(&Tensor::<2>::zeros([5, 0], &device), &m, &s).is_none(),
                "empty piece"
            );
            assert!(max_diff(via_public[3].clone(), formulation(z.clone(), m, s)[3].clone()) < 1e-5);
        }
    }

    /// The fused ops against burn's tensor formulations: values on the plain and the autodiff
    /// CPU device, and both inputs' gradients.
    #[test]
    fn fused_ops_are_the_tensor_formulations() {
        let device = Device::flex().autodiff();
        let (gate, up) = (
            tensor([2, 5, 48], 1, &device).require_grad(),
            tensor([2, 5, 48], 2, &device).require_grad(),
        );
        let r = tensor([2, 5, 48], 3, &device);
        let ours = swiglu(gate.clone(), up.clone());
        assert!(
            fused::swiglu(gate.clone(), up.clone()).is_some(),
            "the fused path is taken"
        );
        let want = burn::tensor::activation::silu(gate.clone()) * up.clone();
        assert!(max_diff(ours.clone(), want.clone()) < 1e-5, "swiglu");
        let (g1, g2) = ((ours * r.clone()).sum().backward(), (want * r.clone()).sum().backward());
        assert!(
            max_diff(gate.grad(&g1).unwrap(), gate.grad(&g2).unwrap()) < 1e-4,
            "∂gate"
        );
        assert!(max_diff(up.grad(&g1).unwrap(), up.grad(&g2).unwrap()) < 1e-4, "∂up");

        for offset in [0.0, 1.0] {
            let x = tensor([2, 5, 48], 4, &device).require_grad();
            let w = tensor([48], 5, &device).require_grad();
            let ours = rms_norm(x.clone(), w.clone(), 1e-5, offset);
            assert!(fused::rms_norm(x.clone(), w.clone(), 1e-5, offset as f32).is_some());
            let variance = x.clone().square().mean_dim(2);
            let scale = w.clone().add_scalar(offset);
            let want = x.clone() * variance.add_scalar(1e-5).sqrt().recip() * scale.unsqueeze::<3>();
            assert!(max_diff(ours.clone(), want.clone()) < 1e-5, "rms_norm, offset {offset}");
            let (g1, g2) = ((ours * r.clone()).sum().backward(), (want * r.clone()).sum().backward());
            assert!(
                max_diff(x.grad(&g1).unwrap(), x.grad(&g2).unwrap()) < 1e-4,
                "∂x, offset {offset}"
            );
            assert!(
                max_diff(w.grad(&g1).unwrap(), w.grad(&g2).unwrap()) < 1e-3,
                "∂w, offset {offset}"
            );
        }
        // Attention's probabilities, with a causal mask, against burn's softmax.
        let scores = tensor([2, 3, 5, 5], 8, &device).require_grad();
        let causal: Vec<f32> = (0..25).map(|i| if i % 5 > i / 5 { -1e9 } else { 0.0 }).collect();
        let mask = Tensor::<2>::from_data(TensorData::new(causal, [5, 5]), &device);
        let r = tensor([2, 3, 5, 5], 9, &device);
        let ours = masked_softmax(scores.clone(), mask.clone(), 0.125);
        assert!(scores.is_tracked());
        assert!(fused::masked_softmax(scores.clone(), mask.clone(), 0.125).is_some());
        let want =
            burn::tensor::activation::softmax(scores.clone().mul_scalar(0.125) + mask.clone().unsqueeze::<4>(), 3);
        assert!(max_diff(ours.clone(), want.clone()) < 1e-6, "softmax");
        let (g1, g2) = ((ours * r.clone()).sum().backward(), (want * r).sum().backward());
        assert!(
            max_diff(scores.grad(&g1).unwrap(), scores.grad(&g2).unwrap()) < 1e-5,
            "∂scores"
        );
        // Untracked, on the plain device.
        let plain = Device::flex();
        let x = tensor([3, 48], 6, &plain);
        let w = tensor([48], 7, &plain);
        let variance = x.clone().square().mean_dim(1);
        let want = x.clone() * variance.add_scalar(1e-6).sqrt().recip() * w.clone().unsqueeze::<2>();
        assert!(max_diff(rms_norm(x.clone(), w, 1e-6, 0.0), want) < 1e-5);
        let want = burn::tensor::activation::silu(x.clone()) * x.clone();
        assert!(max_diff(swiglu(x.clone(), x), want) < 1e-5);
        let scores = tensor([2, 3, 5, 5], 10, &plain).mul_scalar(20.0);
        let mask = mask.to_device(&plain);
        assert!(fused::masked_softmax(scores.clone(), mask.clone(), 0.125).is_some());
        let want =
            burn::tensor::activation::softmax(scores.clone().mul_scalar(0.125) + mask.clone().unsqueeze::<4>(), 3);
        assert!(
            max_diff(masked_softmax(scores, mask, 0.125), want) < 1e-6,
            "softmax, untracked"
        );
    }
}
