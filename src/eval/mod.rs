//! Evaluation: perplexity and text generation.

pub mod generate;
pub mod perplexity;
pub mod probe;

pub use generate::{GenerateOptions, generate};
pub use perplexity::{PerplexityReport, forward_sync_probe, logits, perplexity};

/// Errors while evaluating.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Reading a result back from the device failed (lost GPU, out of memory).
    #[error(
        "reading results from the device failed: {0}; if this is a GPU, it may have been lost or run out of memory"
    )]
    Device(String),
    /// Not enough tokens to score anything.
    #[error("the text has {0} tokens; perplexity needs at least 2")]
    TooShort(usize),
    /// An invalid option.
    #[error("{0}")]
    Invalid(String),
}
