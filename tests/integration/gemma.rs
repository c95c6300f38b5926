//! Gemma 2 and Gemma 3 (text): tiny random-weight models against transformers, as Hugging Face
//! folders and as the GGUFs llama.cpp's converter writes from them (norms stored +1, a
//! sentencepiece vocabulary without merges), sliding-window layers exercised (window 4 < 24 ids).

use burn::tensor::Device;
use lora_null::model::config::LayerType;
use lora_null::model::rope::RotaryEmbedding;

use crate::common::*;
use crate::tiny_models::{TINY_TOL, check_greedy, check_logits};

const ARCHS: [&str; 2] = ["gemma2", "gemma3"];

/// Largest |Δ| over all cases relative to the largest |logit| (for the report; the assertions
/// use the absolute `TINY_TOL`).
fn max_relative_error(files: &lora_null::io::ModelFiles, reference: &str) -> f32 {
    let m = load(files, &Device::flex());
    let (mut diff, mut scale) = (0f32, 0f32);
    for case in json(reference)["cases"].as_array().unwrap() {
        for (g, w) in logits_rows(&m, &ids(&case["ids"]))
            .iter()
            .zip(case["logits"].as_array().unwrap())
        {
            let w = floats(w);
            diff = diff.max(max_abs_diff(g, &w));
            scale = w.iter().fold(scale, |s, v| s.max(v.abs()));
        }
    }
    diff / scale
}

#[test]
fn tiny_gemma_folders_match_transformers() {
    for arch in ARCHS {
        let files = hf_files(&format!("tiny/{arch}"));
        let reference = format!("tiny/{arch}/reference.json");
        check_logits(&files, &reference);
        eprintln!(
            "{arch}: max relative logit error {:.2e}",
            max_relative_error(&files, &reference)
        );
    }
}

#[test]
fn tiny_gemma_converted_by_llama_cpp_to_gguf_matches_transformers() {
    for arch in ARCHS {
        for (kind, reference) in [("f32", "reference.json"), ("f16", "reference_f16.json")] {
            let files = gguf_files(&fixture(&format!("tiny/{arch}-gguf/{arch}-{kind}.gguf")));
            let reference = format!("tiny/{arch}-gguf/{reference}");
            check_logits(&files, &reference);
            eprintln!(
                "{arch} {kind} GGUF: max relative logit error {:.2e}",
                max_relative_error(&files, &reference)
            );
        }
    }
}

#[test]
fn gemma_gguf_and_folder_read_the_same_config() {
    for arch in ARCHS {
        let device = Device::flex();
        let a = load(&hf_files(&format!("tiny/{arch}")), &device).config;
        let b = load(
            &gguf_files(&fixture(&format!("tiny/{arch}-gguf/{arch}-f32.gguf"))),
            &device,
        )
        .config;
        assert_eq!(a.layer_types, b.layer_types, "{arch}");
        assert_eq!(a.sliding_window, b.sliding_window, "{arch}");
        assert_eq!(a.rope_local_base_freq, b.rope_local_base_freq, "{arch}");
        assert_eq!(a.rope_scaling, b.rope_scaling, "{arch}");
        assert_eq!(a.query_pre_attn_scalar, b.query_pre_attn_scalar, "{arch}");
        assert_eq!(a.attn_logit_softcapping, b.attn_logit_softcapping, "{arch}");
        assert_eq!(a.final_logit_softcapping, b.final_logit_softcapping, "{arch}");
        assert_eq!(a.hidden_act, b.hidden_act, "{arch}");
        assert!(
            a.layer_types.contains(&LayerType::SlidingAttention) && a.layer_types.contains(&LayerType::FullAttention),
            "{arch}: the fixture has both kinds of layer"
        );
    }
}

#[test]
fn gemma_greedy_generation_with_kv_cache_matches_transformers() {
    for arch in ARCHS {
        check_greedy(
            &hf_files(&format!("tiny/{arch}")),
            &format!("tiny/{arch}/reference.json"),
        );
    }
}

#[test]
fn gemma3_local_and_global_inverse_frequencies_match_transformers() {
    let m = load(&hf_files("tiny/gemma3"), &Device::flex());
    let inv = &json("tiny/gemma3/reference.json")["meta"]["rope"]["inv_freq"];
    let local = RotaryEmbedding::plain(m.config.rope_local_base_freq.unwrap(), m.config.head_dim);
    for (got, want) in [
        (RotaryEmbedding::new(&m.config, None), &inv["full_attention"]),
        (local, &inv["sliding_attention"]),
    ] {
        let want = floats(want);
        assert_eq!(got.inv_freq().len(), want.len());
        for (g, w) in got.inv_freq().iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1e-3),
                "{:?} vs {want:?}",
                got.inv_freq()
            );
        }
    }
}

#[test]
fn gemma_tokenizer_rebuilt_from_gguf_metadata_encodes_like_tokenizer_json() {
    for arch in ARCHS {
        let device = Device::flex();
        let hf = load(&hf_files(&format!("tiny/{arch}")), &device).tokenizer;
        let gguf = load(
            &gguf_files(&fixture(&format!("tiny/{arch}-gguf/{arch}-f32.gguf"))),
            &device,
        )
        .tokenizer;
        let cases = json(&format!("tiny/{arch}/reference.json"))["tokenizer"]
            .as_array()
            .unwrap()
            .clone();
        assert!(cases.len() >= 8, "the fixture covers bytes, spaces and specials");
        for case in cases {
            let text = case["text"].as_str().unwrap();
            let want = ids(&case["ids"]);
            assert_eq!(hf.encode(text).unwrap(), want, "tokenizer.json: {text:?}");
            assert_eq!(gguf.encode(text).unwrap(), want, "GGUF metadata: {text:?}");
            assert_eq!(
                gguf.decode(&want, true).unwrap(),
                hf.decode(&want, true).unwrap(),
                "{text:?}"
            );
        }
        assert_eq!(gguf.eos_id(), hf.eos_id(), "{arch}");
    }
}

#[test]
fn gemma_logits_stay_within_the_soft_cap() {
    let m = load(&hf_files("tiny/gemma2"), &Device::flex());
    let cap = m.config.final_logit_softcapping.unwrap() as f32;
    let rows = logits_rows(&m, &[2, 40, 41, 300, 7]);
    let top = rows.iter().flatten().fold(0f32, |a, v| a.max(v.abs()));
    assert!(top < cap && top > TINY_TOL, "max |logit| {top} vs cap {cap}");
}

#[test]
fn gemma_decoding_with_the_kv_cache_equals_the_full_forward_past_the_window() {
    use burn::tensor::{Int, Tensor, TensorData};
    use lora_null::model::llama::KvCache;
    use lora_null::model::observe::NoObserver;
    let ids: Vec<u32> = json("tiny/gemma3/reference.json")["cases"][2]["ids"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_u64().unwrap() as u32).collect())
        .unwrap();
    for arch in ARCHS {
        let m = load(&hf_files(&format!("tiny/{arch}")), &Device::flex());
        assert!(ids.len() > m.config.sliding_window.unwrap(), "the window is exercised");
        let full = logits_rows(&m, &ids);
        let mut cache = KvCache::default();
        for (pos, &id) in ids.iter().enumerate() {
            let input = Tensor::<2, Int>::from_data(TensorData::new(vec![id as i64], [1, 1]), &m.model.device());
            let hidden = m.model.hidden_states(input, Some(&mut cache), &mut NoObserver);
            let step: Vec<f32> = m.model.logits(hidden).into_data().try_into_vec_as::<f32>().unwrap();
            let d = max_abs_diff(&step, &full[pos]);
            assert!(d < TINY_TOL, "{arch}: position {pos}: cached vs full max |Δ| = {d}");
        }
    }
}

#[test]
fn the_config_written_for_an_exported_gemma_reads_back_the_same() {
    for arch in ARCHS {
        let cfg = load(&hf_files(&format!("tiny/{arch}")), &Device::flex()).config;
        let json = cfg.to_hf_json();
        // transformers' strict Gemma configs take an integer query scalar
        assert!(json["query_pre_attn_scalar"].is_u64(), "{arch}: {json}");
        let back = lora_null::model::ModelConfig::from_hf_json(&json.to_string()).unwrap();
        assert_eq!(back, cfg, "{arch}");
    }
}

#[test]
fn a_gemma_config_without_the_optional_fields_gets_transformers_defaults() {
    use lora_null::model::ModelConfig;
    let minimal = |model_type: &str, layers: usize| {
        serde_json::json!({"model_type": model_type, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
            "vocab_size": 512})
        .to_string()
    };
    let g2 = ModelConfig::from_hf_json(&minimal("gemma2", 4)).unwrap();
    assert_eq!(
        (g2.attn_logit_softcapping, g2.final_logit_softcapping),
        (Some(50.0), Some(30.0))
    );
    assert_eq!(g2.query_pre_attn_scalar, Some(256.0));
    assert_eq!(g2.sliding_window, Some(4096));
    assert!(g2.tie_word_embeddings);
    use LayerType::{FullAttention as F, SlidingAttention as S};
    assert_eq!(g2.layer_types, vec![S, F, S, F]);
    let g3 = ModelConfig::from_hf_json(&minimal("gemma3_text", 7)).unwrap();
    assert_eq!((g3.attn_logit_softcapping, g3.final_logit_softcapping), (None, None));
    assert_eq!((g3.rope_theta, g3.rope_local_base_freq), (1_000_000.0, Some(10_000.0)));
    assert_eq!(g3.layer_types, vec![S, S, S, S, S, F, S]);
    // transformers ≥ 5 writes the two RoPE bases as per-kind rope_parameters
    let mut v: serde_json::Value = serde_json::from_str(&minimal("gemma3_text", 2)).unwrap();
    v["rope_parameters"] = serde_json::json!({
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}});
    let g3 = ModelConfig::from_hf_json(&v.to_string()).unwrap();
    assert_eq!(g3.rope_scaling, lora_null::model::RopeScaling::Linear { factor: 8.0 });
    assert_eq!((g3.rope_theta, g3.rope_local_base_freq), (1e6, Some(1e4)));
    // Gemma 3 with vision nests the text model: refused by name, with what is supported
    let multimodal = serde_json::json!({"model_type": "gemma3", "text_config": {"hidden_size": 64}}).to_string();
    let err = ModelConfig::from_hf_json(&multimodal).unwrap_err().to_string();
    assert!(err.contains("gemma3_text") && err.contains("supported: llama"), "{err}");
}

#[test]
fn gemma_parameter_count_matches_the_checkpoint() {
    for arch in ARCHS {
        let cfg = load(&hf_files(&format!("tiny/{arch}")), &Device::flex()).config;
        let bytes = std::fs::read(fixture(&format!("tiny/{arch}/model.safetensors"))).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let stored: usize = st
            .tensors()
            .iter()
            .map(|(_, t)| t.shape().iter().product::<usize>())
            .sum();
        assert_eq!(cfg.num_parameters(), stored, "{arch}");
    }
}
