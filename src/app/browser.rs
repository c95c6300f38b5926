//! Browser plumbing, for the page and its workers alike: which worker this code runs in and
//! starting one, reading files and URLs into bytes (with progress) or a range at a time, offering
//! bytes as downloads.

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Turns a JS error into a readable string.
pub fn js_err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| {
            js_sys::Reflect::get(&e, &"message".into())
                .ok()
                .and_then(|m| m.as_string())
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

/// The global scope this code runs in: the page's window or a worker's scope.
enum Global {
    Window(web_sys::Window),
    Worker(web_sys::WorkerGlobalScope),
}

fn global() -> Option<Global> {
    let g = js_sys::global();
    if let Some(w) = g.dyn_ref::<web_sys::Window>() {
        Some(Global::Window(w.clone()))
    } else {
        g.dyn_ref::<web_sys::WorkerGlobalScope>().cloned().map(Global::Worker)
    }
}

/// Reads a `File` in 8 MiB slices, reporting bytes read.
pub async fn read_file(file: &web_sys::File, progress: &mut dyn FnMut(f64, f64)) -> Result<Vec<u8>, String> {
    let total = file.size();
    let mut out = Vec::with_capacity(total as usize);
    let chunk = 8.0 * 1024.0 * 1024.0;
    let mut start = 0.0;
    while start < total {
        let end = (start + chunk).min(total);
        let blob = file.slice_with_f64_and_f64(start, end).map_err(js_err)?;
        let buf = JsFuture::from(blob.array_buffer()).await.map_err(js_err)?;
        out.extend(js_sys::Uint8Array::new(&buf).to_vec());
        start = end;
        progress(start, total);
    }
    Ok(out)
}

/// Fetches a URL (served next to the page).
async fn fetch(url: &str) -> Result<web_sys::Response, String> {
    let request = match global() {
        Some(Global::Window(w)) => w.fetch_with_str(url),
        Some(Global::Worker(w)) => w.fetch_with_str(url),
        None => return Err("no fetch in this context".into()),
    };
    let resp: web_sys::Response = JsFuture::from(request)
        .await
        .map_err(js_err)?
        .dyn_into()
        .map_err(js_err)?;
    if !resp.ok() {
        return Err(format!(
            "{url}: HTTP {} (run scripts/run.sh, which fetches the default model and data into assets/)",
            resp.status()
        ));
    }
    Ok(resp)
}

/// Fetches a URL (served next to the page) into bytes.
pub async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let buf = JsFuture::from(fetch(url).await?.array_buffer().map_err(js_err)?)
        .await
        .map_err(js_err)?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// Fetches a URL (served next to the page) as a `Blob`: the browser holds its bytes, outside
/// this wasm's memory, to be read a range at a time ([`BlobReader`]).
#[cfg(feature = "engine")]
pub async fn fetch_blob(url: &str) -> Result<web_sys::Blob, String> {
    JsFuture::from(fetch(url).await?.blob().map_err(js_err)?)
        .await
        .map_err(js_err)?
        .dyn_into()
        .map_err(js_err)
}

/// A `Blob` (a `File` the user gave, a fetched model) read a range at a time and synchronously,
/// which only a worker can do (`FileReaderSync`); the engine worker loads models through it, so
/// the file's bytes never sit whole in wasm memory.
#[cfg(feature = "engine")]
pub struct BlobReader {
    blob: web_sys::Blob,
    reader: web_sys::FileReaderSync,
}

#[cfg(feature = "engine")]
impl BlobReader {
    /// A reader of `blob`; fails outside a worker.
    pub fn new(blob: web_sys::Blob) -> Result<Self, String> {
        let reader = web_sys::FileReaderSync::new()
            .map_err(|e| format!("files can only be read in pieces in a worker: {}", js_err(e)))?;
        Ok(Self { blob, reader })
    }
}

#[cfg(feature = "engine")]
impl crate::io::file_bytes::ReadAt for BlobReader {
    fn len(&self) -> u64 {
        self.blob.size() as u64
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> Result<(), String> {
        let end = offset + out.len() as u64;
        let piece = self
            .blob
            .slice_with_f64_and_f64(offset as f64, end as f64)
            .map_err(js_err)?;
        let buf = self
            .reader
            .read_as_array_buffer(&piece)
            .map_err(|e| format!("{} (was the file moved or changed? pick it again)", js_err(e)))?;
        let array = js_sys::Uint8Array::new(&buf);
        if array.length() as usize != out.len() {
            return Err(format!("got {} bytes of {}", array.length(), out.len()));
        }
        array.copy_to(out);
        Ok(())
    }
}

/// The bytes of this wasm instance's memory: what this worker's model, statistics and training
/// hold at most (wasm memory grows and never shrinks).
pub fn wasm_memory_bytes() -> Option<f64> {
    let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().dyn_into().ok()?;
    let buffer: js_sys::ArrayBuffer = memory.buffer().dyn_into().ok()?;
    Some(buffer.byte_length() as f64)
}

/// What the engine holds, for a status line: this instance's memory and, on a GPU, what burn's
/// pools hold there ("the engine's memory: 0.76 GiB; the GPU's pools: 0.41 GiB in use, 0.93
/// GiB reserved"). `None` when neither can be read.
pub fn memory_note(gpu: Option<crate::train::metrics::GpuMemory>) -> Option<String> {
    let wasm = wasm_memory_bytes().map(|b| format!("the engine's memory: {:.2} GiB", b / (1u64 << 30) as f64));
    let gpu = gpu.map(|g| format!("the GPU's pools: {}", g.describe()));
    match (wasm, gpu) {
        (Some(w), Some(g)) => Some(format!("{w}; {g}")),
        (w, g) => w.or(g),
    }
}

/// Offers bytes as a file download (page only).
pub fn download(name: &str, bytes: &js_sys::Uint8Array, mime: &str) -> Result<(), String> {
    let parts = js_sys::Array::of1(bytes);
    let props = web_sys::BlobPropertyBag::new();
    props.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &props).map_err(js_err)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(js_err)?;
    let document = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
    let a: web_sys::HtmlAnchorElement = document
        .create_element("a")
        .map_err(js_err)?
        .dyn_into()
        .map_err(|_| "cannot create a download link".to_string())?;
    a.set_href(&url);
    a.set_download(name);
    a.click();
    web_sys::Url::revoke_object_url(&url).map_err(js_err)?;
    Ok(())
}

/// What a dedicated worker running the engine's wasm is for (its `name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The engine: model, statistics, training (`engine_worker`).
    Engine,
    /// Eigendecompositions and SVDs for the engine (`worker`).
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

/// Starts a module worker running the engine's wasm (`worker.js`) in `role`.
pub fn spawn(url: &str, role: Role) -> Result<web_sys::Worker, String> {
    let opts = web_sys::WorkerOptions::new();
    opts.set_type(web_sys::WorkerType::Module);
    opts.set_name(role.name());
    web_sys::Worker::new_with_options(url, &opts).map_err(js_err)
}
