//! Reaching the adaptable linear layers of a loaded model by (layer, [`Target`]), and swapping
//! their type (a plain [`Linear`] for a wrapper such as LoRA's, and back).

use super::arch::Target;
use super::attention::Attention;
use super::linear::Projection;
use super::llama::{DecoderLayer, LlamaForCausalLM, LlamaModel};
use super::mlp::Mlp;

impl<L: Projection> LlamaForCausalLM<L> {
    /// The module `target` of block `layer`.
    pub fn linear(&self, layer: usize, target: Target) -> &L {
        let block = &self.model.layers[layer];
        match target {
            Target::Q => &block.self_attn.q_proj,
            Target::K => &block.self_attn.k_proj,
            Target::V => &block.self_attn.v_proj,
            Target::O => &block.self_attn.o_proj,
            Target::Gate => &block.mlp.gate_proj,
            Target::Up => &block.mlp.up_proj,
            Target::Down => &block.mlp.down_proj,
        }
    }

    /// The module `target` of block `layer`, mutably.
    pub fn linear_mut(&mut self, layer: usize, target: Target) -> &mut L {
        let block = &mut self.model.layers[layer];
        match target {
            Target::Q => &mut block.self_attn.q_proj,
            Target::K => &mut block.self_attn.k_proj,
            Target::V => &mut block.self_attn.v_proj,
            Target::O => &mut block.self_attn.o_proj,
            Target::Gate => &mut block.mlp.gate_proj,
            Target::Up => &mut block.mlp.up_proj,
            Target::Down => &mut block.mlp.down_proj,
        }
    }

    /// Number of blocks.
    pub fn num_layers(&self) -> usize {
        self.model.layers.len()
    }

    /// The same model with every adaptable layer passed through `f(layer, target, module)`:
    /// how a wrapper (LoRA) is put around each plain layer, and taken off again.
    pub fn map_projections<M: Projection>(self, f: &mut impl FnMut(usize, Target, L) -> M) -> LlamaForCausalLM<M> {
        let LlamaForCausalLM {
            model,
            lm_head,
            tied_head,
        } = self;
        let LlamaModel {
            embed_tokens,
            layers,
            norm,
            rope,
            rope_local,
            sliding_window,
            layer_types,
            final_logit_softcapping,
        } = model;
        let layers = layers
            .into_iter()
            .enumerate()
            .map(|(i, block)| {
                let DecoderLayer {
                    self_attn,
                    mlp,
                    input_layernorm,
                    post_attention_layernorm,
                    pre_feedforward_layernorm,
                    post_feedforward_layernorm,
                } = block;
                DecoderLayer {
                    self_attn: Attention {
                        q_proj: f(i, Target::Q, self_attn.q_proj),
                        k_proj: f(i, Target::K, self_attn.k_proj),
                        v_proj: f(i, Target::V, self_attn.v_proj),
                        o_proj: f(i, Target::O, self_attn.o_proj),
                        num_heads: self_attn.num_heads,
                        num_kv_heads: self_attn.num_kv_heads,
                        head_dim: self_attn.head_dim,
                        q_norm: self_attn.q_norm,
                        k_norm: self_attn.k_norm,
                        scaling: self_attn.scaling,
                        softcap: self_attn.softcap,
                    },
                    mlp: Mlp {
                        gate_proj: f(i, Target::Gate, mlp.gate_proj),
                        up_proj: f(i, Target::Up, mlp.up_proj),
                        down_proj: f(i, Target::Down, mlp.down_proj),
                        act: mlp.act,
                    },
                    input_layernorm,
                    post_attention_layernorm,
                    pre_feedforward_layernorm,
                    post_feedforward_layernorm,
                }
            })
            .collect();
        LlamaForCausalLM {
            model: LlamaModel {
                embed_tokens,
                layers,
                norm,
                rope,
                rope_local,
                sliding_window,
                layer_types,
                final_logit_softcapping,
            },
            lm_head,
            tied_head,
        }
    }
}
