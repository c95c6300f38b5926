//! LoRA-Null Studio: LLaMA-family models in burn, activation statistics and spectra, the LoRA
//! initialisation family (LoRA-Null and its baselines), fine-tuning, and PEFT export: one
//! library for the native CLI and the browser app.
//!
//! Dependencies point one way: `engine` → (`model`, `lora`, `calib`, `eval`, `io`) → `linalg`.

/// The browser studio (wasm32 only).
#[cfg(target_arch = "wasm32")]
pub mod app;
/// Calibration windows and activation covariances accumulated on the device.
pub mod calib;
/// Choosing a burn device: a hardware GPU through wgpu, or the CPU backend.
pub mod device;
/// The async facade the CLI and the app drive.
pub mod engine;
/// Perplexity and generation.
pub mod eval;
/// Bytes in and out: GGUF, safetensors, tokenizers, datasets, PEFT export.
pub mod io;
/// Pure maths: matrices, decompositions, spectra, initialisation formulas.
pub mod linalg;
/// LoRA adapters, initialisation methods, and attaching them to a model.
pub mod lora;
/// The LLaMA-family model: config, weights, modules named after the checkpoint keys.
pub mod model;
/// SVG charts of spectra (shared by the CLI and the app).
pub mod plot;
/// Fine-tuning: data, optimiser, schedule, loop, checkpoints.
pub mod train;
