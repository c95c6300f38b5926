//! The Web Worker that runs the heavy maths (eigendecompositions, SVDs, initialisation
//! formulas) for the engine worker, and the [`Executor`] that sends it jobs, so the engine stays
//! free to answer pause and cancel while the maths runs. Both workers run the engine's wasm
//! (`assets/worker.js`); the worker's name picks the role (`browser::role`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::browser::{Role, js_err, spawn};
use crate::engine::jobs::{Executor, JobError, JobFuture};
use crate::linalg::jobs::{Job, JobOutput, run};

/// Worker side: answer `[id, bytes]` messages with `[id, ok, bytes | message]`.
pub fn serve() {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let reply_scope = scope.clone();
    let handler = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
        let msg = js_sys::Array::from(&ev.data());
        let id = msg.get(0);
        let bytes = js_sys::Uint8Array::new(&msg.get(1)).to_vec();
        let reply = match Job::decode(&bytes) {
            None => js_sys::Array::of3(&id, &false.into(), &"malformed job".into()),
            Some(job) => match run(job) {
                Ok(out) => js_sys::Array::of3(&id, &true.into(), &js_sys::Uint8Array::from(out.encode().as_slice())),
                Err(e) => js_sys::Array::of3(&id, &false.into(), &e.to_string().into()),
            },
        };
        let _ = reply_scope.post_message(&reply);
    });
    scope.set_onmessage(Some(handler.as_ref().unchecked_ref()));
    handler.forget();
}

type Pending = Rc<RefCell<HashMap<u32, (js_sys::Function, js_sys::Function)>>>;

/// Page side: posts jobs to the worker and awaits the replies.
pub struct WorkerExecutor {
    worker: web_sys::Worker,
    pending: Pending,
    next: Cell<u32>,
    _onmessage: Closure<dyn FnMut(web_sys::MessageEvent)>,
}

impl WorkerExecutor {
    /// Starts the maths worker from `url` (the module script `worker.js`).
    pub fn start(url: &str) -> Result<Self, String> {
        let worker = spawn(url, Role::Maths)?;
        let pending: Pending = Rc::default();
        let p = pending.clone();
        let onmessage = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
            let msg = js_sys::Array::from(&ev.data());
            let Some(id) = msg.get(0).as_f64() else { return };
            if let Some((resolve, reject)) = p.borrow_mut().remove(&(id as u32)) {
                if msg.get(1).as_bool() == Some(true) {
                    let _ = resolve.call1(&JsValue::NULL, &msg.get(2));
                } else {
                    let _ = reject.call1(&JsValue::NULL, &msg.get(2));
                }
            }
        });
        worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        Ok(Self {
            worker,
            pending,
            next: Cell::new(0),
            _onmessage: onmessage,
        })
    }
}

impl Drop for WorkerExecutor {
    fn drop(&mut self) {
        self.worker.terminate();
    }
}

impl Executor for WorkerExecutor {
    fn submit(&self, job: Job) -> JobFuture<'_> {
        let id = self.next.get();
        self.next.set(id.wrapping_add(1));
        let pending = self.pending.clone();
        let promise = js_sys::Promise::new(&mut |resolve, reject| {
            pending.borrow_mut().insert(id, (resolve, reject));
        });
        let bytes = js_sys::Uint8Array::from(job.encode().as_slice());
        let posted = self.worker.post_message_with_transfer(
            &js_sys::Array::of2(&id.into(), &bytes),
            &js_sys::Array::of1(&bytes.buffer()),
        );
        Box::pin(async move {
            posted.map_err(|e| JobError::Worker(format!("cannot send a job: {}", js_err(e))))?;
            let reply = JsFuture::from(promise).await.map_err(|e| JobError::Worker(js_err(e)))?;
            let out = js_sys::Uint8Array::new(&reply).to_vec();
            JobOutput::decode(&out).ok_or_else(|| JobError::Worker("malformed reply".into()))
        })
    }
}
