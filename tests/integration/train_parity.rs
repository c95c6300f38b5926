//! One training run against PyTorch (scripts/make_reference.py --only train): the tiny llama with
//! given LoRA factors on all 14 modules, the masked loss over a padded batch, global-norm
//! clipping, AdamW with weight decay, and the warmup + cosine schedule, step by step (the run and
//! its tolerances: `tests/shared/train_reference.rs`, which the browser test shares).

use crate::adapters::tiny;
use crate::common::*;
use crate::train_reference::TrainReference;

#[test]
fn four_adamw_steps_match_pytorch_loss_gradient_norm_schedule_and_factors() {
    four_steps_against_pytorch(false);
}

/// The same run with gradient checkpointing per block and the loss taken a vocabulary piece at
/// a time (`train::blockwise`): the gradients are the same, so the same tolerances hold.
#[test]
fn blockwise_training_matches_pytorch_as_closely() {
    four_steps_against_pytorch(true);
}

/// The same run on burn's wgpu backend (lavapipe here), whole graph: the GPU path's own kernels
/// (RMSNorm and SwiGLU, forward and backward: `model::gpu_ops`) and burn's products and
/// autodiff against PyTorch, with the CPU's tolerances.
#[test]
fn four_adamw_steps_on_the_gpu_match_pytorch() {
    let choice = pollster::block_on(lora_null::device::select_device(
        lora_null::device::DevicePreference::Wgpu,
    ));
    assert!(choice.adapter.is_some(), "no wgpu adapter: {:?}", choice.warning);
    let r = TrainReference(json("tiny/train/reference.json"));
    let mut m = load(&hf_files("tiny/llama"), &choice.device);
    r.attach_initial_factors(&mut m);
    let steps = train_steps(&mut m, r.data().train, &r.config(false));
    eprintln!("against PyTorch on wgpu: {}", r.check(&steps, &m));
}

fn four_steps_against_pytorch(blockwise: bool) {
    let r = TrainReference(json("tiny/train/reference.json"));
    let mut m = tiny();
    r.attach_initial_factors(&mut m);
    let steps = train_steps(&mut m, r.data().train, &r.config(blockwise));
    eprintln!("against PyTorch (blockwise {blockwise}): {}", r.check(&steps, &m));
}
