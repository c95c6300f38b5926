//! LoRA adapters: the module, the initialisation methods and targets, and attaching
//! initialised adapters (with the residual base weight) to a model.

pub mod adapter;
pub mod apply;
pub mod export;
pub mod method;

pub use adapter::LoraAdapter;
pub use apply::{InitError, InitRecord, LoraConfig, initialize};
pub use method::InitMethod;
