//! A model as the user hands it over: either one `.gguf` file or a Hugging Face folder's files
//! (`config.json`, `tokenizer.json`, `*.safetensors`, optional index and tokenizer config).
//! Everything works on bytes, so the browser and the CLI share it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::LoadError;
use super::gguf::GgufFile;
use super::gguf_model::{GgufSource, config_from_gguf};
use super::safetensors::SafetensorsSource;
use super::tokenizer::Tokenizer;
pub use crate::model::Format;
use crate::model::ModelConfig;
use crate::model::weights::Weights;

/// Model files by base name (e.g. `"config.json"`, `"model-00001-of-00002.safetensors"`). The
/// bytes are shared: a model whose weights stay packed reads them from here, without a copy.
#[derive(Debug, Default, Clone)]
pub struct ModelFiles {
    files: BTreeMap<String, Arc<Vec<u8>>>,
    origin: Option<String>,
}

impl ModelFiles {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file under its base name (any directory part is dropped).
    pub fn insert(&mut self, name: &str, bytes: Vec<u8>) {
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
        self.files.insert(base.to_string(), Arc::new(bytes));
    }

    /// Records where the files came from (the GGUF file or folder name the user gave), which
    /// exports name as the base model.
    pub fn set_origin(&mut self, name: &str) {
        self.origin = Some(name.to_string());
    }

    /// What an adapter names as its base model (`base_model_name_or_path`): the origin given
    /// by the caller, else the GGUF file's name, else config.json's `_name_or_path`, else
    /// `"base-model"`. PEFT only records it; the user loads the base themselves.
    pub fn base_name(&self) -> String {
        self.origin
            .clone()
            .or_else(|| self.names().find(|n| n.ends_with(".gguf")).map(str::to_string))
            .or_else(|| {
                let config: serde_json::Value = serde_json::from_slice(self.get("config.json")?).ok()?;
                config.get("_name_or_path")?.as_str().map(str::to_string)
            })
            .unwrap_or_else(|| "base-model".to_string())
    }

    /// File names present.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Bytes of a file.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|b| b.as_slice())
    }

    /// The shared buffer of a file.
    pub fn shared(&self, name: &str) -> Option<Arc<Vec<u8>>> {
        self.files.get(name).cloned()
    }

    /// Total bytes.
    pub fn total_bytes(&self) -> usize {
        self.files.values().map(|b| b.len()).sum()
    }

    fn require(&self, name: &str, hint: &str) -> Result<&[u8], LoadError> {
        self.get(name).ok_or_else(|| LoadError::MissingFile {
            name: name.to_string(),
            hint: hint.to_string(),
        })
    }
}

enum Parsed<'a> {
    Gguf(GgufFile<'a>, Arc<Vec<u8>>),
    Safetensors(SafetensorsSource<'a>),
}

/// A parsed checkpoint: configuration, tokenizer and a view of the weights.
pub struct Checkpoint<'a> {
    /// Model hyper-parameters.
    pub config: ModelConfig,
    /// The tokenizer (with chat template and special tokens).
    pub tokenizer: Tokenizer,
    /// Which format.
    pub format: Format,
    /// Storage types and counts, e.g. `{"Q4_1": 210, "F32": 61}`.
    pub storage: BTreeMap<String, usize>,
    parsed: Parsed<'a>,
}

impl<'a> Checkpoint<'a> {
    /// Parses the files: one `*.gguf`, or `config.json` + `tokenizer.json` + safetensors.
    pub fn parse(files: &'a ModelFiles) -> Result<Self, LoadError> {
        let ggufs: Vec<&str> = files.names().filter(|n| n.ends_with(".gguf")).collect();
        match ggufs.as_slice() {
            [one] => {
                let shared = files.shared(one).ok_or_else(|| LoadError::MissingFile {
                    name: one.to_string(),
                    hint: String::new(),
                })?;
                return Self::parse_gguf(files.require(one, "")?, shared);
            }
            [] => {}
            many => {
                return Err(LoadError::Ambiguous(format!(
                    "several GGUF files given ({}); pass exactly one (split GGUF files are not supported)",
                    many.join(", ")
                )));
            }
        }
        if files.get("config.json").is_none() {
            return Err(LoadError::NoModel(files.names().map(str::to_string).collect()));
        }
        Self::parse_hf(files)
    }

    fn parse_gguf(bytes: &'a [u8], shared: Arc<Vec<u8>>) -> Result<Self, LoadError> {
        let file = GgufFile::parse(bytes)?;
        let config = config_from_gguf(&file)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let mut storage = BTreeMap::new();
        for t in &file.tensors {
            *storage.entry(t.ggml_type.name()).or_insert(0) += 1;
        }
        Ok(Self {
            config,
            tokenizer,
            format: Format::Gguf,
            storage,
            parsed: Parsed::Gguf(file, shared),
        })
    }

    fn parse_hf(files: &'a ModelFiles) -> Result<Self, LoadError> {
        let config_bytes = files.require("config.json", "")?;
        let config_text = std::str::from_utf8(config_bytes)
            .map_err(|_| LoadError::Ambiguous("config.json is not UTF-8 text".into()))?;
        let config = ModelConfig::from_hf_json(config_text)?;
        let tokenizer = Tokenizer::from_hf(
            files.require("tokenizer.json", "the Hugging Face folder must contain tokenizer.json")?,
            files.get("tokenizer_config.json"),
        )?;
        let shards: Vec<(&str, &[u8])> = files
            .files
            .iter()
            .filter(|(n, _)| n.ends_with(".safetensors"))
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        if shards.is_empty() {
            return Err(LoadError::MissingFile {
                name: "model.safetensors".into(),
                hint: "add the model's *.safetensors file(s); .bin (pickle) checkpoints are not supported".into(),
            });
        }
        let source = SafetensorsSource::new(&shards, files.get("model.safetensors.index.json"))?
            .with_shared(|name| files.shared(name));
        let mut storage = BTreeMap::new();
        storage.insert("safetensors shards".to_string(), shards.len());
        Ok(Self {
            config,
            tokenizer,
            format: Format::HuggingFace,
            storage,
            parsed: Parsed::Safetensors(source),
        })
    }

    /// The configuration, tokenizer and storage summary, without the weights.
    pub fn into_parts(self) -> CheckpointParts {
        CheckpointParts {
            config: self.config,
            tokenizer: self.tokenizer,
            format: self.format,
            storage: self.storage,
        }
    }

    /// The weights, ready to build the model from.
    pub fn weights(&self) -> Result<CheckpointWeights<'_>, LoadError> {
        Ok(match &self.parsed {
            Parsed::Gguf(file, shared) => {
                let source = GgufSource::new(file, &self.config).with_shared(shared.clone());
                let factors = source.rope_freq_factors()?;
                CheckpointWeights::Gguf(source, factors)
            }
            Parsed::Safetensors(source) => CheckpointWeights::Safetensors(source),
        })
    }
}

/// What a checkpoint holds besides its weights.
#[derive(Debug, Clone)]
pub struct CheckpointParts {
    /// Model hyper-parameters.
    pub config: ModelConfig,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// Which format.
    pub format: Format,
    /// Storage types and counts.
    pub storage: BTreeMap<String, usize>,
}

/// The weights of a parsed checkpoint.
pub enum CheckpointWeights<'a> {
    /// GGUF tensors (and llama.cpp's rope frequency factors, if present).
    Gguf(GgufSource<'a>, Option<Vec<f32>>),
    /// Safetensors shards.
    Safetensors(&'a SafetensorsSource<'a>),
}

impl CheckpointWeights<'_> {
    /// The tensors by Hugging Face key.
    pub fn source(&self) -> &dyn Weights {
        match self {
            CheckpointWeights::Gguf(g, _) => g,
            CheckpointWeights::Safetensors(s) => *s,
        }
    }

    /// GGUF's `rope_freqs.weight` (per-frequency divisors for Llama 3.1 scaling), if present.
    pub fn rope_freq_factors(&self) -> Option<&[f32]> {
        match self {
            CheckpointWeights::Gguf(_, f) => f.as_deref(),
            CheckpointWeights::Safetensors(_) => None,
        }
    }
}
