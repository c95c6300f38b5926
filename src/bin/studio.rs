//! The web app's page (built for wasm32 without burn: `scripts/build-web.sh`, or trunk through
//! `scripts/run.sh`).

#[cfg(target_arch = "wasm32")]
fn main() {
    lora_null::app::start_page();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("studio is the browser app's page: build it with `trunk serve` (scripts/run.sh) or scripts/build-web.sh");
    std::process::exit(2);
}
