//! Starting the device, loading the model and the datasets.

use super::{DEFAULT_CALIB, DEFAULT_MODEL, DEFAULT_TRAIN};
use crate::app::browser::{BlobReader, fetch_blob, fetch_bytes, memory_note, read_file};
use crate::app::engine_worker::{emit, progress, status};
use crate::app::protocol::Event;
use crate::app::session;
use crate::app::words::page_error;
use crate::app::worker::WorkerExecutor;
use crate::device::yield_now;
use crate::engine::{BaseStorage, EighCache, LoadProgress, LoadedModel};
use crate::io::ModelFiles;
use crate::io::dataset::parse_dataset;

/// Starts WebGPU (or the CPU backend) and the maths worker.
pub async fn init_device(cpu: bool) -> Result<(), String> {
    let choice = if cpu {
        crate::device::DeviceChoice::cpu()
    } else {
        crate::device::init_webgpu().await?
    };
    let limits = choice.adapter.as_ref().map(|a| {
        format!(
            "max buffer {} MiB, max storage binding {} MiB",
            a.max_buffer_size >> 20,
            a.max_storage_buffer_binding_size >> 20
        )
    });
    emit(&Event::Device {
        description: choice.description.clone(),
        limits,
    });
    if let Some(w) = &choice.warning {
        status(format!("note: {w}"));
    }
    session::with(|s| s.device = Some(choice));
    // Without a maths worker the decompositions run in this (engine) worker: slower to cancel,
    // never blocking the page.
    if session::with(|s| s.worker.is_none()) {
        let worker = WorkerExecutor::start("./worker.js").ok();
        session::with(|s| s.worker = worker);
    }
    Ok(())
}

/// Loads a model from files through the engine (which checks the device's limits first),
/// reporting its progress.
pub(super) async fn build_model(files: &ModelFiles) -> Result<LoadedModel, String> {
    let choice = session::with(|s| s.device.clone()).ok_or("start the GPU first (WebGPU, or the CPU backend)")?;
    status("parsing the model…");
    yield_now().await;
    LoadedModel::load_with_progress(files, &choice, BaseStorage::Auto, &mut |p| match p {
        LoadProgress::Note(note) => status(format!("note: {note}")),
        LoadProgress::Blocks(done, total) => progress("uploading weights", done as f64 / total.max(1) as f64),
    })
    .await
    .map_err(|e| page_error(&e))
}

/// Loads a model from files and makes it the session's model.
async fn load_model(files: ModelFiles) -> Result<(), String> {
    let loaded = build_model(&files).await?;
    emit(&Event::Summary(loaded.summary()));
    let gpu = crate::train::metrics::GpuMemory::of(&loaded.model.device());
    session::with(|s| {
        s.model = Some(loaded);
        s.files = Some(files);
        s.calibration = None;
        s.streamed = None;
        s.eighs = EighCache::default();
    });
    emit(&Event::Spectra(None));
    status(match memory_note(gpu) {
        Some(note) => format!("model loaded ({note})"),
        None => "model loaded".to_string(),
    });
    Ok(())
}

/// Takes the files the user picked or dropped as a model: weight files (.gguf, .safetensors)
/// are read a tensor at a time while loading, never whole; the small ones are read now.
pub async fn load_model_files(list: Vec<web_sys::File>) -> Result<(), String> {
    if list.is_empty() {
        return Err("no model files were given: pick a .gguf, or config.json + tokenizer.json + *.safetensors".into());
    }
    let mut files = ModelFiles::new();
    for f in list {
        let name = f.name();
        if is_weights(&name) {
            files.insert_reader(&name, BlobReader::new(f.into())?);
            continue;
        }
        let bytes = read_file(&f, &mut |done, total| {
            progress(&format!("reading {name}"), done / total.max(1.0))
        })
        .await?;
        files.insert(&name, bytes);
        yield_now().await;
    }
    load_model(files).await
}

/// Whether a file holds weights (read on demand) rather than settings (read whole).
fn is_weights(name: &str) -> bool {
    name.ends_with(".gguf") || name.ends_with(".safetensors")
}

/// Sets a dataset from bytes (`calib` chooses the calibration slot).
fn set_dataset(name: &str, bytes: &[u8], calib: bool) -> Result<(), String> {
    let records = parse_dataset(name, bytes).map_err(|e| e.to_string())?;
    let info = format!("{name}: {} records", records.len());
    session::with(|s| {
        let slot = if calib { &mut s.calib_data } else { &mut s.data };
        *slot = Some((name.to_string(), records));
    });
    emit(&Event::DataInfo { calib, info });
    Ok(())
}

/// Reads dataset files into the fine-tuning (or calibration) slot.
pub async fn read_datasets(list: Vec<web_sys::File>, calib: bool) -> Result<(), String> {
    for f in list {
        let name = f.name();
        let bytes = read_file(&f, &mut |_, _| {}).await?;
        set_dataset(&name, &bytes, calib)?;
    }
    status("dataset loaded");
    Ok(())
}

/// The one-button default: SmolLM2 and the sample data from assets/.
pub async fn load_default() -> Result<(), String> {
    if session::with(|s| s.device.is_none()) {
        init_device(false).await?;
    }
    status("downloading the default model…");
    let blob = fetch_blob(DEFAULT_MODEL).await?;
    let mut files = ModelFiles::new();
    files.insert_reader(DEFAULT_MODEL, BlobReader::new(blob)?);
    for (url, calib) in [(DEFAULT_TRAIN, false), (DEFAULT_CALIB, true)] {
        let b = fetch_bytes(url).await?;
        set_dataset(url.rsplit('/').next().unwrap_or(url), &b, calib)?;
    }
    load_model(files).await
}
