//! Tokenizers: Hugging Face `tokenizer.json`, or rebuilt from GGUF metadata the way transformers
//! rebuilds it (`integrations/gguf/gguf_tokenizer_mapping.py`: byte-level BPE, control tokens as
//! special tokens, a split regex for the pre-tokenizer families that need one), plus the model's
//! Jinja chat template rendered with minijinja.

use serde::Serialize;
use serde_json::{Value, json};

use super::gguf::GgufFile;

/// Errors building or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// tokenizer.json (or the JSON we rebuilt from GGUF) was rejected.
    #[error("tokenizer: {0}; the tokenizer.json is corrupt or from an unsupported tokenizers version")]
    Build(String),
    /// A GGUF tokenizer model we do not rebuild.
    #[error(
        "GGUF tokenizer model `{0}` is not supported; supported: gpt2 (byte-level BPE), and llama (sentencepiece) for gemma2 / gemma3"
    )]
    UnsupportedModel(String),
    /// A GGUF key is missing.
    #[error("GGUF tokenizer metadata: {0}")]
    Metadata(String),
    /// Encoding or decoding failed.
    #[error("tokenizer: {0}")]
    Codec(String),
    /// The model has no chat template.
    #[error(
        "this model has no chat template; ask with a plain prompt, or use a model with `chat_template` in its tokenizer_config.json / GGUF metadata"
    )]
    NoChatTemplate,
    /// The chat template did not render.
    #[error("chat template failed to render: {0}")]
    Template(String),
}

impl TokenizerError {
    /// What the user can do about it.
    pub fn hints(&self) -> Vec<crate::hint::Hint> {
        match self {
            TokenizerError::NoChatTemplate => vec![crate::hint::Hint::TurnOff(crate::hint::Setting::Chat)],
            _ => Vec::new(),
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A tokenizer with the model's special tokens and chat template.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Prepend the BOS id when encoding (GGUF `add_bos_token`; HF tokenizers do it themselves).
    add_bos: bool,
    /// Beginning-of-sequence token.
    pub bos_token: Option<(u32, String)>,
    /// End-of-sequence token.
    pub eos_token: Option<(u32, String)>,
    /// Padding token id (falls back to EOS).
    pub pad_id: Option<u32>,
    /// Jinja chat template, if the model has one.
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

fn build_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Build(e.to_string())
}

impl Tokenizer {
    /// From a Hugging Face folder: `tokenizer.json` and, if present, `tokenizer_config.json`
    /// (special tokens and the chat template).
    pub fn from_hf(tokenizer_json: &[u8], tokenizer_config: Option<&[u8]>) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json).map_err(build_err)?;
        let cfg: Value = match tokenizer_config {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| TokenizerError::Build(format!("tokenizer_config.json: {e}")))?,
            None => Value::Null,
        };
        let token = |key: &str| -> Option<(u32, String)> {
            let v = cfg.get(key)?;
            let text = v.as_str().or_else(|| v.get("content").and_then(Value::as_str))?;
            Some((inner.token_to_id(text)?, text.to_string()))
        };
        let (bos_token, eos_token) = (token("bos_token"), token("eos_token"));
        let pad_id = token("pad_token").map(|(id, _)| id);
        let chat_template = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: use "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Value::as_str))
                .map(str::to_string),
            _ => None,
        };
        Ok(Self {
            inner,
            add_bos: false,
            bos_token,
            eos_token,
            pad_id,
            chat_template,
        })
    }

    /// Rebuilds the tokenizer stored in GGUF metadata (`tokenizer.ggml.*`).
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TokenizerError> {
        let meta = |e: super::gguf::GgufError| TokenizerError::Metadata(e.to_string());
        let model = file.get_str("tokenizer.ggml.model").map_err(meta)?;
        let arch = file.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("");
        let sentencepiece = model == "llama" && matches!(arch, "gemma" | "gemma2" | "gemma3");
        if model != "gpt2" && !sentencepiece {
            return Err(TokenizerError::UnsupportedModel(format!("{model}` for `{arch}")));
        }
        let tokens = file.get_str_array("tokenizer.ggml.tokens").map_err(meta)?;
        let types: Vec<i128> = file
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_int()).collect())
            .unwrap_or_default();
        let id = |key: &str| {
            file.get(key)
                .and_then(|v| v.as_int())
                .and_then(|i| u32::try_from(i).ok())
                .filter(|&i| (i as usize) < tokens.len())
        };
        let named = |key: &str| id(key).map(|i| (i, tokens[i as usize].to_string()));
        let json = if sentencepiece {
            let unk = named("tokenizer.ggml.unknown_token_id").map_or_else(|| "<unk>".to_string(), |(_, t)| t);
            super::gguf_sentencepiece::gemma_tokenizer_json(&tokens, &types, &unk)
        } else {
            let merges = file.get_str_array("tokenizer.ggml.merges").map_err(meta)?;
            let pre = file
                .get("tokenizer.ggml.pre")
                .and_then(|v| v.as_str())
                .unwrap_or("default");
            super::gguf_bpe::gguf_tokenizer_json(&tokens, &merges, &types, pre)
        };
        let inner = tokenizers::Tokenizer::from_bytes(json.to_string().as_bytes()).map_err(build_err)?;
        Ok(Self {
            inner,
            // A sentencepiece vocabulary that does not say otherwise gets BOS (llama.cpp, transformers).
            add_bos: file
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(sentencepiece),
            bos_token: named("tokenizer.ggml.bos_token_id"),
            eos_token: named("tokenizer.ggml.eos_token_id"),
            pad_id: id("tokenizer.ggml.padding_token_id"),
            chat_template: file
                .get("tokenizer.chat_template")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        })
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids for `text`, with the special tokens the model adds by default (as
    /// `tokenizer(text)["input_ids"]` in transformers).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| TokenizerError::Codec(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos
            && let Some((bos, _)) = &self.bos_token
        {
            ids.push(*bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Token ids for text that already contains its special tokens (a rendered chat template).
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Codec(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text for ids; special tokens are dropped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Codec(e.to_string()))
    }

    /// The string of one token id (for diagnostics).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The EOS id, falling back to nothing.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_token.as_ref().map(|(id, _)| *id)
    }

    /// Padding id: the pad token, else EOS, else 0.
    pub fn pad_or_eos(&self) -> u32 {
        self.pad_id.or(self.eos_id()).unwrap_or(0)
    }

    /// The tokenizer as a Hugging Face `tokenizer.json` string.
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        self.inner
            .to_string(false)
            .map_err(|e| TokenizerError::Codec(e.to_string()))
    }

    /// A `tokenizer_config.json` for exported models (special tokens and chat template).
    pub fn config_json(&self) -> serde_json::Value {
        let mut v = json!({"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": false});
        let map = v.as_object_mut().expect("invariant: json! object");
        if let Some((_, t)) = &self.bos_token {
            map.insert("bos_token".into(), t.clone().into());
        }
        if let Some((_, t)) = &self.eos_token {
            map.insert("eos_token".into(), t.clone().into());
        }
        if let Some(t) = self.pad_id.and_then(|id| self.id_to_token(id)) {
            map.insert("pad_token".into(), t.into());
        }
        if let Some(t) = &self.chat_template {
            map.insert("chat_template".into(), t.clone().into());
        }
        v
    }

    /// Renders the chat template over `messages` (as `apply_chat_template(..., tokenize=False)`).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.apply_chat_template_with(messages, add_generation_prompt, &serde_json::Map::new())
    }

    /// [`Self::apply_chat_template`] with extra template variables, as transformers passes its
    /// keyword arguments (e.g. Qwen3's `enable_thinking`).
    pub fn apply_chat_template_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, Value>,
    ) -> Result<String, TokenizerError> {
        let template = self.chat_template.as_deref().ok_or(TokenizerError::NoChatTemplate)?;
        render_chat_template(
            template,
            messages,
            add_generation_prompt,
            self.bos_token.as_ref().map_or("", |t| t.1.as_str()),
            self.eos_token.as_ref().map_or("", |t| t.1.as_str()),
            extra,
        )
    }

    /// Token ids of a rendered chat: the template's text encoded without adding specials again.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        self.encode_raw(&self.apply_chat_template(messages, add_generation_prompt)?)
    }
}

/// Renders a Hugging Face Jinja chat template; `extra` adds template variables.
pub fn render_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
    extra: &serde_json::Map<String, Value>,
) -> Result<String, TokenizerError> {
    let terr = |e: minijinja::Error| TokenizerError::Template(e.to_string());
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template).map_err(terr)?;
    let messages: Vec<minijinja::Value> = messages
        .iter()
        .map(|m| minijinja::context! { role => m.role.clone(), content => m.content.clone() })
        .collect();
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
        ..minijinja::Value::from(minijinja::value::Serde(extra))
    };
    env.get_template("chat").map_err(terr)?.render(ctx).map_err(terr)
}
