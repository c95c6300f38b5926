//! What the engine worker holds between commands: the loaded model (and the bytes it came from,
//! to reload the base), datasets, statistics. The worker is one thread, so this
//! lives in a thread-local; long tasks take what they need out and put it back, even on error,
//! so nothing the user loaded is lost.

use std::cell::RefCell;

use crate::device::DeviceChoice;
use crate::engine::{CalibOptions, Calibration, EighCache, Executor, Inline, LoadedModel};
use crate::io::ModelFiles;
use crate::io::dataset::Record;

use super::worker::WorkerExecutor;

/// The engine worker's state.
#[derive(Default)]
pub struct Session {
    /// The burn device (WebGPU, or the CPU backend when chosen).
    pub device: Option<DeviceChoice>,
    /// The model files as loaded (kept to reload the untouched base).
    pub files: Option<ModelFiles>,
    /// The loaded model.
    pub model: Option<LoadedModel>,
    /// Fine-tuning data (file name, records).
    pub data: Option<(String, Vec<Record>)>,
    /// Calibration text (file name, records); falls back to the fine-tuning data.
    pub calib_data: Option<(String, Vec<Record>)>,
    /// Statistics from the last calibration.
    pub calibration: Option<Calibration>,
    /// Set instead of `calibration` for a model whose statistics do not fit at once: the
    /// options to collect them with, block by block, when training initialises the adapters.
    pub streamed: Option<CalibOptions>,
    /// Eigendecompositions of those statistics.
    pub eighs: EighCache,
    /// The worker that runs decompositions off the page's thread.
    pub worker: Option<WorkerExecutor>,
    /// Knowledge probe (question, answers) and prose for the forgetting check.
    pub probe: Option<(Vec<crate::eval::probe::ProbeItem>, String)>,
}

thread_local! {
    static SESSION: RefCell<Session> = RefCell::new(Session::default());
}

/// Runs `f` with the session borrowed (never across an await).
pub fn with<R>(f: impl FnOnce(&mut Session) -> R) -> R {
    SESSION.with(|s| f(&mut s.borrow_mut()))
}

/// Takes the worker out for an async task (put it back with [`put_worker`]); `None` means run
/// the maths inline.
pub fn take_worker() -> Option<WorkerExecutor> {
    with(|s| s.worker.take())
}

/// Returns the worker after a task.
pub fn put_worker(w: Option<WorkerExecutor>) {
    if w.is_some() {
        with(|s| s.worker = w);
    }
}

/// The executor to use: the worker if there is one, else inline.
pub fn executor(w: &Option<WorkerExecutor>) -> &dyn Executor {
    match w {
        Some(w) => w,
        None => &Inline,
    }
}
