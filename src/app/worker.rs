//! The Web Workers that run the heavy maths (eigendecompositions, SVDs, initialisation
//! formulas) for the engine worker, side by side, and the [`Executor`] that sends them jobs, so
//! the engine stays free to answer pause and cancel while the maths runs. All workers run the
//! engine's wasm (`assets/worker.js`); a worker's name picks its role (`browser::role`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::browser::{Role, js_err, spawn};
use crate::engine::jobs::{Executor, JobError, JobFuture};
use crate::linalg::jobs::{Job, JobOutput, run};

/// Worker side: answer `[id, header, [matrices]]` messages ([`Job::parts`]: a byte header and
/// one `Float64Array` per matrix, each copied once into this worker's memory) with
/// `[id, ok, bytes | message]`.
pub fn serve() {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let reply_scope = scope.clone();
    let handler = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
        let msg = js_sys::Array::from(&ev.data());
        let id = msg.get(0);
        let header = msg.get(1).dyn_into::<js_sys::Uint8Array>().map(|h| h.to_vec());
        let data: Option<Vec<Vec<f64>>> = js_sys::Array::from(&msg.get(2))
            .iter()
            .map(|m| m.dyn_into::<js_sys::Float64Array>().ok().map(|m| m.to_vec()))
            .collect();
        let job = match (header, data) {
            (Ok(header), Some(data)) => Job::from_parts(&header, data),
            _ => None,
        };
        let reply = match job {
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

/// Maths workers at most: each holds its own copy of the engine's wasm and one job's matrices.
const MAX_WORKERS: usize = 4;

/// One maths worker and the jobs it has been sent and not yet answered (id → input bytes).
struct Member {
    worker: web_sys::Worker,
    unanswered: Rc<RefCell<HashMap<u32, usize>>>,
    _onmessage: Closure<dyn FnMut(web_sys::MessageEvent)>,
}

/// Page side: posts jobs to the maths workers (one per core, up to [`MAX_WORKERS`]), each job
/// to the one with the fewest bytes of unanswered jobs (so that two wide covariances go to two
/// workers, whatever small jobs are queued), and awaits the replies.
pub struct WorkerExecutor {
    members: Vec<Member>,
    pending: Pending,
    next: Cell<u32>,
}

impl WorkerExecutor {
    /// Starts the maths workers from `url` (the module script `worker.js`): as many as the
    /// browser reports cores (the engine worker mostly waits while they compute), at least one,
    /// at most [`MAX_WORKERS`]. Fails only if none starts.
    pub fn start(url: &str) -> Result<Self, String> {
        let cores = js_sys::Reflect::get(&js_sys::global(), &"navigator".into())
            .and_then(|n| js_sys::Reflect::get(&n, &"hardwareConcurrency".into()))
            .ok()
            .and_then(|c| c.as_f64())
            .unwrap_or(1.0) as usize;
        let pending: Pending = Rc::default();
        let mut members = Vec::new();
        let mut first_error = None;
        for _ in 0..cores.clamp(1, MAX_WORKERS) {
            match Self::member(url, &pending) {
                Ok(m) => members.push(m),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if members.is_empty() {
            return Err(first_error.unwrap_or_else(|| "no maths worker started".into()));
        }
        Ok(Self {
            members,
            pending,
            next: Cell::new(0),
        })
    }

    fn member(url: &str, pending: &Pending) -> Result<Member, String> {
        let worker = spawn(url, Role::Maths)?;
        let unanswered: Rc<RefCell<HashMap<u32, usize>>> = Rc::default();
        let (p, u) = (pending.clone(), unanswered.clone());
        let onmessage = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
            let msg = js_sys::Array::from(&ev.data());
            let Some(id) = msg.get(0).as_f64() else { return };
            u.borrow_mut().remove(&(id as u32));
            if let Some((resolve, reject)) = p.borrow_mut().remove(&(id as u32)) {
                if msg.get(1).as_bool() == Some(true) {
                    let _ = resolve.call1(&JsValue::NULL, &msg.get(2));
                } else {
                    let _ = reject.call1(&JsValue::NULL, &msg.get(2));
                }
            }
        });
        worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        Ok(Member {
            worker,
            unanswered,
            _onmessage: onmessage,
        })
    }
}

impl Drop for WorkerExecutor {
    fn drop(&mut self) {
        for m in &self.members {
            m.worker.terminate();
        }
    }
}

impl Executor for WorkerExecutor {
    fn parallelism(&self) -> usize {
        self.members.len()
    }

    fn submit(&self, job: Job) -> JobFuture<'_> {
        let id = self.next.get();
        self.next.set(id.wrapping_add(1));
        let pending = self.pending.clone();
        let promise = js_sys::Promise::new(&mut |resolve, reject| {
            pending.borrow_mut().insert(id, (resolve, reject));
        });
        // The matrices go as typed arrays, copied straight from this memory and transferred.
        let (header, data) = job.parts();
        let header = js_sys::Uint8Array::from(header.as_slice());
        let transfer = js_sys::Array::of1(&header.buffer());
        let matrices = js_sys::Array::new();
        for values in data {
            let m = js_sys::Float64Array::from(values);
            transfer.push(&m.buffer());
            matrices.push(&m);
        }
        let member = self
            .members
            .iter()
            .min_by_key(|m| {
                let u = m.unanswered.borrow();
                (u.values().sum::<usize>(), u.len())
            })
            .expect("invariant: an executor has at least one worker (`start`)");
        member.unanswered.borrow_mut().insert(id, job.input_bytes());
        let posted = member
            .worker
            .post_message_with_transfer(&js_sys::Array::of3(&id.into(), &header, &matrices), &transfer);
        if posted.is_err() {
            member.unanswered.borrow_mut().remove(&id);
            self.pending.borrow_mut().remove(&id);
        }
        Box::pin(async move {
            posted.map_err(|e| JobError::Worker(format!("cannot send a job: {}", js_err(e))))?;
            let reply = JsFuture::from(promise).await.map_err(|e| JobError::Worker(js_err(e)))?;
            let out = js_sys::Uint8Array::new(&reply).to_vec();
            JobOutput::decode(&out).ok_or_else(|| JobError::Worker("malformed reply".into()))
        })
    }
}
