//! Integration tests, one binary (burn links once). Fixtures come from scripts/make_reference.py.

mod adapters;
mod cli;
mod common;
mod datasets;
mod errors;
mod gguf_writer;
mod init_parity;
mod robustness;
mod smollm2;
mod smollm2_null;
mod tiny_models;
mod wgpu;
