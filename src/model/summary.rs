//! What the page and `lora-null info` show about a loaded model (plain data).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which on-disk format a checkpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A llama.cpp GGUF file.
    Gguf,
    /// A Hugging Face folder with safetensors.
    HuggingFace,
}

/// A model's shape, size and source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSummary {
    /// model_type.
    pub architecture: String,
    /// Parameter count.
    pub parameters: usize,
    /// Blocks.
    pub layers: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Query / key-value heads.
    pub heads: (usize, usize),
    /// Vocabulary.
    pub vocab_size: usize,
    /// f32 weight memory on the device, bytes.
    pub f32_bytes: u64,
    /// Weight memory as loaded (packed matrices at their stored size), bytes.
    pub weight_bytes: u64,
    /// Whether the base is packed (decoded a layer at a time).
    pub packed: bool,
    /// What training LoRA r 16 with the default batch and length would hold.
    pub train_plan: super::memory::MemoryPlan,
    /// The largest batch × length whose training plan fits a 4 GiB tab, with its plan.
    pub fits_tab: Option<(usize, usize, super::memory::MemoryPlan)>,
    /// What plans of training the default targets depend on: the page plans the settings the
    /// user types from it (`None` if the architecture has none of the default targets).
    pub plan_basis: Option<Box<super::memory::PlanBasis>>,
    /// Source format.
    pub format: Format,
    /// Storage types of the source file.
    pub storage: BTreeMap<String, usize>,
    /// Whether a chat template is present.
    pub has_chat_template: bool,
}
