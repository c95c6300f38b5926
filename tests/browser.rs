//! The engine in the browser (wasm-bindgen-test in headless Chromium, WebGPU on SwiftShader):
//! loads the tiny model from bytes, matches transformers' logits (and so the native CPU backend,
//! which matches them to 1e-5), runs one training step, and exports bytes PEFT can parse.
//! Run with `cargo test --target wasm32-unknown-unknown --test browser` (.cargo/config.toml sets
//! the runner and the browser flags).
#![cfg(target_arch = "wasm32")]

use lora_null::calib::EighCache;
use lora_null::device::init_webgpu;
use lora_null::engine::{CalibOptions, LoadedModel};
use lora_null::io::ModelFiles;
use lora_null::io::dataset::parse_dataset;
use lora_null::io::peft::read_adapter;
use lora_null::io::safetensors::SaveDtype;
use lora_null::linalg::jobs::Inline;
use lora_null::lora::{InitMethod, LoraConfig};
use lora_null::model::Target;
use lora_null::train::{TrainConfig, Trainer, prepare};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

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
    assert!(worst < 1e-3, "WebGPU logits differ from transformers by {worst}");

    // Calibrate, initialise LoRA-Null, train one step.
    let records = parse_dataset("train.jsonl", include_bytes!("fixtures/e2e/train.jsonl")).unwrap();
    let opts = CalibOptions {
        samples: 4,
        seq_len: 32,
        ..CalibOptions::default()
    };
    let calib = m.calibrate(&records, &opts, &mut |_, _| {}).await.unwrap();
    let config = LoraConfig {
        method: InitMethod::Null,
        rank: 4,
        alpha: 4.0,
        use_rslora: false,
        targets: Target::ALL.to_vec(),
        seed: 1,
    };
    m.init_adapters(config, Some(&calib), &mut EighCache::default(), &Inline, &mut |_, _| {})
        .await
        .unwrap();
    let data = prepare(&records, &m.tokenizer, 256, 0.0, 1).unwrap();
    let cfg = TrainConfig {
        lr: 1e-3,
        steps: Some(1),
        batch: 2,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(m.model.clone(), cfg, data, m.tokenizer.pad_or_eos(), true).unwrap();
    let step = trainer.step().await.unwrap();
    assert!(step.loss.is_finite() && step.grad_norm > 0.0, "{step:?}");
    m.model = trainer.into_model();

    // Export, then parse what was written.
    let (files, doubled) = m.export_peft("tiny-llama", SaveDtype::F32).await.unwrap();
    assert!(doubled);
    let get = |n: &str| files.iter().find(|(f, _)| f == n).unwrap().1.clone();
    let adapter = read_adapter(&get("adapter_config.json"), &get("adapter_model.safetensors")).unwrap();
    assert_eq!(adapter.config.r, 8);
    assert_eq!(adapter.modules.len(), 14);
}

/// Timings for BENCHMARKS.md (scripts/bench.sh browser): the tiny model's forward pass over 64
/// tokens and one training step (r 4, batch 2), on the browser's WebGPU. Printed as JSON lines.
#[wasm_bindgen_test]
async fn bench_tiny_forward_and_train_step_on_webgpu() {
    let choice = init_webgpu().await.expect("WebGPU");
    let mut m = LoadedModel::load(&tiny_files(), &choice.device).unwrap();
    let ids: Vec<u32> = (0..64).map(|i| 3 + (i * 37) % 300).collect();
    let now = || web_sys::window().unwrap().performance().unwrap().now() / 1000.0;
    lora_null::eval::forward_sync_probe(&m.model, &ids).await.unwrap();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = now();
        lora_null::eval::forward_sync_probe(&m.model, &ids).await.unwrap();
        times.push(now() - t);
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
    let config = LoraConfig {
        method: InitMethod::Lora,
        rank: 4,
        alpha: 4.0,
        use_rslora: false,
        targets: Target::ALL.to_vec(),
        seed: 1,
    };
    m.init_adapters(config, None, &mut EighCache::default(), &Inline, &mut |_, _| {})
        .await
        .unwrap();
    let records = parse_dataset("train.jsonl", include_bytes!("fixtures/e2e/train.jsonl")).unwrap();
    let data = prepare(&records, &m.tokenizer, 256, 0.0, 1).unwrap();
    let cfg = TrainConfig {
        lr: 1e-3,
        steps: Some(6),
        batch: 2,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(m.model.clone(), cfg, data, m.tokenizer.pad_or_eos(), true).unwrap();
    trainer.step().await.unwrap();
    let mut steps = Vec::new();
    for _ in 0..5 {
        let t = now();
        let s = trainer.step().await.unwrap();
        steps.push((now() - t, s.tokens_per_second));
    }
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    console_log!(
        "{}",
        serde_json::json!({"bench": "train", "device": format!("browser {}", choice.description),
            "median_seconds": steps[2].0, "tokens_per_second": steps[2].1})
    );
}
