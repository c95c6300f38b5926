//! Initialisation, training and export on the tiny model: every method starts from the base
//! function, training moves only the adapters, and the PEFT export reproduces the trained model
//! on the original base.

use burn::tensor::Device;
use lora_null::engine::{
    CalibOptions, Calibration, CheckpointKind, EighCache, EngineError, Inline, LoadedModel, TrainHooks, TrainReport,
};
use lora_null::hint::{Hint, Setting};
use lora_null::io::dataset::Record;
use lora_null::io::safetensors::SaveDtype;
use lora_null::lora::{InitMethod, LoraConfig};
use lora_null::model::Target;
use lora_null::train::{StepMetrics, TrainConfig, TrainError, TrainState};

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
        targets: Target::DEFAULT.to_vec(),
        seed: 7,
    }
}

/// Initialises `method` on a fresh tiny llama.
pub fn init(method: InitMethod, alpha: f64) -> LoadedModel {
    init_on("tiny/llama", method, alpha)
}

/// Initialises `method` on a fresh tiny model of the fixture folder `dir`.
pub fn init_on(dir: &str, method: InitMethod, alpha: f64) -> LoadedModel {
    let mut m = load(&hf_files(dir), &Device::flex());
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
    assert_eq!(a.len(), b.len(), "the same number of positions");
    let scale = b.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| max_abs_diff(x, y)).fold(0.0, f32::max) / scale
}

const IDS: [u32; 9] = [5, 77, 120, 33, 250, 9, 64, 180, 2];

/// f32 residual + f32 factors reproduce the base to rounding (~1e-7 relative on the logits);
/// 1e-4 relative is the bound the initialisation issue set.
const INIT_LOGIT_TOL: f32 = 1e-4;
/// An exported adapter applied to the original base (or merged into it) recomputes the trained
/// model in another order of f32 operations: ~1e-6 relative seen; 1e-4 leaves headroom.
const EXPORT_LOGIT_TOL: f32 = 1e-4;
/// Training must move the logits by more than rounding for the export checks to mean anything.
const TRAINING_MOVED_MIN: f32 = 1e-5;
/// LoRA-Null's residual W − W·P·Pᵀ removes only the null directions, which calibration text
/// barely excites: the logits move little, but by more than rounding (~1e-7).
const RESIDUAL_MOVED_MIN: f32 = 1e-6;
/// A resumed run replays the same f32 operations: parameters agree to a few ulps.
const RESUME_TOL: f32 = 1e-6;

#[test]
fn every_method_leaves_the_logits_unchanged_at_initialisation() {
    let base = logits_rows(&tiny(), &IDS);
    for method in InitMethod::ALL {
        for alpha in [4.0, 8.0] {
            let m = init(method, alpha);
            let d = max_rel_diff(&logits_rows(&m, &IDS), &base);
            assert!(
                d < INIT_LOGIT_TOL,
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

/// Everything a run tells its hooks.
#[derive(Default)]
struct Recorder {
    steps: Vec<StepMetrics>,
    checkpoints: Vec<(CheckpointKind, TrainState)>,
}

impl TrainHooks for Recorder {
    fn on_step(&mut self, m: &StepMetrics) {
        self.steps.push(m.clone());
    }
    fn on_checkpoint(&mut self, kind: CheckpointKind, bytes: Vec<u8>) -> Result<(), String> {
        let state = TrainState::from_bytes(&bytes).map_err(|e| e.to_string())?;
        self.checkpoints.push((kind, state));
        Ok(())
    }
}

fn train_config(steps: usize, lr: f64) -> TrainConfig {
    TrainConfig {
        lr,
        steps: Some(steps),
        batch: 4,
        max_len: 256,
        val_fraction: 0.1,
        warmup_ratio: 0.0,
        checkpoint_every: 1,
        ..TrainConfig::default()
    }
}

/// Trains the adapters of `m` through the engine, recording what the hooks see.
fn train(
    m: &mut LoadedModel,
    cfg: &TrainConfig,
    resume: Option<&TrainState>,
) -> (Result<TrainReport, EngineError>, Recorder) {
    let data = m.training_data(&instruction_data(), cfg).unwrap();
    let mut rec = Recorder::default();
    let r = pollster::block_on(m.train(data, cfg, resume, &mut rec));
    (r, rec)
}

#[test]
fn training_lowers_the_loss_and_keeps_the_base_frozen() {
    let mut m = init(InitMethod::Lora, 8.0);
    let base_w = read(m.model.linear(0, Target::Q).unwrap().base.weight_out_in());
    let (report, rec) = train(&mut m, &train_config(40, 1e-2), None);
    let report = report.unwrap();
    assert_eq!((report.steps, report.stopped), (40, false));
    let (first, last) = (&rec.steps[0], rec.steps.last().unwrap());
    assert!(last.loss < 0.5 * first.loss, "loss {} → {}", first.loss, last.loss);
    assert!(last.tokens_per_second > 0.0 && first.grad_norm > 0.0);
    assert!(last.val_loss.is_some_and(f64::is_finite), "the last step validates");
    assert!(
        rec.steps[..39].iter().all(|s| s.val_loss.is_none()),
        "eval_every 0: only the last"
    );
    assert_eq!(
        read(m.model.linear(0, Target::Q).unwrap().base.weight_out_in()),
        base_w,
        "the base weight moved"
    );
}

fn read(t: burn::tensor::Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

#[test]
fn null_v2_trains_only_the_up_projection() {
    let mut m = init(InitMethod::NullV2, 4.0);
    let factors = |m: &LoadedModel| {
        let lora = m.model.linear(1, Target::Down).unwrap().adapter.as_ref().unwrap();
        (read(lora.lora_a.val()), read(lora.lora_b.val()))
    };
    let (a0, b0) = factors(&m);
    train(&mut m, &train_config(3, 1e-2), None).0.unwrap();
    let (a, b) = factors(&m);
    assert_eq!(a, a0, "A (down projection) must stay frozen");
    assert_ne!(b, b0, "B (up projection) must train");
}

#[test]
fn a_diverging_run_stops_with_an_error_and_keeps_the_last_good_state() {
    let mut m = init(InitMethod::Lora, 8.0);
    let (r, rec) = train(&mut m, &train_config(50, 1e30), None);
    let err = r.expect_err("lr 1e30 must diverge");
    let EngineError::Train(TrainError::NonFinite { step, .. }) = &err else {
        panic!("unexpected error {err}");
    };
    assert!(
        err.hints().contains(&Hint::Lower(Setting::LearningRate)),
        "{err}: {:?}",
        err.hints()
    );
    assert!(
        !err.to_string().contains("--"),
        "library errors name no CLI flag: {err}"
    );
    let (kind, last_good) = rec.checkpoints.last().expect("the last good state is handed over");
    assert_eq!(*kind, CheckpointKind::LastGood);
    assert_eq!(last_good.step, step - 1);
    assert!(last_good.params.values().all(|f| f.data.iter().all(|v| v.is_finite())));
    if *step > 1 {
        let (_, before) = &rec.checkpoints[rec.checkpoints.len() - 2];
        assert_eq!(last_good, before, "a failed step must not change the adapter");
    }
}

#[test]
fn a_resumed_run_continues_exactly() {
    let cfg = train_config(4, 5e-3);
    let mut straight = init(InitMethod::Pissa, 4.0);
    let (_, all) = train(&mut straight, &cfg, None);
    let mut first = init(InitMethod::Pissa, 4.0);
    let half = TrainConfig {
        steps: Some(4),
        ..cfg.clone()
    };
    let mut partial = Recorder::default();
    {
        let data = first.training_data(&instruction_data(), &half).unwrap();
        // Stop after two steps, as a user interrupting the run would.
        struct StopAfter<'a>(&'a mut Recorder, usize);
        impl TrainHooks for StopAfter<'_> {
            fn on_step(&mut self, m: &StepMetrics) {
                self.0.on_step(m)
            }
            fn on_checkpoint(&mut self, kind: CheckpointKind, bytes: Vec<u8>) -> Result<(), String> {
                self.0.on_checkpoint(kind, bytes)
            }
            fn control(&mut self) -> lora_null::engine::Control {
                if self.0.steps.len() >= self.1 {
                    lora_null::engine::Control::Stop
                } else {
                    lora_null::engine::Control::Run
                }
            }
        }
        let report = pollster::block_on(first.train(data, &half, None, &mut StopAfter(&mut partial, 2))).unwrap();
        assert!(report.stopped && report.steps == 2);
    }
    let (_, at_two) = partial.checkpoints.last().unwrap();
    let mut resumed = init(InitMethod::Pissa, 4.0);
    let (_, rest) = train(&mut resumed, &cfg, Some(at_two));
    assert_eq!(rest.steps.first().map(|s| s.step), Some(3), "resumes at step 3");
    let (a, b) = (&all.checkpoints.last().unwrap().1, &rest.checkpoints.last().unwrap().1);
    assert_eq!((a.step, b.step), (4, 4));
    assert_eq!(a.params.keys().collect::<Vec<_>>(), b.params.keys().collect::<Vec<_>>());
    for (k, fa) in &a.params {
        assert!(
            max_abs_diff(&fa.data, &b.params[k].data) < RESUME_TOL,
            "{k} differs after resume"
        );
    }
}

/// Three steps at lr 5e-3 (enough to move every factor).
pub fn train_a_few_steps(m: &mut LoadedModel) {
    train(m, &train_config(3, 5e-3), None).0.unwrap();
}

/// Trains a few steps, exports, and loads the export onto the ORIGINAL base.
fn export_round_trip(dir: &str, method: InitMethod) {
    let tiny = || load(&hf_files(dir), &Device::flex());
    let mut m = init_on(dir, method, 8.0);
    train(&mut m, &train_config(3, 5e-3), None).0.unwrap();
    let trained = logits_rows(&m, &IDS);
    let (files, doubled) = pollster::block_on(m.export_peft(SaveDtype::F32)).unwrap();
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
        d < EXPORT_LOGIT_TOL,
        "{}: exported adapter on the original base differs by {d}",
        method.name()
    );
    assert!(
        max_rel_diff(&trained, &logits_rows(&tiny(), &IDS)) > TRAINING_MOVED_MIN,
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
    assert!(d < EXPORT_LOGIT_TOL, "{}: merged model differs by {d}", method.name());
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
        export_round_trip("tiny/llama", method);
    }
}

#[test]
fn on_qwen3_every_method_starts_from_the_base_and_exports_for_the_original() {
    let base = logits_rows(&load(&hf_files("tiny/qwen3"), &Device::flex()), &IDS);
    for method in InitMethod::ALL {
        let m = init_on("tiny/qwen3", method, 8.0);
        let d = max_rel_diff(&logits_rows(&m, &IDS), &base);
        assert!(d < INIT_LOGIT_TOL, "qwen3 {}: relative logit change {d}", method.name());
    }
    for method in [InitMethod::Null, InitMethod::NullV2, InitMethod::Lora] {
        export_round_trip("tiny/qwen3", method);
    }
}

#[test]
fn on_gemma_every_method_starts_from_the_base_and_exports_for_the_original() {
    for dir in ["tiny/gemma2", "tiny/gemma3"] {
        let base = logits_rows(&load(&hf_files(dir), &Device::flex()), &IDS);
        for method in InitMethod::ALL {
            let m = init_on(dir, method, 8.0);
            let d = max_rel_diff(&logits_rows(&m, &IDS), &base);
            assert!(d < INIT_LOGIT_TOL, "{dir} {}: relative logit change {d}", method.name());
        }
        for method in [InitMethod::Null, InitMethod::NullV2, InitMethod::Lora] {
            export_round_trip(dir, method);
        }
    }
}

#[test]
fn on_phi3_every_method_adapts_the_fused_layers_and_exports_for_the_original() {
    let base = logits_rows(&load(&hf_files("tiny/phi3"), &Device::flex()), &IDS);
    for method in InitMethod::ALL {
        let m = init_on("tiny/phi3", method, 8.0);
        let targets = &m.adapter.as_ref().unwrap().config.targets;
        assert_eq!(
            targets,
            &[Target::O, Target::Down, Target::Qkv, Target::GateUp],
            "the default targets name phi3's fused layers"
        );
        let d = max_rel_diff(&logits_rows(&m, &IDS), &base);
        assert!(d < INIT_LOGIT_TOL, "phi3 {}: relative logit change {d}", method.name());
    }
    for method in [
        InitMethod::Null,
        InitMethod::NullV2,
        InitMethod::Lora,
        InitMethod::Pissa,
    ] {
        export_round_trip("tiny/phi3", method);
    }
    // A llama-style adapter names layers phi3 does not have: refused, naming what it has.
    let mut llama = init_on("tiny/llama", InitMethod::Lora, 8.0);
    train_a_few_steps(&mut llama);
    let (files, _) = pollster::block_on(llama.export_peft(SaveDtype::F32)).unwrap();
    let get = |n: &str| files.iter().find(|(f, _)| f == n).unwrap().1.clone();
    let mut phi3 = load(&hf_files("tiny/phi3"), &Device::flex());
    let err = phi3
        .attach_peft(&get("adapter_config.json"), &get("adapter_model.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("qkv_proj") && err.contains("another architecture"),
        "{err}"
    );
}

#[test]
fn the_init_export_is_a_residual_base_plus_an_adapter_that_rebuild_the_base() {
    let m = init(InitMethod::Null, 4.0);
    let files = pollster::block_on(m.export_init(SaveDtype::F32)).unwrap();
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
    assert!(max_rel_diff(&logits_rows(&r, &IDS), &base) < EXPORT_LOGIT_TOL);
    assert!(
        max_rel_diff(&without, &base) > RESIDUAL_MOVED_MIN,
        "the residual alone must differ from the base"
    );
}

/// An executor that, like the page's pool of maths workers, takes jobs when they are submitted
/// and answers them later, `width` at a time; it counts the most it held at once and the width
/// of each decomposition in the order they came.
struct Deferred {
    width: usize,
    held: std::rc::Rc<std::cell::Cell<usize>>,
    most: std::cell::Cell<usize>,
    order: std::cell::RefCell<Vec<usize>>,
}

impl lora_null::engine::jobs::Executor for Deferred {
    fn submit(&self, job: lora_null::linalg::jobs::Job) -> lora_null::engine::jobs::JobFuture<'_> {
        use lora_null::linalg::jobs::Job;
        if let Job::Eigh(c) = &job {
            self.order.borrow_mut().push(c.rows);
        }
        self.held.set(self.held.get() + 1);
        self.most.set(self.most.get().max(self.held.get()));
        let held = self.held.clone();
        Box::pin(async move {
            held.set(held.get() - 1);
            lora_null::linalg::jobs::run(job).map_err(lora_null::engine::jobs::JobError::from)
        })
    }

    fn parallelism(&self) -> usize {
        self.width
    }
}

/// The spectra computed with several decompositions in flight (the page's maths workers, and
/// natively rayon's threads) are those computed one at a time, and no more than twice the workers' count are in flight.
#[test]
fn spectra_from_decompositions_in_flight_side_by_side_are_the_spectra_one_at_a_time() {
    let m = tiny();
    let calib = calibrate(&m);
    let targets = Target::DEFAULT;
    let analyze = |exec: &dyn lora_null::engine::jobs::Executor| {
        let steps = std::cell::Cell::new(0);
        let report =
            pollster::block_on(
                m.analyze(&calib, &mut EighCache::default(), &targets, 4, exec, &mut |d, t| {
                    assert_eq!(d, steps.get() + 1, "progress counts each decomposition once");
                    steps.set(d);
                    assert!(d <= t, "{d} of {t}");
                }),
            )
            .unwrap();
        (serde_json::to_value(&report).unwrap(), steps.get())
    };
    let (one_at_a_time, steps) = analyze(&Inline);
    let pool = Deferred {
        width: 3,
        held: Default::default(),
        most: Default::default(),
        order: Default::default(),
    };
    let (side_by_side, pooled_steps) = analyze(&pool);
    assert_eq!(side_by_side, one_at_a_time, "the same report");
    // On rayon's threads (the CLI's `analyze`), really side by side: the same report.
    let (threaded, threaded_steps) = analyze(&lora_null::engine::Threads::new());
    assert_eq!(threaded, one_at_a_time, "the same report on threads");
    assert_eq!(threaded_steps, 11 * m.model.num_layers());
    let layers = m.model.num_layers();
    // Four sites' eigendecompositions and seven weights' singular values per layer.
    assert_eq!((steps, pooled_steps), (11 * layers, 11 * layers));
    assert_eq!(pool.most.get(), 6, "twice the workers in flight, no more");
    let order = pool.order.borrow();
    assert!(order.windows(2).all(|w| w[0] >= w[1]), "widest first: {order:?}");
    assert!(
        order.first() > order.last(),
        "the tiny model's sites differ in width: {order:?}"
    );
}
