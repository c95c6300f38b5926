//! The adapted linear layer `y = x·W + s·(x·A)·B + b` as one operation on the CPU backend (the
//! LoRA linear, issue 13's "base + s·B(Ax) in one pass").
//!
//! Composed from separate products, a LoRA layer writes `x·W`, the adapter's `[tokens, out]`
//! product, its scaled copy and their sum: three `[tokens, out]` passes besides the products; its
//! backward scales the gradient into a new tensor and sums the input's two gradients in another.
//! Here the adapter's product is accumulated into the base product's output (faer's
//! `Accum::Add`), and the backward writes `∂x = g·Wᵀ + (s·g·Bᵀ)·Aᵀ` into one buffer; under
//! autodiff it is one recorded operation with `x`, `A` and `B` as parents. A packed base (the
//! QLoRA layer) is decoded into a scratch buffer for each of its two products, as
//! `cpu_linear::packed_linear` does, and kept packed in between. Anything but f32 tensors on
//! the CPU backend (a GPU) takes the composition instead.

use std::sync::Arc;

use burn::tensor::Tensor;

use super::cpu_linear;
use super::packed::PackedMatrix;

/// The frozen weight of a layer the fused operation takes.
// Made for one call and dropped: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Base {
    /// `W` as `[in, out]` f32 (any strides).
    Dense(Tensor<2>),
    /// `Wᵀ` as a packed `[out, in]` matrix on the host, decoded for each product (QLoRA).
    Packed(Arc<PackedMatrix>),
}

/// `x·W + s·(x·A)·B + b`, with `A` `[in, r]` and `B` `[r, out]` (views: a transposed PEFT
/// factor is read as it is).
///
/// # Shapes
/// - x: `[..., in]` → `[..., out]`
pub fn low_rank_linear<const D: usize>(
    x: Tensor<D>,
    w: Base,
    bias: Option<Tensor<1>>,
    a: Tensor<2>,
    b: Tensor<2>,
    scale: f64,
) -> Tensor<D> {
    if let Some(y) = fused::apply(x.clone(), w.clone(), a.clone(), b.clone(), scale as f32) {
        return match bias {
            Some(bias) => y + bias.unsqueeze::<D>(),
            None => y,
        };
    }
    composed(x, w, bias, a, b, scale)
}

/// The same from separate products (the reference the fused operation is tested against).
pub fn composed<const D: usize>(
    x: Tensor<D>,
    w: Base,
    bias: Option<Tensor<1>>,
    a: Tensor<2>,
    b: Tensor<2>,
    scale: f64,
) -> Tensor<D> {
    let base = match w {
        Base::Dense(w) => cpu_linear::linear(x.clone(), w, bias),
        Base::Packed(w) => cpu_linear::packed_linear(x.clone(), &w, bias),
    };
    let down = cpu_linear::linear(x, a, None);
    base + cpu_linear::linear(down, b, None).mul_scalar(scale)
}

pub(crate) mod fused {
    use burn::backend::Flex;
    use burn::backend::autodiff::NodeId;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::{Tensor, TensorData};
    use burn_flex::FlexTensor;
    use faer::Accum;
    use std::sync::Arc;

    use super::Base;
    use crate::model::cpu_linear::faer_product::{Tracked, decode, plain, product_into};
    use crate::model::cpu_linear::on_cpu_f32;
    use crate::model::packed::PackedMatrix;

    /// The frozen weight as the products read it.
    #[derive(Debug, Clone)]
    enum Frozen {
        /// `W`, `[1, in, out]`.
        Dense(FlexTensor),
        /// `Wᵀ` packed, `[out, in]`.
        Packed(Arc<PackedMatrix>),
    }

    impl Frozen {
        /// `[in, out]`.
        fn dims(&self) -> (usize, usize) {
            match self {
                Frozen::Dense(w) => (w.layout().shape()[1], w.layout().shape()[2]),
                Frozen::Packed(w) => (w.dims().1, w.dims().0),
            }
        }

        /// `y = x·W` (`transpose`: `y = x·Wᵀ`), `x` `[1, m, k]`, into the row-major `y`; a
        /// packed `W` is decoded into a scratch buffer for the call.
        fn product_into(&self, y: &mut [f32], x: FlexTensor, transpose: bool) {
            let w = match self {
                Frozen::Dense(w) => w.clone(),
                Frozen::Packed(p) => decode(p).transpose(1, 2),
            };
            product_into(y, x, if transpose { w.transpose(1, 2) } else { w }, 1.0, Accum::Replace);
        }
    }

    /// The fused layer without its bias, or `None` when it does not apply (not all f32 on the
    /// CPU backend, shapes that do not chain, an empty product, or a tracked `W`).
    pub fn apply<const D: usize>(x: Tensor<D>, w: Base, a: Tensor<2>, b: Tensor<2>, scale: f32) -> Option<Tensor<D>> {
        if !(on_cpu_f32(&x) && on_cpu_f32(&a) && on_cpu_f32(&b)) {
            return None;
        }
        let dims = x.dims();
        let (k, [ak, r], [br, out]) = (dims[D - 1], a.dims(), b.dims());
        let m: usize = dims[..D - 1].iter().product();
        let (x, a, b) = (x.reshape([1, m, k]), a.unsqueeze::<3>(), b.unsqueeze::<3>());
        let tracked = x.is_autodiff() || a.is_autodiff() || b.is_autodiff();
        let frozen = match w {
            Base::Dense(w) if !on_cpu_f32(&w) || w.is_tracked() => return None,
            Base::Dense(w) if tracked => Frozen::Dense(
                w.unsqueeze::<3>()
                    .autodiff()
                    .try_into_primitive::<Tracked>()
                    .ok()?
                    .into_primitive(),
            ),
            Base::Dense(w) => Frozen::Dense(w.unsqueeze::<3>().try_into_primitive::<Flex>().ok()?),
            Base::Packed(p) => Frozen::Packed(p),
        };
        if frozen.dims() != (k, out) || ak != k || br != r || m * k * out * r == 0 {
            return None;
        }
        let y = if tracked {
            let x = x.autodiff().try_into_primitive::<Tracked>().ok()?;
            let a = a.autodiff().try_into_primitive::<Tracked>().ok()?;
            let b = b.autodiff().try_into_primitive::<Tracked>().ok()?;
            Tensor::<3>::from_primitive::<Tracked>(recorded(x, frozen, a, b, scale))
        } else {
            let x = x.try_into_primitive::<Flex>().ok()?;
            let a = a.try_into_primitive::<Flex>().ok()?;
            let b = b.try_into_primitive::<Flex>().ok()?;
            Tensor::<3>::from_primitive::<Flex>(forward(&x, &frozen, &a, &b, scale).0)
        };
        let mut shape = dims;
        shape[D - 1] = out;
        Some(y.reshape(shape))
    }

    /// `(x·W + s·h·B, h)` with `h = x·A`, all `[1, rows, cols]`.
    fn forward(x: &FlexTensor, w: &Frozen, a: &FlexTensor, b: &FlexTensor, scale: f32) -> (FlexTensor, FlexTensor) {
        let h = plain(x.clone(), a.clone());
        let (m, n) = (x.layout().shape()[1], w.dims().1);
        let mut y = vec![0f32; m * n];
        w.product_into(&mut y, x.clone(), false);
        product_into(&mut y, h.clone(), b.clone(), scale, Accum::Add);
        (FlexTensor::from_data(TensorData::new(y, [1, m, n])), h)
    }

    /// What the backward needs: `x` (for `∂A`), `A` and `B` by checkpoint, `h = x·A` and `W`
    /// themselves (`h` is `[tokens, r]`; `W` is frozen and shared, not copied: a packed one
    /// stays packed), and `s`.
    #[derive(Debug, Clone)]
    struct State {
        x: Option<NodeId>,
        a: NodeId,
        b: NodeId,
        h: FlexTensor,
        w: Frozen,
        scale: f32,
    }

    #[derive(Debug)]
    struct LowRankBackward;

    impl Backward<Flex, 3> for LowRankBackward {
        type State = State;

        /// With `g = ∂y` and `gh = s·g·Bᵀ`: `∂B = s·hᵀ·g`, `∂A = xᵀ·gh`, `∂x = g·Wᵀ + gh·Aᵀ`.
        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
            let st = ops.state;
            let g: FlexTensor = grads.consume::<Flex>(&ops.node);
            let [px, pa, pb] = ops.parents;
            let a: FlexTensor = checkpointer.retrieve_node_output(st.a);
            let b: FlexTensor = checkpointer.retrieve_node_output(st.b);
            let scaled = |p: FlexTensor, q: FlexTensor| {
                let (sp, sq) = (p.layout().shape(), q.layout().shape());
                let (m, n) = (sp[1], sq[2]);
                let mut out = vec![0f32; m * n];
                product_into(&mut out, p, q, st.scale, Accum::Replace);
                FlexTensor::from_data(TensorData::new(out, [1, m, n]))
            };
            if let Some(node) = pb {
                grads.register::<Flex>(node.id, scaled(st.h.transpose(1, 2), g.clone()));
            }
            if px.is_none() && pa.is_none() {
                return;
            }
            let gh = scaled(g.clone(), b.transpose(1, 2));
            if let Some(node) = pa {
                let x: FlexTensor =
                    checkpointer.retrieve_node_output(st.x.expect("invariant: x is kept when A is tracked"));
                grads.register::<Flex>(node.id, plain(x.transpose(1, 2), gh.clone()));
            }
            if let Some(node) = px {
                let (m, k) = (g.layout().shape()[1], st.w.dims().0);
                let mut dx = vec![0f32; m * k];
                st.w.product_into(&mut dx, g, true);
                product_into(&mut dx, gh, a.transpose(1, 2), 1.0, Accum::Add);
                grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, [1, m, k])));
            }
        }
    }

    /// The layer recorded for autodiff, with `x`, `A` and `B` as its parents.
    fn recorded(
        x: FloatTensor<Tracked>,
        w: Frozen,
        a: FloatTensor<Tracked>,
        b: FloatTensor<Tracked>,
        scale: f32,
    ) -> FloatTensor<Tracked> {
        match LowRankBackward
            .prepare::<NoCheckpointing>([x.node(), a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = a.is_tracked().then(|| prep.checkpoint(&x));
                let (a_id, b_id) = (prep.checkpoint(&a), prep.checkpoint(&b));
                let (y, h) = forward(&x.into_primitive(), &w, &a.into_primitive(), &b.into_primitive(), scale);
                let state = State {
                    x: x_id,
                    a: a_id,
                    b: b_id,
                    h,
                    w,
                    scale,
                };
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(forward(&x.into_primitive(), &w, &a.into_primitive(), &b.into_primitive(), scale).0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor};

    use super::*;
    use crate::model::test_support::{max_diff, packed_matrix, tensor};

    /// Values and the gradients of `x`, `A` and `B` (PEFT's `[r, in]` and `[out, r]`, read
    /// transposed) through the fused layer or the composition.
    fn run(fused: bool, bias: bool, packed: bool) -> [Tensor<3>; 4] {
        let device = Device::flex().autodiff();
        let (k, out, r) = (24, 40, 4);
        let x = tensor([2, 5, k], 1, &device).require_grad();
        let w = if packed {
            Base::Packed(packed_matrix(out, k).0)
        } else {
            Base::Dense(tensor([k, out], 2, &device))
        };
        let a = tensor([r, k], 3, &device).require_grad();
        let b = tensor([out, r], 4, &device).require_grad();
        let bias = bias.then(|| tensor([out], 5, &device));
        let layer = if fused { low_rank_linear } else { composed };
        let y = layer(x.clone(), w, bias, a.clone().transpose(), b.clone().transpose(), 0.5);
        let probe = tensor([2, 5, out], 6, &device);
        let grads = (y.clone() * probe).sum().backward();
        let grad = |t: &Tensor<2>| t.grad(&grads).expect("trained").unsqueeze::<3>();
        [y, x.grad(&grads).expect("tracked input"), grad(&a), grad(&b)]
    }

    #[test]
    fn the_fused_layer_has_the_compositions_values_and_gradients() {
        for (bias, packed) in [(false, false), (true, false), (false, true), (true, true)] {
            let (got, want) = (run(true, bias, packed), run(false, bias, packed));
            for (name, (g, w)) in ["y", "∂x", "∂A", "∂B"].iter().zip(got.into_iter().zip(want)) {
                assert_eq!(g.dims(), w.dims(), "{name}");
                assert!(max_diff(g, w) < 1e-4, "{name} with bias {bias}, packed {packed}");
            }
        }
    }

    #[test]
    #[cfg(not(target_arch = "wasm32"))]
    fn the_fused_layer_applies_to_cpu_tensors_tracked_or_not() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            let x = tensor([3, 8], 1, &device);
            let (w, a, b) = (
                tensor([8, 6], 2, &device),
                tensor([8, 2], 3, &device),
                tensor([2, 6], 4, &device),
            );
            let w = Base::Dense(w);
            let y = fused::apply(x.clone(), w.clone(), a.clone(), b.clone(), 2.0)
                .expect("CPU f32 tensors take the fused path");
            assert!(max_diff(y, composed(x.clone(), w.clone(), None, a.clone(), b.clone(), 2.0)) < 1e-5);
            assert!(
                fused::apply(x, w, b, a, 2.0).is_none(),
                "factors that do not chain fall back"
            );
        }
    }
}
