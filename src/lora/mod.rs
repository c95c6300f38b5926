//! LoRA: the method table, the LoRA linear layer (a plain layer wrapped with a low-rank update),
//! initialising it (with the residual base weight), exporting it for PEFT, and the metrics of a
//! trained update. `method` is plain data (the page reads it); the rest needs burn.

pub mod method;

#[cfg(feature = "engine")]
pub mod export;
#[cfg(feature = "engine")]
pub mod gguf_adapter;
#[cfg(feature = "engine")]
pub mod gguf_merged;
#[cfg(feature = "engine")]
pub mod init;
#[cfg(feature = "engine")]
pub mod linear;
#[cfg(feature = "engine")]
pub mod metrics;

pub use method::{ExportForm, InitMethod, METHODS, MethodSpec};

#[cfg(feature = "engine")]
pub use init::{InitError, InitRecord, LoraConfig};
#[cfg(feature = "engine")]
pub use linear::{LoraAdapter, LoraLinear, LoraModel};
