//! LoRA-Null Studio: LLaMA-family models in burn, activation statistics and spectra, the LoRA
//! initialisation family (LoRA-Null and its baselines), fine-tuning, and PEFT export: one
//! library for the native CLI and the browser app.
//!
//! Imports run one way (docs/architecture.md): `linalg` → `model` → `io` → `calib` / `train` /
//! `eval` → `lora` → `engine` → the front ends (`app`, and the CLI in `src/bin`). The front ends
//! only drive the engine.
//!
//! Without the `engine` feature (the page's own wasm) only plain data builds: the method and
//! architecture tables, the report types, the hints and the charts.

/// The browser studio (wasm32 only): the page, and the engine and maths workers.
#[cfg(target_arch = "wasm32")]
pub mod app;
/// Calibration windows and activation covariances accumulated on the device; the spectra report.
pub mod calib;
/// Choosing a burn device: a hardware GPU through wgpu, or the CPU backend.
#[cfg(feature = "engine")]
pub mod device;
/// The one door every front end goes through.
#[cfg(feature = "engine")]
pub mod engine;
/// Perplexity, generation and the knowledge probe.
pub mod eval;
/// What the user can do about an error, in neutral terms.
pub mod hint;
/// Bytes in and out: GGUF, safetensors, tokenizers, datasets, PEFT adapters.
#[cfg(feature = "engine")]
pub mod io;
/// Pure maths: matrices, decompositions, spectra, initialisation formulas, jobs.
pub mod linalg;
/// LoRA: the method table, the LoRA linear layer, initialisation, export, update metrics.
pub mod lora;
/// The LLaMA-family model: architecture tables, config, weights, modules named after the keys.
pub mod model;
/// The charts (spectra, heatmaps, loss) as data and as SVG, shared by the CLI and the page.
pub mod plot;
/// Fine-tuning: data, optimiser, schedule, trainer, checkpoints.
pub mod train;
/// What both wasm bundles need from the browser: static constructors, WebGPU detection.
#[cfg(target_arch = "wasm32")]
pub mod wasm;
