//! The worker side of the engine: receives [`Command`]s, runs one task at a time through
//! `flows`, and reports [`Event`]s to the page. Pause and cancel are handled as soon as they
//! arrive (between the task's awaits), so they work while a task runs.

use std::cell::Cell;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use super::protocol::{Command, Event, decode, encode};
use crate::engine::jobs::{Executor, JobError, JobFuture};
use crate::linalg::jobs::Job;

thread_local! {
    static BUSY: Cell<bool> = const { Cell::new(false) };
    static PAUSED: Cell<bool> = const { Cell::new(false) };
    static CANCEL: Cell<bool> = const { Cell::new(false) };
}

fn scope() -> web_sys::DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Sends an event to the page.
pub fn emit(event: &Event) {
    emit_with(event, &JsValue::UNDEFINED, None);
}

/// Sends an event with a payload, transferring `transfer` (array buffers) instead of copying.
pub fn emit_with(event: &Event, payload: &JsValue, transfer: Option<&js_sys::ArrayBuffer>) {
    // Events are plain data: encoding cannot fail, and a page that went away cannot be told.
    let Ok(msg) = encode(0, event, payload) else { return };
    let _ = match transfer {
        Some(buffer) => scope().post_message_with_transfer(&msg, &js_sys::Array::of1(buffer)),
        None => scope().post_message(&msg),
    };
}

/// One status line.
pub fn status(text: impl Into<String>) {
    emit(&Event::Status(text.into()));
}

/// Progress of the running task.
pub fn progress(label: &str, fraction: f64) {
    emit(&Event::Progress(Some((label.to_string(), fraction))));
}

/// Whether the user asked to pause training.
pub fn paused() -> bool {
    PAUSED.with(Cell::get)
}

/// Whether the user asked to cancel the running task.
pub fn cancelled() -> bool {
    CANCEL.with(Cell::get)
}

/// Serves the page: installs the message handler.
pub fn serve() {
    let handler = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(|ev: web_sys::MessageEvent| {
        let (id, command, payload) = match decode::<Command>(&ev.data()) {
            Ok(m) => m,
            Err(e) => return status(format!("ignored a message the engine cannot read: {e}")),
        };
        match command {
            Command::Pause(p) => PAUSED.with(|c| c.set(p)),
            Command::Cancel => CANCEL.with(|c| c.set(true)),
            command => wasm_bindgen_futures::spawn_local(async move {
                let error = if BUSY.with(|b| b.replace(true)) {
                    Some("another task is running: wait for it to finish, or cancel it".to_string())
                } else {
                    PAUSED.with(|c| c.set(false));
                    CANCEL.with(|c| c.set(false));
                    let r = super::flows::run(command, payload).await.err();
                    BUSY.with(|b| b.set(false));
                    r
                };
                emit(&Event::Progress(None));
                emit(&Event::Done { id, error });
            }),
        }
    });
    scope().set_onmessage(Some(handler.as_ref().unchecked_ref()));
    handler.forget();
}

/// An executor that refuses new jobs once the user has cancelled, so a long run of
/// decompositions stops at the next job.
pub struct Cancellable<'a>(pub &'a dyn Executor);

impl Executor for Cancellable<'_> {
    fn submit(&self, job: Job) -> JobFuture<'_> {
        if cancelled() {
            return Box::pin(std::future::ready(Err(JobError::Cancelled)));
        }
        self.0.submit(job)
    }

    fn parallelism(&self) -> usize {
        self.0.parallelism()
    }
}
