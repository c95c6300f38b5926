//! The page side of the engine: starts the engine worker, sends it [`Command`]s, and turns its
//! [`Event`]s into signal updates. The page itself never touches burn, so WebGPU kernel
//! compilation, uploads and readbacks never block it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::browser::{Role, spawn};
use super::browser::{download, js_err};
use super::protocol::{Command, Event, decode, encode};
use super::state::Ui;

type Pending = Rc<RefCell<HashMap<u32, js_sys::Function>>>;

/// The running engine worker.
struct Engine {
    worker: web_sys::Worker,
    pending: Pending,
    next: Cell<u32>,
    _handlers: [Closure<dyn FnMut(JsValue)>; 2],
}

thread_local! {
    static ENGINE: RefCell<Option<Rc<Engine>>> = const { RefCell::new(None) };
}

/// Starts the engine worker; its events update `ui`.
pub fn start(ui: Ui) -> Result<(), String> {
    let worker = spawn("./worker.js", Role::Engine)?;
    let pending: Pending = Rc::default();
    let p = pending.clone();
    let on_message = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
        let ev: web_sys::MessageEvent = ev.unchecked_into();
        match decode::<Event>(&ev.data()) {
            Ok((_, Event::Done { id, error }, _)) => {
                if let Some(resolve) = p.borrow_mut().remove(&id) {
                    let _ = resolve.call1(&JsValue::NULL, &error.map_or(JsValue::NULL, JsValue::from));
                }
            }
            Ok((_, event, payload)) => apply(ui, event, payload),
            Err(e) => ui
                .error
                .set(Some(format!("the engine sent a message the page cannot read: {e}"))),
        }
    });
    let p = pending.clone();
    let on_error = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
        let message = ev
            .dyn_ref::<web_sys::ErrorEvent>()
            .map_or_else(|| "unknown error".to_string(), |e| e.message());
        let why = format!("the engine stopped ({message}); reload the page to start again");
        for (_, resolve) in p.borrow_mut().drain() {
            let _ = resolve.call1(&JsValue::NULL, &JsValue::from(why.as_str()));
        }
        ui.error.set(Some(why));
    });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    let engine = Engine {
        worker,
        pending,
        next: Cell::new(1),
        _handlers: [on_message, on_error],
    };
    ENGINE.with(|e| *e.borrow_mut() = Some(Rc::new(engine)));
    Ok(())
}

fn engine() -> Result<Rc<Engine>, String> {
    ENGINE
        .with(|e| e.borrow().clone())
        .ok_or_else(|| "the engine worker did not start; reload the page".to_string())
}

/// Sends a command that is not a task (pause, cancel).
pub fn send(command: &Command) {
    if let Ok(e) = engine()
        && let Ok(msg) = encode(0, command, &JsValue::UNDEFINED)
    {
        let _ = e.worker.post_message(&msg);
    }
}

/// Sends a task command with a payload and waits for its end.
async fn call(command: &Command, payload: &JsValue) -> Result<(), String> {
    let e = engine()?;
    let id = e.next.get();
    e.next.set(id.wrapping_add(1).max(1));
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        e.pending.borrow_mut().insert(id, resolve);
    });
    let msg = encode(id, command, payload)?;
    if let Err(err) = e.worker.post_message(&msg) {
        e.pending.borrow_mut().remove(&id);
        return Err(format!("cannot reach the engine: {}", js_err(err)));
    }
    drop(e);
    let outcome = JsFuture::from(promise).await.map_err(js_err)?;
    match outcome.as_string() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Runs `command` as the page's one task: marks busy, clears the error, shows a failure in the
/// page. `payload` carries the user's files.
pub fn run_task(ui: Ui, label: &'static str, command: Command, payload: JsValue) {
    if ui.busy.get_untracked() {
        return;
    }
    ui.busy.set(true);
    ui.error.set(None);
    ui.status.set(format!("{label}…"));
    leptos::task::spawn_local(async move {
        let result = call(&command, &payload).await;
        ui.busy.set(false);
        ui.progress.set(None);
        if let Err(e) = result {
            ui.status.set(format!("{label} failed"));
            ui.error.set(Some(e));
        }
    });
}

/// Draws one event.
fn apply(ui: Ui, event: Event, payload: JsValue) {
    match event {
        Event::Status(s) => ui.status.set(s),
        Event::Progress(p) => ui.progress.set(p),
        Event::Device { description, limits } => {
            ui.gpu_limits.set(limits);
            ui.gpu.set(Some(description));
        }
        Event::Summary(s) => ui.summary.set(Some(s)),
        Event::DataInfo { calib: true, info } => ui.calib_info.set(Some(info)),
        Event::DataInfo { calib: false, info } => ui.data_info.set(Some(info)),
        Event::Spectra(report) => ui.spectra.set(report.map(|r| *r)),
        Event::TrainStarted => {
            ui.losses.set(Vec::new());
            ui.metrics.set(None);
        }
        Event::Step(m) => {
            ui.losses.update(|l| l.push((m.step, m.loss)));
            ui.metrics.set(Some(m));
        }
        Event::Generated { after, text } => (if after { ui.after } else { ui.before }).set(text),
        Event::Probe {
            after,
            score,
            perplexity,
        } => (if after { ui.probe_after } else { ui.probe_before }).set(Some((score, perplexity))),
        Event::Download(name) => match payload.dyn_into::<js_sys::Uint8Array>() {
            Ok(bytes) => {
                if let Err(e) = download(&name, &bytes, "application/octet-stream") {
                    ui.error.set(Some(format!("cannot offer {name} as a download: {e}")));
                }
            }
            Err(_) => ui.error.set(Some(format!("the engine sent {name} without its bytes"))),
        },
        Event::Exported(names) => ui.exported.set(names),
        Event::Done { .. } => {}
    }
}
