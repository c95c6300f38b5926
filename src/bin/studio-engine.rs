//! The web app's engine: the wasm its two workers run (the engine, and the maths worker), with
//! burn (built by `scripts/build-web.sh`).

#[cfg(target_arch = "wasm32")]
fn main() {
    lora_null::app::start_worker();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("studio-engine is the browser app's worker: build it with scripts/build-web.sh");
    std::process::exit(2);
}
