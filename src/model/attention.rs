//! Causal self-attention with grouped-query heads and rotary embeddings (`self_attn`).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

use super::ModelConfig;
use super::arch::Site;
use super::linear::{Linear, Projection};
use super::norm::RmsNorm;
use super::observe::ActivationObserver;
use super::rope::apply_rotary;
use super::weights::{VarBuilder, WeightError};

/// `self_attn.{q,k,v,o}_proj` (or Phi-3's fused `qkv_proj` and `o_proj`), each a [`Projection`]
/// (a plain [`Linear`] when loaded).
#[derive(Module, Debug)]
pub struct Attention<L: Projection> {
    /// `[heads·head_dim, hidden]`; `None` where q/k/v are fused.
    pub q_proj: Option<L>,
    /// `[kv_heads·head_dim, hidden]`; `None` where q/k/v are fused.
    pub k_proj: Option<L>,
    /// `[kv_heads·head_dim, hidden]`; `None` where q/k/v are fused.
    pub v_proj: Option<L>,
    /// Phi-3's fused `[(heads + 2·kv_heads)·head_dim, hidden]`, rows `[q; k; v]`.
    pub qkv_proj: Option<L>,
    /// `[hidden, heads·head_dim]`.
    pub o_proj: L,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Qwen3's RMSNorm over each query head (`q_norm`, `[head_dim]`), before the rotation.
    pub q_norm: Option<RmsNorm>,
    /// Qwen3's RMSNorm over each key head (`k_norm`).
    pub k_norm: Option<RmsNorm>,
    /// Scores are `q·kᵀ · scaling`: `head_dim^-½`, or `query_pre_attn_scalar^-½` (Gemma).
    pub scaling: f64,
    /// Gemma 2's soft-cap `c` on the scores: `tanh(s / c) · c`, before the mask.
    pub softcap: Option<f64>,
}

/// Keys and values of earlier positions, per layer, for incremental decoding.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    /// `[B, kv_heads, S, head_dim]` each, after rotation.
    pub kv: Option<(Tensor<4>, Tensor<4>)>,
}

/// What one attention call needs besides its input.
pub struct AttentionContext<'a> {
    /// RoPE cos table `[T, head_dim]` for the new positions.
    pub cos: &'a Tensor<2>,
    /// RoPE sin table `[T, head_dim]`.
    pub sin: &'a Tensor<2>,
    /// Additive mask `[T, S]` (0 or a large negative number), S = cached + T.
    pub mask: &'a Tensor<2>,
}

/// A per-head RMSNorm (`self_attn.q_norm` / `k_norm`) where the architecture has one (Qwen3,
/// Gemma 3: with Gemma's `1 + w`).
fn head_norm(vb: &VarBuilder, name: &str, cfg: &ModelConfig) -> Result<Option<RmsNorm>, WeightError> {
    if !cfg.model_type.has_qk_norm() {
        return Ok(None);
    }
    let offset = cfg.model_type.norm_offset();
    Ok(Some(RmsNorm::load_with_offset(
        &vb.pp(name),
        cfg.head_dim,
        cfg.rms_norm_eps,
        offset,
    )?))
}

impl Attention<Linear> {
    /// Loads the four projections under `vb` (`...self_attn`).
    pub fn load(vb: &VarBuilder, cfg: &ModelConfig) -> Result<Self, WeightError> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let bias = cfg.attention_bias;
        let fused = cfg.model_type.fuses_projections();
        let separate = |name: &str, out: usize| -> Result<Option<Linear>, WeightError> {
            (!fused).then(|| Linear::load(&vb.pp(name), h, out, bias)).transpose()
        };
        Ok(Self {
            q_proj: separate("q_proj", q)?,
            k_proj: separate("k_proj", kv)?,
            v_proj: separate("v_proj", kv)?,
            qkv_proj: fused
                .then(|| Linear::load(&vb.pp("qkv_proj"), h, q + 2 * kv, bias))
                .transpose()?,
            // Qwen2 has biases on q/k/v only; Llama's and Gemma's `attention_bias` cover o_proj too.
            o_proj: Linear::load(
                &vb.pp("o_proj"),
                q,
                h,
                bias && (cfg.model_type == super::Architecture::Llama || cfg.model_type.is_gemma()),
            )?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
            q_norm: head_norm(vb, "q_norm", cfg)?,
            k_norm: head_norm(vb, "k_norm", cfg)?,
            scaling: cfg.query_pre_attn_scalar.unwrap_or(hd as f64).powf(-0.5),
            softcap: cfg.attn_logit_softcapping,
        })
    }
}

impl<L: Projection> Attention<L> {
    /// # Shapes
    /// - x: `[B, T, H]` → `[B, T, H]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        ctx: &AttentionContext,
        cache: Option<&mut LayerCache>,
        layer: usize,
        observer: &mut dyn ActivationObserver,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2);
        let (q, k, v) = match (&self.qkv_proj, &self.q_proj, &self.k_proj, &self.v_proj) {
            (Some(qkv), ..) => {
                let y = qkv.forward(x);
                let (q, kv) = (nh * hd, nkv * hd);
                (
                    y.clone().narrow(2, 0, q),
                    y.clone().narrow(2, q, kv),
                    y.narrow(2, q + kv, kv),
                )
            }
            (None, Some(q), Some(k), Some(v)) => (q.forward(x.clone()), k.forward(x.clone()), v.forward(x)),
            _ => unreachable!("invariant: Attention::load builds either qkv_proj or all of q/k/v_proj"),
        };
        let (q, k, v) = (heads(q, nh), heads(k, nkv), heads(v, nkv));
        // Qwen3 normalises each head (over head_dim) before rotating it.
        let norm = |n: &Option<RmsNorm>, y: Tensor<4>| match n {
            Some(n) => n.forward(y),
            None => y,
        };
        let (q, k) = (norm(&self.q_norm, q), norm(&self.k_norm, k));
        let q = apply_rotary(q, ctx.cos, ctx.sin);
        let mut k = apply_rotary(k, ctx.cos, ctx.sin);
        let mut v = v;
        if let Some(cache) = cache {
            if let Some((k0, v0)) = cache.kv.take() {
                k = Tensor::cat(vec![k0, k], 2);
                v = Tensor::cat(vec![v0, v], 2);
            }
            cache.kv = Some((k.clone(), v.clone()));
        }
        // In training on a GPU, one operation that keeps no score matrix (Gemma 2's soft-cap
        // aside); else burn's formulation.
        let fused = match self.softcap {
            None => super::attention_kernel::attention(q.clone(), k.clone(), v.clone(), ctx.mask, self.scaling),
            Some(_) => None,
        };
        let heads_out = match fused {
            Some(y) => y,
            None => attend_by_tensors(q, k, v, ctx.mask, self.scaling, self.softcap),
        };
        let context = heads_out.swap_dims(1, 2).reshape([b, t, nh * hd]);
        observer.observe(layer, Site::AttnOutput, &context);
        self.o_proj.forward(context)
    }
}

/// `softmax(scaling·q·kᵀ + mask)·v` by tensor operations, the keys and values repeated for
/// every query head of their group (soft-capped first with `softcap`): the reference twin of
/// `model::attention_kernel`, and the path everywhere but GPU training.
///
/// # Shapes
/// - q: `[B, H, T, D]`, k and v: `[B, kv_heads, S, D]`, mask: `[T, S]` → `[B, H, T, D]`
pub fn attend_by_tensors(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: &Tensor<2>,
    scaling: f64,
    softcap: Option<f64>,
) -> Tensor<4> {
    let [b, nh, _, hd] = q.dims();
    let nkv = k.dims()[1];
    let s = k.dims()[2];
    let group = nh / nkv;
    let repeat = |y: Tensor<4>| {
        if group == 1 {
            y
        } else {
            y.unsqueeze_dim::<5>(2)
                .expand([b, nkv, group, s, hd])
                .reshape([b, nh, s, hd])
        }
    };
    let (k, v) = (repeat(k), repeat(v));
    let scores = super::cpu_linear::batched_matmul(q, k, true);
    let probs = match softcap {
        Some(c) => {
            let capped = scores.mul_scalar(scaling).div_scalar(c).tanh().mul_scalar(c);
            softmax(capped + mask.clone().unsqueeze::<4>(), 3)
        }
        None => super::cpu_ops::masked_softmax(scores, mask.clone(), scaling),
    };
    super::cpu_linear::batched_matmul(probs, v, false)
}
