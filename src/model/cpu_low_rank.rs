//! The adapted linear layer `y = x·W + s·(x·A)·B + b` as one operation on the CPU backend (the
//! LoRA linear, issue 13's "base + s·B(Ax) in one pass").
//!
//! Composed from separate products, a LoRA layer writes `x·W`, the adapter's `[tokens, out]`
//! product, its scaled copy and their sum: three `[tokens, out]` passes besides the products; its
//! backward scales the gradient into a new tensor and sums the input's two gradients in another.
//! Here the adapter's product is accumulated into the base product's output (faer's
//! `Accum::Add`), and the backward writes `∂x = g·Wᵀ + (s·g·Bᵀ)·Aᵀ` into one buffer; under
//! autodiff it is one recorded operation with `x`, `A` and `B` as parents. Anything but f32
//! tensors on the CPU backend (a GPU, the wasm build) takes the composition instead.

use burn::tensor::Tensor;

use super::cpu_linear;

/// `x·W + s·(x·A)·B + b`, with `W` `[in, out]`, `A` `[in, r]` and `B` `[r, out]` (views: a
/// transposed PEFT factor is read as it is).
///
/// # Shapes
/// - x: `[..., in]` → `[..., out]`
pub fn low_rank_linear<const D: usize>(
    x: Tensor<D>,
    w: Tensor<2>,
    bias: Option<Tensor<1>>,
    a: Tensor<2>,
    b: Tensor<2>,
    scale: f64,
) -> Tensor<D> {
    #[cfg(not(target_arch = "wasm32"))]
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
    w: Tensor<2>,
    bias: Option<Tensor<1>>,
    a: Tensor<2>,
    b: Tensor<2>,
    scale: f64,
) -> Tensor<D> {
    let base = cpu_linear::linear(x.clone(), w, bias);
    let down = cpu_linear::linear(x, a, None);
    base + cpu_linear::linear(down, b, None).mul_scalar(scale)
}

#[cfg(not(target_arch = "wasm32"))]
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

    use crate::model::cpu_linear::faer_product::{Tracked, plain, product_into};
    use crate::model::cpu_linear::on_cpu_f32;

    /// The fused layer without its bias, or `None` when it does not apply (not all f32 on the
    /// CPU backend, shapes that do not chain, an empty product, or a tracked `W`).
    pub fn apply<const D: usize>(
        x: Tensor<D>,
        w: Tensor<2>,
        a: Tensor<2>,
        b: Tensor<2>,
        scale: f32,
    ) -> Option<Tensor<D>> {
        if !(on_cpu_f32(&x) && on_cpu_f32(&w) && on_cpu_f32(&a) && on_cpu_f32(&b)) || w.is_tracked() {
            return None;
        }
        let dims = x.dims();
        let (k, [wk, out], [ak, r], [br, bn]) = (dims[D - 1], w.dims(), a.dims(), b.dims());
        let m: usize = dims[..D - 1].iter().product();
        if wk != k || ak != k || br != r || bn != out || m * k * out * r == 0 {
            return None;
        }
        let (x, w, a, b) = (
            x.reshape([1, m, k]),
            w.unsqueeze::<3>(),
            a.unsqueeze::<3>(),
            b.unsqueeze::<3>(),
        );
        let tracked = x.is_autodiff() || a.is_autodiff() || b.is_autodiff();
        let y = if tracked {
            let x = x.autodiff().try_into_primitive::<Tracked>().ok()?;
            let w = w.autodiff().try_into_primitive::<Tracked>().ok()?.into_primitive();
            let a = a.autodiff().try_into_primitive::<Tracked>().ok()?;
            let b = b.autodiff().try_into_primitive::<Tracked>().ok()?;
            Tensor::<3>::from_primitive::<Tracked>(recorded(x, w, a, b, scale))
        } else {
            let x = x.try_into_primitive::<Flex>().ok()?;
            let w = w.try_into_primitive::<Flex>().ok()?;
            let a = a.try_into_primitive::<Flex>().ok()?;
            let b = b.try_into_primitive::<Flex>().ok()?;
            Tensor::<3>::from_primitive::<Flex>(forward(&x, &w, &a, &b, scale).0)
        };
        let mut shape = dims;
        shape[D - 1] = out;
        Some(y.reshape(shape))
    }

    /// `(x·W + s·h·B, h)` with `h = x·A`, all `[1, rows, cols]`.
    fn forward(x: &FlexTensor, w: &FlexTensor, a: &FlexTensor, b: &FlexTensor, scale: f32) -> (FlexTensor, FlexTensor) {
        let h = plain(x.clone(), a.clone());
        let (m, n) = (x.layout().shape()[1], w.layout().shape()[2]);
        let mut y = vec![0f32; m * n];
        product_into(&mut y, x.clone(), w.clone(), 1.0, Accum::Replace);
        product_into(&mut y, h.clone(), b.clone(), scale, Accum::Add);
        (FlexTensor::from_data(TensorData::new(y, [1, m, n])), h)
    }

    /// What the backward needs: `x` (for `∂A`), `A` and `B` by checkpoint, `h = x·A` and `W`
    /// themselves (`h` is `[tokens, r]`; `W` is frozen and shared, not copied), and `s`.
    #[derive(Debug, Clone)]
    struct State {
        x: Option<NodeId>,
        a: NodeId,
        b: NodeId,
        h: FlexTensor,
        w: FlexTensor,
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
                let (m, k) = (g.layout().shape()[1], st.w.layout().shape()[1]);
                let mut dx = vec![0f32; m * k];
                product_into(&mut dx, g, st.w.transpose(1, 2), 1.0, Accum::Replace);
                product_into(&mut dx, gh, a.transpose(1, 2), 1.0, Accum::Add);
                grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, [1, m, k])));
            }
        }
    }

    /// The layer recorded for autodiff, with `x`, `A` and `B` as its parents.
    fn recorded(
        x: FloatTensor<Tracked>,
        w: FlexTensor,
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
    use burn::tensor::{Device, Tensor, TensorData};

    use super::*;

    fn tensor<const D: usize>(shape: [usize; D], seed: usize, device: &Device) -> Tensor<D> {
        let n = shape.iter().product::<usize>();
        let values = (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0)
            .collect::<Vec<_>>();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// Values and the gradients of `x`, `A` and `B` (PEFT's `[r, in]` and `[out, r]`, read
    /// transposed) through the fused layer or the composition.
    fn run(fused: bool, bias: bool) -> [Tensor<3>; 4] {
        let device = Device::flex().autodiff();
        let (k, out, r) = (24, 40, 4);
        let x = tensor([2, 5, k], 1, &device).require_grad();
        let w = tensor([k, out], 2, &device);
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
        for bias in [false, true] {
            let (got, want) = (run(true, bias), run(false, bias));
            for (name, (g, w)) in ["y", "∂x", "∂A", "∂B"].iter().zip(got.into_iter().zip(want)) {
                assert_eq!(g.dims(), w.dims(), "{name}");
                assert!(max_diff(g, w) < 1e-4, "{name} with bias {bias}");
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
