//! Token windows for calibration: render records to text, tokenise the corpus once, and draw
//! windows at seeded random offsets.

use crate::io::dataset::{Record, alpaca_prompt};
use crate::io::tokenizer::{Tokenizer, TokenizerError};
use crate::linalg::Rng;

/// Windows drawn from a corpus, with a note when the corpus was too short.
#[derive(Debug, Clone)]
pub struct Windows {
    /// Token ids of each window.
    pub windows: Vec<Vec<u32>>,
    /// Tokens in the whole corpus.
    pub corpus_tokens: usize,
    /// Set when fewer or shorter windows than asked for were possible.
    pub note: Option<String>,
}

/// The text of a record as the model reads it during calibration (instructions in the Alpaca
/// prompt followed by the response; chats through the chat template).
pub fn record_text(record: &Record, tokenizer: &Tokenizer) -> Result<String, TokenizerError> {
    Ok(match record {
        Record::Text(t) => t.clone(),
        Record::Instruction {
            instruction,
            input,
            output,
        } => format!("{}{}", alpaca_prompt(instruction, input), output),
        Record::Completion { prompt, completion } => format!("{prompt}{completion}"),
        Record::Chat(messages) => tokenizer.apply_chat_template(messages, false)?,
    })
}

/// Joins the records with blank lines (as the reference joins NQ questions with "\n\n"),
/// tokenises once, and draws `samples` windows of `seq_len` tokens at random offsets
/// (seeded; windows may overlap, as in the reference sampler). A corpus shorter than
/// `seq_len` gives one window of everything there is, and says so.
pub fn draw_windows(
    records: &[Record],
    tokenizer: &Tokenizer,
    samples: usize,
    seq_len: usize,
    seed: u64,
) -> Result<Windows, TokenizerError> {
    let texts: Vec<String> = records
        .iter()
        .map(|r| record_text(r, tokenizer))
        .collect::<Result<_, _>>()?;
    let ids = tokenizer.encode(&texts.join("\n\n"))?;
    let n = ids.len();
    if n <= seq_len {
        return Ok(Windows {
            windows: if n >= 2 { vec![ids] } else { Vec::new() },
            corpus_tokens: n,
            note: Some(format!(
                "the calibration text has only {n} tokens, less than one window of {seq_len}: using it as a single window"
            )),
        });
    }
    let mut rng = Rng::new(seed);
    let windows: Vec<Vec<u32>> = (0..samples)
        .map(|_| {
            let start = rng.below(n - seq_len + 1);
            ids[start..start + seq_len].to_vec()
        })
        .collect();
    let note = (n < samples * seq_len).then(|| {
        format!(
            "the calibration text has {n} tokens, fewer than {samples} windows × {seq_len}: windows overlap (add more text for more diverse statistics)"
        )
    });
    Ok(Windows {
        windows,
        corpus_tokens: n,
        note,
    })
}
