//! Initialisation, training and export on the tiny model: every method starts from the base
//! function, training moves only the adapters, and the PEFT export reproduces the trained model
//! on the original base.

use burn::tensor::Device;
use lora_null::calib::EighCache;
use lora_null::engine::{CalibOptions, Calibration, LoadedModel};
use lora_null::io::dataset::Record;
use lora_null::io::safetensors::SaveDtype;
use lora_null::linalg::jobs::Inline;
use lora_null::lora::{InitMethod, LoraConfig};
use lora_null::model::Target;
use lora_null::train::{TrainConfig, TrainError, Trainer, prepare};

use crate::common::*;

/// English prose for calibration and training on the tiny tokenizer.
pub const PROSE: &str = "The river rises in the hills and runs west to the sea. Along its banks lie farms, \
small towns and old mills. In spring the water is high and fast; in late summer it is low and slow. \
Fishermen know the deep pools under the bridges, and children swim near the gravel bars. The valley \
has been settled for a long time, and its roads follow the water from one village to the next.";

pub fn tiny() -> LoadedModel {
    load(&hf_files("tiny/llama"), &Device::flex())
}

pub fn calibrate(m: &LoadedModel) -> Calibration {
    let opts = CalibOptions {
        samples: 6,
        seq_len: 32,
        seed: 233,
        ..CalibOptions::default()
    };
    pollster::block_on(m.calibrate(&[Record::Text(PROSE.repeat(3))], &opts, &mut |_, _| {})).unwrap()
}

#[test]
fn a_cancelled_calibration_stops_after_the_current_window() {
    let m = tiny();
    let opts = CalibOptions {
        samples: 6,
        seq_len: 32,
        ..CalibOptions::default()
    };
    let windows = std::cell::Cell::new(0);
    let r = pollster::block_on(m.calibrate_until(
        &[Record::Text(PROSE.repeat(3))],
        &opts,
        &mut |d, _| windows.set(d),
        &|| windows.get() >= 2,
    ));
    assert!(
        matches!(
            r,
            Err(lora_null::engine::EngineError::Calib(
                lora_null::calib::CalibError::Cancelled
            ))
        ),
        "expected a cancellation, got {:?}",
        r.map(|c| c.corpus_tokens)
    );
    assert_eq!(windows.get(), 2, "the run went on after the cancel");
}

pub fn config(method: InitMethod, rank: usize, alpha: f64) -> LoraConfig {
    LoraConfig {
        method,
        rank,
        alpha,
        use_rslora: false,
        targets: Target::ALL.to_vec(),
        seed: 7,
    }
}

/// Initialises `method` on a fresh tiny model.
pub fn init(method: InitMethod, alpha: f64) -> LoadedModel {
    let mut m = tiny();
    let calib = calibrate(&m);
    pollster::block_on(m.init_adapters(
        config(method, 4, alpha),
        Some(&calib),
        &mut EighCache::default(),
        &Inline,
        &mut |_, _| {},
    ))
    .unwrap();
    m
}

fn max_rel_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    let scale = b.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| max_abs_diff(x, y)).fold(0.0, f32::max) / scale
}

const IDS: [u32; 9] = [5, 77, 120, 33, 250, 9, 64, 180, 2];

#[test]
fn every_method_leaves_the_logits_unchanged_at_initialisation() {
    let base = logits_rows(&tiny(), &IDS);
    for method in InitMethod::ALL {
        for alpha in [4.0, 8.0] {
            let m = init(method, alpha);
            let d = max_rel_diff(&logits_rows(&m, &IDS), &base);
            // f32 residual + f32 factors: rounding only, ~1e-7 relative; 1e-4 as the issue states.
            assert!(
                d < 1e-4,
                "{} with scale {}: relative logit change {d}",
                method.name(),
                alpha / 4.0
            );
        }
    }
}

fn instruction_data() -> Vec<Record> {
    let words = [
        "river", "hills", "water", "bridge", "valley", "village", "spring", "summer", "town", "mill",
    ];
    (0..40)
        .map(|i| Record::Instruction {
            instruction: format!("Repeat the word {}.", words[i % words.len()]),
            input: String::new(),
            output: format!(" {} {}", words[i % words.len()], words[(i * 3) % words.len()]),
        })
        .collect()
}

fn trainer(m: &LoadedModel, method: InitMethod, steps: usize, lr: f64) -> Trainer {
    let data = prepare(&instruction_data(), &m.tokenizer, 256, 0.1, 1).unwrap();
    let cfg = TrainConfig {
        lr,
        steps: Some(steps),
        batch: 4,
        warmup_ratio: 0.0,
        ..TrainConfig::default()
    };
    Trainer::new(
        m.model.clone(),
        cfg,
        data,
        m.tokenizer.pad_or_eos(),
        method.trains_down(),
    )
    .unwrap()
}

#[test]
fn training_lowers_the_loss_and_keeps_the_base_frozen() {
    let m = init(InitMethod::Lora, 8.0);
    let base_w = read(m.model.linear(0, Target::Q).weight_out_in());
    let mut t = trainer(&m, InitMethod::Lora, 40, 1e-2);
    let first = pollster::block_on(t.step()).unwrap();
    let mut last = first.clone();
    while !t.finished() {
        last = pollster::block_on(t.step()).unwrap();
    }
    assert!(last.loss < 0.5 * first.loss, "loss {} → {}", first.loss, last.loss);
    assert!(last.tokens_per_second > 0.0 && first.grad_norm > 0.0);
    let val = pollster::block_on(t.validate()).unwrap().unwrap();
    assert!(val.is_finite());
    let trained = t.into_model();
    assert_eq!(
        read(trained.linear(0, Target::Q).weight_out_in()),
        base_w,
        "the base weight moved"
    );
}

fn read(t: burn::tensor::Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

#[test]
fn null_v2_trains_only_the_up_projection() {
    let m = init(InitMethod::NullV2, 4.0);
    let a0 = read(m.model.linear(1, Target::Down).lora.as_ref().unwrap().lora_a.val());
    let b0 = read(m.model.linear(1, Target::Down).lora.as_ref().unwrap().lora_b.val());
    let mut t = trainer(&m, InitMethod::NullV2, 3, 1e-2);
    for _ in 0..3 {
        pollster::block_on(t.step()).unwrap();
    }
    let trained = t.into_model();
    let lora = trained.linear(1, Target::Down).lora.as_ref().unwrap();
    assert_eq!(read(lora.lora_a.val()), a0, "A (down projection) must stay frozen");
    assert_ne!(read(lora.lora_b.val()), b0, "B (up projection) must train");
}

#[test]
fn a_diverging_run_stops_with_an_error_and_keeps_the_last_good_state() {
    let m = init(InitMethod::Lora, 8.0);
    let mut t = trainer(&m, InitMethod::Lora, 50, 1e30);
    let mut failed = None;
    for _ in 0..50 {
        let before = pollster::block_on(t.checkpoint()).unwrap();
        match pollster::block_on(t.step()) {
            Ok(_) => {}
            Err(e @ TrainError::NonFinite { .. }) => {
                failed = Some((e, before));
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    let (err, before) = failed.expect("lr 1e30 must diverge");
    assert!(err.to_string().contains("Lower --lr"), "{err}");
    let after = pollster::block_on(t.checkpoint()).unwrap();
    assert_eq!(after, before, "a failed step must not change the adapter");
    assert!(after.factors.values().all(|f| f.data.iter().all(|v| v.is_finite())));
}

#[test]
fn a_resumed_run_continues_exactly() {
    let m = init(InitMethod::Pissa, 4.0);
    let mut straight = trainer(&m, InitMethod::Pissa, 4, 5e-3);
    for _ in 0..4 {
        pollster::block_on(straight.step()).unwrap();
    }
    let mut first = trainer(&m, InitMethod::Pissa, 4, 5e-3);
    for _ in 0..2 {
        pollster::block_on(first.step()).unwrap();
    }
    let bytes = pollster::block_on(first.checkpoint()).unwrap().to_bytes().unwrap();
    let mut resumed = trainer(&m, InitMethod::Pissa, 4, 5e-3);
    resumed
        .restore(&lora_null::train::TrainState::from_bytes(&bytes).unwrap())
        .unwrap();
    for _ in 0..2 {
        pollster::block_on(resumed.step()).unwrap();
    }
    let a = pollster::block_on(straight.checkpoint()).unwrap();
    let b = pollster::block_on(resumed.checkpoint()).unwrap();
    assert_eq!(a.step, b.step);
    for (k, fa) in &a.factors {
        assert!(
            max_abs_diff(&fa.data, &b.factors[k].data) < 1e-6,
            "{k:?} differs after resume"
        );
    }
}

/// Trains a few steps, exports, and loads the export onto the ORIGINAL base.
fn export_round_trip(method: InitMethod) {
    let mut m = init(method, 8.0);
    let mut t = trainer(&m, method, 3, 5e-3);
    for _ in 0..3 {
        pollster::block_on(t.step()).unwrap();
    }
    m.model = t.into_model();
    let trained = logits_rows(&m, &IDS);
    let (files, doubled) = pollster::block_on(m.export_peft("tiny-llama", SaveDtype::F32)).unwrap();
    assert_eq!(
        doubled,
        method.changes_base() && method != InitMethod::NullV2,
        "{}: rank doubling",
        method.name()
    );
    let get = |n: &str| files.iter().find(|(f, _)| f == n).unwrap().1.clone();
    let config: serde_json::Value = serde_json::from_slice(&get("adapter_config.json")).unwrap();
    assert_eq!(config["r"], if doubled { 8 } else { 4 });
    assert_eq!(config["peft_type"], "LORA");
    let mut fresh = tiny();
    fresh
        .attach_peft(&get("adapter_config.json"), &get("adapter_model.safetensors"))
        .unwrap();
    let d = max_rel_diff(&logits_rows(&fresh, &IDS), &trained);
    assert!(
        d < 1e-4,
        "{}: exported adapter on the original base differs by {d}",
        method.name()
    );
    assert!(
        max_rel_diff(&trained, &logits_rows(&tiny(), &IDS)) > 1e-5,
        "{}: training changed nothing",
        method.name()
    );

    // The merged model is a plain Hugging Face folder with the same function.
    let merged = pollster::block_on(m.hf_model_files(true, SaveDtype::F32)).unwrap();
    let mut files = lora_null::io::ModelFiles::new();
    for (n, b) in merged {
        files.insert(&n, b);
    }
    let reloaded = load(&files, &Device::flex());
    let d = max_rel_diff(&logits_rows(&reloaded, &IDS), &trained);
    assert!(d < 1e-4, "{}: merged model differs by {d}", method.name());
}

#[test]
fn exported_adapters_reproduce_the_trained_model_on_the_original_base() {
    for method in [
        InitMethod::Lora,
        InitMethod::Pissa,
        InitMethod::Olora,
        InitMethod::CordaKpm,
        InitMethod::Null,
        InitMethod::NullV2,
        InitMethod::NullZero,
    ] {
        export_round_trip(method);
    }
}

#[test]
fn the_init_export_is_a_residual_base_plus_an_adapter_that_rebuild_the_base() {
    let m = init(InitMethod::Null, 4.0);
    let files = pollster::block_on(m.export_init("tiny-llama", SaveDtype::F32)).unwrap();
    let mut residual = lora_null::io::ModelFiles::new();
    for (n, b) in files.iter().filter(|(n, _)| n.starts_with("residual_model/")) {
        residual.insert(n, b.clone());
    }
    let get = |n: &str| files.iter().find(|(f, _)| f == n).unwrap().1.clone();
    let mut r = load(&residual, &Device::flex());
    let without = logits_rows(&r, &IDS);
    r.attach_peft(
        &get("init_adapter/adapter_config.json"),
        &get("init_adapter/adapter_model.safetensors"),
    )
    .unwrap();
    let base = logits_rows(&tiny(), &IDS);
    assert!(max_rel_diff(&logits_rows(&r, &IDS), &base) < 1e-4);
    assert!(
        max_rel_diff(&without, &base) > 1e-6,
        "the residual alone must differ from the base"
    );
}
