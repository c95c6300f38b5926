//! The two ways a training step computes its gradients, both with the loss taken a vocabulary
//! piece at a time ([`chunked_nll`]), so that the `[tokens, vocab]` logits (150–260 k wide for
//! Qwen and Gemma) never exist with their gradient:
//! - [`whole_graph_backward`]: one autodiff graph for the whole model, ending at the final norm;
//! - [`blockwise_backward`]: one block at a time (gradient checkpointing per block). Only one
//!   block's autodiff graph exists at once, so a packed base (decoded when a layer runs) is never
//!   held in f32 beyond that block. It costs one more forward pass per step.
//!
//! Block by block, the gradients are the plain ones: the forward runs without autodiff, keeping
//! each block's input; the loss's gradient with respect to the final hidden states is computed
//! directly ([`chunked_nll`]); then each block, from the last, runs again with autodiff and is
//! back-propagated from the gradient of its output, which gives its parameters' gradients and
//! the gradient of its input for the block below.
//!
//! [`chunked_nll`]: LlamaForCausalLM::chunked_nll

use burn::module::Module;
use burn::tensor::{Gradients, Tensor};

use super::data::Batch;
use crate::model::{LlamaForCausalLM, NoObserver, Projection};

/// The summed masked next-token loss of `batch` under `model` (in training mode) with the whole
/// graph recorded at once, and the gradients of `loss_scale · loss` handed to `collect`; returns
/// the loss sum (no autodiff). The loss and its gradient with respect to the final hidden states
/// are taken a vocabulary piece at a time ([`chunked_nll`]), so the `[tokens, vocab]` logits never
/// exist, nor with autodiff's copies of them: the graph ends at the final norm.
pub fn whole_graph_backward<L: Projection>(
    model: &LlamaForCausalLM<L>,
    batch: &Batch,
    loss_scale: f64,
    collect: &mut dyn FnMut(&Gradients),
) -> Tensor<1> {
    let normed = model.hidden_states(batch.ids.clone(), None, &mut NoObserver);
    let (nll, grads) = loss_backward(&model.valid(), normed, batch, loss_scale);
    collect(&grads);
    nll
}

/// The summed masked loss of `batch` from the final normed hidden states `normed` (`[B, T, H]`,
/// with autodiff), taken a vocabulary piece at a time under `frozen` (the model without
/// autodiff), and the gradients of `loss_scale · loss` back through `normed`'s graph.
fn loss_backward<L: Projection>(
    frozen: &LlamaForCausalLM<L>,
    normed: Tensor<3>,
    batch: &Batch,
    loss_scale: f64,
) -> (Tensor<1>, Gradients) {
    let (normed, mask) = batch.label_rows(normed);
    let (nll, d_normed) = frozen.chunked_nll(normed.clone().inner(), &batch.label_ids, mask, Some(loss_scale));
    let d_normed = d_normed.expect("invariant: chunked_nll returns a gradient when given a scale");
    (nll, (normed * d_normed.autodiff()).sum().backward())
}

/// The summed masked next-token loss of `batch` under `model` (in training mode), and the
/// gradients of `loss_scale · loss` handed to `collect` one block at a time (from the last block
/// down); returns the loss sum (no autodiff).
pub fn blockwise_backward<L: Projection>(
    model: &LlamaForCausalLM<L>,
    batch: &Batch,
    loss_scale: f64,
    collect: &mut dyn FnMut(&Gradients),
) -> Tensor<1> {
    let frozen = model.valid();
    let device = model.device();
    let t = batch.ids.dims()[1];
    let contexts = frozen.contexts(0, t, &device);
    // Forward without autodiff, keeping every block's input.
    let mut inputs = Vec::with_capacity(frozen.model.layers.len());
    let mut x = frozen.model.embed_tokens.forward(batch.ids.clone());
    for (i, layer) in frozen.model.layers.iter().enumerate() {
        inputs.push(x.clone());
        x = layer.forward(x, &contexts.layer(i), None, i, &mut NoObserver);
        // Each block's transients (a packed base's dequantised weights) go back before the
        // next block's input, which lives until the backward, is made (in the browser's pools).
        crate::device::release_free_gpu_memory(&device);
    }
    // The final norm with autodiff, the loss and its gradient directly.
    let top = x.autodiff().require_grad();
    let (nll, grads) = loss_backward(&frozen, model.model.norm.forward(top.clone()), batch, loss_scale);
    collect(&grads);
    let mut d_out = top.grad(&grads);
    // Each block again with autodiff, from the last.
    for (i, input) in inputs.into_iter().enumerate().rev() {
        let Some(g) = d_out.take() else { break };
        let x = if i > 0 {
            input.autodiff().require_grad()
        } else {
            input.autodiff()
        };
        let y = model.model.layers[i].forward(x.clone(), &contexts.layer(i), None, i, &mut NoObserver);
        let grads = (y * g.autodiff()).sum().backward();
        // The block's graph is gone: its pages go back before the collected gradients, which
        // live until the update, are copied onto pages of their own (in the browser's pools).
        crate::device::release_free_gpu_memory(&device);
        collect(&grads);
        if i > 0 {
            d_out = x.grad(&grads);
        }
    }
    nll
}
