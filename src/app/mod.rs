//! The browser studio (wasm32 only), as two bundles. The page (`studio`: Leptos components in
//! `views`, the `client` that talks to the engine, plain data only, no burn) draws and sends
//! commands. The engine bundle (`studio-engine`) runs in a dedicated worker (`engine_worker`,
//! `flows`, the `session` it holds) and drives the library's engine; it hands
//! eigendecompositions to a second worker of the same bundle (`worker`).

pub mod browser;
pub mod client;
pub mod protocol;
pub mod state;
pub mod views;

#[cfg(feature = "engine")]
pub mod engine_worker;
#[cfg(feature = "engine")]
pub mod flows;
#[cfg(feature = "engine")]
pub mod session;
#[cfg(feature = "engine")]
pub mod words;
#[cfg(feature = "engine")]
pub mod worker;

/// Entry point of the page's wasm: mounts the page.
pub fn start_page() {
    crate::wasm::run_static_constructors();
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(views::App);
}

/// Entry point of the engine's wasm, in a worker: serves as the engine or the maths worker.
#[cfg(feature = "engine")]
pub fn start_worker() {
    crate::wasm::run_static_constructors();
    crate::wasm::use_simd_products();
    console_error_panic_hook::set_once();
    match browser::role() {
        Some(browser::Role::Engine) => engine_worker::serve(),
        _ => worker::serve(),
    }
}
