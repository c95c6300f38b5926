//! Causal attention on the GPU backends without the score matrix (issue 13): the forward pass
//! walks the keys a tile at a time with a running softmax (the flash-attention recurrence) and
//! keeps, per query row, its output and the log-sum-exp of its scores; the backward recomputes
//! each score from those. burn's formulation (`model::attention`) writes the `[B, H, T, S]`
//! scores and probabilities, and under autodiff keeps them, with the keys and values repeated
//! for every query head, until the backward: at 512 tokens and 32 heads that is 64 MiB per
//! layer and sequence. Here a layer keeps its queries, keys and values (their own tensors, not
//! copies) and `[B, H, T]` log-sum-exps.
//!
//! Three CubeCL kernels, one unit per row: the forward and the queries' gradient give each
//! query row a unit and load key/value tiles into shared memory; the keys' and values' gradient
//! gives each key row a unit, walks the query heads of its group and loads query tiles. Keys and
//! values stay `[B, kv_heads, S, D]` (grouped-query heads read their group's). The additive mask
//! `[T, S]` is read as given (causal, sliding windows); the tiles a causal mask hides entirely
//! are skipped, half the work. Only training graphs take them, like the
//! kernels of `model::gpu_ops` (whose switch, [`super::gpu_ops::use_kernels`], covers these);
//! Gemma 2's soft-capped scores keep the formulation.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, backend_extension};
use burn::tensor::{DType, Shape, Tensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::{CubeCount, CubeDim};

/// Query (or key) rows per cube: one unit each.
const ROWS: u32 = 32;
/// f32 of shared memory for a cube's tiles of key/value (or query/gradient) rows: 8 KiB.
const SHARED_FLOATS: usize = 2048;

/// The forward's output shape: `[B, H, T, D + 1]`, each row's output then its log-sum-exp.
#[cfg(any(not(target_arch = "wasm32"), feature = "gpu-fusion"))]
fn forward_shape(q: &Shape) -> Shape {
    Shape::from([q[0], q[1], q[2], q[3] + 1])
}

/// The keys' and values' gradients' shape: `[B, kv_heads, S, 2·D]`, `∂k` then `∂v` per row.
#[cfg(any(not(target_arch = "wasm32"), feature = "gpu-fusion"))]
fn key_grad_shape(k: &Shape) -> Shape {
    Shape::from([k[0], k[1], k[2], 2 * k[3]])
}

/// The attention kernels as backend operations. `q` is `[B, H, T, D]`, `k` and `v`
/// `[B, kv_heads, S, D]` with `H` a multiple of `kv_heads`, `mask` `[T, S]` (added to the
/// scaled scores), `scale` the scores' factor.
#[backend_extension(Cube, Fusion: cfg(any(not(target_arch = "wasm32"), feature = "gpu-fusion")))]
pub trait AttentionOps: Backend {
    /// `softmax(scale·q·kᵀ + mask)·v` and each row's log-sum-exp of its scores, side by side:
    /// `[B, H, T, D + 1]`.
    #[fusion(dtype = q, shape = forward_shape(q))]
    fn attention_rows(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;

    /// The queries' gradient for the output's gradient `dy` (`[B, H, T, D]`), with each row's
    /// log-sum-exp `lse` and `delta = Σ dy·y` (both `[B, H, T]`).
    #[fusion(dtype = q, shape = q.clone())]
    #[allow(clippy::too_many_arguments)]
    fn attention_query_grad(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;

    /// The keys' and values' gradients, side by side: `[B, kv_heads, S, 2·D]`.
    #[fusion(dtype = k, shape = key_grad_shape(k))]
    #[allow(clippy::too_many_arguments)]
    fn attention_key_grad(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;
}

impl AttentionOps for CubeBackend {
    fn attention_rows(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        launch(Pass::Forward, q, k, v, mask, None, scale)
    }

    fn attention_query_grad(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        launch(Pass::Queries, q, k, v, mask, Some((dy, lse, delta)), scale)
    }

    fn attention_key_grad(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        launch(Pass::Keys, q, k, v, mask, Some((dy, lse, delta)), scale)
    }
}

/// Which kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Forward,
    Queries,
    Keys,
}

fn launch(
    pass: Pass,
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    mask: CubeTensor,
    grads: Option<(CubeTensor, CubeTensor, CubeTensor)>,
    scale: f32,
) -> CubeTensor {
    let (q, k, v, mask) = (
        into_contiguous(q),
        into_contiguous(k),
        into_contiguous(v),
        into_contiguous(mask),
    );
    let qs = q.meta.shape().clone();
    let ks = k.meta.shape().clone();
    let (b, heads, t, d) = (qs[0], qs[1], qs[2], qs[3]);
    let (kv_heads, s) = (ks[1], ks[2]);
    let shape = match pass {
        Pass::Forward => Shape::from([b, heads, t, d + 1]),
        Pass::Queries => qs.clone(),
        Pass::Keys => Shape::from([b, kv_heads, s, 2 * d]),
    };
    let out = empty_device_dtype(q.client.clone(), q.device.clone(), shape.clone(), DType::F32);
    if shape.num_elements() == 0 || t * s == 0 {
        return out;
    }
    let client = q.client.clone();
    // Unused inputs of the forward kernel: any f32 tensors.
    let (dy, lse, delta) = match grads {
        Some((dy, lse, delta)) => (into_contiguous(dy), into_contiguous(lse), into_contiguous(delta)),
        None => (q.clone(), q.clone(), q.clone()),
    };
    // Rows of the other side per shared tile: two tiles of `tile × D` f32 (two more f32 per row
    // for the keys' pass).
    let tile = (SHARED_FLOATS / (2 * d + 2)).max(1);
    let (rows, groups) = match pass {
        Pass::Keys => (s, b * kv_heads),
        _ => (t, b * heads),
    };
    let count = CubeCount::Static(rows.div_ceil(ROWS as usize) as u32, groups as u32, 1);
    let args = (
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        mask.into_tensor_arg(),
        dy.into_tensor_arg(),
        lse.into_tensor_arg(),
        delta.into_tensor_arg(),
        out.clone().into_tensor_arg(),
    );
    let dims = ((heads / kv_heads) as u32, t as u32, s as u32);
    let cube_dim = CubeDim::new_1d(ROWS);
    match pass {
        Pass::Keys => kernel::key_grad_kernel::launch(
            &client, count, cube_dim, args.0, args.1, args.2, args.3, args.4, args.5, args.6, args.7, dims.0, dims.1,
            dims.2, scale, d, tile,
        ),
        _ => kernel::query_kernel::launch(
            &client,
            count,
            cube_dim,
            args.0,
            args.1,
            args.2,
            args.3,
            args.4,
            args.5,
            args.6,
            args.7,
            dims.0,
            dims.1,
            dims.2,
            scale,
            d,
            tile,
            pass == Pass::Queries,
        ),
    }
    out
}

/// The kernels, in CubeCL.
mod kernel {
    use cubecl::prelude::*;

    /// One query row per unit (a cube: `CUBE_DIM` rows of one head `CUBE_POS_Y` of one batch
    /// element), walking the keys `tile` at a time through shared memory. Forward (`backward`
    /// false): `out` `[B, H, T, D + 1]` gets `softmax(scale·q·kᵀ + mask)·v` and the row's
    /// log-sum-exp, by the running maximum and sum. Backward: `out` `[B, H, T, D]` gets
    /// `∂q = scale·Σⱼ pⱼ·(dy·vⱼ − delta)·kⱼ` with `pⱼ = exp(sⱼ − lse)`.
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn query_kernel(
        q: &Tensor<f32>,
        k: &Tensor<f32>,
        v: &Tensor<f32>,
        mask: &Tensor<f32>,
        dy: &Tensor<f32>,
        lse: &Tensor<f32>,
        delta: &Tensor<f32>,
        out: &mut Tensor<f32>,
        group: u32,
        t: u32,
        s: u32,
        scale: f32,
        #[comptime] d: usize,
        #[comptime] tile: usize,
        #[comptime] backward: bool,
    ) {
        let head = CUBE_POS_Y as usize;
        let kv_head = head / group as usize;
        let row = CUBE_POS_X * CUBE_DIM + UNIT_POS;
        let live = row < t;
        let q_base = (head * t as usize + row as usize) * d;
        let kv_base = kv_head * s as usize * d;
        let mut ks = Shared::<[f32]>::new_slice(tile * d);
        let mut vs = Shared::<[f32]>::new_slice(tile * d);
        let mut qr = Array::<f32>::new(d);
        let mut gr = Array::<f32>::new(d);
        let mut acc = Array::<f32>::new(d);
        let mut scores = Array::<f32>::new(tile);
        #[unroll]
        for i in 0..d {
            qr[i] = 0f32;
            gr[i] = 0f32;
            acc[i] = 0f32;
        }
        let mut row_lse = 0f32;
        let mut row_delta = 0f32;
        if live {
            #[unroll]
            for i in 0..d {
                qr[i] = q[q_base + i] * scale;
            }
            if backward {
                #[unroll]
                for i in 0..d {
                    gr[i] = dy[q_base + i];
                }
                row_lse = lse[head * t as usize + row as usize];
                row_delta = delta[head * t as usize + row as usize];
            }
        }
        // The running maximum and sum (forward).
        let mut top = f32::new(-3.402_823_5e38);
        let mut sum = 0f32;
        // Causal: no key after the cube's last row (shifted by the cached keys) is seen.
        let mut end = (CUBE_POS_X + 1) * CUBE_DIM + (s - t);
        if end > s {
            end = s;
        }
        let mut j0 = 0u32;
        while j0 < end {
            // The tile of keys and values, every unit loading a share.
            let mut e = UNIT_POS as usize;
            while e < tile * d {
                let j = j0 as usize + e / d;
                let mut kv = 0f32;
                let mut vv = 0f32;
                if j < s as usize {
                    kv = k[kv_base + j * d + e % d];
                    vv = v[kv_base + j * d + e % d];
                }
                ks[e] = kv;
                vs[e] = vv;
                e += CUBE_DIM as usize;
            }
            sync_cube();
            if live {
                let mut n = (s - j0) as usize;
                if n > tile {
                    n = tile;
                }
                let mut tile_top = f32::new(-3.402_823_5e38);
                for jj in 0..n {
                    let mut dot = 0f32;
                    #[unroll]
                    for i in 0..d {
                        dot += qr[i] * ks[jj * d + i];
                    }
                    let score = dot + mask[row as usize * s as usize + j0 as usize + jj];
                    scores[jj] = score;
                    if score > tile_top {
                        tile_top = score;
                    }
                }
                if backward {
                    for jj in 0..n {
                        let p = f32::exp(scores[jj] - row_lse);
                        let mut dp = 0f32;
                        #[unroll]
                        for i in 0..d {
                            dp += gr[i] * vs[jj * d + i];
                        }
                        let ds = p * (dp - row_delta);
                        #[unroll]
                        for i in 0..d {
                            acc[i] += ds * ks[jj * d + i];
                        }
                    }
                } else {
                    let mut new_top = top;
                    if tile_top > top {
                        new_top = tile_top;
                    }
                    let alpha = f32::exp(top - new_top);
                    sum *= alpha;
                    #[unroll]
                    for i in 0..d {
                        acc[i] *= alpha;
                    }
                    for jj in 0..n {
                        let p = f32::exp(scores[jj] - new_top);
                        sum += p;
                        #[unroll]
                        for i in 0..d {
                            acc[i] += p * vs[jj * d + i];
                        }
                    }
                    top = new_top;
                }
            }
            sync_cube();
            j0 += tile as u32;
        }
        if live {
            if backward {
                #[unroll]
                for i in 0..d {
                    out[q_base + i] = acc[i] * scale;
                }
            } else {
                let base = (head * t as usize + row as usize) * (d + 1);
                #[unroll]
                for i in 0..d {
                    out[base + i] = acc[i] / sum;
                }
                out[base + d] = top + f32::ln(sum);
            }
        }
    }

    /// One key row per unit (a cube: `CUBE_DIM` rows of one key/value head `CUBE_POS_Y` of one
    /// batch element), walking the query rows of every query head of its group `tile` at a time
    /// through shared memory: `out` `[B, kv_heads, S, 2·D]` gets `∂k = scale·Σᵢ dsᵢ·qᵢ` and
    /// `∂v = Σᵢ pᵢ·dyᵢ`, with `pᵢ = exp(sᵢ − lseᵢ)` and `dsᵢ = pᵢ·(dyᵢ·v − deltaᵢ)`.
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn key_grad_kernel(
        q: &Tensor<f32>,
        k: &Tensor<f32>,
        v: &Tensor<f32>,
        mask: &Tensor<f32>,
        dy: &Tensor<f32>,
        lse: &Tensor<f32>,
        delta: &Tensor<f32>,
        out: &mut Tensor<f32>,
        group: u32,
        t: u32,
        s: u32,
        scale: f32,
        #[comptime] d: usize,
        #[comptime] tile: usize,
    ) {
        let kv_head = CUBE_POS_Y as usize;
        let row = CUBE_POS_X * CUBE_DIM + UNIT_POS;
        let live = row < s;
        let k_base = (kv_head * s as usize + row as usize) * d;
        let mut qs = Shared::<[f32]>::new_slice(tile * d);
        let mut gs = Shared::<[f32]>::new_slice(tile * d);
        let mut ls = Shared::<[f32]>::new_slice(tile);
        let mut ds_ = Shared::<[f32]>::new_slice(tile);
        let mut kr = Array::<f32>::new(d);
        let mut vr = Array::<f32>::new(d);
        let mut dk = Array::<f32>::new(d);
        let mut dv = Array::<f32>::new(d);
        #[unroll]
        for i in 0..d {
            kr[i] = 0f32;
            vr[i] = 0f32;
            dk[i] = 0f32;
            dv[i] = 0f32;
        }
        if live {
            #[unroll]
            for i in 0..d {
                kr[i] = k[k_base + i] * scale;
                vr[i] = v[k_base + i];
            }
        }
        // The group's first query head (flattened over the batch, as `kv_head` is).
        let first = kv_head * group as usize;
        for g in 0..group as usize {
            let head = first + g;
            let q_base = head * t as usize * d;
            // Causal: no query before the cube's first key row (shifted by the cached keys) sees it.
            let first = CUBE_POS_X * CUBE_DIM;
            let mut i0 = 0u32;
            if first > s - t {
                i0 = first - (s - t);
            }
            while i0 < t {
                let mut e = UNIT_POS as usize;
                while e < tile * d {
                    let i = i0 as usize + e / d;
                    let mut qv = 0f32;
                    let mut gv = 0f32;
                    if i < t as usize {
                        qv = q[q_base + i * d + e % d];
                        gv = dy[q_base + i * d + e % d];
                    }
                    qs[e] = qv;
                    gs[e] = gv;
                    e += CUBE_DIM as usize;
                }
                let mut e = UNIT_POS as usize;
                while e < tile {
                    let i = i0 as usize + e;
                    let mut lv = 0f32;
                    let mut dv_ = 0f32;
                    if i < t as usize {
                        lv = lse[head * t as usize + i];
                        dv_ = delta[head * t as usize + i];
                    }
                    ls[e] = lv;
                    ds_[e] = dv_;
                    e += CUBE_DIM as usize;
                }
                sync_cube();
                if live {
                    let mut n = (t - i0) as usize;
                    if n > tile {
                        n = tile;
                    }
                    for ii in 0..n {
                        let mut dot = 0f32;
                        let mut dp = 0f32;
                        #[unroll]
                        for i in 0..d {
                            dot += kr[i] * qs[ii * d + i];
                            dp += vr[i] * gs[ii * d + i];
                        }
                        let score = dot + mask[(i0 as usize + ii) * s as usize + row as usize];
                        let p = f32::exp(score - ls[ii]);
                        let ds = p * (dp - ds_[ii]);
                        #[unroll]
                        for i in 0..d {
                            dv[i] += p * gs[ii * d + i];
                            dk[i] += ds * qs[ii * d + i];
                        }
                    }
                }
                sync_cube();
                i0 += tile as u32;
            }
        }
        if live {
            let base = (kv_head * s as usize + row as usize) * 2 * d;
            #[unroll]
            for i in 0..d {
                out[base + i] = dk[i] * scale;
                out[base + d + i] = dv[i];
            }
        }
    }
}

/// The forward kernel on tensors: `(softmax(scale·q·kᵀ + mask)·v, log-sum-exp)`, `[B, H, T, D]`
/// and `[B, H, T]`. Inputs go in without an autodiff context.
pub fn attention_rows(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<2>, scale: f32) -> (Tensor<4>, Tensor<3>) {
    use burn::backend::Dispatch;
    let [b, h, t, d] = q.dims();
    let both: Tensor<4> = Tensor::from_dispatch(Dispatch::attention_rows(
        q.inner().into_dispatch(),
        k.inner().into_dispatch(),
        v.inner().into_dispatch(),
        mask.inner().into_dispatch(),
        scale,
    ));
    (both.clone().narrow(3, 0, d), both.narrow(3, d, 1).reshape([b, h, t]))
}

/// The three inputs' gradients `(∂q, ∂k, ∂v)` for the output's gradient `dy`, from the forward's
/// output `y` and log-sum-exps `lse`.
#[allow(clippy::too_many_arguments)]
pub fn attention_grads(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Tensor<2>,
    y: Tensor<4>,
    lse: Tensor<3>,
    dy: Tensor<4>,
    scale: f32,
) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    use burn::backend::Dispatch;
    let [b, h, t, d] = q.dims();
    let delta: Tensor<3> = (dy.clone() * y).sum_dim(3).reshape([b, h, t]);
    let dq = Tensor::from_dispatch(Dispatch::attention_query_grad(
        q.clone().inner().into_dispatch(),
        k.clone().inner().into_dispatch(),
        v.clone().inner().into_dispatch(),
        mask.clone().inner().into_dispatch(),
        dy.clone().inner().into_dispatch(),
        lse.clone().inner().into_dispatch(),
        delta.clone().inner().into_dispatch(),
        scale,
    ));
    let both: Tensor<4> = Tensor::from_dispatch(Dispatch::attention_key_grad(
        q.inner().into_dispatch(),
        k.inner().into_dispatch(),
        v.inner().into_dispatch(),
        mask.inner().into_dispatch(),
        dy.inner().into_dispatch(),
        lse.inner().into_dispatch(),
        delta.inner().into_dispatch(),
        scale,
    ));
    (dq, both.clone().narrow(3, 0, d), both.narrow(3, d, d))
}

/// Causal attention `softmax(scale·q·kᵀ + mask)·v` (`q` `[B, H, T, D]`, `k` and `v`
/// `[B, kv_heads, S, D]` with `S ≥ T`, `mask` `[T, S]`: causal, hiding key `j` from query `i`
/// when `j > i + S − T`, the kernels skip those, and possibly hiding more, as sliding windows
/// do) through the kernels on a GPU backend under autodiff:
/// one recorded operation whose backward recomputes the scores (see the module's doc). `None`
/// elsewhere, for plain tensors, and where the shapes do not fit.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: &Tensor<2>, scale: f64) -> Option<Tensor<4>> {
    let [b, h, t, d] = q.dims();
    let [kb, kvh, s, kd] = k.dims();
    let fits = kb == b
        && kd == d
        && v.dims() == k.dims()
        && kvh > 0
        && h.is_multiple_of(kvh)
        && mask.dims() == [t, s]
        && s >= t
        && b * h * t * s * d > 0
        // A row's registers: its query, gradient and sum, each `D` f32.
        && d <= 256;
    let training = q.is_autodiff() || k.is_autodiff() || v.is_autodiff();
    if !training || !fits || ![&q, &k, &v].iter().all(|x| super::gpu_ops::takes(*x)) || !super::gpu_ops::takes(mask) {
        return None;
    }
    tracked::attention(q, k, v, mask.clone().inner(), scale as f32)
}

/// The operation recorded for autodiff on the GPU backends (burn's `Cube`).
mod tracked {
    use burn::backend::Cube;
    use burn::backend::autodiff::NodeId;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::Tensor;

    use crate::model::gpu_ops::tracked::{Tracked, plain, primitive};

    pub(super) fn attention(
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Tensor<2>,
        scale: f32,
    ) -> Option<Tensor<4>> {
        /// Keeps q, k and v (by checkpoint id), the output and its rows' log-sum-exps, and the
        /// mask (a constant).
        #[derive(Debug)]
        struct AttentionBackward;

        impl Backward<Cube, 3> for AttentionBackward {
            type State = (NodeId, NodeId, NodeId, Tensor<2>, Tensor<4>, Tensor<3>, f32);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let (q_id, k_id, v_id, mask, y, lse, scale) = ops.state;
                let q: Tensor<4> = plain(checkpointer.retrieve_node_output(q_id));
                let k: Tensor<4> = plain(checkpointer.retrieve_node_output(k_id));
                let v: Tensor<4> = plain(checkpointer.retrieve_node_output(v_id));
                let dy: Tensor<4> = plain(grads.consume::<Cube>(&ops.node));
                let (dq, dk, dv) = super::attention_grads(q, k, v, mask, y, lse, dy, scale);
                let [q_node, k_node, v_node] = ops.parents;
                for (node, grad) in [(q_node, dq), (k_node, dk), (v_node, dv)] {
                    if let Some(node) = node {
                        grads.register::<Cube>(node.id, primitive(grad));
                    }
                }
            }
        }

        let q = q.autodiff().try_into_primitive::<Tracked>().ok()?;
        let k = k.autodiff().try_into_primitive::<Tracked>().ok()?;
        let v = v.autodiff().try_into_primitive::<Tracked>().ok()?;
        let rows = |q: &FloatTensor<Tracked>, k: &FloatTensor<Tracked>, v: &FloatTensor<Tracked>| {
            super::attention_rows(
                plain(q.primitive().clone()),
                plain(k.primitive().clone()),
                plain(v.primitive().clone()),
                mask.clone(),
                scale,
            )
        };
        let y = match AttentionBackward
            .prepare::<NoCheckpointing>([q.node(), k.node(), v.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let (y, lse) = rows(&q, &k, &v);
                let state = (
                    prep.checkpoint(&q),
                    prep.checkpoint(&k),
                    prep.checkpoint(&v),
                    mask.clone(),
                    y.clone(),
                    lse,
                    scale,
                );
                prep.finish(state, primitive(y))
            }
            OpsKind::UnTracked(prep) => prep.finish(primitive(rows(&q, &k, &v).0)),
        };
        Some(Tensor::from_primitive::<Tracked>(y))
    }
}
