//! The engine in the browser (wasm-bindgen-test in headless Chromium, WebGPU on SwiftShader):
//! loads the tiny model from bytes, matches transformers' logits (and so the native CPU backend,
//! which matches them to 1e-5), runs one training step, and exports bytes PEFT can parse.
//! Run with `cargo test --target wasm32-unknown-unknown --test browser` (.cargo/config.toml sets
//! the runner and the browser flags).
#![cfg(target_arch = "wasm32")]

use lora_null::device::init_webgpu;
use lora_null::engine::{CalibOptions, EighCache, Inline, LoadedModel, TrainHooks};
use lora_null::io::ModelFiles;
use lora_null::io::dataset::parse_dataset;
use lora_null::io::peft::read_adapter;
use lora_null::io::safetensors::SaveDtype;
use lora_null::lora::{InitMethod, LoraConfig};
use lora_null::train::{StepMetrics, TrainConfig};
use wasm_bindgen_test::*;

#[path = "shared/train_reference.rs"]
mod train_reference;
use train_reference::TrainReference;

wasm_bindgen_test_configure!(run_in_browser);

/// SwiftShader's f32 kernels sum in other orders (and fuse multiply-adds differently) than
/// PyTorch's CPU kernels: ~1e-5 seen on logits of magnitude ~1; 1e-3 leaves headroom and still
/// catches a wrong rotation or norm (≥1e-2).
const WEBGPU_LOGIT_TOL: f32 = 1e-3;

/// Collects the steps of a run.
#[derive(Default)]
struct Steps(Vec<StepMetrics>);

impl TrainHooks for Steps {
    fn on_step(&mut self, m: &StepMetrics) {
        self.0.push(m.clone());
    }
}

/// Initialises `lora` (from `calib` where it needs statistics) and trains with `cfg`; the steps.
async fn tune(
    m: &mut LoadedModel,
    records: &[lora_null::io::dataset::Record],
    lora: LoraConfig,
    cfg: &TrainConfig,
    calib: Option<&lora_null::engine::Calibration>,
) -> Vec<StepMetrics> {
    let mut steps = Steps::default();
    m.fine_tune(
        records,
        lora,
        cfg,
        calib,
        &mut EighCache::default(),
        &Inline,
        &mut steps,
    )
    .await
    .unwrap();
    steps.0
}

/// One training step on two examples, seeded.
fn one_step() -> TrainConfig {
    TrainConfig {
        lr: 1e-3,
        steps: Some(1),
        batch: 2,
        max_len: 256,
        val_fraction: 0.0,
        seed: 1,
        ..TrainConfig::default()
    }
}

fn tiny_files() -> ModelFiles {
    let mut f = ModelFiles::new();
    f.insert(
        "config.json",
        include_bytes!("fixtures/tiny/llama/config.json").to_vec(),
    );
    f.insert(
        "tokenizer.json",
        include_bytes!("fixtures/tiny/llama/tokenizer.json").to_vec(),
    );
    f.insert(
        "tokenizer_config.json",
        include_bytes!("fixtures/tiny/llama/tokenizer_config.json").to_vec(),
    );
    f.insert(
        "model.safetensors",
        include_bytes!("fixtures/tiny/llama/model.safetensors").to_vec(),
    );
    f
}

#[wasm_bindgen_test]
async fn the_engine_on_webgpu_loads_trains_and_exports() {
    lora_null::wasm::use_simd_products();
    let choice = init_webgpu()
        .await
        .expect("WebGPU (Chromium needs --enable-unsafe-webgpu)");
    let mut m = LoadedModel::load(&tiny_files(), &choice.device).expect("tiny model loads from bytes");

    // Logits against transformers.
    let reference: serde_json::Value =
        serde_json::from_slice(include_bytes!("fixtures/tiny/llama/reference.json")).unwrap();
    let case = &reference["cases"][1];
    let ids: Vec<u32> = case["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let logits = lora_null::eval::logits(&m.model, &ids).await.unwrap();
    let vocab = logits.shape[1];
    let mut worst = 0f32;
    for (pos, row) in case["logits"].as_array().unwrap().iter().enumerate() {
        for (v, want) in row.as_array().unwrap().iter().enumerate() {
            worst = worst.max((logits.data[pos * vocab + v] - want.as_f64().unwrap() as f32).abs());
        }
    }
    assert!(
        worst < WEBGPU_LOGIT_TOL,
        "WebGPU logits differ from transformers by {worst}"
    );

    // Calibrate, initialise LoRA-Null, train one step.
    let records = parse_dataset("train.jsonl", include_bytes!("fixtures/e2e/train.jsonl")).unwrap();
    let opts = CalibOptions {
        samples: 4,
        seq_len: 32,
        ..CalibOptions::default()
    };
    let calib = m.calibrate(&records, &opts, &mut |_, _| {}).await.unwrap();
    let mut config = LoraConfig::new(InitMethod::Null, 4);
    config.seed = 1;
    let cfg = one_step();
    let steps = tune(&mut m, &records, config, &cfg, Some(&calib)).await;
    let step = &steps[0];
    assert!(step.loss.is_finite() && step.grad_norm > 0.0, "{step:?}");

    // Export, then parse what was written.
    let (files, doubled) = m.export_peft(SaveDtype::F32).await.unwrap();
    assert!(doubled);
    let get = |n: &str| files.iter().find(|(f, _)| f == n).unwrap().1.clone();
    let adapter = read_adapter(&get("adapter_config.json"), &get("adapter_model.safetensors")).unwrap();
    assert_eq!(adapter.config.r, 8);
    assert_eq!(adapter.modules.len(), 14);
}

/// The forward pass and training steps on the browser's WebGPU, repeated: the forward pass is
/// deterministic and a few steps lower the loss. Also prints timings for BENCHMARKS.md
/// (`scripts/bench.sh browser`) as JSON lines.
#[wasm_bindgen_test]
async fn repeated_forward_passes_agree_and_a_few_steps_lower_the_loss_on_webgpu() {
    lora_null::wasm::use_simd_products();
    let choice = init_webgpu().await.expect("WebGPU");
    let mut m = LoadedModel::load(&tiny_files(), &choice.device).unwrap();
    let ids: Vec<u32> = (0..64).map(|i| 3 + (i * 37) % 300).collect();
    let now = || web_sys::window().unwrap().performance().unwrap().now() / 1000.0;
    let first = lora_null::eval::forward_sync_probe(&m.model, &ids).await.unwrap();
    assert!(first.is_finite(), "the forward pass gives finite logits");
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = now();
        let again = lora_null::eval::forward_sync_probe(&m.model, &ids).await.unwrap();
        times.push(now() - t);
        assert_eq!(again, first, "the same input gives the same logits");
    }
    times.sort_by(f64::total_cmp);
    console_log!(
        "{}",
        serde_json::json!({"bench": "forward", "device": format!("browser {}", choice.description), "tokens": 64,
            "median_seconds": times[2], "tokens_per_second": 64.0 / times[2]})
    );
    // Where the time goes: building the forward graph (the wasm side, on this thread) vs waiting
    // for the GPU's answer (awaited, so the page is free meanwhile).
    let (mut build, mut wait) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = now();
        let input = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(ids.iter().map(|&x| x as i64).collect(), [1, ids.len()]),
            &choice.device,
        );
        let out = m.model.forward(input).sum();
        let built = now();
        out.into_scalar_async::<f32>().await.unwrap();
        build.push(built - t);
        wait.push(now() - built);
    }
    console_log!(
        "{}",
        serde_json::json!({"bench": "forward_split", "device": format!("browser {}", choice.description),
            "graph_seconds": build, "await_seconds": wait})
    );
    let records = parse_dataset("train.jsonl", include_bytes!("fixtures/e2e/train.jsonl")).unwrap();
    let mut config = LoraConfig::new(InitMethod::Lora, 4);
    config.seed = 1;
    // The whole set (16 examples) every step, so the losses are comparable step to step.
    let cfg = TrainConfig {
        lr: 1e-2,
        steps: Some(6),
        batch: 16,
        max_len: 256,
        val_fraction: 0.0,
        warmup_ratio: 0.0,
        seed: 1,
        ..TrainConfig::default()
    };
    let s = &tune(&mut m, &records, config, &cfg, None).await;
    assert_eq!(s.len(), 6);
    assert!(
        s.iter().all(|x| x.loss.is_finite() && x.tokens_per_second > 0.0),
        "{s:?}"
    );
    assert!(
        s[5].loss < s[0].loss,
        "six steps on the same batch lower its loss: {} → {}",
        s[0].loss,
        s[5].loss
    );
    let mut timed: Vec<&StepMetrics> = s[1..].iter().collect();
    timed.sort_by(|a, b| a.step_seconds.total_cmp(&b.step_seconds));
    console_log!(
        "{}",
        serde_json::json!({"bench": "train", "device": format!("browser {}", choice.description), "batch": 16,
            "median_seconds": timed[2].step_seconds, "tokens_per_second": timed[2].tokens_per_second})
    );
}

/// The GPU path's own training kernels (RMSNorm, SwiGLU and the rotation, `model::gpu_ops`)
/// against their tensor twins on the browser's WebGPU, which has no kernel fusion: the same
/// losses and gradient norms over three training steps from the same start. Prints both runs'
/// step times as JSON lines (`"gpu_kernels": true | false`) for BENCHMARKS.md.
#[wasm_bindgen_test]
async fn the_gpu_training_kernels_on_webgpu_are_their_tensor_twins_and_are_timed() {
    use lora_null::model::gpu_ops::use_kernels;
    lora_null::wasm::use_simd_products();
    let choice = init_webgpu().await.expect("WebGPU");
    let records = parse_dataset("train.jsonl", include_bytes!("fixtures/e2e/train.jsonl")).unwrap();
    let cfg = TrainConfig {
        lr: 1e-2,
        steps: Some(3),
        batch: 4,
        max_len: 256,
        val_fraction: 0.0,
        warmup_ratio: 0.0,
        seed: 1,
        ..TrainConfig::default()
    };
    let mut runs = Vec::new();
    for kernels in [true, false] {
        use_kernels(kernels);
        let mut m = LoadedModel::load(&tiny_files(), &choice.device).unwrap();
        let mut config = LoraConfig::new(InitMethod::Lora, 4);
        config.seed = 1;
        let steps = tune(&mut m, &records, config, &cfg, None).await;
        let seconds: Vec<f64> = steps.iter().map(|s| s.step_seconds).collect();
        console_log!(
            "{}",
            serde_json::json!({"bench": "gpu_kernels", "device": format!("browser {}", choice.description),
                "gpu_kernels": kernels, "train_batch": 4, "step_seconds": seconds})
        );
        runs.push(steps);
    }
    use_kernels(true);
    assert_eq!(runs[0].len(), 3);
    for (a, b) in runs[0].iter().zip(&runs[1]) {
        let rel = |x: f64, y: f64| (x - y).abs() / y.abs().max(1e-12);
        assert!(
            rel(a.loss, b.loss) < 1e-4,
            "step {}: loss {} against {}",
            a.step,
            a.loss,
            b.loss
        );
        assert!(
            rel(a.grad_norm, b.grad_norm) < 1e-3,
            "step {}: gradient norm {} against {}",
            a.step,
            a.grad_norm,
            b.grad_norm
        );
    }
}

/// A packed base on the browser's WebGPU (the tiny llama as Q4_0 GGUF): its matrices, the
/// embedding included, live on the GPU in their stored precision and are dequantised there when
/// they run, training goes block by block, and both give what the same file decoded to f32
/// gives; so does the fused dequantising product (`model::dequant_kernel`, WGSL here).
#[wasm_bindgen_test]
async fn a_packed_base_on_webgpu_computes_and_trains_as_the_f32_base() {
    use lora_null::engine::BaseStorage;
    lora_null::wasm::use_simd_products();
    let choice = init_webgpu().await.expect("WebGPU");
    let mut files = ModelFiles::new();
    files.insert(
        "q4_0.gguf",
        include_bytes!("fixtures/tiny/llama-gguf/q4_0.gguf").to_vec(),
    );
    let records = parse_dataset("train.jsonl", include_bytes!("fixtures/e2e/train.jsonl")).unwrap();
    let ids: Vec<u32> = (0..24).map(|i| 3 + (i * 37) % 300).collect();
    let mut results = Vec::new();
    // The packed base twice: dequantised for burn's product, then inside the fused product.
    for (base, fused) in [
        (BaseStorage::F32, false),
        (BaseStorage::Packed, false),
        (BaseStorage::Packed, true),
    ] {
        lora_null::model::dequant::use_fused_product(fused);
        let mut m = LoadedModel::load_with_progress(&files, &choice, base, &mut |_| {})
            .await
            .unwrap();
        assert_eq!(m.model.has_packed_weights(), base == BaseStorage::Packed);
        let table = m.model.model.embed_tokens.packed.as_ref();
        assert_eq!(
            table.map(|p| p.is_on_device()),
            (base == BaseStorage::Packed).then_some(true),
            "the packed table lives on the GPU"
        );
        let logits = lora_null::eval::logits(&m.model, &ids).await.unwrap().data;
        let cfg = one_step();
        let mut lora = LoraConfig::new(InitMethod::Gaussian, 4);
        lora.seed = 3;
        let steps = tune(&mut m, &records, lora, &cfg, None).await;
        results.push((logits, steps[0].loss, steps[0].grad_norm));
    }
    lora_null::model::dequant::use_fused_product(false);
    let dense = &results[0];
    for (packed, way) in [(&results[1], "dequantised"), (&results[2], "fused product")] {
        let worst = dense
            .0
            .iter()
            .zip(&packed.0)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < WEBGPU_LOGIT_TOL, "packed logits ({way}) differ by {worst}");
        // The same step in another order of f32 sums (block by block, the loss in pieces).
        assert!(
            (packed.1 - dense.1).abs() <= 1e-4 * dense.1,
            "{way}: loss {} vs {}",
            packed.1,
            dense.1
        );
        assert!(
            (packed.2 - dense.2).abs() <= 1e-3 * dense.2,
            "{way}: gradient norm {} vs {}",
            packed.2,
            dense.2
        );
    }
}

/// The host maths in wasm, with the SIMD128 kernels the engine's workers switch on: the partial
/// eigensolver behind LoRA-Null's null basis converges to true eigenpairs of a 768-wide
/// covariance, and an f32 product of SmolLM2's MLP shape through faer and through burn's CPU
/// backend agree; the timings are printed. (`gemm` keeps the kernel it picked at its first
/// product, so the scalar baseline is main's build of this test, run beside it: BENCHMARKS.md,
/// "SIMD128 in wasm".)
#[wasm_bindgen_test]
fn host_maths_in_wasm_are_right_and_timed() {
    use lora_null::linalg::partial::{PartialOptions, smallest_eigenpairs};
    use lora_null::linalg::{Matrix, Rng};
    lora_null::wasm::use_simd_products();
    let now = || web_sys::window().unwrap().performance().unwrap().now() / 1000.0;
    // A covariance with a decaying spectrum (column j scaled by e^(−j/96)).
    let (n, d, r) = (1536, 768, 16);
    let mut rng = Rng::new(7);
    let x = Matrix::from_fn(n, d, |_, j| rng.normal() * (-(j as f64) / 96.0).exp());
    let t = now();
    let c = x.t().matmul(&x);
    let t_gram = now() - t;
    let opts = PartialOptions {
        full_below: 0,
        ..Default::default()
    };
    let t = now();
    let e = smallest_eigenpairs(&c, r, &opts).unwrap();
    let t_eigen = now() - t;
    assert!(e.converged, "{} iterations", e.iterations);
    // Each pair satisfies C v = λ v to the solver's tolerance (relative to ‖C‖_F).
    let norm = c.frobenius_sq().sqrt();
    let cv = c.matmul(&e.vectors);
    for (j, &l) in e.values.iter().enumerate() {
        let res: f64 = (0..d)
            .map(|i| (cv.data[i * r + j] - l * e.vectors.data[i * r + j]).powi(2))
            .sum();
        assert!(res.sqrt() / norm < 1e-10, "pair {j}: residual {}", res.sqrt() / norm);
    }
    let t = now();
    let full = lora_null::linalg::decompose::eigh(&c).unwrap();
    let t_eigh = now() - t;
    assert_eq!(full.values.len(), d);

    // An f32 product of the model's shape, through faer and through burn's CPU backend.
    let (m, k, p) = (512, 576, 1536);
    let vals = |len: usize, step: u64| -> Vec<f32> {
        (0..len as u64)
            .map(|i| ((i * step) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    };
    let (a, w) = (vals(m * k, 7919), vals(k * p, 104729));
    let mut y = vec![0f32; m * p];
    let t = now();
    lora_null::model::cpu_linear::matmul_into(&a, &w, &mut y, (m, k, p), faer::Par::Seq);
    let t_faer = now() - t;
    use burn::tensor::{Device, Tensor, TensorData};
    let device = Device::flex();
    let (ta, tw) = (
        Tensor::<2>::from_data(TensorData::new(a.clone(), [m, k]), &device),
        Tensor::<2>::from_data(TensorData::new(w.clone(), [k, p]), &device),
    );
    let t = now();
    let y_burn = ta.matmul(tw).into_data().try_to_vec::<f32>().unwrap();
    let t_burn = now() - t;
    let worst = y_burn.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-3, "burn's and faer's products differ by {worst}");
    // One entry against a plain f64 sum.
    let want: f64 = (0..k).map(|l| f64::from(a[7 * k + l]) * f64::from(w[l * p + 11])).sum();
    assert!((f64::from(y[7 * p + 11]) - want).abs() < 1e-3 * want.abs().max(1.0));
    let gflops = |s: f64| 2.0 * (m * k * p) as f64 / s / 1e9;
    console_log!(
        "host maths in wasm (SIMD128 kernels {}): XᵀX {n}x{d} f64 {t_gram:.3} s; partial eigenpairs d {d} r {r}, {} iterations, {t_eigen:.3} s; \
         full eigh d {d} {t_eigh:.3} s; f32 product {m}x{k}x{p}: faer {:.2} GFLOP/s, burn CPU backend {:.2} GFLOP/s",
        gemm::get_wasm_simd128(),
        e.iterations,
        gflops(t_faer),
        gflops(t_burn),
    );
}

/// The page's CPU fallback trains as PyTorch does: the tiny llama on burn's CPU backend in wasm
/// (the products, the fused element-wise kernels and their backward of `model::cpu_linear` and
/// `model::cpu_ops`, with the SIMD128 kernels on), four AdamW steps from given factors against
/// PyTorch's run with the native test's tolerances (`tests/shared/train_reference.rs`), whole
/// graph and block by block.
#[wasm_bindgen_test]
async fn training_on_the_cpu_backend_in_wasm_matches_pytorch() {
    use burn::tensor::{Device, Tensor};
    lora_null::wasm::use_simd_products();
    let probe = Tensor::<2>::zeros([2, 2], &Device::flex());
    assert!(
        lora_null::model::cpu_linear::applies(&probe) && gemm::get_wasm_simd128(),
        "the CPU backend's own products run in wasm, on the SIMD128 kernels"
    );
    let r = TrainReference(serde_json::from_str(include_str!("fixtures/tiny/train/reference.json")).unwrap());
    for blockwise in [false, true] {
        let mut m = LoadedModel::load(&tiny_files(), &Device::flex()).unwrap();
        r.attach_initial_factors(&mut m);
        let mut steps = Steps::default();
        m.train(r.data(), &r.config(blockwise), None, &mut steps).await.unwrap();
        console_log!(
            "CPU backend in wasm against PyTorch (blockwise {blockwise}): {}",
            r.check(&steps.0, &m)
        );
    }
}
