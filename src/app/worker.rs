//! The Web Worker that runs the heavy maths (eigendecompositions, SVDs, initialisation
//! formulas) off the page's thread, and the [`Executor`] that sends it jobs.
//!
//! The worker loads the same wasm module (`assets/worker.js` imports the app's glue); `main`
//! reads the worker's name ([`role`]) and calls [`serve`] instead of mounting the page. The
//! engine worker starts it, so the engine stays free to answer pause and cancel while the maths
//! runs.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::linalg::decompose::DecomposeError;
use crate::linalg::jobs::{Executor, Job, JobFuture, JobOutput, run};

/// What a dedicated worker running this wasm is for (its `name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The engine: model, statistics, training (see `engine_worker`).
    Engine,
    /// Eigendecompositions and SVDs for the engine (this module).
    Maths,
}

impl Role {
    /// The worker name that selects this role.
    pub fn name(self) -> &'static str {
        match self {
            Role::Engine => "engine",
            Role::Maths => "maths",
        }
    }
}

/// The role of this code when it runs in a dedicated worker; `None` on the page.
pub fn role() -> Option<Role> {
    let scope = js_sys::global()
        .dyn_into::<web_sys::DedicatedWorkerGlobalScope>()
        .ok()?;
    Some(if scope.name() == Role::Engine.name() {
        Role::Engine
    } else {
        Role::Maths
    })
}

/// Starts a module worker running this app's wasm (`assets/worker.js`) in `role`.
pub fn spawn(url: &str, role: Role) -> Result<web_sys::Worker, String> {
    let opts = web_sys::WorkerOptions::new();
    opts.set_type(web_sys::WorkerType::Module);
    opts.set_name(role.name());
    web_sys::Worker::new_with_options(url, &opts).map_err(super::browser::js_err)
}

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
            posted.map_err(|e| DecomposeError::Worker(format!("cannot send a job: {}", super::browser::js_err(e))))?;
            let reply = JsFuture::from(promise)
                .await
                .map_err(|e| DecomposeError::Worker(super::browser::js_err(e)))?;
            let out = js_sys::Uint8Array::new(&reply).to_vec();
            JobOutput::decode(&out).ok_or_else(|| DecomposeError::Worker("malformed reply".into()))
        })
    }
}
