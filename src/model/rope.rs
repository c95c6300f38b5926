//! Rotary position embeddings, Hugging Face's "rotate half" form, with the default, linear,
//! Llama-3 and LongRoPE frequency scalings (transformers `modeling_rope_utils.py`), over all of a
//! head's dimensions or its first `rotary_dim` (Phi-3's partial rotation).
//!
//! GGUF checkpoints permute the q/k rows for llama.cpp's interleaved rotation; the GGUF loader
//! undoes that permutation, so this one implementation serves both formats.

use burn::tensor::{Device, Tensor, TensorData};

use super::config::{ModelConfig, RopeScaling};

/// Precomputed inverse frequencies for one head width.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    /// `1 / theta^(2i/d)` after scaling, `d/2` values, computed in f32 as transformers does.
    inv_freq: Vec<f32>,
    /// LongRoPE: the frequencies for sequences longer than the pre-training context, and that
    /// context length.
    long: Option<(Vec<f32>, usize)>,
    /// Multiplies cos and sin (LongRoPE's attention factor; 1 otherwise).
    scaling: f32,
}

impl RotaryEmbedding {
    /// Frequencies for `cfg`; `freq_factors` (GGUF's `rope_freqs.weight`) divide them when given.
    pub fn new(cfg: &ModelConfig, freq_factors: Option<&[f32]>) -> Self {
        let d = cfg.rotary_dim();
        let theta = cfg.rope_theta as f32;
        let mut inv_freq = Self::plain(cfg.rope_theta, d).inv_freq;
        let (mut long, mut scaling) = (None, 1.0);
        match &cfg.rope_scaling {
            RopeScaling::Default => {}
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= *factor as f32),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high, old) = (
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                    *original_max_position_embeddings as f32,
                );
                let low_freq_wavelen = old / low;
                let high_freq_wavelen = old / high;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    if wavelen > low_freq_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_freq_wavelen {
                        let smooth = (old / wavelen - low) / (high - low);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
            RopeScaling::Longrope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                attention_factor,
            } => {
                // 1 / (factor · theta^(2i/d)), as transformers computes it in f32.
                let scaled = |factors: &[f64]| -> Vec<f32> {
                    (0..d)
                        .step_by(2)
                        .zip(factors)
                        .map(|(i, &e)| 1.0 / (e as f32 * theta.powf(i as f32 / d as f32)))
                        .collect()
                };
                inv_freq = scaled(short_factor);
                long = Some((scaled(long_factor), *original_max_position_embeddings as usize));
                scaling = *attention_factor as f32;
            }
        }
        if let Some(factors) = freq_factors {
            for (f, s) in inv_freq.iter_mut().zip(factors) {
                *f /= *s;
            }
        }
        Self {
            inv_freq,
            long,
            scaling,
        }
    }

    /// Plain RoPE with base `theta` over `dim` dimensions (no scaling): Gemma 3's sliding-window
    /// layers.
    pub fn plain(theta: f64, dim: usize) -> Self {
        let theta = theta as f32;
        let inv_freq = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / theta.powf(i as f32 / dim as f32))
            .collect();
        Self {
            inv_freq,
            long: None,
            scaling: 1.0,
        }
    }

    /// The inverse frequencies (for tests).
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// `(cos, sin)` tables for positions `start..start+len`, each `[len, rotary_dim]` with the
    /// frequency vector repeated twice (`cat(freqs, freqs)`), as transformers builds them. With
    /// LongRoPE the long frequencies serve once `start + len` exceeds the pre-training context
    /// (transformers decides on the largest position of the call, as here).
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
        let inv_freq = match &self.long {
            Some((long, original)) if start + len > *original => long,
            _ => &self.inv_freq,
        };
        let half = inv_freq.len();
        let d = 2 * half;
        let mut cos = Vec::with_capacity(len * d);
        let mut sin = Vec::with_capacity(len * d);
        for p in start..start + len {
            let pos = p as f32;
            let row: Vec<f32> = inv_freq.iter().map(|f| pos * f).collect();
            for _ in 0..2 {
                cos.extend(row.iter().map(|a| a.cos() * self.scaling));
                sin.extend(row.iter().map(|a| a.sin() * self.scaling));
            }
        }
        (
            Tensor::from_data(TensorData::new(cos, [len, d]), device),
            Tensor::from_data(TensorData::new(sin, [len, d]), device),
        )
    }
}

/// Applies the rotation to `x` of shape `[B, H, T, D]` with tables `[T, R]`, R ≤ D: the first R
/// dimensions become `x·cos + rotate_half(x)·sin`, where `rotate_half([x1, x2]) = [−x2, x1]`, and
/// the rest pass unchanged (partial rotation).
pub fn apply_rotary(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    if cos.dims()[1] == x.dims()[3]
        && x.dims()[3].is_multiple_of(2)
        && x.dims()[2] == cos.dims()[0]
        && sin.dims() == cos.dims()
        && let Some(y) = fused::rotate(x.clone(), cos.clone(), sin.clone())
    {
        return y;
    }
    if let Some(y) = super::gpu_ops::rotate(x.clone(), cos, sin) {
        return y;
    }
    apply_rotary_by_tensors(x, cos, sin)
}

/// [`apply_rotary`] as tensor operations (what runs elsewhere; the reference of the CPU's fused
/// rotation and of the GPU's kernel).
pub fn apply_rotary_by_tensors(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    let d = x.dims()[3];
    let r = cos.dims()[1];
    if r < d {
        let pass = x.clone().narrow(3, r, d - r);
        let rotated = apply_rotary_by_tensors(x.narrow(3, 0, r), cos, sin);
        return Tensor::cat(vec![rotated, pass], 3);
    }
    let half = d / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    let cos = cos.clone().unsqueeze::<4>();
    let sin = sin.clone().unsqueeze::<4>();
    x * cos + rotated * sin
}

/// The whole-head rotation on the CPU backend in one pass: it reads `x` through its strides (the
/// heads' transposed view of the projection's output, not copied first) and writes the rotated
/// heads contiguous, where the tensor formulation takes five passes (negate, concatenate, two
/// products, a sum). Under autodiff it is one recorded operation whose backward is one pass too,
/// `∂x = g·cos + rotate_halfᵀ(g·sin)` with `rotate_halfᵀ([u1, u2]) = [u2, −u1]`; it keeps only
/// the tables.
mod fused {
    use burn::backend::Flex;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::{Tensor, TensorData};
    use burn_flex::FlexTensor;

    use crate::model::cpu_linear::faer_product::Tracked;
    use crate::model::cpu_linear::on_cpu_f32;
    use crate::model::cpu_ops::fused::{simd, values};

    /// `x·cos + rotate_half(x)·sin` (`[B, H, T, D]`, tables `[T, D]`), or `None` off the CPU
    /// backend.
    pub fn rotate(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>) -> Option<Tensor<4>> {
        if !(on_cpu_f32(&x) && on_cpu_f32(&cos) && on_cpu_f32(&sin)) || x.dims().contains(&0) {
            return None;
        }
        if x.is_autodiff() {
            let x = x.try_into_primitive::<Tracked>().ok()?;
            let cos = cos.autodiff().try_into_primitive::<Tracked>().ok()?.into_primitive();
            let sin = sin.autodiff().try_into_primitive::<Tracked>().ok()?.into_primitive();
            return Some(Tensor::from_primitive::<Tracked>(recorded(x, cos, sin)));
        }
        let x = x.try_into_primitive::<Flex>().ok()?;
        let cos = cos.try_into_primitive::<Flex>().ok()?;
        let sin = sin.try_into_primitive::<Flex>().ok()?;
        Some(Tensor::from_primitive::<Flex>(apply(&x, &cos, &sin, false)))
    }

    /// The rotation (`transpose`: its transpose, the backward's), into a contiguous tensor.
    fn apply(x: &FlexTensor, cos: &FlexTensor, sin: &FlexTensor, transpose: bool) -> FlexTensor {
        let x = if x.layout().strides()[3] == 1 {
            x.clone()
        } else {
            x.to_contiguous()
        };
        let layout = x.layout();
        let shape = layout.shape().clone();
        let (b, h, t, d) = (shape[0], shape[1], shape[2], shape[3]);
        let (s, offset) = (layout.strides(), layout.start_offset() as isize);
        let data = x.storage::<f32>();
        let (cos, sin) = (values(cos), values(sin));
        let half = d / 2;
        let mut out = vec![0f32; b * h * t * d];
        simd(
            #[inline(always)]
            || {
                for (row, o) in out.chunks_mut(d).enumerate() {
                    let (bi, hi, ti) = (row / (h * t), row / t % h, row % t);
                    let start = (offset + bi as isize * s[0] + hi as isize * s[1] + ti as isize * s[2]) as usize;
                    let x = &data[start..start + d];
                    let (c, sn) = (&cos[ti * d..(ti + 1) * d], &sin[ti * d..(ti + 1) * d]);
                    let (o1, o2) = o.split_at_mut(half);
                    let (x1, x2) = x.split_at(half);
                    if transpose {
                        // ∂x1 = g1·c1 + g2·s2, ∂x2 = g2·c2 − g1·s1.
                        for j in 0..half {
                            o1[j] = x1[j] * c[j] + x2[j] * sn[half + j];
                            o2[j] = x2[j] * c[half + j] - x1[j] * sn[j];
                        }
                    } else {
                        // y1 = x1·c1 − x2·s1, y2 = x2·c2 + x1·s2.
                        for j in 0..half {
                            o1[j] = x1[j] * c[j] - x2[j] * sn[j];
                            o2[j] = x2[j] * c[half + j] + x1[j] * sn[half + j];
                        }
                    }
                }
            },
        );
        FlexTensor::from_data(TensorData::new(out, [b, h, t, d]))
    }

    /// Keeps the tables: the backward does not read `x`.
    #[derive(Debug)]
    struct RotaryBackward;

    impl Backward<Flex, 1> for RotaryBackward {
        type State = (FlexTensor, FlexTensor);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (cos, sin) = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |g| apply(&g, &cos, &sin, true));
        }
    }

    fn recorded(x: FloatTensor<Tracked>, cos: FlexTensor, sin: FlexTensor) -> FloatTensor<Tracked> {
        match RotaryBackward
            .prepare::<NoCheckpointing>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = apply(x.primitive(), &cos, &sin, false);
                prep.finish((cos, sin), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(apply(x.primitive(), &cos, &sin, false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor};

    use super::*;
    use crate::model::test_support::tensor;

    #[test]
    fn the_fused_rotation_is_the_tensor_formulation_with_its_gradient() {
        let (b, t, h, d) = (2, 5, 3, 8);
        for device in [Device::flex(), Device::flex().autodiff()] {
            let (cos, sin) = (tensor([t, d], 1, &device), tensor([t, d], 2, &device));
            let probe = tensor([b, h, t, d], 4, &device);
            // The heads' transposed view of a projection's output, as attention hands it over;
            // the rotation's value and the gradient of the projection's output.
            let run = |rotate: fn(Tensor<4>, &Tensor<2>, &Tensor<2>) -> Tensor<4>| {
                let y = tensor([b, t, h, d], 3, &device);
                let y = if device.is_autodiff() { y.require_grad() } else { y };
                let out = rotate(y.clone().swap_dims(1, 2), &cos, &sin);
                let grad = device.is_autodiff().then(|| {
                    y.grad(&(out.clone() * probe.clone()).sum().backward())
                        .expect("tracked")
                });
                (out, grad)
            };
            #[cfg(not(target_arch = "wasm32"))]
            assert!(
                fused::rotate(tensor([b, h, t, d], 3, &device), cos.clone(), sin.clone()).is_some(),
                "the CPU backend fuses"
            );
            let ((y1, g1), (y2, g2)) = (run(apply_rotary), run(apply_rotary_by_tensors));
            let diff: f32 = (y1 - y2).abs().max().into_scalar();
            assert!(diff < 1e-6, "values on {device:?}: {diff}");
            if let (Some(g1), Some(g2)) = (g1, g2) {
                let diff: f32 = (g1 - g2).abs().max().into_scalar();
                assert!(diff < 1e-6, "gradient: {diff}");
            }
        }
    }
}
