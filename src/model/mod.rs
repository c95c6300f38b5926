//! The LLaMA-family model in burn: configuration, weights, and modules named after the Hugging
//! Face checkpoint keys.

pub mod attention;
pub mod config;
pub mod linear;
pub mod llama;
pub mod mlp;
pub mod norm;
pub mod observe;
pub mod rope;
pub mod target;
pub mod weights;

pub use config::{Architecture, ConfigError, ModelConfig, RopeScaling};
pub use llama::{KvCache, LlamaForCausalLM, ModelBuilder};
pub use observe::{ActivationObserver, NoObserver, Site};
pub use target::Target;
pub use weights::{HostTensor, TensorSource, VarBuilder, WeightError};
