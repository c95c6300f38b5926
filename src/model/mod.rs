//! The model in burn (the LLaMA family and Gemma 2 / 3): configuration, the architecture tables,
//! weights, and modules named after the Hugging Face checkpoint keys. Blocks are generic over
//! their linear layers ([`Projection`]), so LoRA (in `lora`) wraps them without this module
//! knowing.
//!
//! `arch`, `config` (read from config.json by `config_json`), `variant`, `memory` and `summary`
//! are plain data and build without burn (the page uses them).

pub mod arch;
pub mod config;
mod config_json;
pub mod memory;
pub mod summary;
pub mod variant;

#[cfg(feature = "engine")]
pub mod attention;
#[cfg(feature = "engine")]
pub mod attention_kernel;
#[cfg(feature = "engine")]
pub mod cpu_linear;
#[cfg(feature = "engine")]
pub mod cpu_low_rank;
#[cfg(feature = "engine")]
pub mod cpu_ops;
#[cfg(feature = "engine")]
pub mod dequant;
#[cfg(feature = "engine")]
pub mod dequant_kernel;
#[cfg(feature = "engine")]
pub mod gpu_ops;
#[cfg(feature = "engine")]
pub mod linear;
#[cfg(feature = "engine")]
pub mod llama;
#[cfg(feature = "engine")]
pub mod loss;
#[cfg(feature = "engine")]
pub mod mlp;
#[cfg(feature = "engine")]
pub mod norm;
#[cfg(feature = "engine")]
pub mod observe;
#[cfg(feature = "engine")]
pub mod packed;
#[cfg(feature = "engine")]
pub mod rope;
#[cfg(feature = "engine")]
pub mod target;
#[cfg(all(test, feature = "engine"))]
mod test_support;
#[cfg(feature = "engine")]
pub mod weights;

pub use arch::{Site, Target};
pub use config::{Architecture, ConfigError, ModelConfig, RopeScaling};
pub use summary::{Format, ModelSummary};

#[cfg(feature = "engine")]
pub use linear::{Linear, Projection};
#[cfg(feature = "engine")]
pub use llama::{KvCache, LlamaForCausalLM, ModelBuilder};
#[cfg(feature = "engine")]
pub use observe::{ActivationObserver, NoObserver};
#[cfg(feature = "engine")]
pub use weights::{VarBuilder, WeightError, Weights};
