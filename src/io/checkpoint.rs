//! A model as the user hands it over: either one `.gguf` file or a Hugging Face folder's files
//! (`config.json`, `tokenizer.json`, `*.safetensors`, optional index and tokenizer config).
//! Everything works on bytes, held or read a range at a time through a reader the caller gives
//! ([`ReadAt`]), so the browser and the CLI share it.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use super::LoadError;
use super::file_bytes::{FileBytes, ReadAt};
use super::gguf::{GgufError, GgufFile};
use super::gguf_model::{GgufSource, config_from_gguf};
use super::safetensors::SafetensorsSource;
use super::tokenizer::Tokenizer;
pub use crate::model::Format;
use crate::model::ModelConfig;
use crate::model::weights::Weights;

/// Model files by base name (e.g. `"config.json"`, `"model-00001-of-00002.safetensors"`), each
/// held in memory or read on demand ([`FileBytes`]). Held bytes are shared: a model whose weights
/// stay packed reads them from here, without a copy; a file read on demand is read a tensor at a
/// time, and only its header is kept.
#[derive(Debug, Default, Clone)]
pub struct ModelFiles {
    files: BTreeMap<String, Stored>,
    origin: Option<String>,
}

#[derive(Debug, Clone)]
struct Stored {
    bytes: FileBytes,
    /// The header of a file read on demand, once read.
    head: Arc<OnceLock<Vec<u8>>>,
}

/// The first bytes read of a file read on demand, before its header's length is known: a
/// safetensors header usually fits; a GGUF's (metadata and tokenizer, 1–10 MB) is read again,
/// four times longer each time, until it does.
pub const FIRST_READ: u64 = 64 << 10;

impl ModelFiles {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file held in memory under its base name (any directory part is dropped).
    pub fn insert(&mut self, name: &str, bytes: Vec<u8>) {
        self.insert_bytes(name, FileBytes::Memory(Arc::new(bytes)));
    }

    /// Adds a file read on demand under its base name: a model loads from it tensor by tensor.
    pub fn insert_reader(&mut self, name: &str, reader: impl ReadAt + 'static) {
        self.insert_bytes(name, FileBytes::reader(reader));
    }

    fn insert_bytes(&mut self, name: &str, bytes: FileBytes) {
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
        let head = Arc::default();
        self.files.insert(base.to_string(), Stored { bytes, head });
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

    /// Bytes of a file held in memory (`None` for one read on demand).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).and_then(|s| s.bytes.in_memory())
    }

    /// A file's bytes, held or read on demand.
    pub fn bytes(&self, name: &str) -> Option<&FileBytes> {
        self.files.get(name).map(|s| &s.bytes)
    }

    /// Total bytes of the files.
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|s| s.bytes.len()).sum()
    }

    /// Bytes held in memory: the files held whole and the headers kept of the others.
    pub fn held_bytes(&self) -> u64 {
        let held = |s: &Stored| s.bytes.in_memory().map_or(0, |b| b.len()) + s.head.get().map_or(0, Vec::len);
        self.files.values().map(|s| held(s) as u64).sum()
    }

    fn require(&self, name: &str, hint: &str) -> Result<&[u8], LoadError> {
        self.get(name).ok_or_else(|| LoadError::MissingFile {
            name: name.to_string(),
            hint: hint.to_string(),
        })
    }

    /// The file `name` and its first bytes: the whole file when held in memory, else its header
    /// as `head_len` finds it in a prefix (`None`: the prefix ends inside the header), read once
    /// and kept.
    fn head<'a>(
        &'a self,
        name: &str,
        head_len: impl Fn(&[u8]) -> Result<Option<usize>, LoadError>,
    ) -> Result<(&'a FileBytes, &'a [u8]), LoadError> {
        let stored = self.files.get(name).ok_or_else(|| LoadError::MissingFile {
            name: name.to_string(),
            hint: String::new(),
        })?;
        if let Some(all) = stored.bytes.in_memory() {
            return Ok((&stored.bytes, all));
        }
        if let Some(head) = stored.head.get() {
            return Ok((&stored.bytes, head));
        }
        let len = stored.bytes.len();
        let mut n = FIRST_READ.min(len);
        let head = loop {
            let prefix = stored.bytes.read(name, 0..n)?;
            match head_len(prefix.as_slice())? {
                Some(used) => break prefix.as_slice()[..used.min(prefix.as_slice().len())].to_vec(),
                None if n < len => n = n.saturating_mul(4).min(len),
                None => {
                    return Err(LoadError::Ambiguous(format!(
                        "{name} is truncated or corrupt: its header runs past the end of the file; download it again"
                    )));
                }
            }
        };
        Ok((&stored.bytes, stored.head.get_or_init(|| head)))
    }

    /// The GGUF file `name`, parsed from its header (kept), its tensors read when asked for.
    pub fn gguf(&self, name: &str) -> Result<GgufFile<'_>, LoadError> {
        let whole = self.bytes(name).cloned().ok_or_else(|| LoadError::MissingFile {
            name: name.to_string(),
            hint: String::new(),
        })?;
        let (_, head) = self.head(name, |prefix| match GgufFile::parse_head(prefix, whole.clone(), name) {
            Ok(file) => Ok(Some(file.head_len())),
            Err(None) => Ok(None),
            Err(Some(e)) => Err(e.into()),
        })?;
        Ok(GgufFile::parse_head(head, whole, name)
            .map_err(|e| e.unwrap_or_else(|| GgufError::Truncated(format!("{name}: the header"))))?)
    }
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
            [one] => return Self::parse_gguf(files, one),
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

    fn parse_gguf(files: &'a ModelFiles, name: &str) -> Result<Self, LoadError> {
        let file = files.gguf(name)?;
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
        let names: Vec<&str> = files.names().filter(|n| n.ends_with(".safetensors")).collect();
        if names.is_empty() {
            return Err(LoadError::MissingFile {
                name: "model.safetensors".into(),
                hint: "add the model's *.safetensors file(s); .bin (pickle) checkpoints are not supported".into(),
            });
        }
        let mut shards = Vec::new();
        for name in names {
            let (bytes, head) = files.head(name, |prefix| Ok(super::safetensors::head_len(name, prefix)?))?;
            shards.push((name, head, bytes.clone()));
        }
        let source = SafetensorsSource::open(&shards, files.get("model.safetensors.index.json"))?;
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
            Parsed::Gguf(file) => {
                let source = GgufSource::new(file, &self.config);
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
