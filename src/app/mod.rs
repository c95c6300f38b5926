//! The browser studio (wasm32 only). The page (Leptos components, `views`) draws and sends
//! commands (`client`); the engine runs in a dedicated worker (`engine_worker`, `flows`, the
//! `session` it holds), which hands eigendecompositions to a second worker (`worker`). All three
//! run this same wasm; only the engine touches burn.

pub mod browser;
pub mod client;
pub mod engine_worker;
pub mod flows;
pub mod protocol;
pub mod session;
pub mod state;
pub mod views;
pub mod worker;

/// Entry point of the wasm: mounts the page, or serves as the engine or maths worker.
pub fn start() {
    crate::device::run_static_constructors();
    console_error_panic_hook::set_once();
    match worker::role() {
        Some(worker::Role::Engine) => engine_worker::serve(),
        Some(worker::Role::Maths) => worker::serve(),
        None => leptos::mount::mount_to_body(views::App),
    }
}
