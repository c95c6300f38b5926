//! Bad input gets a typed error whose message says what is wrong and what to do.

use std::collections::BTreeMap;

use burn::tensor::Device;
use lora_null::engine::LoadedModel;
use lora_null::io::ModelFiles;
use lora_null::io::gguf::GgufFile;
use lora_null::io::safetensors::{SafetensorsSource, SaveDtype, to_safetensors_bytes};

use crate::common::*;
use crate::gguf_writer::{RawTensor, Val, write_gguf};

fn load_err(files: &ModelFiles) -> String {
    match LoadedModel::load(files, &Device::flex()) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// The tiny llama's tensors, to edit and re-serialise.
fn tiny_tensors() -> BTreeMap<String, lora_null::io::HostTensor> {
    let bytes = std::fs::read(fixture("tiny/llama/model.safetensors")).unwrap();
    let src = SafetensorsSource::new(&[("model.safetensors", &bytes)], None).unwrap();
    src.names()
        .map(|n| (n.to_string(), src.read(n).unwrap().unwrap()))
        .collect()
}

fn with_tensors(t: &BTreeMap<String, lora_null::io::HostTensor>) -> ModelFiles {
    let mut files = hf_files("tiny/llama");
    files.insert(
        "model.safetensors",
        to_safetensors_bytes(t, SaveDtype::F32, None).unwrap(),
    );
    files
}

#[test]
fn unsupported_gguf_quantisation_is_named_with_the_supported_list() {
    let bytes = write_gguf(
        &[("general.architecture", Val::Str("llama".into()))],
        &[RawTensor {
            name: "blk.0.attn_q.weight".into(),
            dims: vec![256, 2],
            // IQ2_XXS: an importance-matrix type this reader does not decode.
            ggml_type: 16,
            bytes: vec![0; 132],
        }],
    );
    let err = GgufFile::parse(&bytes).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "tensor blk.0.attn_q.weight uses IQ2_XXS, which is not supported; supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS"
        ),
        "{err}"
    );
}

#[test]
fn unsupported_architecture_is_named_with_the_supported_list() {
    let bytes = write_gguf(
        &[
            ("general.architecture", Val::Str("falcon".into())),
            ("falcon.block_count", Val::U32(1)),
        ],
        &[],
    );
    let mut files = ModelFiles::new();
    files.insert("m.gguf", bytes);
    let err = load_err(&files);
    assert!(
        err.contains("falcon") && err.contains("llama, mistral, qwen2, qwen3, phi3, gemma2, gemma3"),
        "{err}"
    );

    let mut files = hf_files("tiny/llama");
    let cfg = std::fs::read_to_string(fixture("tiny/llama/config.json"))
        .unwrap()
        .replace("\"llama\"", "\"gpt_neox\"");
    files.insert("config.json", cfg.into_bytes());
    let err = load_err(&files);
    assert!(
        err.contains("`gpt_neox` is not supported; supported: llama, mistral, qwen2"),
        "{err}"
    );
}

#[test]
fn config_json_missing_a_field_names_it() {
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tiny/llama/config.json")).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("hidden_size");
    let mut files = hf_files("tiny/llama");
    files.insert("config.json", cfg.to_string().into_bytes());
    let err = load_err(&files);
    assert!(err.contains("missing field `hidden_size`"), "{err}");
}

#[test]
fn a_missing_tensor_is_named() {
    let mut t = tiny_tensors();
    t.remove("model.layers.1.mlp.down_proj.weight");
    let err = load_err(&with_tensors(&t));
    assert!(
        err.contains("tensor `model.layers.1.mlp.down_proj.weight` is missing"),
        "{err}"
    );
}

#[test]
fn a_wrong_shape_reports_expected_and_found() {
    let mut t = tiny_tensors();
    let w = t.get_mut("model.layers.0.self_attn.k_proj.weight").unwrap();
    w.shape = vec![w.shape[1], w.shape[0]];
    let err = load_err(&with_tensors(&t));
    assert!(
        err.contains("`model.layers.0.self_attn.k_proj.weight` has shape [64, 32], expected [32, 64]"),
        "{err}"
    );
}

#[test]
fn a_folder_without_tokenizer_json_says_so() {
    let mut files = ModelFiles::new();
    for name in ["config.json", "model.safetensors"] {
        files.insert(name, std::fs::read(fixture(&format!("tiny/llama/{name}"))).unwrap());
    }
    let err = load_err(&files);
    assert!(err.contains("missing file `tokenizer.json`"), "{err}");
}

#[test]
fn a_shard_index_naming_an_absent_shard_is_reported() {
    let mut files = hf_files("tiny/llama");
    let index = r#"{"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00002-of-00002.safetensors"}}"#;
    files.insert("model.safetensors.index.json", index.as_bytes().to_vec());
    let err = load_err(&files);
    assert!(
        err.contains("shard `model-00002-of-00002.safetensors`, which was not provided"),
        "{err}"
    );
}

#[test]
fn sharded_safetensors_load_like_a_single_file() {
    let t = tiny_tensors();
    let (a, b): (BTreeMap<_, _>, BTreeMap<_, _>) = t.into_iter().partition(|(k, _)| k.contains("layers.0"));
    let mut files = hf_files("tiny/llama");
    files.insert(
        "model-00001-of-00002.safetensors",
        to_safetensors_bytes(&a, SaveDtype::F32, None).unwrap(),
    );
    files.insert(
        "model-00002-of-00002.safetensors",
        to_safetensors_bytes(&b, SaveDtype::F32, None).unwrap(),
    );
    let mut files_without_single = ModelFiles::new();
    for name in files
        .names()
        .filter(|n| *n != "model.safetensors")
        .map(str::to_string)
        .collect::<Vec<_>>()
    {
        files_without_single.insert(&name, files.get(&name).unwrap().to_vec());
    }
    let device = Device::flex();
    let sharded = load(&files_without_single, &device);
    let single = load(&hf_files("tiny/llama"), &device);
    let ids = [3u32, 50, 120, 7];
    let (a, b) = (logits_rows(&sharded, &ids), logits_rows(&single, &ids));
    assert_eq!((a.len(), b.len()), (ids.len(), ids.len()));
    for (x, y) in a.iter().zip(b) {
        assert_eq!(max_abs_diff(x, &y), 0.0);
    }
}

#[test]
fn a_truncated_gguf_says_truncated() {
    let bytes = std::fs::read(fixture("tiny/llama-gguf/q4_1.gguf")).unwrap();
    let err = GgufFile::parse(&bytes[..bytes.len() - 100]).unwrap_err().to_string();
    assert!(err.contains("truncated") && err.contains("past the end"), "{err}");
    let err = GgufFile::parse(b"GGML\x03\0\0\0").unwrap_err().to_string();
    assert!(err.contains("not a GGUF file"), "{err}");
}

#[test]
fn an_absurd_layer_count_is_refused_before_allocating() {
    let bytes = write_gguf(
        &[
            ("general.architecture", Val::Str("gemma2".into())),
            ("gemma2.block_count", Val::U32(u32::MAX)),
            ("gemma2.embedding_length", Val::U32(64)),
            ("gemma2.feed_forward_length", Val::U32(128)),
            ("gemma2.attention.head_count", Val::U32(4)),
            ("gemma2.attention.sliding_window", Val::U32(4)),
            ("gemma2.vocab_size", Val::U32(16)),
        ],
        &[],
    );
    let mut files = ModelFiles::new();
    files.insert("m.gguf", bytes);
    let err = load_err(&files);
    assert!(err.contains("layers") && err.contains("corrupt"), "{err}");
}
