//! Statistics and spectra; initialisation and training (both through the engine).

use super::load::build_model;
use crate::app::browser::memory_note;
use crate::app::engine_worker::{Cancellable, cancelled, emit, paused, progress, status};
use crate::app::protocol::{CalibrateOptions, Event, TrainOptions};
use crate::app::session::{self, executor, put_worker, take_worker};
use crate::app::words::page_error;
use crate::engine::{CalibOptions, Control, EighCache, STREAM_ABOVE_BYTES, TrainHooks};
use crate::io::ModelFiles;
use crate::lora::LoraConfig;
use crate::model::memory::{TAB_BYTES, TrainSettings};
use crate::train::{StepMetrics, TrainConfig};

/// Collects activation statistics, then the spectra (decompositions in the maths worker).
/// Cancel stops the windows at the next window (nothing is kept), or the decompositions at the
/// next matrix (the statistics are kept). A model whose statistics would pass
/// [`STREAM_ABOVE_BYTES`] at once keeps only the options: training collects them block by block.
pub async fn calibrate(o: CalibrateOptions) -> Result<(), String> {
    let opts = CalibOptions {
        samples: o.samples,
        seq_len: o.seq_len,
        targets: o.targets.clone(),
        ..CalibOptions::default()
    };
    let bytes =
        session::with(|s| s.model.as_ref().map(|m| m.covariance_bytes(&o.targets))).ok_or("load a model first")?;
    if bytes > STREAM_ABOVE_BYTES {
        if session::with(|s| s.calib_data.is_none() && s.data.is_none()) {
            return Err("load a dataset (or calibration text) first".into());
        }
        session::with(|s| {
            s.calibration = None;
            s.eighs = EighCache::default();
            s.streamed = Some(opts);
        });
        emit(&Event::Spectra(None));
        status(format!(
            "this model's statistics take {:.1} GiB at once: they will be collected block by block when training \
             initialises the adapters (no spectra at this size)",
            bytes as f64 / (1u64 << 30) as f64
        ));
        return Ok(());
    }
    let model = session::with(|s| s.model.take()).ok_or("load a model first")?;
    let records = session::with(|s| s.calib_data.clone().or(s.data.clone())).map(|d| d.1);
    let worker = take_worker();
    let result = async {
        let records = records.ok_or("load a dataset (or calibration text) first")?;
        status("collecting activation statistics…");
        let calib = model
            .calibrate_until(
                &records,
                &opts,
                &mut |d, t| progress("calibration windows", d as f64 / t as f64),
                &cancelled,
            )
            .await
            .map_err(|e| page_error(&e))?;
        let mut eighs = EighCache::default();
        status("decomposing (in a worker)…");
        let exec = Cancellable(executor(&worker));
        let report = model
            .analyze(&calib, &mut eighs, &o.targets, o.rank, &exec, &mut |d, t| {
                progress("spectra", d as f64 / t as f64)
            })
            .await;
        Ok::<_, String>((calib, eighs, report))
    }
    .await;
    put_worker(worker);
    session::with(|s| s.model = Some(model));
    let (calib, eighs, report) = match result {
        Err(_) if cancelled() => {
            status("calibration cancelled; the earlier statistics (if any) are unchanged");
            return Ok(());
        }
        r => r?,
    };
    let note = calib.note.clone();
    session::with(|s| {
        s.calibration = Some(calib);
        s.streamed = None;
        s.eighs = eighs;
    });
    let report = match report {
        Err(_) if cancelled() => {
            status("spectra cancelled; the statistics are kept (training can use them)");
            return Ok(());
        }
        r => r.map_err(|e| page_error(&e))?,
    };
    emit(&Event::Spectra(Some(Box::new(report))));
    status(note.unwrap_or_else(|| "statistics collected".into()));
    Ok(())
}

/// The page's side of a training run: events for the loss curve, pause and cancel.
struct PageHooks {
    started: bool,
}

impl TrainHooks for PageHooks {
    fn on_init(&mut self, done: usize, total: usize) {
        progress("initialising adapters", done as f64 / total.max(1) as f64);
    }

    fn on_step(&mut self, m: &StepMetrics) {
        status(format!(
            "step {}/{} · loss {:.3} · {:.0} tokens/s · ETA {:.0} s",
            m.step, m.total_steps, m.loss, m.tokens_per_second, m.eta_seconds
        ));
        emit(&Event::Step(m.clone()));
    }

    fn control(&mut self) -> Control {
        if !self.started {
            self.started = true;
            emit(&Event::TrainStarted);
        }
        if cancelled() {
            Control::Stop
        } else if paused() {
            status("paused");
            Control::Pause
        } else {
            Control::Run
        }
    }
}

/// Refuses, before anything is built, a run whose memory plan passes a tab's 4 GiB on the CPU
/// backend, where the weights and activations all live in the tab (the message names the
/// numbers and settings that fit). On a GPU, whose memory the browser does not tell, the same
/// comparison is a note.
fn check_memory(opts: &TrainOptions) -> Result<(), String> {
    let settings = TrainSettings {
        batch: opts.batch,
        tokens: opts.max_len,
        rank: opts.rank,
        trains_down: opts.method.trains_down(),
        blockwise: opts.blockwise,
    };
    let basis = session::with(|s| s.model.as_ref().map(|m| m.plan_basis(&opts.targets)))
        .ok_or("load a model first")?
        .map_err(|e| page_error(&e))?;
    let on_cpu = session::with(|s| s.device.as_ref().is_some_and(|d| d.adapter.is_none()));
    match basis.check(&settings, TAB_BYTES, "a browser tab has") {
        Ok(_) => Ok(()),
        Err(too_big) if on_cpu => Err(too_big.to_string()),
        Err(too_big) => {
            status(format!("note: {too_big} (on the GPU this may still fit its memory)"));
            Ok(())
        }
    }
}

/// Initialises the chosen method on a fresh copy of the base and trains it step by step,
/// honouring pause and cancel between steps. The session's model becomes the trained one.
pub async fn train(opts: TrainOptions) -> Result<(), String> {
    let files = session::with(|s| s.files.clone()).ok_or("load a model first")?;
    let records = session::with(|s| s.data.clone())
        .map(|d| d.1)
        .ok_or("load a fine-tuning dataset first")?;
    let has_calib = session::with(|s| s.calibration.is_some());
    // Statistics collected block by block during initialisation (a big model), when the method
    // reads any.
    let streamed = session::with(|s| {
        let records = s.calib_data.clone().or(s.data.clone()).map(|d| d.1);
        s.streamed.clone().zip(records)
    })
    .filter(|_| opts.method.needs_calibration());
    let mut lora = LoraConfig::new(opts.method, opts.rank);
    lora.targets = opts.targets.clone();
    let cfg = TrainConfig {
        lr: opts.lr,
        steps: Some(opts.steps),
        batch: opts.batch,
        max_len: opts.max_len,
        checkpoint_blocks: opts.blockwise,
        ..TrainConfig::default()
    };
    lora.check(has_calib || streamed.is_some())
        .map_err(|e| page_error(&e.into()))?;
    check_memory(&opts)?;
    // The run starts again from the base in the files: the session's copy of it is dropped
    // first and rebuilt only if the run ends before training, since on the CPU backend both
    // would sit in the tab's memory (with SmolLM2's statistics, they took the engine past 4 GiB).
    // The statistics are lent to the run, not copied, for the same reason.
    session::with(|s| s.model = None);
    let mut model = match build_model(&files).await {
        Ok(m) => m,
        Err(e) => {
            restore_base(&files).await;
            return Err(e);
        }
    };
    let calib = session::with(|s| s.calibration.take());
    let worker = take_worker();
    let mut eighs = session::with(|s| std::mem::take(&mut s.eighs));
    let exec = Cancellable(executor(&worker));
    let mut hooks = PageHooks { started: false };
    let result = match &streamed {
        Some((opts, calib_records)) => model
            .fine_tune_streaming(&records, lora, &cfg, calib_records, opts, &exec, &mut hooks)
            .await
            .map(|(report, _)| report),
        None => {
            model
                .fine_tune(&records, lora, &cfg, calib.as_ref(), &mut eighs, &exec, &mut hooks)
                .await
        }
    };
    put_worker(worker);
    session::with(|s| {
        s.eighs = eighs;
        s.calibration = calib;
    });
    match result {
        Err(e) if !hooks.started && (e.is_cancelled() || cancelled()) => {
            drop(model);
            restore_base(&files).await;
            status("cancelled before training; the loaded model is unchanged");
            Ok(())
        }
        Err(e) if !hooks.started => {
            drop(model);
            restore_base(&files).await;
            Err(page_error(&e))
        }
        other => {
            // Trained (or stopped, or diverged: the model keeps its last good state).
            session::with(|s| s.model = Some(model));
            let report = other.map_err(|e| page_error(&e))?;
            let ended = if report.stopped {
                "training cancelled; the adapter keeps the steps done"
            } else {
                "training finished"
            };
            // The instance's memory only grows: its size now is the run's peak. The GPU's pools
            // are read after the last step.
            status(match memory_note(report.last.as_ref().and_then(|m| m.gpu_memory)) {
                Some(note) => format!("{ended} ({note})"),
                None => ended.to_string(),
            });
            Ok(())
        }
    }
}

/// Makes the base in `files` the session's model again (a run that ended before training had
/// dropped it); a failure here is reported in the status line, the run's own error stays.
async fn restore_base(files: &ModelFiles) {
    match build_model(files).await {
        Ok(m) => session::with(|s| s.model = Some(m)),
        Err(e) => status(format!("the base model could not be rebuilt ({e}): load it again")),
    }
}
