//! Evaluation: perplexity, text generation and the knowledge probe (`probe` is plain data and
//! scoring, without burn).

#[cfg(feature = "engine")]
pub mod generate;
#[cfg(feature = "engine")]
pub mod perplexity;
pub mod probe;

#[cfg(feature = "engine")]
pub use generate::{GenerateOptions, generate};
#[cfg(feature = "engine")]
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
    /// A window of fewer than 2 tokens scores nothing.
    #[error("the window length must be at least 2 tokens, got {0}")]
    WindowTooShort(usize),
}

impl EvalError {
    /// What the user can do about it.
    pub fn hints(&self) -> Vec<crate::hint::Hint> {
        match self {
            EvalError::WindowTooShort(_) => vec![crate::hint::Hint::Fix(crate::hint::Setting::SeqLen)],
            _ => Vec::new(),
        }
    }
}
