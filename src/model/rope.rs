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
    let d = x.dims()[3];
    let r = cos.dims()[1];
    if r < d {
        let pass = x.clone().narrow(3, r, d - r);
        let rotated = apply_rotary(x.narrow(3, 0, r), cos, sin);
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
