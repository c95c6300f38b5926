//! Rotary position embeddings, Hugging Face's "rotate half" form, with the default, linear and
//! Llama-3 frequency scalings (transformers `modeling_rope_utils.py`).
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
}

impl RotaryEmbedding {
    /// Frequencies for `cfg`; `freq_factors` (GGUF's `rope_freqs.weight`) divide them when given.
    pub fn new(cfg: &ModelConfig, freq_factors: Option<&[f32]>) -> Self {
        let mut inv_freq = Self::plain(cfg.rope_theta, cfg.head_dim).inv_freq;
        match cfg.rope_scaling {
            RopeScaling::Default => {}
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor as f32),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high, old) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                    original_max_position_embeddings as f32,
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
        }
        if let Some(factors) = freq_factors {
            for (f, s) in inv_freq.iter_mut().zip(factors) {
                *f /= *s;
            }
        }
        Self { inv_freq }
    }

    /// Plain RoPE with base `theta` (no scaling): Gemma 3's sliding-window layers.
    pub fn plain(theta: f64, head_dim: usize) -> Self {
        let theta = theta as f32;
        let inv_freq = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / theta.powf(i as f32 / head_dim as f32))
            .collect();
        Self { inv_freq }
    }

    /// The inverse frequencies (for tests).
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// `(cos, sin)` tables for positions `start..start+len`, each `[len, head_dim]` with the
    /// frequency vector repeated twice (`cat(freqs, freqs)`), as transformers builds them.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
        let half = self.inv_freq.len();
        let d = 2 * half;
        let mut cos = Vec::with_capacity(len * d);
        let mut sin = Vec::with_capacity(len * d);
        for p in start..start + len {
            let pos = p as f32;
            let row: Vec<f32> = self.inv_freq.iter().map(|f| pos * f).collect();
            for _ in 0..2 {
                cos.extend(row.iter().map(|a| a.cos()));
                sin.extend(row.iter().map(|a| a.sin()));
            }
        }
        (
            Tensor::from_data(TensorData::new(cos, [len, d]), device),
            Tensor::from_data(TensorData::new(sin, [len, d]), device),
        )
    }
}

/// Applies the rotation to `x` of shape `[B, H, T, D]` with tables `[T, D]`:
/// `x·cos + rotate_half(x)·sin`, where `rotate_half([x1, x2]) = [−x2, x1]`.
pub fn apply_rotary(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    let [_, _, _, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    let cos = cos.clone().unsqueeze::<4>();
    let sin = sin.clone().unsqueeze::<4>();
    x * cos + rotated * sin
}
