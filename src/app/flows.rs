//! What each button does: plain async functions over the engine and the session, reporting
//! through the UI signals. Every flow yields to the page between chunks of work, and on error
//! puts back what it took from the session, so nothing the user loaded is lost.

use leptos::prelude::*;

use super::browser::{download, fetch_bytes, now_ms, read_file, yield_now};
use super::session::{self, executor, put_worker, take_worker};
use super::state::{TrainOptions, Ui};
use crate::calib::EighCache;
use crate::engine::{CalibOptions, LoadedModel};
use crate::eval::GenerateOptions;
use crate::io::dataset::parse_dataset;
use crate::io::safetensors::SaveDtype;
use crate::io::{Checkpoint, ModelFiles};
use crate::lora::LoraConfig;
use crate::model::Target;
use crate::train::{TrainConfig, Trainer, prepare};

/// Default assets served next to the page (fetched by scripts/run.sh).
pub const DEFAULT_MODEL: &str = "assets/models/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Default fine-tuning data.
pub const DEFAULT_TRAIN: &str = "assets/data/sample_train.jsonl";
/// Default calibration text.
pub const DEFAULT_CALIB: &str = "assets/data/sample_calib.txt";
/// Default probe.
pub const DEFAULT_PROBE: &str = "assets/data/probe_small.jsonl";
/// Default knowledge prose.
pub const DEFAULT_PROSE: &str = "assets/data/knowledge_prose.txt";

/// Runs `f` as the page's one task: marks busy, clears the error, reports failure in the page.
pub fn run_task<F>(ui: Ui, label: &'static str, f: impl FnOnce() -> F + 'static)
where
    F: std::future::Future<Output = Result<(), String>> + 'static,
{
    if ui.busy.get_untracked() {
        return;
    }
    ui.busy.set(true);
    ui.error.set(None);
    ui.status.set(format!("{label}…"));
    leptos::task::spawn_local(async move {
        let result = f().await;
        ui.busy.set(false);
        ui.progress.set(None);
        match result {
            Ok(()) => {}
            Err(e) => {
                ui.status.set(format!("{label} failed"));
                ui.error.set(Some(e));
            }
        }
    });
}

/// Starts WebGPU (or the CPU backend) and the maths worker.
pub async fn init_device(ui: Ui, cpu: bool) -> Result<(), String> {
    let choice = if cpu {
        crate::device::DeviceChoice::cpu()
    } else {
        crate::device::init_webgpu().await?
    };
    if let Some(a) = &choice.adapter {
        ui.gpu_limits.set(Some(format!(
            "max buffer {} MiB, max storage binding {} MiB",
            a.max_buffer_size >> 20,
            a.max_storage_buffer_binding_size >> 20
        )));
    }
    ui.gpu.set(Some(choice.description.clone()));
    if let Some(w) = &choice.warning {
        ui.status.set(format!("note: {w}"));
    }
    let worker = super::worker::WorkerExecutor::start("./worker.js").ok();
    session::with(|s| {
        s.device = Some(choice);
        s.worker = worker;
    });
    Ok(())
}

fn device() -> Result<burn::tensor::Device, String> {
    session::with(|s| s.device.as_ref().map(|d| d.device.clone()))
        .ok_or_else(|| "start the GPU first (WebGPU, or the CPU backend)".to_string())
}

/// Builds the model from files block by block, yielding to the page between blocks, after
/// checking the largest tensor against the adapter's limits.
async fn build_model(ui: Ui, files: &ModelFiles) -> Result<LoadedModel, String> {
    let device = device()?;
    ui.status.set("parsing the model…".into());
    yield_now().await;
    let ckpt = Checkpoint::parse(files).map_err(|e| e.to_string())?;
    let c = &ckpt.config;
    let biggest = (c.vocab_size * c.hidden_size).max(c.intermediate_size * c.hidden_size) as u64 * 4;
    let limit = session::with(|s| {
        s.device
            .as_ref()
            .and_then(|d| d.adapter.as_ref())
            .map(|a| a.max_storage_buffer_binding_size)
    });
    if let Some(limit) = limit.filter(|&l| biggest > l) {
        return Err(format!(
            "this model's largest tensor needs {} MiB in f32, above this GPU's storage-binding limit of {} MiB; use a smaller model or the CPU backend",
            biggest >> 20,
            limit >> 20
        ));
    }
    let total = c.num_parameters() as u64 * 4;
    if total > 2 << 30 {
        ui.status.set(format!(
            "note: this model needs {:.1} GiB of GPU memory in f32 (plus activations); loading may fail on smaller GPUs",
            total as f64 / (1u64 << 30) as f64
        ));
    }
    let view = ckpt.source().map_err(|e| e.to_string())?;
    let mut builder = view.builder(&ckpt.config, &device);
    loop {
        let (done, total) = builder.progress();
        ui.progress
            .set(Some(("uploading weights".into(), done as f64 / total.max(1) as f64)));
        yield_now().await;
        if !builder.next_layer().map_err(|e| e.to_string())? {
            break;
        }
    }
    let model = builder.finish().map_err(|e| e.to_string())?;
    Ok(LoadedModel {
        config: ckpt.config.clone(),
        tokenizer: ckpt.tokenizer.clone(),
        model,
        format: ckpt.format,
        storage: ckpt.storage.clone(),
        adapter: None,
    })
}

/// Loads a model from files and makes it the page's model.
pub async fn load_model(ui: Ui, files: ModelFiles) -> Result<(), String> {
    let loaded = build_model(ui, &files).await?;
    ui.summary.set(Some(loaded.summary()));
    session::with(|s| {
        s.model = Some(loaded);
        s.files = Some(files);
        s.calibration = None;
        s.spectra = None;
        s.trainer = None;
        s.eighs = EighCache::default();
    });
    ui.spectra.set(None);
    ui.status.set("model loaded".into());
    Ok(())
}

/// Reads the files the user picked or dropped into a model file set.
pub async fn read_model_files(ui: Ui, list: Vec<web_sys::File>) -> Result<ModelFiles, String> {
    let mut files = ModelFiles::new();
    for f in list {
        let name = f.name();
        let bytes = read_file(&f, &mut |done, total| {
            ui.progress
                .set(Some((format!("reading {name}"), done / total.max(1.0))));
        })
        .await?;
        files.insert(&name, bytes);
        yield_now().await;
    }
    Ok(files)
}

/// Sets a dataset from bytes (`calib` chooses the calibration slot).
pub fn set_dataset(ui: Ui, name: &str, bytes: &[u8], calib: bool) -> Result<(), String> {
    let records = parse_dataset(name, bytes).map_err(|e| e.to_string())?;
    let info = format!("{name}: {} records", records.len());
    session::with(|s| {
        if calib {
            s.calib_data = Some((name.to_string(), records));
        } else {
            s.data = Some((name.to_string(), records));
        }
    });
    if calib {
        ui.calib_info.set(Some(info));
    } else {
        ui.data_info.set(Some(info));
    }
    Ok(())
}

/// The one-button default: SmolLM2 and the sample data from assets/.
pub async fn load_default(ui: Ui) -> Result<(), String> {
    if session::with(|s| s.device.is_none()) {
        init_device(ui, false).await?;
    }
    ui.status.set("downloading the default model…".into());
    let bytes = fetch_bytes(DEFAULT_MODEL).await?;
    let mut files = ModelFiles::new();
    files.insert(DEFAULT_MODEL, bytes);
    for (url, calib) in [(DEFAULT_TRAIN, false), (DEFAULT_CALIB, true)] {
        let b = fetch_bytes(url).await?;
        set_dataset(ui, url.rsplit('/').next().unwrap_or(url), &b, calib)?;
    }
    load_model(ui, files).await
}

/// Collects activation statistics, then the spectra (decompositions in the worker).
pub async fn calibrate(
    ui: Ui,
    rank: usize,
    samples: usize,
    seq_len: usize,
    targets: Vec<Target>,
) -> Result<(), String> {
    let model = session::with(|s| s.model.take()).ok_or("load a model first")?;
    let records = session::with(|s| s.calib_data.clone().or(s.data.clone())).map(|d| d.1);
    let worker = take_worker();
    let result = async {
        let records = records.ok_or("load a dataset (or calibration text) first")?;
        let opts = CalibOptions {
            samples,
            seq_len,
            targets: targets.clone(),
            ..CalibOptions::default()
        };
        ui.status.set("collecting activation statistics…".into());
        let calib = model
            .calibrate(&records, &opts, &mut |d, t| {
                ui.progress
                    .set(Some(("calibration windows".into(), d as f64 / t as f64)))
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut eighs = EighCache::default();
        ui.status.set("decomposing (in a worker)…".into());
        let report = model
            .analyze(&calib, &mut eighs, &targets, rank, executor(&worker), &mut |d, t| {
                ui.progress.set(Some(("spectra".into(), d as f64 / t as f64)))
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((calib, eighs, report))
    }
    .await;
    put_worker(worker);
    session::with(|s| s.model = Some(model));
    let (calib, eighs, report) = result?;
    let note = calib.note.clone();
    ui.spectra.set(Some(report.clone()));
    session::with(|s| {
        s.calibration = Some(calib);
        s.eighs = eighs;
        s.spectra = Some(report);
    });
    ui.status.set(note.unwrap_or_else(|| "statistics collected".into()));
    Ok(())
}

/// Generates from the prompt box into `out`.
pub async fn generate(ui: Ui, prompt: String, out: RwSignal<String>) -> Result<(), String> {
    let model = session::with(|s| s.model.take()).ok_or("load a model first")?;
    let opts = GenerateOptions {
        max_new_tokens: 48,
        ..GenerateOptions::default()
    };
    let chat = model.tokenizer.chat_template.is_some();
    let r = model
        .generate_text(&prompt, chat, &opts, &mut |t| out.set(t.to_string()))
        .await;
    session::with(|s| s.model = Some(model));
    out.set(r.map_err(|e| e.to_string())?);
    ui.status.set("generated".into());
    Ok(())
}

/// Initialises the chosen method on a fresh copy of the base and trains it step by step,
/// honouring pause and cancel between steps.
pub async fn train(ui: Ui, opts: TrainOptions) -> Result<(), String> {
    let files = session::with(|s| s.files.clone()).ok_or("load a model first")?;
    let records = session::with(|s| s.data.clone())
        .map(|d| d.1)
        .ok_or("load a fine-tuning dataset first")?;
    let calib = session::with(|s| s.calibration.clone());
    if opts.method.needs_calibration() && calib.is_none() {
        return Err(format!(
            "{} initialises from activation statistics: press “Collect statistics” first",
            opts.method.name()
        ));
    }
    let mut model = build_model(ui, &files).await?;
    let config = LoraConfig {
        method: opts.method,
        rank: opts.rank,
        alpha: opts.rank as f64,
        use_rslora: false,
        targets: opts.targets.clone(),
        seed: 42,
    };
    let worker = take_worker();
    let mut eighs = session::with(|s| std::mem::take(&mut s.eighs));
    let init = model
        .init_adapters(config, calib.as_ref(), &mut eighs, executor(&worker), &mut |d, t| {
            ui.progress
                .set(Some(("initialising adapters".into(), d as f64 / t as f64)))
        })
        .await
        .map(|_| ());
    put_worker(worker);
    session::with(|s| s.eighs = eighs);
    init.map_err(|e| e.to_string())?;
    let data = prepare(&records, &model.tokenizer, opts.max_len, 0.1, 42).map_err(|e| e.to_string())?;
    let cfg = TrainConfig {
        lr: opts.lr,
        steps: Some(opts.steps),
        batch: opts.batch,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(
        model.model.clone(),
        cfg,
        data,
        model.tokenizer.pad_or_eos(),
        opts.method.trains_down(),
    )
    .map_err(|e| e.to_string())?;
    ui.losses.set(Vec::new());
    ui.cancel.set(false);
    let started = now_ms();
    let mut failure = None;
    while !trainer.finished() {
        if ui.cancel.get_untracked() {
            ui.status
                .set("training cancelled; the adapter keeps the steps done".into());
            break;
        }
        if ui.paused.get_untracked() {
            ui.status.set("paused".into());
            yield_now().await;
            continue;
        }
        match trainer.step().await {
            Ok(m) => {
                ui.losses.update(|l| l.push((m.step, m.loss)));
                ui.status.set(format!(
                    "step {}/{} · loss {:.3} · {:.0} tokens/s · ETA {:.0} s",
                    m.step, m.total_steps, m.loss, m.tokens_per_second, m.eta_seconds
                ));
                ui.metrics.set(Some(m));
            }
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
        yield_now().await;
    }
    model.model = trainer.into_model();
    session::with(|s| s.model = Some(model));
    ui.train_seconds.set(Some((now_ms() - started) / 1000.0));
    match failure {
        Some(e) => Err(e),
        None => {
            if !ui.cancel.get_untracked() {
                ui.status.set("training finished".into());
            }
            Ok(())
        }
    }
}

/// Downloads the PEFT adapter (and, if asked, the merged model).
pub async fn export(ui: Ui, merged: bool) -> Result<(), String> {
    let model = session::with(|s| s.model.take()).ok_or("load a model first")?;
    let result = async {
        let (files, doubled) = model
            .export_peft("SmolLM2-135M-Instruct", SaveDtype::F32)
            .await
            .map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        for (name, bytes) in &files {
            download(name, bytes, "application/octet-stream")?;
            names.push(name.clone());
        }
        if merged {
            for (name, bytes) in model
                .hf_model_files(true, SaveDtype::F16)
                .await
                .map_err(|e| e.to_string())?
            {
                download(&format!("merged-{name}"), &bytes, "application/octet-stream")?;
                names.push(format!("merged-{name}"));
            }
        }
        Ok::<_, String>((names, doubled))
    }
    .await;
    session::with(|s| s.model = Some(model));
    let (names, doubled) = result?;
    ui.exported.set(names);
    ui.status.set(if doubled {
        "adapter exported at rank 2r (this method changed the base; the export applies to the ORIGINAL model)".into()
    } else {
        "adapter exported".into()
    });
    Ok(())
}

/// Runs the first `questions` items of the built-in knowledge probe and the prose perplexity,
/// into the "before" or "after" slot.
pub async fn forgetting(ui: Ui, after: bool, questions: usize) -> Result<(), String> {
    if session::with(|s| s.probe.is_none()) {
        let probe = fetch_bytes(DEFAULT_PROBE).await?;
        let prose = fetch_bytes(DEFAULT_PROSE).await?;
        let items = crate::eval::probe::parse_probe(DEFAULT_PROBE, &String::from_utf8_lossy(&probe))
            .map_err(|e| e.to_string())?;
        session::with(|s| s.probe = Some((items, String::from_utf8_lossy(&prose).to_string())));
    }
    let (mut items, prose) = session::with(|s| s.probe.clone()).expect("invariant: set above");
    items.truncate(questions.max(1));
    let model = session::with(|s| s.model.take()).ok_or("load a model first")?;
    let result = async {
        // Instruction-tuned models answer through their chat template (SmolLM2-Instruct emits
        // end-of-text at once after a plain "Question: … Answer:" prompt).
        let chat = model.tokenizer.chat_template.is_some();
        let (score, _) = model
            .probe(&items, chat, &mut |d, t| {
                ui.progress.set(Some(("knowledge probe".into(), d as f64 / t as f64)))
            })
            .await
            .map_err(|e| e.to_string())?;
        let ppl = model
            .perplexity_text(&prose, Some(1024), 256, &mut |_, _| {})
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((score, ppl.perplexity))
    }
    .await;
    session::with(|s| s.model = Some(model));
    let r = result?;
    if after {
        ui.probe_after.set(Some(r));
    } else {
        ui.probe_before.set(Some(r));
    }
    ui.status.set("forgetting check done".into());
    Ok(())
}
