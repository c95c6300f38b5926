//! A model as the user hands it over: either one `.gguf` file or a Hugging Face folder's files
//! (`config.json`, `tokenizer.json`, `*.safetensors`, optional index and tokenizer config).
//! Everything works on bytes, so the browser and the CLI share it.

use std::collections::BTreeMap;

use burn::tensor::Device;

use super::LoadError;
use super::gguf::GgufFile;
use super::gguf_model::{GgufSource, config_from_gguf};
use super::safetensors::SafetensorsSource;
use super::tokenizer::Tokenizer;
use crate::model::weights::{TensorSource, VarBuilder};
use crate::model::{LlamaForCausalLM, ModelBuilder, ModelConfig};

/// Model files by base name (e.g. `"config.json"`, `"model-00001-of-00002.safetensors"`).
#[derive(Debug, Default, Clone)]
pub struct ModelFiles {
    files: BTreeMap<String, Vec<u8>>,
}

impl ModelFiles {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file under its base name (any directory part is dropped).
    pub fn insert(&mut self, name: &str, bytes: Vec<u8>) {
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
        self.files.insert(base.to_string(), bytes);
    }

    /// File names present.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Bytes of a file.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// Total bytes.
    pub fn total_bytes(&self) -> usize {
        self.files.values().map(Vec::len).sum()
    }

    fn require(&self, name: &str, hint: &str) -> Result<&[u8], LoadError> {
        self.get(name).ok_or_else(|| LoadError::MissingFile {
            name: name.to_string(),
            hint: hint.to_string(),
        })
    }
}

/// Which on-disk format a checkpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A llama.cpp GGUF file.
    Gguf,
    /// A Hugging Face folder with safetensors.
    HuggingFace,
}

enum Parsed<'a> {
    Gguf(GgufFile<'a>),
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
            [one] => return Self::parse_gguf(files.require(one, "")?),
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

    fn parse_gguf(bytes: &'a [u8]) -> Result<Self, LoadError> {
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
            parsed: Parsed::Gguf(file),
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
        let source = SafetensorsSource::new(&shards, files.get("model.safetensors.index.json"))?;
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

    /// A view of the weights for building the model.
    pub fn source(&self) -> Result<WeightsView<'_>, LoadError> {
        Ok(match &self.parsed {
            Parsed::Gguf(file) => {
                let source = GgufSource::new(file, &self.config);
                let factors = source.rope_freq_factors()?;
                WeightsView::Gguf(source, factors)
            }
            Parsed::Safetensors(source) => WeightsView::Safetensors(source),
        })
    }

    /// Builds the burn model on `device` (weights dequantised to f32). For progress, build with
    /// [`ModelBuilder`] over [`Checkpoint::source`] instead.
    pub fn load_model(&self, device: &Device) -> Result<LlamaForCausalLM, LoadError> {
        let view = self.source()?;
        Ok(view.builder(&self.config, device).finish()?)
    }
}

/// The weights of a parsed checkpoint, ready to build a model from.
pub enum WeightsView<'a> {
    /// GGUF tensors (and llama.cpp's rope frequency factors, if present).
    Gguf(GgufSource<'a>, Option<Vec<f32>>),
    /// Safetensors shards.
    Safetensors(&'a SafetensorsSource<'a>),
}

impl WeightsView<'_> {
    /// A model builder over these weights.
    pub fn builder<'b>(&'b self, config: &'b ModelConfig, device: &Device) -> ModelBuilder<'b> {
        let arch = config.model_type.model_type();
        let (source, factors): (&dyn TensorSource, Option<&[f32]>) = match self {
            WeightsView::Gguf(g, f) => (g, f.as_deref()),
            WeightsView::Safetensors(s) => (*s, None),
        };
        ModelBuilder::new(VarBuilder::new(source, device, arch), config, factors)
    }
}
