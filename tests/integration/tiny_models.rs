//! Tiny random-weight models of each architecture against transformers' logits.

use burn::tensor::Device;
use lora_null::eval::{GenerateOptions, generate};
use lora_null::model::rope::RotaryEmbedding;

use crate::common::*;

/// Both sides compute in f32 on 2 layers of width 64: only summation order differs, so the
/// logits agree to a few ulps of their magnitude (~1); 1e-4 leaves headroom without hiding bugs
/// (a wrong rotation or norm moves logits by >1e-2).
pub const TINY_TOL: f32 = 1e-4;
/// Inverse frequencies are computed in f32 as transformers does: a few ulps apart at most.
const INV_FREQ_REL_TOL: f32 = 1e-6;
/// The same f32 weights through two loaders run the identical computation: any difference is a
/// loader bug (a wrong un-permutation moves logits by >1e-2); 1e-5 allows only rounding noise.
const SAME_MODEL_TOL: f32 = 1e-5;

pub fn check_logits(files: &lora_null::io::ModelFiles, reference: &str) {
    let device = Device::flex();
    let m = load(files, &device);
    let r = json(reference);
    for case in r["cases"].as_array().expect("cases") {
        let ids = ids(&case["ids"]);
        let got = logits_rows(&m, &ids);
        let want = case["logits"].as_array().expect("logits");
        assert_eq!(got.len(), want.len());
        for (pos, (g, w)) in got.iter().zip(want).enumerate() {
            let diff = max_abs_diff(g, &floats(w));
            assert!(
                diff < TINY_TOL,
                "{reference}: case of {} ids, position {pos}: max |Δlogit| = {diff}",
                ids.len()
            );
        }
    }
}

pub fn check_greedy(files: &lora_null::io::ModelFiles, reference: &str) {
    let m = load(files, &Device::flex());
    let r = json(reference);
    let prompt = ids(&r["greedy"]["ids"]);
    let want = ids(&r["greedy"]["new_ids"]);
    let opts = GenerateOptions {
        max_new_tokens: want.len(),
        ..Default::default()
    };
    let got = pollster::block_on(generate(&m.model, &prompt, &opts, &mut |_| true)).expect("generate");
    assert_eq!(
        got, want,
        "{reference}: greedy continuation (with the KV cache) differs"
    );
}

#[test]
fn tiny_llama_logits_match_transformers() {
    check_logits(&hf_files("tiny/llama"), "tiny/llama/reference.json");
}

#[test]
fn tiny_llama3_rope_scaling_logits_match_transformers() {
    check_logits(&hf_files("tiny/llama3"), "tiny/llama3/reference.json");
}

#[test]
fn tiny_qwen2_with_biases_logits_match_transformers() {
    check_logits(&hf_files("tiny/qwen2"), "tiny/qwen2/reference.json");
}

#[test]
fn tiny_qwen3_with_head_norms_logits_match_transformers() {
    check_logits(&hf_files("tiny/qwen3"), "tiny/qwen3/reference.json");
}

#[test]
fn tiny_qwen3_converted_by_llama_cpp_to_gguf_matches_transformers() {
    for (file, reference) in [
        ("qwen3-f32.gguf", "reference.json"),
        ("qwen3-f16.gguf", "reference_f16.json"),
    ] {
        let path = fixture(&format!("tiny/qwen3-gguf/{file}"));
        check_logits(&gguf_files(&path), &format!("tiny/qwen3-gguf/{reference}"));
    }
}

#[test]
fn qwen3_chat_template_with_thinking_renders_like_transformers() {
    for files in [
        hf_files("tiny/qwen3"),
        gguf_files(&fixture("tiny/qwen3-gguf/qwen3-f32.gguf")),
    ] {
        let m = load(&files, &Device::flex());
        let cases = json("tiny/qwen3/reference.json")["chat"].as_array().unwrap().clone();
        assert!(cases.len() >= 5, "the fixture covers thinking on and off");
        for case in cases {
            let messages: Vec<lora_null::io::ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
            let add = case["add_generation_prompt"].as_bool().unwrap();
            let extra = case["template_kwargs"].as_object().cloned().unwrap_or_default();
            let text = m.tokenizer.apply_chat_template_with(&messages, add, &extra).unwrap();
            assert_eq!(text, case["text"].as_str().unwrap(), "{extra:?}");
            assert_eq!(m.tokenizer.encode_raw(&text).unwrap(), ids(&case["ids"]), "{text:?}");
        }
    }
}

#[test]
fn tiny_phi3_with_fused_layers_partial_rotary_and_longrope_matches_transformers() {
    // cases of 1 and 7 tokens use the short factors, the 24-token case (past the pre-training
    // context of 16) the long ones
    check_logits(&hf_files("tiny/phi3"), "tiny/phi3/reference.json");
}

#[test]
fn tiny_phi3_converted_by_llama_cpp_to_gguf_matches_transformers() {
    for (file, reference) in [
        ("phi3-f32.gguf", "reference.json"),
        ("phi3-f16.gguf", "reference_f16.json"),
    ] {
        let files = gguf_files(&fixture(&format!("tiny/phi3-gguf/{file}")));
        check_logits(&files, &format!("tiny/phi3-gguf/{reference}"));
    }
    // The tokenizer rebuilt from the GGUF's metadata equals tokenizer.json.
    let device = Device::flex();
    let a = load(&hf_files("tiny/phi3"), &device);
    let b = load(&gguf_files(&fixture("tiny/phi3-gguf/phi3-f32.gguf")), &device);
    // GGUF stores the LongRoPE factors and eps as f32: the same configuration up to that rounding.
    assert_eq!(
        (a.config.rotary_dim, a.config.max_position_embeddings),
        (b.config.rotary_dim, b.config.max_position_embeddings)
    );
    let factors = |c: &lora_null::model::ModelConfig| match &c.rope_scaling {
        lora_null::model::RopeScaling::Longrope {
            short_factor,
            long_factor,
            original_max_position_embeddings,
            attention_factor,
        } => [
            short_factor.clone(),
            long_factor.clone(),
            vec![*original_max_position_embeddings, *attention_factor],
        ]
        .concat(),
        other => panic!("longrope expected, got {other:?}"),
    };
    for (x, y) in factors(&a.config).iter().zip(factors(&b.config)) {
        assert!((x - y).abs() <= 1e-6 * x.abs(), "LongRoPE from GGUF: {x} vs {y}");
    }
    let text = "Hello world, 123 tokens!\n\tand  more";
    assert_eq!(a.tokenizer.encode(text).unwrap(), b.tokenizer.encode(text).unwrap());
}

#[test]
fn phi3_longrope_frequencies_and_scaling_match_transformers() {
    let m = load(&hf_files("tiny/phi3"), &Device::flex());
    let rope = &json("tiny/phi3/reference.json")["meta"]["rope"];
    let scaling = rope["attention_scaling"].as_f64().unwrap() as f32;
    assert!(scaling > 1.0, "LongRoPE scales cos/sin: {scaling}");
    let r = RotaryEmbedding::new(&m.config, None);
    let close = |got: &[f32], want: &[f32]| {
        assert_eq!(got.len(), want.len(), "one frequency per rotated pair");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= INV_FREQ_REL_TOL * w.abs().max(1e-3),
                "{got:?} vs {want:?}"
            );
        }
    };
    close(r.inv_freq(), &floats(&rope["inv_freq_short"]));
    let (cos, _) = r.tables(0, 17, &Device::flex());
    let cos = cos.into_data().try_to_vec::<f32>().unwrap();
    let rot = r.inv_freq().len() * 2;
    let long = floats(&rope["inv_freq_long"]);
    // position 3 of a 17-token call (past the context of 16): cos(3·long)·scaling
    for (k, f) in long.iter().enumerate() {
        let want = (3.0 * f).cos() * scaling;
        assert!(
            (cos[3 * rot + k] - want).abs() < 1e-5,
            "long set in use past the context"
        );
    }
}

#[test]
fn tiny_mistral_logits_match_transformers() {
    check_logits(&hf_files("tiny/mistral"), "tiny/mistral/reference.json");
}

#[test]
fn greedy_generation_with_kv_cache_matches_transformers_for_every_architecture() {
    for arch in ["llama", "llama3", "qwen2", "qwen3", "mistral", "phi3"] {
        check_greedy(
            &hf_files(&format!("tiny/{arch}")),
            &format!("tiny/{arch}/reference.json"),
        );
    }
}

#[test]
fn llama3_inverse_frequencies_match_transformers() {
    let m = load(&hf_files("tiny/llama3"), &Device::flex());
    let want = floats(&json("tiny/llama3/reference.json")["meta"]["rope"]["inv_freq"]);
    let got = RotaryEmbedding::new(&m.config, None).inv_freq().to_vec();
    assert_eq!(got.len(), want.len(), "one frequency per pair of head dimensions");
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= INV_FREQ_REL_TOL * w.abs().max(1e-3),
            "inv_freq {got:?} vs {want:?}"
        );
    }
}

#[test]
fn gguf_files_of_every_supported_type_match_transformers() {
    for ty in ["f32", "f16", "q8_0", "q4_0", "q4_1"] {
        let path = fixture(&format!("tiny/llama-gguf/{ty}.gguf"));
        check_logits(&gguf_files(&path), &format!("tiny/llama-gguf/reference_{ty}.json"));
    }
}

#[test]
fn gguf_and_safetensors_of_the_same_model_give_the_same_logits() {
    let device = Device::flex();
    let a = load(&hf_files("tiny/llama"), &device);
    let b = load(&gguf_files(&fixture("tiny/llama-gguf/f32.gguf")), &device);
    assert_eq!(a.config.num_hidden_layers, b.config.num_hidden_layers);
    let ids = [5u32, 17, 99, 200, 3, 42];
    let (la, lb) = (logits_rows(&a, &ids), logits_rows(&b, &ids));
    assert_eq!((la.len(), lb.len()), (ids.len(), ids.len()));
    for (x, y) in la.iter().zip(lb) {
        assert!(
            max_abs_diff(x, &y) < SAME_MODEL_TOL,
            "GGUF q/k un-permutation or tokenizer mismatch"
        );
    }
    // The tokenizer rebuilt from GGUF metadata equals the tokenizer.json one.
    let text = "Hello world, 123 tokens!\n\tand  more";
    assert_eq!(a.tokenizer.encode(text).unwrap(), b.tokenizer.encode(text).unwrap());
}

/// Perplexity from the same f32 weights in another summation order: a few ulps of the mean NLL.
const KQUANT_PPL_REL_TOL: f64 = 1e-5;

#[test]
fn k_quant_and_iq_gguf_files_written_by_llama_quantize_match_transformers() {
    let r = json("tiny/llama-kquant/reference.json");
    let types = r["types"].as_object().unwrap();
    assert!(
        types.len() >= 8,
        "the fixture covers the K-quant mixes, IQ4 and Q5 types"
    );
    let device = Device::flex();
    let mut covered = std::collections::BTreeSet::new();
    for (name, t) in types {
        let m = load(
            &gguf_files(&fixture(&format!("tiny/llama-kquant/{}", t["file"].as_str().unwrap()))),
            &device,
        );
        covered.extend(m.storage.keys().cloned());
        for case in t["cases"].as_array().unwrap() {
            let ids = ids(&case["ids"]);
            let got = logits_rows(&m, &ids);
            let want = case["logits"].as_array().unwrap();
            assert_eq!(got.len(), want.len());
            for (pos, (g, w)) in got.iter().zip(want).enumerate() {
                let d = max_abs_diff(g, &floats(w));
                assert!(
                    d < TINY_TOL,
                    "{name}: {} ids, position {pos}: max |Δlogit| = {d}",
                    ids.len()
                );
            }
        }
        let p = &t["perplexity"];
        let report = pollster::block_on(lora_null::eval::perplexity(
            &m.model,
            &ids(&p["ids"]),
            p["seq_len"].as_u64().unwrap() as usize,
            &mut |_, _| {},
        ))
        .unwrap();
        let want = p["perplexity"].as_f64().unwrap();
        assert!(
            (report.perplexity - want).abs() <= KQUANT_PPL_REL_TOL * want,
            "{name}: perplexity {} vs transformers {want}",
            report.perplexity
        );
    }
    for ty in [
        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q5_1", "IQ4_NL", "IQ4_XS",
    ] {
        assert!(covered.contains(ty), "no tensor of type {ty} was checked: {covered:?}");
    }
}
