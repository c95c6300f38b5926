//! Training examples from dataset records: token ids plus a per-token target mask (loss on the
//! response only for instruction formats), right-truncated to `max_len`, split into train and
//! validation sets with a seeded shuffle, and padded into batches.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::io::dataset::{Record, alpaca_prompt};
use crate::io::tokenizer::{Tokenizer, TokenizerError};
use crate::linalg::Rng;

/// One tokenised example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `target[t]`: whether token t is predicted in the loss (prompt tokens are not).
    pub target: Vec<bool>,
}

impl Example {
    /// Number of target tokens that can be scored (a target at position 0 has no context).
    pub fn scored(&self) -> usize {
        self.target.iter().skip(1).filter(|&&t| t).count()
    }
}

/// Errors building training data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Tokenisation failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Every example's prompt fills the maximum length, so no response token is left to learn.
    #[error(
        "all {dropped} examples are longer than the maximum length ({max_len} tokens) before their response starts; shorten the prompts or allow longer examples"
    )]
    PromptsTooLong {
        /// Examples dropped.
        dropped: usize,
        /// The maximum length.
        max_len: usize,
    },
    /// Nothing left to train on.
    #[error("the dataset produced no training tokens; give longer texts")]
    Empty,
}

impl DataError {
    /// What the user can do about it.
    pub fn hints(&self) -> Vec<crate::hint::Hint> {
        match self {
            DataError::PromptsTooLong { .. } => vec![crate::hint::Hint::Raise(crate::hint::Setting::MaxLen)],
            _ => Vec::new(),
        }
    }
}

/// Train and validation examples with counts for the user.
#[derive(Debug, Clone)]
pub struct TrainData {
    /// Training examples.
    pub train: Vec<Example>,
    /// Validation examples.
    pub val: Vec<Example>,
    /// Examples dropped because no response token fit in `max_len`.
    pub dropped: usize,
    /// Examples whose end was cut at `max_len`.
    pub truncated: usize,
}

/// `prompt` (not scored) then `response` (scored), with the response tokenised on its own so
/// the boundary is clean, followed by EOS (the target is "response + EOS", algorithm.md §1.6).
fn prompt_response(tok: &Tokenizer, prompt: &str, response: &str) -> Result<Example, TokenizerError> {
    let p = tok.encode(prompt)?;
    let mut r = tok.encode_raw(response)?;
    r.extend(tok.eos_id());
    let target = std::iter::repeat_n(false, p.len())
        .chain(std::iter::repeat_n(true, r.len()))
        .collect();
    Ok(Example {
        ids: [p, r].concat(),
        target,
    })
}

/// A chat: everything up to the last assistant turn is the prompt; that turn is the target.
fn chat_example(tok: &Tokenizer, messages: &[crate::io::ChatMessage]) -> Result<Example, TokenizerError> {
    let last_assistant = messages.iter().rposition(|m| m.role == "assistant");
    let Some(k) = last_assistant else {
        // No assistant turn: a plain language-modelling example over the rendered chat.
        let ids = tok.encode_chat(messages, false)?;
        return Ok(Example {
            target: vec![true; ids.len()],
            ids,
        });
    };
    let prompt = tok.encode_chat(&messages[..k], true)?;
    let full = tok.encode_chat(&messages[..=k], false)?;
    let shared = prompt.iter().zip(&full).take_while(|(a, b)| a == b).count();
    let target = (0..full.len()).map(|i| i >= shared).collect();
    Ok(Example { ids: full, target })
}

/// Tokenises every record. Plain-text records are joined with EOS and packed into windows of
/// `max_len` (every token a target); others become one example each, right-truncated.
pub fn build_examples(
    records: &[Record],
    tok: &Tokenizer,
    max_len: usize,
) -> Result<(Vec<Example>, usize, usize), DataError> {
    let mut examples = Vec::new();
    let mut stream: Vec<u32> = Vec::new();
    let (mut dropped, mut truncated) = (0, 0);
    for record in records {
        let ex = match record {
            Record::Text(t) => {
                stream.extend(tok.encode(t)?);
                stream.extend(tok.eos_id());
                continue;
            }
            Record::Instruction {
                instruction,
                input,
                output,
            } => prompt_response(tok, &alpaca_prompt(instruction, input), output)?,
            Record::Completion { prompt, completion } => prompt_response(tok, prompt, completion)?,
            Record::Chat(messages) => chat_example(tok, messages)?,
        };
        let mut ex = ex;
        if ex.ids.len() > max_len {
            ex.ids.truncate(max_len);
            ex.target.truncate(max_len);
            truncated += 1;
        }
        if ex.scored() == 0 {
            dropped += 1;
        } else {
            examples.push(ex);
        }
    }
    for chunk in stream.chunks(max_len.max(2)) {
        if chunk.len() >= 2 {
            examples.push(Example {
                ids: chunk.to_vec(),
                target: vec![true; chunk.len()],
            });
        }
    }
    if examples.is_empty() {
        return Err(if dropped > 0 {
            DataError::PromptsTooLong { dropped, max_len }
        } else {
            DataError::Empty
        });
    }
    Ok((examples, dropped, truncated))
}

/// Shuffles with `seed` and holds out `val_fraction` (at least one example when the fraction is
/// positive and there are two or more examples).
pub fn split(mut examples: Vec<Example>, val_fraction: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    Rng::new(seed).shuffle(&mut examples);
    let n = examples.len();
    let mut n_val = (n as f64 * val_fraction.clamp(0.0, 0.9)).round() as usize;
    if val_fraction > 0.0 && n >= 2 {
        n_val = n_val.max(1);
    }
    let val = examples.split_off(n - n_val.min(n - 1));
    (examples, val)
}

/// Tokenises (cut to `cfg.max_len`), splits off `cfg.val_fraction` with `cfg.seed`, and counts.
pub fn prepare(records: &[Record], tok: &Tokenizer, cfg: &super::TrainConfig) -> Result<TrainData, DataError> {
    let (examples, dropped, truncated) = build_examples(records, tok, cfg.max_len)?;
    let (train, val) = split(examples, cfg.val_fraction, cfg.seed);
    Ok(TrainData {
        train,
        val,
        dropped,
        truncated,
    })
}

/// A padded batch on the device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, T]` ids, right-padded.
    pub ids: Tensor<2, Int>,
    /// `[B·(T−1)]` next-token labels on the host, row-major (the loss decodes their output-layer
    /// rows).
    pub label_ids: Vec<usize>,
    /// `[B, T−1]` 1.0 where the label is scored, else 0.0.
    pub mask: Tensor<2>,
    /// Scored tokens in the batch.
    pub scored: usize,
    /// Real (non-padding) tokens in the batch.
    pub tokens: usize,
}

impl Batch {
    /// The final hidden states `normed` (`[B, T, H]`) at the positions that have a label, as
    /// rows `[B·(T−1), H]` in [`Batch::label_ids`]' order, with the mask as `[B·(T−1)]`: what the
    /// loss takes.
    pub fn label_rows(&self, normed: Tensor<3>) -> (Tensor<2>, Tensor<1>) {
        let [b, t, hidden] = normed.dims();
        let rows = b * (t - 1);
        (
            normed.narrow(1, 0, t - 1).reshape([rows, hidden]),
            self.mask.clone().reshape([rows]),
        )
    }
}

/// Pads `examples` to their longest length with `pad` (right padding: causal attention keeps
/// real tokens from seeing the padding, and the mask drops padded labels).
pub fn collate(examples: &[&Example], pad: u32, device: &Device) -> Batch {
    let b = examples.len();
    let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(2).max(2);
    let mut ids = vec![pad as i64; b * t];
    let mut label_ids = vec![0usize; b * (t - 1)];
    let mut mask = vec![0f32; b * (t - 1)];
    let (mut scored, mut tokens) = (0, 0);
    for (i, e) in examples.iter().enumerate() {
        tokens += e.ids.len();
        for (j, &id) in e.ids.iter().enumerate() {
            ids[i * t + j] = id as i64;
            if j >= 1 {
                label_ids[i * (t - 1) + j - 1] = id as usize;
                if e.target[j] {
                    mask[i * (t - 1) + j - 1] = 1.0;
                    scored += 1;
                }
            }
        }
    }
    Batch {
        label_ids,
        ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
        mask: Tensor::from_data(TensorData::new(mask, [b, t - 1]), device),
        scored,
        tokens,
    }
}
