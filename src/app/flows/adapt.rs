//! Statistics and spectra; initialisation and training.

use super::load::build_model;
use crate::app::browser::{sleep, yield_now};
use crate::app::engine_worker::{Cancellable, cancelled, emit, paused, progress, status};
use crate::app::protocol::{CalibrateOptions, Event, TrainOptions};
use crate::app::session::{self, executor, put_worker, take_worker};
use crate::calib::EighCache;
use crate::engine::CalibOptions;
use crate::lora::LoraConfig;
use crate::train::{TrainConfig, Trainer, prepare};

/// Collects activation statistics, then the spectra (decompositions in the maths worker).
/// Cancel stops the windows at the next window (nothing is kept), or the decompositions at the
/// next matrix (the statistics are kept).
pub async fn calibrate(o: CalibrateOptions) -> Result<(), String> {
    let model = session::with(|s| s.model.take()).ok_or("load a model first")?;
    let records = session::with(|s| s.calib_data.clone().or(s.data.clone())).map(|d| d.1);
    let worker = take_worker();
    let result = async {
        let records = records.ok_or("load a dataset (or calibration text) first")?;
        let opts = CalibOptions {
            samples: o.samples,
            seq_len: o.seq_len,
            targets: o.targets.clone(),
            ..CalibOptions::default()
        };
        status("collecting activation statistics…");
        let calib = model
            .calibrate_until(
                &records,
                &opts,
                &mut |d, t| progress("calibration windows", d as f64 / t as f64),
                &cancelled,
            )
            .await
            .map_err(|e| e.to_string())?;
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
        s.eighs = eighs;
    });
    let report = match report {
        Err(_) if cancelled() => {
            status("spectra cancelled; the statistics are kept (training can use them)");
            return Ok(());
        }
        r => r.map_err(|e| e.to_string())?,
    };
    emit(&Event::Spectra(Some(Box::new(report))));
    status(note.unwrap_or_else(|| "statistics collected".into()));
    Ok(())
}

/// Initialises the chosen method on a fresh copy of the base and trains it step by step,
/// honouring pause and cancel between steps.
pub async fn train(opts: TrainOptions) -> Result<(), String> {
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
    let mut model = build_model(&files).await?;
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
    let exec = Cancellable(executor(&worker));
    let init = model
        .init_adapters(config, calib.as_ref(), &mut eighs, &exec, &mut |d, t| {
            progress("initialising adapters", d as f64 / t as f64)
        })
        .await
        .map(|_| ());
    put_worker(worker);
    session::with(|s| s.eighs = eighs);
    if init.is_err() && cancelled() {
        status("cancelled before training; the loaded model is unchanged");
        return Ok(());
    }
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
    emit(&Event::TrainStarted);
    let mut failure = None;
    while !trainer.finished() {
        if cancelled() {
            status("training cancelled; the adapter keeps the steps done");
            break;
        }
        if paused() {
            status("paused");
            sleep(100).await;
            continue;
        }
        match trainer.step().await {
            Ok(m) => {
                status(format!(
                    "step {}/{} · loss {:.3} · {:.0} tokens/s · ETA {:.0} s",
                    m.step, m.total_steps, m.loss, m.tokens_per_second, m.eta_seconds
                ));
                emit(&Event::Step(m));
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
    match failure {
        Some(e) => Err(e),
        None => {
            if !cancelled() {
                status("training finished");
            }
            Ok(())
        }
    }
}
