//! Tiny random-weight models of each architecture against transformers' logits.

use burn::tensor::Device;
use lora_null::eval::{GenerateOptions, generate};
use lora_null::model::rope::RotaryEmbedding;

use crate::common::*;

/// Both sides compute in f32 on 2 layers of width 64: only summation order differs, so the
/// logits agree to a few ulps of their magnitude (~1); 1e-4 leaves headroom without hiding bugs
/// (a wrong rotation or norm moves logits by >1e-2).
const TINY_TOL: f32 = 1e-4;
/// Inverse frequencies are computed in f32 as transformers does: a few ulps apart at most.
const INV_FREQ_REL_TOL: f32 = 1e-6;
/// The same f32 weights through two loaders run the identical computation: any difference is a
/// loader bug (a wrong un-permutation moves logits by >1e-2); 1e-5 allows only rounding noise.
const SAME_MODEL_TOL: f32 = 1e-5;

fn check_logits(files: &lora_null::io::ModelFiles, reference: &str) {
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

fn check_greedy(files: &lora_null::io::ModelFiles, reference: &str) {
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
fn tiny_mistral_logits_match_transformers() {
    check_logits(&hf_files("tiny/mistral"), "tiny/mistral/reference.json");
}

#[test]
fn greedy_generation_with_kv_cache_matches_transformers_for_every_architecture() {
    for arch in ["llama", "llama3", "qwen2", "mistral"] {
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
