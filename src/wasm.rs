//! What both wasm bundles (the page's, and the engine's) need from the browser: running the
//! static constructors once, and whether WebGPU exists (with what to tell the user when not).

/// Whether this browser exposes WebGPU at all (`navigator.gpu`, in the page or a worker).
pub fn has_webgpu() -> bool {
    let get = |v: &wasm_bindgen::JsValue, k: &str| {
        js_sys::Reflect::get(v, &k.into())
            .ok()
            .filter(|x| !x.is_undefined() && !x.is_null())
    };
    get(&js_sys::global(), "navigator")
        .and_then(|n| get(&n, "gpu"))
        .is_some()
}

/// The message shown when the browser has no WebGPU.
pub const NO_WEBGPU: &str = "this browser does not expose WebGPU (navigator.gpu is missing)";

/// What to do about it.
pub const NO_WEBGPU_FIX: &str = "use a current Chrome, Edge or Safari 26 with hardware acceleration on; on Linux Chrome, \
     enable chrome://flags/#enable-unsafe-webgpu and chrome://flags/#enable-vulkan; or run the CPU backend (slow) from this page";

/// Switches on the SIMD128 kernels that the matrix and element-wise code picks at run time: the
/// `gemm` crate's f32 and f64 products (under burn's CPU backend and faer: the page's CPU
/// fallback, the maths worker's eigendecompositions) and pulp's dispatch (faer's other kernels,
/// the fused loops of `model::cpu_ops`). Call it before the first product: `gemm` keeps the
/// kernel it picked first.
///
/// Both crates compile their SIMD128 code into every wasm32 build, so the module already needs
/// a browser with SIMD128 (Chrome and Firefox since 2021, Safari since 16.4); but wasm cannot
/// detect features, so they run their scalar code unless told (or built with features that
/// would rebuild burn). 3.5x faster f32 products in Chromium here (BENCHMARKS.md, "SIMD128 in
/// wasm").
pub fn use_simd_products() {
    gemm::set_wasm_simd128(true);
    pulp::wasm::enable_simd128();
}

/// Runs the module's static constructors, once.
///
/// wasm-ld wraps every export of a module that never calls `__wasm_call_ctors` itself in a call to
/// it, so each call from JavaScript into the wasm (every promise callback, every externref table
/// slot) re-ran all static constructors, and cubecl registers hundreds through `inventory`: a
/// profile of the app showed them taking a large share of the main thread. Referencing the function
/// here makes wasm-ld leave the exports alone; every entry point (the app's `start`, and
/// [`init_webgpu`] for code that starts there) calls this first.
pub fn run_static_constructors() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    unsafe extern "C" {
        fn __wasm_call_ctors();
    }
    if !DONE.swap(true, Ordering::SeqCst) {
        // SAFETY: wasm-ld synthesises this function; it only runs the static constructors, and
        // the flag above makes that happen once per instance, before any engine code.
        unsafe { __wasm_call_ctors() }
    }
}
