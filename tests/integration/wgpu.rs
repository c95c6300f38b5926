//! The GPU path: the same models on burn's wgpu backend (mesa's lavapipe software Vulkan driver
//! on CI, which the test command installs). Tiny models only: lavapipe is slow.

use burn::tensor::{Tensor, TensorData};
use lora_null::device::{DevicePreference, select_device};
use lora_null::model::cpu_ops::{rms_norm_by_tensors, swiglu_by_tensors};
use lora_null::model::gpu_ops;
use lora_null::model::rope::apply_rotary_by_tensors;

use crate::common::*;

/// GPU kernels sum in a different order than the CPU (and fuse differently): 1e-3 absolute on
/// logits ~1 still catches a wrong rotation or norm (≥1e-2).
const WGPU_LOGIT_TOL: f32 = 1e-3;

#[test]
fn tiny_models_on_wgpu_match_transformers() {
    let choice = pollster::block_on(select_device(DevicePreference::Wgpu));
    let adapter = choice.adapter.as_ref().unwrap_or_else(|| {
        panic!(
            "no wgpu adapter: {} (install mesa-vulkan-drivers; scripts/setup.sh does)",
            choice.warning.clone().unwrap_or_default()
        )
    });
    eprintln!("wgpu adapter: {} ({})", adapter.name, adapter.backend);
    for arch in ["llama", "qwen2"] {
        let m = load(&hf_files(&format!("tiny/{arch}")), &choice.device);
        let r = json(&format!("tiny/{arch}/reference.json"));
        for case in r["cases"].as_array().unwrap() {
            let ids = ids(&case["ids"]);
            let (rows, want_rows) = (logits_rows(&m, &ids), case["logits"].as_array().unwrap());
            assert_eq!(rows.len(), want_rows.len(), "one row of logits per token");
            for (pos, (got, want)) in rows.iter().zip(want_rows).enumerate() {
                let d = max_abs_diff(got, &floats(want));
                assert!(
                    d < WGPU_LOGIT_TOL,
                    "{arch} on {}: position {pos}: max |Δlogit| {d}",
                    adapter.name
                );
            }
        }
    }
}

/// A packed base on the GPU stays there in its stored precision and is dequantised by the
/// device; its logits are the f32 base's on the same device (the same values meet matmuls that
/// read the weight transposed: rounding only).
#[test]
fn a_packed_base_lives_on_the_gpu_and_matches_the_f32_base() {
    use lora_null::engine::{BaseStorage, LoadedModel};
    let choice = pollster::block_on(select_device(DevicePreference::Wgpu));
    assert!(choice.adapter.is_some(), "no wgpu adapter: {:?}", choice.warning);
    let ids: Vec<u32> = (0..16).map(|i| (i * 37 + 5) % 300).collect();
    for rel in [
        "tiny/llama-gguf/q4_0.gguf",
        "tiny/llama-kquant/Q4_K_M.gguf",
        "tiny/gemma3-gguf/gemma3-f16.gguf",
    ] {
        let files = gguf_files(&fixture(rel));
        let load = |base| LoadedModel::load_as(&files, &choice.device, base).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let (dense, mut packed) = (load(BaseStorage::F32), load(BaseStorage::Packed));
        let placed: Vec<bool> = (0..packed.model.num_layers())
            .flat_map(|i| lora_null::model::Target::ALL.map(move |t| (i, t)))
            .filter_map(|(i, t)| packed.model.linear(i, t))
            .filter_map(|l| l.base.packed.as_ref().map(|p| p.is_on_device()))
            .collect();
        assert!(
            !placed.is_empty() && placed.iter().all(|&d| d),
            "{rel}: packed layers not all on the GPU"
        );
        packed.model.vocab_chunk = 100;
        let d = max_abs_diff(
            &logits_rows(&dense, &ids).concat(),
            &logits_rows(&packed, &ids).concat(),
        );
        eprintln!("{rel}: packed on the GPU vs f32 logits differ by {d:.1e}");
        assert!(d < WGPU_LOGIT_TOL, "{rel}: packed on the GPU differs by {d}");
    }
}

/// The packed linear under autodiff on the GPU, through the dequantised matrix and through the
/// fused dequantising product: its value and input gradient are the dense product's, and a chain of such layers, run forward, holds their stored matrices only, not an
/// f32 copy of each waiting for the backward (burn's product would keep one per layer: here
/// 8 × 1 MiB against 8 × 0.5 MiB of 16-bit words). Memory is read from burn's pool on lavapipe.
#[test]
fn a_packed_gpu_layer_under_autodiff_keeps_no_f32_copy_for_its_backward() {
    use burn::backend::{Backend, Dispatch};
    use burn::tensor::{Distribution, Tensor};
    use lora_null::model::dequant::{self, DeviceMatrix};
    use lora_null::model::packed::{DeviceForm, PackedMatrix, SharedBytes, f16_rows};
    use std::sync::Arc;

    let choice = pollster::block_on(select_device(DevicePreference::Wgpu));
    assert!(choice.adapter.is_some(), "no wgpu adapter: {:?}", choice.warning);
    let device = choice.device.clone();
    let (n, layers, rows) = (512, 8, 16);
    // Small values, so eight products in a row stay near 1 in f16 and f32 alike.
    let matrix = |seed: usize| {
        let bytes: Vec<u8> = (0..n * n)
            .flat_map(|i| {
                let v = (((i * 7919 + seed * 104_729) % 2001) as f32 - 1000.0) / 1000.0 / (n as f32).sqrt();
                half::f16::from_f32(v).to_le_bytes()
            })
            .collect();
        let len = bytes.len();
        let shared = SharedBytes::new(Arc::new(bytes), 0..len).expect("whole buffer");
        let m = PackedMatrix::new(shared, n, n, "F16", f16_rows()).expect("whole rows");
        let m = m.with_device_form(DeviceForm::Half { exponent_bits: 5 });
        DeviceMatrix::upload(&m, &device).expect("uploads")
    };
    let weights: Vec<DeviceMatrix> = (0..layers).map(matrix).collect();
    let x0 = Tensor::<3>::random([1, rows, n], Distribution::Uniform(-1.0, 1.0), &device);
    let in_use = || {
        let usage = Dispatch::memory_pool_usage(device.as_dispatch()).expect("the GPU backend reports its pool");
        usage.bytes_in_use as f64
    };

    // The dense reference: the dequantised matrices through burn's product.
    let dense: Vec<Tensor<2>> = weights.iter().map(|w| w.dequantize().transpose()).collect();
    let x = x0.clone().autodiff().require_grad();
    let y = dense
        .iter()
        .fold(x.clone(), |h, w| h.matmul(w.clone().unsqueeze::<3>()));
    let want_y = y.clone().into_data().try_to_vec::<f32>().expect("f32");
    let want_grad = x
        .grad(&y.sum().backward())
        .expect("tracked")
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    drop(dense);

    let rel = |a: &[f32], b: &[f32]| {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        max_abs_diff(a, b) / scale
    };
    // Dequantised for burn's product, then inside the fused product (`model::dequant_kernel`).
    for fused in [false, true] {
        let before = in_use();
        let x = x0.clone().autodiff().require_grad();
        let y = weights
            .iter()
            .fold(x.clone(), |h, w| dequant::linear_by(h, w, None, fused));
        let got_y = y.clone().into_data().try_to_vec::<f32>().expect("f32");
        let held = in_use() - before;
        let got_grad = x
            .grad(&y.sum().backward())
            .expect("tracked")
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        // Untracked (inference, calibration): the same values.
        let plain = weights
            .iter()
            .fold(x0.clone(), |h, w| dequant::linear_by(h, w, None, fused))
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");

        let (dy, dg, dp) = (rel(&got_y, &want_y), rel(&got_grad, &want_grad), rel(&plain, &want_y));
        eprintln!(
            "packed GPU linear (fused {fused}): value {dy:.1e}, gradient {dg:.1e}, untracked {dp:.1e} relative; graph holds {held:.0} bytes"
        );
        assert!(
            dy < 1e-5 && dg < 1e-5 && dp < 1e-5,
            "fused {fused}: value {dy}, gradient {dg}, untracked {dp}"
        );
        let one_f32_copy = (n * n * 4) as f64;
        assert!(
            held < 2.0 * one_f32_copy,
            "the forward of {layers} layers holds {held} bytes: f32 copies of the weights wait for the backward"
        );
    }
}

/// A training step with a packed base on the GPU (the tiny llama as Q4_0 GGUF): the base's
/// layers dequantised by the GPU's kernel, the token table's rows selected by the batch's ids,
/// each packed layer's own backward; whole graph and block by block, the loss and gradient norm
/// are those of the same file decoded to f32 on the same device.
#[test]
fn a_packed_base_on_the_gpu_trains_as_the_f32_base() {
    use lora_null::engine::{BaseStorage, EighCache, Inline, LoadedModel, TrainHooks};
    use lora_null::lora::{InitMethod, LoraConfig};
    use lora_null::train::{StepMetrics, TrainConfig};
    struct Steps(Vec<StepMetrics>);
    impl TrainHooks for Steps {
        fn on_step(&mut self, m: &StepMetrics) {
            self.0.push(m.clone());
        }
    }
    let choice = pollster::block_on(select_device(DevicePreference::Wgpu));
    assert!(choice.adapter.is_some(), "no wgpu adapter: {:?}", choice.warning);
    let files = gguf_files(&fixture("tiny/llama-gguf/q4_0.gguf"));
    let bytes = std::fs::read(fixture("e2e/train.jsonl")).unwrap();
    let records = lora_null::io::dataset::parse_dataset("train.jsonl", &bytes).unwrap();
    for blockwise in [false, true] {
        let step = |base| {
            let mut m = LoadedModel::load_as(&files, &choice.device, base).unwrap();
            let cfg = TrainConfig {
                lr: 1e-3,
                steps: Some(1),
                batch: 2,
                max_len: 256,
                val_fraction: 0.0,
                seed: 1,
                checkpoint_blocks: Some(blockwise),
                ..TrainConfig::default()
            };
            let mut lora = LoraConfig::new(InitMethod::Gaussian, 4);
            lora.seed = 3;
            let mut steps = Steps(Vec::new());
            pollster::block_on(m.fine_tune(
                &records,
                lora,
                &cfg,
                None,
                &mut EighCache::default(),
                &Inline,
                &mut steps,
            ))
            .unwrap();
            let s = steps.0.remove(0);
            (s.loss, s.grad_norm)
        };
        let (dense, packed) = (step(BaseStorage::F32), step(BaseStorage::Packed));
        eprintln!("blockwise {blockwise}: f32 base {dense:?}, packed base {packed:?}");
        assert!(
            (packed.0 - dense.0).abs() <= 1e-4 * dense.0,
            "loss {packed:?} vs {dense:?}"
        );
        assert!(
            (packed.1 - dense.1).abs() <= 1e-3 * dense.1,
            "gradient norm {packed:?} vs {dense:?}"
        );
    }
}

/// `len` values in [−1, 1), a different sequence for each seed, as a tensor of `shape`.
fn tensor<const D: usize>(shape: [usize; D], seed: usize, device: &burn::tensor::Device) -> Tensor<D> {
    let n = shape.iter().product::<usize>();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 + seed) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

fn gpu() -> burn::tensor::Device {
    let choice = pollster::block_on(select_device(DevicePreference::Wgpu));
    assert!(choice.adapter.is_some(), "no wgpu adapter: {:?}", choice.warning);
    choice.device
}

/// On lavapipe: the kernels give the tensor formulations' values, alone and under autodiff,
/// and their gradients (RMSNorm's input and scale, SwiGLU's gate and up, the rotation's input);
/// rows narrower and wider than a cube, a Gemma offset; and a training graph through them holds
/// less memory.
#[test]
fn the_gpu_kernels_are_the_tensor_formulations_with_their_gradients() {
    let plain = gpu();
    let device = plain.clone().autodiff();
    for (shape, offset) in [([2, 37, 96], 0.0), ([1, 5, 1000], 1.0), ([3, 1, 7], 0.0)] {
        let dim = shape[2];
        let x = tensor(shape, 1, &plain).mul_scalar(3.0);
        let w = tensor([dim], 2, &plain);
        assert!(
            gpu_ops::rms_norm(x.clone(), w.clone(), 1e-5, 0.0).is_none(),
            "plain tensors keep the formulation"
        );
        let ours = gpu_ops::rms_norm_rows(
            x.clone().reshape([shape[0] * shape[1], dim]),
            w.clone(),
            1e-5,
            offset as f32,
        );
        let want = rms_norm_by_tensors(x.clone(), w.clone(), 1e-5, offset);
        assert!(max_diff(ours.reshape(shape), want) < 1e-5, "values, {shape:?}");

        let x = tensor(shape, 1, &device).mul_scalar(3.0).require_grad();
        let w = tensor([dim], 2, &device).require_grad();
        let r = tensor(shape, 3, &device);
        let ours = gpu_ops::rms_norm(x.clone(), w.clone(), 1e-5, offset as f32).expect("tracked");
        assert!(ours.is_tracked(), "recorded for autodiff");
        let want = rms_norm_by_tensors(x.clone(), w.clone(), 1e-5, offset);
        assert!(max_diff(ours.clone(), want.clone()) < 1e-5, "tracked values, {shape:?}");
        let (g1, g2) = ((ours * r.clone()).sum().backward(), (want * r).sum().backward());
        let dx = max_diff(x.grad(&g1).expect("∂x"), x.grad(&g2).expect("∂x"));
        assert!(dx < 1e-4, "∂x {dx}, {shape:?}");
        let dw = max_diff(w.grad(&g1).expect("∂w"), w.grad(&g2).expect("∂w"));
        assert!(dw < 1e-3, "∂w {dw}, {shape:?}");
    }
    // SwiGLU: plain, then both gradients under autodiff (an odd length: a partial cube).
    let shape = [2, 7, 37];
    let (gate, up) = (tensor(shape, 6, &plain).mul_scalar(4.0), tensor(shape, 7, &plain));
    let ours = gpu_ops::swiglu_values(gate.clone().reshape([2 * 7 * 37]), up.clone().reshape([2 * 7 * 37]));
    assert!(
        max_diff(ours.reshape(shape), swiglu_by_tensors(gate, up)) < 1e-5,
        "swiglu values"
    );
    let gate = tensor(shape, 6, &device).mul_scalar(4.0).require_grad();
    let up = tensor(shape, 7, &device).require_grad();
    let r = tensor(shape, 8, &device);
    let ours = gpu_ops::swiglu(gate.clone(), up.clone()).expect("tracked");
    assert!(ours.is_tracked(), "recorded for autodiff");
    let want = swiglu_by_tensors(gate.clone(), up.clone());
    assert!(max_diff(ours.clone(), want.clone()) < 1e-5, "tracked swiglu values");
    let (g1, g2) = ((ours * r.clone()).sum().backward(), (want * r).sum().backward());
    assert!(max_diff(gate.grad(&g1).expect("∂gate"), gate.grad(&g2).expect("∂gate")) < 1e-5);
    assert!(max_diff(up.grad(&g1).expect("∂up"), up.grad(&g2).expect("∂up")) < 1e-5);

    // The rotary embedding: the heads' transposed view of a projection (as attention hands it
    // over), tables for 9 positions, values and the input's gradient.
    let (b, t, h, d) = (2, 9, 3, 16);
    let rope = lora_null::model::rope::RotaryEmbedding::plain(10_000.0, d);
    let (cos, sin) = rope.tables(0, t, &device);
    let y = tensor([b, t, h, d], 11, &device).require_grad();
    let r = tensor([b, h, t, d], 12, &device);
    let ours = gpu_ops::rotate(y.clone().swap_dims(1, 2), &cos, &sin).expect("tracked");
    assert!(ours.is_tracked(), "recorded for autodiff");
    let want = apply_rotary_by_tensors(y.clone().swap_dims(1, 2), &cos, &sin);
    assert!(max_diff(ours.clone(), want.clone()) < 1e-5, "rotation values");
    let (g1, g2) = ((ours * r.clone()).sum().backward(), (want * r).sum().backward());
    assert!(
        max_diff(y.grad(&g1).expect("∂y"), y.grad(&g2).expect("∂y")) < 1e-5,
        "rotation ∂y"
    );
    let (cos, sin) = (cos.inner(), sin.inner());
    let x = tensor([b, h, t, d], 13, &plain);
    let plain_rotation = gpu_ops::rotate_heads(x.clone(), cos.clone(), sin.clone(), false);
    assert!(max_diff(plain_rotation, apply_rotary_by_tensors(x, &cos, &sin)) < 1e-5);

    // What a training graph holds for its backward: eight norms and SwiGLUs in a row (SmolLM2's
    // width), through the kernels and through the formulation, measured in burn's memory pool.
    let in_use = || {
        use burn::backend::{Backend, Dispatch};
        let usage = Dispatch::memory_pool_usage(plain.as_dispatch()).expect("the GPU backend reports its pool");
        usage.bytes_in_use as f64
    };
    let (rows, dim) = (256, 576);
    let x0 = tensor([rows, dim], 9, &plain);
    let w = tensor([dim], 10, &device);
    let held = |kernels: bool| {
        let before = in_use();
        let x = x0.clone().autodiff().require_grad();
        let mut h = x.clone();
        for _ in 0..8 {
            let n = if kernels {
                gpu_ops::rms_norm(h.clone(), w.clone(), 1e-5, 0.0).expect("tracked")
            } else {
                rms_norm_by_tensors(h.clone(), w.clone(), 1e-5, 0.0)
            };
            h = if kernels {
                gpu_ops::swiglu(n, h).expect("tracked")
            } else {
                swiglu_by_tensors(n, h)
            };
        }
        let _ = h.clone().sum().into_scalar::<f32>();
        let bytes = in_use() - before;
        let grad = x.grad(&h.sum().backward()).expect("∂x");
        (bytes, grad)
    };
    let (with_kernels, g1) = held(true);
    let (with_tensors, g2) = held(false);
    let scale = g2.clone().abs().max().into_scalar::<f32>().max(1.0);
    assert!(max_diff(g1, g2) < 1e-4 * scale, "∂x through eight norms and SwiGLUs");
    eprintln!(
        "a training graph of 8 RMSNorm + SwiGLU on [{rows}, {dim}]: kernels hold {with_kernels:.0} bytes, tensors {with_tensors:.0}"
    );
    assert!(
        with_kernels < 0.6 * with_tensors,
        "the kernels' graph holds {with_kernels} bytes, the formulation's {with_tensors}"
    );

    // A frozen scale (the base's norms in LoRA training): only the input's gradient.
    let x = tensor([4, 64], 4, &device).require_grad();
    let w = tensor([64], 5, &device);
    let ours = gpu_ops::rms_norm(x.clone(), w.clone(), 1e-6, 0.0).expect("tracked");
    let want = rms_norm_by_tensors(x.clone(), w, 1e-6, 0.0);
    let (g1, g2) = (ours.sum().backward(), want.sum().backward());
    assert!(max_diff(x.grad(&g1).expect("∂x"), x.grad(&g2).expect("∂x")) < 1e-4);
}

/// Attention without the score matrix (`model::attention_kernel`) against its reference twin,
/// burn's formulation (`attention::attend_by_tensors`), both under autodiff on lavapipe: grouped
/// heads (8 query heads on 2 key/value heads), a causal mask and a sliding window, 37 and 70
/// tokens (ragged against the kernels' 32 rows per cube): the output and the queries', keys'
/// and values' gradients agree within f32 rounding. Then the memory a forward pass leaves for
/// the backward, read from burn's pool: the kernel keeps no `[B, H, T, T]` scores.
#[test]
fn attention_without_the_score_matrix_is_the_formulation_with_its_gradients() {
    use burn::backend::{Backend, Dispatch};
    use burn::tensor::Distribution;
    use lora_null::model::attention::attend_by_tensors;
    use lora_null::model::attention_kernel::attention;
    use lora_null::model::llama::causal_mask;

    let choice = pollster::block_on(select_device(DevicePreference::Wgpu));
    assert!(choice.adapter.is_some(), "no wgpu adapter: {:?}", choice.warning);
    let device = choice.device.clone();
    let (b, h, kvh, d) = (2, 8, 2, 32);
    let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().expect("f32");
    let rel = |a: &[f32], b: &[f32]| max_abs_diff(a, b) / b.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (t, window) in [(37, None), (70, Some(16))] {
        let mask = causal_mask(0, t, window, &device);
        let q0 = Tensor::<4>::random([b, h, t, d], Distribution::Normal(0.0, 1.0), &device);
        let k0 = Tensor::<4>::random([b, kvh, t, d], Distribution::Normal(0.0, 1.0), &device);
        let v0 = Tensor::<4>::random([b, kvh, t, d], Distribution::Normal(0.0, 1.0), &device);
        // A weighted sum, so every output element has its own gradient.
        let w = Tensor::<4>::random([b, h, t, d], Distribution::Normal(0.0, 1.0), &device);
        let scale = (d as f64).powf(-0.5);
        let run = |kernel: bool| {
            let (q, k, v) = (
                q0.clone().autodiff().require_grad(),
                k0.clone().autodiff().require_grad(),
                v0.clone().autodiff().require_grad(),
            );
            let y = if kernel {
                attention(q.clone(), k.clone(), v.clone(), &mask, scale).expect("the kernel takes it on wgpu")
            } else {
                attend_by_tensors(q.clone(), k.clone(), v.clone(), &mask, scale, None)
            };
            let grads = (y.clone() * w.clone().autodiff()).sum().backward();
            let grad = |x: &Tensor<4>| values(x.grad(&grads).expect("tracked"));
            [values(y), grad(&q), grad(&k), grad(&v)]
        };
        let (got, want) = (run(true), run(false));
        for (name, (g, w)) in ["output", "∂q", "∂k", "∂v"].iter().zip(got.iter().zip(&want)) {
            let r = rel(g, w);
            eprintln!("attention kernel, {t} tokens, window {window:?}: {name} {r:.1e} relative");
            assert!(
                r < 1e-5,
                "{t} tokens, window {window:?}: {name} differs by {r} of its largest value"
            );
        }
    }

    // Memory held after the forward, for the backward.
    let (t, h, kvh, d) = (256, 16, 4, 64);
    let mask = causal_mask(0, t, None, &device);
    let q0 = Tensor::<4>::random([1, h, t, d], Distribution::Normal(0.0, 1.0), &device);
    let k0 = Tensor::<4>::random([1, kvh, t, d], Distribution::Normal(0.0, 1.0), &device);
    let v0 = Tensor::<4>::random([1, kvh, t, d], Distribution::Normal(0.0, 1.0), &device);
    let in_use = || {
        let usage = Dispatch::memory_pool_usage(device.as_dispatch()).expect("the GPU backend reports its pool");
        usage.bytes_in_use as f64
    };
    let held = |kernel: bool| {
        let (q, k, v) = (
            q0.clone().autodiff().require_grad(),
            k0.clone().autodiff().require_grad(),
            v0.clone().autodiff().require_grad(),
        );
        <Dispatch as Backend>::sync(device.as_dispatch()).expect("sync");
        let before = in_use();
        let y = if kernel {
            attention(q, k, v, &mask, 0.125).expect("the kernel takes it on wgpu")
        } else {
            attend_by_tensors(q, k, v, &mask, 0.125, None)
        };
        <Dispatch as Backend>::sync(device.as_dispatch()).expect("sync");
        let bytes = in_use() - before;
        drop(y);
        bytes
    };
    let (kernel, formulation) = (held(true), held(false));
    let scores = (h * t * t * 4) as f64;
    eprintln!(
        "attention's forward holds {kernel:.0} bytes with the kernel, {formulation:.0} by tensor operations (one score matrix: {scores:.0})"
    );
    assert!(
        kernel < scores && formulation > scores,
        "the kernel holds {kernel} bytes, the formulation {formulation}: one [H, T, T] matrix is {scores}"
    );
}

/// In the browser cubecl keeps one exclusive page per allocation, in size classes, and a new
/// allocation takes a free page of any larger class when its own has none: a small tensor made
/// just after a large transient was freed pins the large page, and the next large transient
/// takes a new one. `release_free_gpu_memory` (what training calls before the adapter's new
/// values and moments are made) gives the small tensor a page of its own size. On lavapipe with
/// the browser's pools.
#[test]
fn freed_pages_go_back_before_long_lived_tensors_are_made() {
    use burn::backend::{Backend, Dispatch};
    use lora_null::device::{release_free_gpu_memory, wgpu_with_browser_pools};
    use lora_null::train::metrics::GpuMemory;
    // Another kind than `select_device` names lavapipe with, so this device has pools of its own.
    let device = wgpu_with_browser_pools(burn::tensor::DeviceKind::DefaultDevice)
        .expect("a wgpu device with the browser's pools");
    let sync = || Dispatch::sync(device.as_dispatch()).expect("the device finishes its work");
    let (big, small) = (16usize << 20, 64usize << 10);
    // A tensor computed on the device, so that it has a page (not a staging buffer) of its own.
    let made = |n: usize| {
        let t = Tensor::<1>::random([n], burn::tensor::Distribution::Default, &device).mul_scalar(2.0);
        sync();
        t
    };
    let reserved_after = |release: bool| {
        release_free_gpu_memory(&device);
        drop(made(big));
        sync();
        if release {
            release_free_gpu_memory(&device);
        }
        let kept = made(small);
        let again = made(big);
        let usage = GpuMemory::of(&device).expect("a GPU device reports its pools");
        drop((kept, again));
        sync();
        usage
    };
    let without = reserved_after(false);
    let with = reserved_after(true);
    // A tensor that took the large page is moved onto a page of its own by `on_own_page`.
    release_free_gpu_memory(&device);
    drop(made(big));
    sync();
    let kept = lora_null::device::on_own_page(made(small));
    release_free_gpu_memory(&device);
    let moved = GpuMemory::of(&device).expect("a GPU device reports its pools");
    drop(kept);
    let big_bytes = (big * 4) as f64;
    eprintln!("big transient {big_bytes} B: without the release {without:?}, with it {with:?}, moved {moved:?}");
    assert!(
        with.in_use as f64 >= big_bytes && (with.reserved as f64) < 1.7 * big_bytes,
        "with the release the small tensor should have its own small page: {with:?} for a {big_bytes} B transient"
    );
    assert!(
        (moved.reserved as f64) < 0.1 * big_bytes,
        "the copy should hold a small page and the large one go back: {moved:?}"
    );
    assert!(
        without.reserved as f64 > 1.9 * big_bytes,
        "without the release the small tensor was expected to pin the freed large page (cubecl's exclusive pools): {without:?}"
    );
}
