//! Reaching the adaptable linear layers of a loaded model by (layer, [`Target`]), and swapping
//! their type (a plain [`Linear`] for a wrapper such as LoRA's, and back).

use super::arch::Target;
use super::attention::Attention;
use super::linear::Projection;
use super::llama::{DecoderLayer, LlamaForCausalLM, LlamaModel};
use super::mlp::Mlp;

impl<L: Projection> LlamaForCausalLM<L> {
    /// The module `target` of block `layer`; `None` if the block has no such layer (a fused
    /// architecture's `q_proj`, or a layer index past the last).
    pub fn linear(&self, layer: usize, target: Target) -> Option<&L> {
        let block = self.model.layers.get(layer)?;
        match target {
            Target::Q => block.self_attn.q_proj.as_ref(),
            Target::K => block.self_attn.k_proj.as_ref(),
            Target::V => block.self_attn.v_proj.as_ref(),
            Target::Qkv => block.self_attn.qkv_proj.as_ref(),
            Target::O => Some(&block.self_attn.o_proj),
            Target::Gate => block.mlp.gate_proj.as_ref(),
            Target::Up => block.mlp.up_proj.as_ref(),
            Target::GateUp => block.mlp.gate_up_proj.as_ref(),
            Target::Down => Some(&block.mlp.down_proj),
        }
    }

    /// The module `target` of block `layer`, mutably (`None` as for [`Self::linear`]).
    pub fn linear_mut(&mut self, layer: usize, target: Target) -> Option<&mut L> {
        let block = self.model.layers.get_mut(layer)?;
        match target {
            Target::Q => block.self_attn.q_proj.as_mut(),
            Target::K => block.self_attn.k_proj.as_mut(),
            Target::V => block.self_attn.v_proj.as_mut(),
            Target::Qkv => block.self_attn.qkv_proj.as_mut(),
            Target::O => Some(&mut block.self_attn.o_proj),
            Target::Gate => block.mlp.gate_proj.as_mut(),
            Target::Up => block.mlp.up_proj.as_mut(),
            Target::GateUp => block.mlp.gate_up_proj.as_mut(),
            Target::Down => Some(&mut block.mlp.down_proj),
        }
    }

    /// Whether any frozen weight is kept packed (decoded when its layer runs).
    pub fn has_packed_weights(&self) -> bool {
        self.output_layer().is_packed()
            || (0..self.num_layers()).any(|i| {
                Target::ALL
                    .into_iter()
                    .any(|t| self.linear(i, t).is_some_and(|l| l.base().is_packed()))
            })
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
            vocab_chunk,
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
                        q_proj: self_attn.q_proj.map(|l| f(i, Target::Q, l)),
                        k_proj: self_attn.k_proj.map(|l| f(i, Target::K, l)),
                        v_proj: self_attn.v_proj.map(|l| f(i, Target::V, l)),
                        qkv_proj: self_attn.qkv_proj.map(|l| f(i, Target::Qkv, l)),
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
                        gate_proj: mlp.gate_proj.map(|l| f(i, Target::Gate, l)),
                        up_proj: mlp.up_proj.map(|l| f(i, Target::Up, l)),
                        gate_up_proj: mlp.gate_up_proj.map(|l| f(i, Target::GateUp, l)),
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
            vocab_chunk,
        }
    }
}
