//! Pure maths: no burn, no I/O, no async. Matrices, decompositions (through faer, in f64),
//! spectrum summaries, and the LoRA initialisation family.

pub mod decompose;
pub mod init;
pub mod jobs;
pub mod matrix;
pub mod partial;
pub mod rng;
pub mod spectra;

pub use matrix::Matrix;
pub use rng::Rng;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
