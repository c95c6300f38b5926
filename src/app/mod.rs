//! The browser studio (wasm32 only): Leptos components over the engine facade. Only the engine
//! and its modules touch burn; this module reads files, draws, and starts flows.

pub mod browser;
pub mod flows;
pub mod session;
pub mod state;
pub mod views;
pub mod worker;

/// Entry point of the page's wasm: mounts the app, or serves maths jobs when loaded by the
/// worker script.
pub fn start() {
    crate::device::run_static_constructors();
    console_error_panic_hook::set_once();
    if worker::in_worker() {
        worker::serve();
    } else {
        leptos::mount::mount_to_body(views::App);
    }
}
