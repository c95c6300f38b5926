//! The decoder of every architecture we run (llama, mistral, qwen2, qwen3, gemma2, gemma3): module
//! tree named after the Hugging Face checkpoint keys (`model.layers.{i}.self_attn.q_proj.weight`,
//! ...), so loading needs no remapping. The architectures differ only in the pieces the config
//! switches on: biases, per-head norms, Gemma's norms around attention and MLP, the activation,
//! per-layer sliding windows and RoPE bases, soft-caps.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::ModelConfig;
use super::arch::Site;
use super::attention::{Attention, AttentionContext, LayerCache};
use super::config::LayerType;
use super::linear::{Linear, Projection};
use super::mlp::Mlp;
use super::norm::{Embedding, RmsNorm};
use super::observe::{ActivationObserver, NoObserver};
use super::rope::RotaryEmbedding;
use super::weights::{VarBuilder, WeightError};

/// One block: pre-norm attention and pre-norm MLP, each with a residual connection. Gemma also
/// norms each sub-layer's output before adding it back (a "sandwich"):
///
/// - LLaMA: `h = x + attn(in_norm(x)); y = h + mlp(post_attn_norm(h))`
/// - Gemma: `h = x + post_attn_norm(attn(in_norm(x))); y = h + post_ff_norm(mlp(pre_ff_norm(h)))`
#[derive(Module, Debug)]
pub struct DecoderLayer<L: Projection> {
    /// Attention.
    pub self_attn: Attention<L>,
    /// Feed-forward.
    pub mlp: Mlp<L>,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// LLaMA: the norm before the MLP. Gemma: the norm of attention's output.
    pub post_attention_layernorm: RmsNorm,
    /// Gemma's norm before the MLP.
    pub pre_feedforward_layernorm: Option<RmsNorm>,
    /// Gemma's norm of the MLP's output.
    pub post_feedforward_layernorm: Option<RmsNorm>,
}

impl DecoderLayer<Linear> {
    fn load(vb: &VarBuilder, cfg: &ModelConfig) -> Result<Self, WeightError> {
        let offset = cfg.model_type.norm_offset();
        let norm = |name: &str| RmsNorm::load_with_offset(&vb.pp(name), cfg.hidden_size, cfg.rms_norm_eps, offset);
        let gemma_norm = |name: &str| cfg.model_type.is_gemma().then(|| norm(name)).transpose();
        Ok(Self {
            self_attn: Attention::load(&vb.pp("self_attn"), cfg)?,
            mlp: Mlp::load(
                &vb.pp("mlp"),
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg.model_type.fuses_projections(),
                cfg.hidden_act,
            )?,
            input_layernorm: norm("input_layernorm")?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            pre_feedforward_layernorm: gemma_norm("pre_feedforward_layernorm")?,
            post_feedforward_layernorm: gemma_norm("post_feedforward_layernorm")?,
        })
    }
}

impl<L: Projection> DecoderLayer<L> {
    /// One block; `layer` is its index (for observers and caches).
    ///
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
        let normed = self.input_layernorm.forward(x.clone());
        observer.observe(layer, Site::AttnInput, &normed);
        let attn = self.self_attn.forward(normed, ctx, cache, layer, observer);
        match (&self.pre_feedforward_layernorm, &self.post_feedforward_layernorm) {
            (Some(pre_ff), Some(post_ff)) => {
                let h = x + self.post_attention_layernorm.forward(attn);
                let out = self.mlp.forward(pre_ff.forward(h.clone()), layer, observer);
                h + post_ff.forward(out)
            }
            _ => {
                let h = x + attn;
                let normed = self.post_attention_layernorm.forward(h.clone());
                h + self.mlp.forward(normed, layer, observer)
            }
        }
    }
}

/// `model.*`: embeddings, blocks, final norm.
#[derive(Module, Debug)]
pub struct LlamaModel<L: Projection> {
    /// `model.embed_tokens`.
    pub embed_tokens: Embedding,
    /// `model.layers.{i}`.
    pub layers: Vec<DecoderLayer<L>>,
    /// `model.norm`.
    pub norm: RmsNorm,
    /// Rotary frequencies (not a parameter).
    #[module(skip)]
    pub rope: RotaryEmbedding,
    /// Rotary frequencies of the sliding-window layers where they differ (Gemma 3).
    #[module(skip)]
    pub rope_local: Option<RotaryEmbedding>,
    /// Sliding attention window (mistral, Gemma), if any.
    #[module(skip)]
    pub sliding_window: Option<usize>,
    /// Which layers attend within the window (one entry per layer).
    #[module(skip)]
    pub layer_types: Vec<LayerType>,
    /// Gemma 2's soft-cap on the logits: `tanh(z / c) · c`.
    #[module(skip)]
    pub final_logit_softcapping: Option<f64>,
}

/// Per-layer key/value cache for incremental decoding.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
}

impl KvCache {
    /// Positions already processed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The causal language model: `LlamaForCausalLM` / `MistralForCausalLM` / `Qwen2ForCausalLM`.
/// Its adaptable layers are `L`: a plain [`Linear`] as loaded, or a wrapper around one.
#[derive(Module, Debug)]
pub struct LlamaForCausalLM<L: Projection = Linear> {
    /// The decoder.
    pub model: LlamaModel<L>,
    /// Output projection `[vocab, hidden]`; `None` when tied to `model.embed_tokens`.
    pub lm_head: Option<Linear>,
    /// With tied embeddings: `embed_tokens` as the output layer (not a checkpoint key). Dense,
    /// it is a transposed copy so the output matmul does not transpose 49k × 576 values per call;
    /// packed, it shares the embedding's bytes.
    #[module(skip)]
    pub tied_head: Option<Linear>,
    /// Vocabulary rows per piece when the output layer is taken a piece at a time (a packed head,
    /// the chunked loss): only this many rows exist as f32 at once. [`VOCAB_CHUNK`] by default.
    #[module(skip)]
    pub vocab_chunk: usize,
}

/// The default [`LlamaForCausalLM::vocab_chunk`]: 8192 rows of a 2048-wide head are 64 MiB in f32.
pub const VOCAB_CHUNK: usize = 8192;

/// The rotary tables and masks of one forward pass, per kind of layer.
pub struct Contexts {
    cos: Tensor<2>,
    sin: Tensor<2>,
    local: Option<(Tensor<2>, Tensor<2>)>,
    full_mask: Option<Tensor<2>>,
    sliding_mask: Option<Tensor<2>>,
    kinds: Vec<LayerType>,
}

impl Contexts {
    /// The attention context of block `layer`.
    pub fn layer(&self, layer: usize) -> AttentionContext<'_> {
        let kind = self.kinds.get(layer).copied().unwrap_or(LayerType::FullAttention);
        let (cos, sin) = match (kind, &self.local) {
            (LayerType::SlidingAttention, Some((c, s))) => (c, s),
            _ => (&self.cos, &self.sin),
        };
        let mask = match kind {
            LayerType::FullAttention => self.full_mask.as_ref(),
            LayerType::SlidingAttention => self.sliding_mask.as_ref(),
        }
        .expect("invariant: a mask exists for every layer kind present");
        AttentionContext { cos, sin, mask }
    }
}

/// Builds the model block by block, so a caller can report progress (and, in the browser,
/// yield to the page between blocks).
pub struct ModelBuilder<'a> {
    vb: VarBuilder<'a>,
    cfg: &'a ModelConfig,
    rope_freq_factors: Option<&'a [f32]>,
    layers: Vec<DecoderLayer<Linear>>,
}

impl<'a> ModelBuilder<'a> {
    /// A builder over a checkpoint. `rope_freq_factors` is GGUF's optional `rope_freqs.weight`
    /// (per-frequency divisors llama.cpp stores for Llama 3.1 scaling).
    pub fn new(vb: VarBuilder<'a>, cfg: &'a ModelConfig, rope_freq_factors: Option<&'a [f32]>) -> Self {
        Self {
            vb,
            cfg,
            rope_freq_factors,
            layers: Vec::with_capacity(cfg.num_hidden_layers),
        }
    }

    /// Blocks loaded so far, and in all.
    pub fn progress(&self) -> (usize, usize) {
        (self.layers.len(), self.cfg.num_hidden_layers)
    }

    /// Loads the next block; `false` once all are loaded.
    pub fn next_layer(&mut self) -> Result<bool, WeightError> {
        let i = self.layers.len();
        if i == self.cfg.num_hidden_layers {
            return Ok(false);
        }
        let layer = DecoderLayer::load(&self.vb.pp("model").pp("layers").pp(i), self.cfg)?;
        self.layers.push(layer);
        Ok(true)
    }

    /// Loads the embeddings, final norm and head around the blocks.
    pub fn finish(mut self) -> Result<LlamaForCausalLM, WeightError> {
        while self.next_layer()? {}
        let (cfg, m) = (self.cfg, self.vb.pp("model"));
        let mut embed_tokens = Embedding::load(&m.pp("embed_tokens"), cfg.vocab_size, cfg.hidden_size)?;
        if cfg.model_type.is_gemma() {
            // Gemma multiplies the embeddings (not the tied output layer) by √hidden.
            embed_tokens.scale = Embedding::gemma_scale(cfg.hidden_size);
        }
        let model = LlamaModel {
            embed_tokens,
            layers: self.layers,
            norm: RmsNorm::load_with_offset(
                &m.pp("norm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
                cfg.model_type.norm_offset(),
            )?,
            rope: RotaryEmbedding::new(cfg, self.rope_freq_factors),
            rope_local: cfg
                .rope_local_base_freq
                .map(|theta| RotaryEmbedding::plain(theta, cfg.head_dim)),
            sliding_window: cfg.sliding_window,
            layer_types: cfg.layer_types.clone(),
            final_logit_softcapping: cfg.final_logit_softcapping,
        };
        // With tied embeddings (SmolLM2, Llama 3.2) the output layer reuses `embed_tokens`; it is
        // loaded a second time as a linear layer, i.e. transposed, for a fast output matmul.
        let (lm_head, tied_head) = if cfg.tie_word_embeddings {
            // Packed, both views share the file's bytes.
            let head = Linear::load(&m.pp("embed_tokens"), cfg.hidden_size, cfg.vocab_size, false)?;
            (None, Some(head))
        } else {
            let head = Linear::load(&self.vb.pp("lm_head"), cfg.hidden_size, cfg.vocab_size, false)?;
            (Some(head), None)
        };
        Ok(LlamaForCausalLM {
            model,
            lm_head,
            tied_head,
            vocab_chunk: VOCAB_CHUNK,
        })
    }
}

impl LlamaForCausalLM {
    /// Builds the model from a checkpoint in one go (see [`ModelBuilder`] for progress).
    pub fn load(vb: &VarBuilder, cfg: &ModelConfig, rope_freq_factors: Option<&[f32]>) -> Result<Self, WeightError> {
        ModelBuilder::new(vb.clone(), cfg, rope_freq_factors).finish()
    }
}

impl<L: Projection> LlamaForCausalLM<L> {
    /// Logits for a batch of token ids (no cache, no hooks).
    ///
    /// # Shapes
    /// - ids: `[B, T]` → `[B, T, vocab]`
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let hidden = self.hidden_states(ids, None, &mut NoObserver);
        self.logits(hidden)
    }

    /// The final normed hidden states; with a cache, `ids` are the new positions only.
    ///
    /// # Shapes
    /// - ids: `[B, T]` → `[B, T, H]`
    pub fn hidden_states(
        &self,
        ids: Tensor<2, Int>,
        mut cache: Option<&mut KvCache>,
        observer: &mut dyn ActivationObserver,
    ) -> Tensor<3> {
        let device = ids.device();
        let [_, t] = ids.dims();
        let past = cache.as_ref().map_or(0, |c| c.len);
        let contexts = self.contexts(past, t, &device);
        if let Some(c) = cache.as_deref_mut() {
            c.layers.resize_with(self.model.layers.len(), LayerCache::default);
            c.len += t;
        }
        let mut x = self.model.embed_tokens.forward(ids);
        for (i, layer) in self.model.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, &contexts.layer(i), layer_cache, i, observer);
        }
        self.model.norm.forward(x)
    }

    /// The rotary tables and masks for `t` new positions after `past` cached ones: global layers
    /// see every earlier key with the main RoPE base; sliding ones the last `sliding_window` keys,
    /// with the local base if any. Only the kinds of layer present get a mask.
    pub fn contexts(&self, past: usize, t: usize, device: &Device) -> Contexts {
        let m = &self.model;
        let kinds: Vec<LayerType> = (0..m.layers.len())
            .map(|i| m.layer_types.get(i).copied().unwrap_or(LayerType::FullAttention))
            .collect();
        let has = |k: LayerType| kinds.contains(&k);
        let (cos, sin) = m.rope.tables(past, t, device);
        Contexts {
            cos,
            sin,
            local: m.rope_local.as_ref().map(|r| r.tables(past, t, device)),
            full_mask: has(LayerType::FullAttention).then(|| causal_mask(past, t, None, device)),
            sliding_mask: has(LayerType::SlidingAttention).then(|| causal_mask(past, t, m.sliding_window, device)),
            kinds,
        }
    }

    /// The output layer: `lm_head`, or the tied embedding table.
    pub fn output_layer(&self) -> &Linear {
        match (&self.lm_head, &self.tied_head) {
            (Some(head), _) => head,
            (None, Some(tied)) => tied,
            (None, None) => unreachable!("invariant: the builder sets lm_head or tied_head"),
        }
    }

    /// Projects hidden states to vocabulary logits.
    ///
    /// # Shapes
    /// - hidden: `[B, T, H]` → `[B, T, vocab]`
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let head = self.output_layer();
        let logits = if head.is_packed() {
            let (vocab, chunk) = (head.dims().0, self.vocab_chunk.max(1));
            let pieces = (0..vocab)
                .step_by(chunk)
                .map(|start| {
                    let w = head.weight_columns(start..(start + chunk).min(vocab));
                    super::cpu_linear::linear(hidden.clone(), w, None)
                })
                .collect();
            Tensor::cat(pieces, 2)
        } else {
            Projection::forward(head, hidden)
        };
        match self.model.final_logit_softcapping {
            Some(c) => logits.div_scalar(c).tanh().mul_scalar(c),
            None => logits,
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.model.norm.weight.val().device()
    }
}

/// Additive causal mask `[T, past+T]`: 0 where query `past+i` may attend key `j`, a large
/// negative number elsewhere (future keys, and keys outside a sliding window).
pub fn causal_mask(past: usize, t: usize, window: Option<usize>, device: &Device) -> Tensor<2> {
    let s = past + t;
    let mut data = vec![0f32; t * s];
    for i in 0..t {
        let q = past + i;
        for j in 0..s {
            let future = j > q;
            let outside = window.is_some_and(|w| q >= w && j <= q - w);
            if future || outside {
                data[i * s + j] = f32::MIN;
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [t, s]), device)
}
