//! The web app's entry point (built for wasm32 by trunk or scripts/build-web.sh).

#[cfg(target_arch = "wasm32")]
fn main() {
    lora_null::app::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("studio is the browser app: build it with `trunk serve` (scripts/run.sh) or scripts/build-web.sh");
    std::process::exit(2);
}
