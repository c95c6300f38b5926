//! The async facade that the CLI and the browser app both drive: load a model from bytes,
//! generate, score, calibrate, initialise adapters, export. GPU reads are async; the CLI
//! blocks on the same futures.

mod adapt;

pub use adapt::{AdapterState, CalibOptions, Calibration, ExportFiles};

use std::collections::BTreeMap;

use burn::tensor::Device;

use crate::eval::{self, EvalError, GenerateOptions, PerplexityReport};
use crate::io::tokenizer::TokenizerError;
use crate::io::{ChatMessage, Checkpoint, Format, LoadError, ModelFiles, Tokenizer};
use crate::model::{LlamaForCausalLM, ModelConfig};

/// Errors surfaced to the CLI and the app.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model files could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Tokenisation or chat templating failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Evaluation failed.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// A dataset could not be read.
    #[error(transparent)]
    Dataset(#[from] crate::io::dataset::DatasetError),
    /// Calibration or spectra failed.
    #[error(transparent)]
    Calib(#[from] crate::calib::CalibError),
    /// Adapter initialisation failed.
    #[error(transparent)]
    Init(#[from] crate::lora::InitError),
    /// Export failed.
    #[error(transparent)]
    Export(#[from] crate::lora::export::ExportError),
    /// A PEFT adapter could not be read or attached.
    #[error(transparent)]
    Peft(#[from] crate::io::peft::PeftError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    /// Training data could not be built.
    #[error(transparent)]
    Data(#[from] crate::train::data::DataError),
}

/// A loaded model with its tokenizer.
#[derive(Debug)]
pub struct LoadedModel {
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// Tokenizer.
    pub tokenizer: Tokenizer,
    /// The burn model.
    pub model: LlamaForCausalLM,
    /// Source format.
    pub format: Format,
    /// Storage types of the source file.
    pub storage: BTreeMap<String, usize>,
    /// The adapters attached by initialisation (with what the export needs), if any.
    pub adapter: Option<AdapterState>,
}

/// What the UI and `lora-null info` show about a model.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    pub f32_bytes: usize,
    /// Source format.
    pub format: Format,
    /// Storage types of the source file.
    pub storage: BTreeMap<String, usize>,
    /// Whether a chat template is present.
    pub has_chat_template: bool,
}

impl LoadedModel {
    /// Parses the files and builds the model on `device`.
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self, EngineError> {
        let ckpt = Checkpoint::parse(files)?;
        let model = ckpt.load_model(device)?;
        Ok(Self {
            config: ckpt.config,
            tokenizer: ckpt.tokenizer,
            model,
            format: ckpt.format,
            storage: ckpt.storage,
            adapter: None,
        })
    }

    /// A summary for display.
    pub fn summary(&self) -> ModelSummary {
        let c = &self.config;
        let parameters = c.num_parameters();
        ModelSummary {
            architecture: c.model_type.model_type().to_string(),
            parameters,
            layers: c.num_hidden_layers,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            heads: (c.num_attention_heads, c.num_key_value_heads),
            vocab_size: c.vocab_size,
            f32_bytes: parameters * 4,
            format: self.format,
            storage: self.storage.clone(),
            has_chat_template: self.tokenizer.chat_template.is_some(),
        }
    }

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
