//! Fused kernels on the GPU backends (issue 13): RMSNorm, SwiGLU and the rotary embedding, one
//! kernel per direction (per input's gradient) each, recorded for autodiff as one operation that
//! keeps its inputs only (the rotation: its tables only). burn's tensor formulations, the
//! reference twins (`cpu_ops::rms_norm_by_tensors`, `cpu_ops::swiglu_by_tensors`,
//! `rope::apply_rotary_by_tensors`), take seven, three and five kernels forward and more backward
//! where fusion does not join them (the browser build), each writing a `[tokens, width]` tensor,
//! and under autodiff keep several of those for the backward.
//!
//! RMSNorm runs one cube (workgroup) per row, its units striding over the row and summing in
//! shared memory: the forward kernel reads a row twice (its mean square, then the scaled values)
//! and writes it once. SwiGLU and the rotation are one unit per element. Reached through burn's backend extension,
//! so they run with and without kernel fusion. Only training graphs take them (see
//! [`rms_norm`]); [`use_kernels`] switches them off to compare.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, backend_extension};
use burn::tensor::{DType, Shape, Tensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::CubeDim;
use cubecl::server::CubeCountSelection;

/// The kernels as backend operations. Every tensor is `[rows, dim]` except `w`, `[dim]`.
#[backend_extension(Cube, Fusion: cfg(any(not(target_arch = "wasm32"), feature = "gpu-fusion")))]
pub trait GpuOps: Backend {
    /// `x / sqrt(mean(x²) + eps) · (offset + w)` per row.
    #[fusion(dtype = x, shape = x.clone())]
    fn rms_norm_rows(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32, offset: f32) -> FloatTensor<Self>;

    /// The input's gradient of [`GpuOps::rms_norm_rows`] for the output's gradient `dy`: with
    /// `r = 1/sqrt(mean(x²) + eps)` and `γ = dy·(offset + w)`, `∂x = r·(γ − x·r²·mean(γ·x))`.
    #[fusion(dtype = x, shape = x.clone())]
    fn rms_norm_rows_grad(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        eps: f32,
        offset: f32,
    ) -> FloatTensor<Self>;

    /// `silu(gate)·up`, elementwise (`silu(g) = g·σ(g)`); both `[n]`.
    #[fusion(dtype = gate, shape = gate.clone())]
    fn swiglu_values(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;

    /// A gradient of [`GpuOps::swiglu_values`] for the output's gradient `dy`: of `up`
    /// (`dy·silu(g)`) when `of_up`, else of `gate` (`dy·u·σ(g)·(1 + g·(1 − σ(g)))`).
    #[fusion(dtype = gate, shape = gate.clone())]
    fn swiglu_grad(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        of_up: bool,
    ) -> FloatTensor<Self>;

    /// The rotary embedding of `x` (`[B, H, T, D]`, tables `cos` and `sin` `[T, D]`):
    /// `x·cos + rotate_half(x)·sin` with `rotate_half([x1, x2]) = [−x2, x1]`; when `transpose`,
    /// its transpose (the backward's): `x·cos + rotate_halfᵀ(x·sin)`, `rotate_halfᵀ([u1, u2]) =
    /// [u2, −u1]`.
    #[fusion(dtype = x, shape = x.clone())]
    fn rotate_heads(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        transpose: bool,
    ) -> FloatTensor<Self>;
}

impl GpuOps for CubeBackend {
    fn rms_norm_rows(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32, offset: f32) -> FloatTensor<Self> {
        launch(x, w, None, eps, offset)
    }

    fn rms_norm_rows_grad(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        eps: f32,
        offset: f32,
    ) -> FloatTensor<Self> {
        launch(x, w, Some(dy), eps, offset)
    }

    fn swiglu_values(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        launch_swiglu(gate, up, None)
    }

    fn swiglu_grad(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        of_up: bool,
    ) -> FloatTensor<Self> {
        launch_swiglu(gate, up, Some((dy, of_up)))
    }

    fn rotate_heads(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        transpose: bool,
    ) -> FloatTensor<Self> {
        let (x, cos, sin) = (into_contiguous(x), into_contiguous(cos), into_contiguous(sin));
        let shape = x.meta.shape().clone();
        let out = empty_device_dtype(x.client.clone(), x.device.clone(), shape.clone(), DType::F32);
        let n = shape.num_elements();
        if n == 0 {
            return out;
        }
        let (tokens, width) = (shape[2] as u32, shape[3] as u32);
        let client = x.client.clone();
        let cube_dim = CubeDim::new(&client, n);
        let count = cubecl::calculate_cube_count_elemwise(&client, n, cube_dim);
        kernel::rotate_kernel::launch(
            &client,
            count,
            cube_dim,
            x.into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            tokens,
            width,
            transpose,
        );
        out
    }
}

fn launch_swiglu(gate: CubeTensor, up: CubeTensor, grad: Option<(CubeTensor, bool)>) -> CubeTensor {
    let (gate, up) = (into_contiguous(gate), into_contiguous(up));
    let shape = gate.meta.shape().clone();
    let out = empty_device_dtype(gate.client.clone(), gate.device.clone(), shape.clone(), DType::F32);
    let n = shape.num_elements();
    if n == 0 {
        return out;
    }
    let client = gate.client.clone();
    let cube_dim = CubeDim::new(&client, n);
    let count = cubecl::calculate_cube_count_elemwise(&client, n, cube_dim);
    let (dy, of_up, backward) = match grad {
        Some((dy, of_up)) => (into_contiguous(dy), of_up, true),
        // Unused by the forward kernel: any f32 tensor of the right size.
        None => (gate.clone(), false, false),
    };
    kernel::swiglu_kernel::launch(
        &client,
        count,
        cube_dim,
        gate.into_tensor_arg(),
        up.into_tensor_arg(),
        dy.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        backward,
        of_up,
    );
    out
}

/// Units per cube: a power of two (the tree sum halves it), at most 256 and at most what the
/// device allows in one cube.
fn units(x: &CubeTensor, dim: usize) -> u32 {
    let cap = x.client.properties().hardware.max_units_per_cube.clamp(1, 256);
    let cap = if cap.is_power_of_two() {
        cap
    } else {
        cap.next_power_of_two() / 2
    };
    // Rows narrower than the cube leave units idle: take the smallest power of two over `dim`.
    cap.min((dim.max(1) as u32).next_power_of_two().max(32))
}

fn launch(x: CubeTensor, w: CubeTensor, dy: Option<CubeTensor>, eps: f32, offset: f32) -> CubeTensor {
    let (x, w) = (into_contiguous(x), into_contiguous(w));
    let shape = x.meta.shape().clone();
    let (rows, dim) = (shape[0], shape[1]);
    let out = empty_device_dtype(x.client.clone(), x.device.clone(), Shape::from([rows, dim]), DType::F32);
    if rows * dim == 0 {
        return out;
    }
    let client = x.client.clone();
    let units = units(&x, dim);
    let cube_dim = CubeDim::new_1d(units);
    // One cube per row, spread over the grid's dimensions (WebGPU allows 65535 per dimension).
    let count = CubeCountSelection::new(&client, rows as u32).cube_count();
    // The forward kernel does not read `dy`: any f32 tensor of the right size.
    let (dy, backward) = match dy {
        Some(dy) => (into_contiguous(dy), true),
        None => (x.clone(), false),
    };
    kernel::rms_norm_kernel::launch(
        &client,
        count,
        cube_dim,
        x.into_tensor_arg(),
        w.into_tensor_arg(),
        dy.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows as u32,
        dim as u32,
        eps,
        offset,
        units as usize,
        backward,
    );
    out
}

/// The kernels, in CubeCL.
mod kernel {
    use cubecl::prelude::*;

    /// The sum of the cube's `partial` values (a power of two of them), in `partial[0]`; every
    /// unit reads it after the last barrier.
    #[cube]
    fn cube_sum(partial: &mut Shared<[f32]>) -> f32 {
        sync_cube();
        let mut active = CUBE_DIM;
        let mut jump = 1;
        while active > 1 {
            active /= 2;
            if UNIT_POS < active {
                let other = partial[(jump * (2 * UNIT_POS + 1)) as usize];
                partial[(jump * 2 * UNIT_POS) as usize] += other;
            }
            jump *= 2;
            sync_cube();
        }
        partial[0]
    }

    /// RMSNorm of a row (`backward` false: `out` the values), or the input's gradient for the
    /// output's gradient `dy` (`backward` true: `out` is `∂x`; see [`super::GpuOps`]).
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn rms_norm_kernel(
        x: &Tensor<f32>,
        w: &Tensor<f32>,
        dy: &Tensor<f32>,
        out: &mut Tensor<f32>,
        rows: u32,
        dim: u32,
        eps: f32,
        offset: f32,
        #[comptime] units: usize,
        #[comptime] backward: bool,
    ) {
        let row = CUBE_POS;
        // A whole cube past the last row leaves together (the barriers stay uniform).
        if row >= rows as usize {
            terminate!();
        }
        let base = row * dim as usize;
        let mut squares = Shared::<[f32]>::new_slice(units);
        let mut sq = 0f32;
        let mut dot = 0f32;
        let mut j = UNIT_POS;
        while j < dim {
            let v = x[base + j as usize];
            sq += v * v;
            if backward {
                dot += dy[base + j as usize] * (w[j as usize] + offset) * v;
            }
            j += CUBE_DIM;
        }
        squares[UNIT_POS as usize] = sq;
        let n = f32::cast_from(dim);
        let r = 1f32 / f32::sqrt(cube_sum(&mut squares) / n + eps);
        if backward {
            let mut dots = Shared::<[f32]>::new_slice(units);
            dots[UNIT_POS as usize] = dot;
            // mean(γ·x̂) = r·mean(γ·x); ∂x = r·(γ − x·r·mean(γ·x̂)).
            let mean = cube_sum(&mut dots) * r / n;
            let mut j = UNIT_POS;
            while j < dim {
                let g = dy[base + j as usize] * (w[j as usize] + offset);
                out[base + j as usize] = r * (g - x[base + j as usize] * r * mean);
                j += CUBE_DIM;
            }
        } else {
            let mut j = UNIT_POS;
            while j < dim {
                out[base + j as usize] = x[base + j as usize] * r * (w[j as usize] + offset);
                j += CUBE_DIM;
            }
        }
    }

    #[cube(launch)]
    pub(super) fn swiglu_kernel(
        gate: &Tensor<f32>,
        up: &Tensor<f32>,
        dy: &Tensor<f32>,
        out: &mut Tensor<f32>,
        #[comptime] backward: bool,
        #[comptime] of_up: bool,
    ) {
        let pos = ABSOLUTE_POS;
        if pos >= out.len() {
            terminate!();
        }
        let g = gate[pos];
        let sigmoid = 1f32 / (1f32 + f32::exp(-g));
        if !backward {
            out[pos] = g * sigmoid * up[pos];
        } else if of_up {
            out[pos] = dy[pos] * g * sigmoid;
        } else {
            out[pos] = dy[pos] * up[pos] * sigmoid * (1f32 + g * (1f32 - sigmoid));
        }
    }

    #[cube(launch)]
    pub(super) fn rotate_kernel(
        x: &Tensor<f32>,
        cos: &Tensor<f32>,
        sin: &Tensor<f32>,
        out: &mut Tensor<f32>,
        tokens: u32,
        width: u32,
        #[comptime] transpose: bool,
    ) {
        let pos = ABSOLUTE_POS;
        if pos >= out.len() {
            terminate!();
        }
        let i = (pos % width as usize) as u32;
        let t = (pos / width as usize) % tokens as usize;
        let table = t * width as usize + i as usize;
        let half = width / 2;
        // The partner element: i + half in the first half, i − half in the second.
        let (partner, sign) = if i < half {
            (pos + half as usize, -1f32)
        } else {
            (pos - half as usize, 1f32)
        };
        if transpose {
            let partner_table = if i < half {
                table + half as usize
            } else {
                table - half as usize
            };
            out[pos] = x[pos] * cos[table] - sign * x[partner] * sin[partner_table];
        } else {
            out[pos] = x[pos] * cos[table] + sign * x[partner] * sin[table];
        }
    }
}

/// The kernels on tensors (see [`GpuOps`]): `x` `[rows, dim]`, `w` `[dim]`. Inputs that carry an
/// autodiff context go in without it; the caller records the operation.
pub fn rms_norm_rows(x: Tensor<2>, w: Tensor<1>, eps: f32, offset: f32) -> Tensor<2> {
    use burn::backend::Dispatch;
    Tensor::from_dispatch(Dispatch::rms_norm_rows(
        x.inner().into_dispatch(),
        w.inner().into_dispatch(),
        eps,
        offset,
    ))
}

/// The input's gradient (see [`GpuOps::rms_norm_rows_grad`]).
pub fn rms_norm_rows_grad(x: Tensor<2>, w: Tensor<1>, dy: Tensor<2>, eps: f32, offset: f32) -> Tensor<2> {
    use burn::backend::Dispatch;
    Tensor::from_dispatch(Dispatch::rms_norm_rows_grad(
        x.inner().into_dispatch(),
        w.inner().into_dispatch(),
        dy.inner().into_dispatch(),
        eps,
        offset,
    ))
}

/// The SwiGLU kernel on tensors (see [`GpuOps::swiglu_values`]); inputs go in without an autodiff
/// context.
pub fn swiglu_values(gate: Tensor<1>, up: Tensor<1>) -> Tensor<1> {
    use burn::backend::Dispatch;
    Tensor::from_dispatch(Dispatch::swiglu_values(
        gate.inner().into_dispatch(),
        up.inner().into_dispatch(),
    ))
}

/// A gradient of SwiGLU (see [`GpuOps::swiglu_grad`]).
pub fn swiglu_grad(gate: Tensor<1>, up: Tensor<1>, dy: Tensor<1>, of_up: bool) -> Tensor<1> {
    use burn::backend::Dispatch;
    Tensor::from_dispatch(Dispatch::swiglu_grad(
        gate.inner().into_dispatch(),
        up.inner().into_dispatch(),
        dy.inner().into_dispatch(),
        of_up,
    ))
}

/// The rotation kernel on tensors (see [`GpuOps::rotate_heads`]).
pub fn rotate_heads(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>, transpose: bool) -> Tensor<4> {
    use burn::backend::Dispatch;
    Tensor::from_dispatch(Dispatch::rotate_heads(
        x.inner().into_dispatch(),
        cos.inner().into_dispatch(),
        sin.inner().into_dispatch(),
        transpose,
    ))
}

/// The rotary embedding of every head (`x` `[B, H, T, D]`, tables `[T, D]`, D even) through the
/// kernel on a GPU backend under autodiff: one recorded operation keeping only the tables, its
/// backward the transposed rotation. `None` elsewhere, and for plain tensors (see [`rms_norm`]).
pub fn rotate(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Option<Tensor<4>> {
    let [_, _, t, d] = x.dims();
    let fits = cos.dims() == [t, d] && sin.dims() == [t, d] && d.is_multiple_of(2) && !x.dims().contains(&0);
    if !x.is_autodiff() || !fits || !takes(&x) || !takes(cos) || !takes(sin) {
        return None;
    }
    tracked::rotate(x, cos.clone().inner(), sin.clone().inner())
}

/// Whether the kernels run (on by default); see [`use_kernels`].
static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Switches the kernels here and attention's (`model::attention_kernel`) on or off for the whole
/// process: off, the GPU backends run the tensor formulations instead (for benchmarks and tests that compare the two in one run).
pub fn use_kernels(on: bool) {
    ENABLED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the kernels are on (see [`use_kernels`]).
pub fn kernels_on() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the kernels here take `t`: an f32 tensor on one of burn's GPU backends, kernels on.
pub(super) fn takes<const D: usize>(t: &Tensor<D>) -> bool {
    kernels_on() && t.dtype() == DType::F32 && super::dequant_kernel::applies(&t.device())
}

/// `silu(gate)·up` through the kernels on a GPU backend under autodiff (one recorded operation
/// whose backward is one kernel per input's gradient); `None` elsewhere, and for plain tensors
/// (see [`rms_norm`]).
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Option<Tensor<D>> {
    let dims = gate.dims();
    let n = dims.iter().product::<usize>();
    let training = gate.is_autodiff() || up.is_autodiff();
    if !training || n == 0 || up.dims() != dims || !takes(&gate) || !takes(&up) {
        return None;
    }
    let y = tracked::swiglu(gate.reshape([n]), up.reshape([n]))?;
    Some(y.reshape(dims))
}

/// RMSNorm over the last axis through the kernels on a GPU backend under autodiff (recorded as
/// one operation: the input's gradient by the second kernel, the scale's, when it is trained,
/// by tensor operations); `None` elsewhere.
///
/// Plain tensors (inference, calibration, evaluation) keep the tensor formulation: on the
/// software GPUs here the kernels made the tiny model's forward pass 10–25% slower (lavapipe and
/// SwiftShader; BENCHMARKS.md), while in training they hold half the memory for the backward
/// (the step's time: the same on lavapipe, 0.85x on SwiftShader). No real GPU has measured them
/// yet; `bench train --tensor-ops` compares.
///
/// # Shapes
/// - x: `[..., dim]`, w: `[dim]` → `[..., dim]`
pub fn rms_norm<const D: usize>(x: Tensor<D>, w: Tensor<1>, eps: f32, offset: f32) -> Option<Tensor<D>> {
    let dims = x.dims();
    let dim = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let training = x.is_autodiff() || w.is_autodiff();
    if !training || rows * dim == 0 || w.dims()[0] != dim || !takes(&x) || !takes(&w) {
        return None;
    }
    let y = tracked::rms_norm(x.reshape([rows, dim]), w, eps, offset)?;
    Some(y.reshape(dims))
}

/// The operation recorded for autodiff on the GPU backends (burn's `Cube`), and the
/// conversions the other kernels' recorded operations share (`model::attention_kernel`,
/// `model::dequant`).
pub(super) mod tracked {
    use burn::backend::autodiff::NodeId;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary, unary};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Cube};
    use burn::tensor::Tensor;

    /// The GPU backend under autodiff (the default checkpointing strategy).
    pub(in crate::model) type Tracked = Autodiff<Cube>;

    /// A plain GPU primitive as a tensor.
    pub(in crate::model) fn plain<const D: usize>(t: FloatTensor<Cube>) -> Tensor<D> {
        Tensor::from_primitive::<Cube>(t)
    }

    /// A kernel's output back as a plain GPU primitive.
    pub(in crate::model) fn primitive<const D: usize>(t: Tensor<D>) -> FloatTensor<Cube> {
        t.try_into_primitive::<Cube>()
            .expect("invariant: the kernels' outputs are plain GPU tensors on their inputs' device")
    }

    pub(super) fn rms_norm(x: Tensor<2>, w: Tensor<1>, eps: f32, offset: f32) -> Option<Tensor<2>> {
        let x = x.autodiff().try_into_primitive::<Tracked>().ok()?;
        let w = w.autodiff().try_into_primitive::<Tracked>().ok()?;
        Some(Tensor::from_primitive::<Tracked>(record(x, w, eps, offset)))
    }

    pub(super) fn rotate(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>) -> Option<Tensor<4>> {
        /// Keeps the tables (constants); the input's gradient is the transposed rotation.
        #[derive(Debug)]
        struct RotateBackward;

        impl Backward<Cube, 1> for RotateBackward {
            type State = (Tensor<2>, Tensor<2>);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let (cos, sin) = ops.state;
                unary::<Cube, _>(ops.parents, ops.node, grads, |g| {
                    primitive(super::rotate_heads(plain(g), cos, sin, true))
                });
            }
        }

        let x = x.try_into_primitive::<Tracked>().ok()?;
        let rotated = |x: &FloatTensor<Tracked>, cos: Tensor<2>, sin: Tensor<2>| {
            primitive(super::rotate_heads(plain(x.primitive().clone()), cos, sin, false))
        };
        let y = match RotateBackward
            .prepare::<NoCheckpointing>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = rotated(&x, cos.clone(), sin.clone());
                prep.finish((cos, sin), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(rotated(&x, cos, sin)),
        };
        Some(Tensor::from_primitive::<Tracked>(y))
    }

    pub(super) fn swiglu(gate: Tensor<1>, up: Tensor<1>) -> Option<Tensor<1>> {
        let gate = gate.autodiff().try_into_primitive::<Tracked>().ok()?;
        let up = up.autodiff().try_into_primitive::<Tracked>().ok()?;
        Some(Tensor::from_primitive::<Tracked>(record_swiglu(gate, up)))
    }

    fn record_swiglu(gate: FloatTensor<Tracked>, up: FloatTensor<Tracked>) -> FloatTensor<Tracked> {
        /// Keeps both inputs (by checkpoint id); each input's gradient is one kernel.
        #[derive(Debug)]
        struct SwigluBackward;

        impl Backward<Cube, 2> for SwigluBackward {
            type State = (NodeId, NodeId);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let (gate_id, up_id) = ops.state;
                let gate: Tensor<1> = plain(checkpointer.retrieve_node_output(gate_id));
                let up: Tensor<1> = plain(checkpointer.retrieve_node_output(up_id));
                let (gate2, up2) = (gate.clone(), up.clone());
                binary::<Cube, _, _>(
                    ops.parents,
                    ops.node,
                    grads,
                    move |dy| primitive(super::swiglu_grad(gate, up, plain(dy), false)),
                    move |dy| primitive(super::swiglu_grad(gate2, up2, plain(dy), true)),
                );
            }
        }

        let values = |gate: &FloatTensor<Tracked>, up: &FloatTensor<Tracked>| {
            primitive(super::swiglu_values(
                plain(gate.primitive().clone()),
                plain(up.primitive().clone()),
            ))
        };
        match SwigluBackward
            .prepare::<NoCheckpointing>([gate.node(), up.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&gate), prep.checkpoint(&up));
                let y = values(&gate, &up);
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(values(&gate, &up)),
        }
    }

    fn record(x: FloatTensor<Tracked>, w: FloatTensor<Tracked>, eps: f32, offset: f32) -> FloatTensor<Tracked> {
        /// Keeps both inputs (by checkpoint id); `∂x` by the gradient kernel,
        /// `∂w = Σ_rows ∂y·x·r` by tensor operations.
        #[derive(Debug)]
        struct RmsNormBackward;

        impl Backward<Cube, 2> for RmsNormBackward {
            type State = (NodeId, NodeId, f32, f32);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let (x_id, w_id, eps, offset) = ops.state;
                let x: Tensor<2> = plain(checkpointer.retrieve_node_output(x_id));
                let w: Tensor<1> = plain(checkpointer.retrieve_node_output(w_id));
                let x2 = x.clone();
                binary::<Cube, _, _>(
                    ops.parents,
                    ops.node,
                    grads,
                    move |dy| primitive(super::rms_norm_rows_grad(x, w, plain(dy), eps, offset)),
                    move |dy| {
                        let dim = x2.dims()[1];
                        let r = x2.clone().square().mean_dim(1).add_scalar(eps).sqrt().recip();
                        primitive((plain::<2>(dy) * x2 * r).sum_dim(0).reshape([dim]))
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
                let y = primitive(super::rms_norm_rows(
                    plain(x.into_primitive()),
                    plain(w.into_primitive()),
                    eps,
                    offset,
                ));
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(primitive(super::rms_norm_rows(
                plain(x.into_primitive()),
                plain(w.into_primitive()),
                eps,
                offset,
            ))),
        }
    }
}
