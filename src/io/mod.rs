//! Bytes in and out: GGUF and safetensors parsing, tokenizers, datasets, and PEFT export.
//! Nothing here touches the filesystem; callers hand over bytes, or a reader of ranges of them
//! ([`file_bytes`]).

pub mod checkpoint;
pub mod dataset;
pub mod file_bytes;
pub mod gguf;
pub mod gguf_bpe;
pub mod gguf_model;
pub mod gguf_sentencepiece;
pub mod gguf_write;
pub mod host;
pub mod peft;
pub mod quants;
pub mod reader;
pub mod safetensors;
pub mod tokenizer;

pub use checkpoint::{Checkpoint, CheckpointWeights, Format, ModelFiles};
pub use host::HostTensor;
pub use tokenizer::{ChatMessage, Tokenizer};

use crate::model::{ConfigError, WeightError};

/// Everything that can go wrong turning files into a model.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The GGUF file is invalid or unsupported.
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    /// A safetensors file is invalid or unsupported.
    #[error(transparent)]
    Safetensors(#[from] safetensors::SafetensorsError),
    /// config.json is invalid or unsupported.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The tokenizer could not be built.
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    /// A tensor is missing or has the wrong shape.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// A file could not be read.
    #[error(transparent)]
    Read(#[from] file_bytes::ReadFailed),
    /// A required file was not supplied.
    #[error("missing file `{name}`{}", if hint.is_empty() { String::new() } else { format!(": {hint}") })]
    MissingFile {
        /// File name.
        name: String,
        /// What to do.
        hint: String,
    },
    /// No model found among the files.
    #[error(
        "no model found among {0:?}: give a .gguf file or a Hugging Face folder with config.json, tokenizer.json and *.safetensors"
    )]
    NoModel(Vec<String>),
    /// The input is ambiguous or malformed at the file level.
    #[error("{0}")]
    Ambiguous(String),
}
