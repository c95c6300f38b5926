//! Looking at a loaded model: generation, perplexity and the knowledge probe.

use super::{EngineError, LoadedModel};
use crate::eval::{self, GenerateOptions, PerplexityReport};
use crate::io::ChatMessage;

impl LoadedModel {
    /// Prompt ids: the text as is, or wrapped as one user turn of the chat template.
    pub fn prompt_ids(&self, prompt: &str, chat: bool) -> Result<Vec<u32>, EngineError> {
        Ok(if chat {
            let msg = ChatMessage {
                role: "user".into(),
                content: prompt.to_string(),
            };
            self.tokenizer.encode_chat(&[msg], true)?
        } else {
            self.tokenizer.encode(prompt)?
        })
    }

    /// Generates a continuation; `on_text` receives the decoded text so far after each token.
    /// Stops at the model's EOS unless `opts.stop_ids` says otherwise.
    pub async fn generate_text(
        &self,
        prompt: &str,
        chat: bool,
        opts: &GenerateOptions,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<String, EngineError> {
        let ids = self.prompt_ids(prompt, chat)?;
        let mut opts = opts.clone();
        if opts.stop_ids.is_empty() {
            opts.stop_ids = self.config.eos_token_id.clone();
            opts.stop_ids.extend(self.tokenizer.eos_id());
        }
        let mut produced = Vec::new();
        let tokenizer = &self.tokenizer;
        let new = eval::generate(&self.model, &ids, &opts, &mut |t| {
            produced.push(t);
            if let Ok(text) = tokenizer.decode(&produced, true) {
                on_text(&text);
            }
            true
        })
        .await?;
        Ok(self.tokenizer.decode(&new, true)?)
    }

    /// Perplexity of `text` (first `max_tokens` tokens if given) over windows of `seq_len`.
    pub async fn perplexity_text(
        &self,
        text: &str,
        max_tokens: Option<usize>,
        seq_len: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<PerplexityReport, EngineError> {
        let mut ids = self.tokenizer.encode(text)?;
        if let Some(n) = max_tokens {
            ids.truncate(n);
        }
        Ok(eval::perplexity(&self.model, &ids, seq_len, progress).await?)
    }

    /// Runs the knowledge probe: greedy answers (up to 16 tokens, cut at the first newline) to
    /// the plain prompt `Question: {q}\nAnswer:` or, with `chat`, the question as a user turn.
    /// `progress(done, total)` after each item. Returns the scores and each item's answer.
    pub async fn probe(
        &self,
        items: &[crate::eval::probe::ProbeItem],
        chat: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(crate::eval::probe::ProbeScore, Vec<String>), EngineError> {
        use crate::eval::probe::{aggregate, plain_prompt, score};
        let mut results = Vec::with_capacity(items.len());
        let mut answers = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let prompt = if chat {
                item.question.clone()
            } else {
                plain_prompt(&item.question)
            };
            let ids = self.prompt_ids(&prompt, chat)?;
            let mut stop_ids = self.config.eos_token_id.clone();
            stop_ids.extend(self.tokenizer.eos_id());
            let opts = GenerateOptions {
                max_new_tokens: 16,
                stop_ids,
                ..GenerateOptions::default()
            };
            let mut produced = Vec::new();
            let tokenizer = &self.tokenizer;
            let new = eval::generate(&self.model, &ids, &opts, &mut |t| {
                produced.push(t);
                // Stop at the first newline, as lm-eval's `until: ["\\n"]`.
                !tokenizer
                    .decode(&produced, true)
                    .map(|s| s.contains('\n'))
                    .unwrap_or(false)
            })
            .await?;
            let text = self.tokenizer.decode(&new, true)?;
            results.push(score(&text, &item.answers));
            answers.push(crate::eval::probe::cut_answer(&text).to_string());
            progress(i + 1, items.len());
        }
        Ok((aggregate(&results), answers))
    }
}
