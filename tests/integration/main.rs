//! Integration tests, one binary (burn links once). Fixtures come from scripts/make_reference.py.
//! Native only; the browser tests are in tests/browser.rs.
#![cfg(not(target_arch = "wasm32"))]

mod adapters;
mod cli;
mod common;
mod datasets;
mod errors;
mod gemma;
mod gguf_adapter;
mod gguf_merged;
mod gguf_writer;
mod init_parity;
mod layering;
mod packed;
mod peft_parity;
mod robustness;
mod smollm2;
mod smollm2_null;
mod streaming;
mod tiny_models;
mod train_parity;
#[path = "../shared/train_reference.rs"]
mod train_reference;
mod wgpu;
