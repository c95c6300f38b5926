//! The real model, SmolLM2-135M-Instruct (Q4_1 GGUF), against transformers loading the same file.

use std::sync::OnceLock;

use burn::tensor::Device;
use lora_null::engine::LoadedModel;
use lora_null::eval::GenerateOptions;
use lora_null::io::ChatMessage;

use crate::common::*;

/// Logits of a 30-layer f32 model: both sides dequantise Q4_1 identically, so differences come
/// only from f32 summation order (matmul blocking, softmax), which grows to ~1e-4 over 30 blocks
/// on logits of magnitude ~20 (measured: ~7e-5). 1e-3 absolute, as the issue asks.
const LOGIT_TOL: f32 = 1e-3;

fn model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| load(&gguf_files(&smollm2_path()), &Device::flex()))
}

fn reference() -> &'static serde_json::Value {
    static REF: OnceLock<serde_json::Value> = OnceLock::new();
    REF.get_or_init(|| json("smollm2/reference.json"))
}

#[test]
fn smollm2_config_is_read_from_gguf_metadata() {
    let c = &model().config;
    assert_eq!(
        (c.num_hidden_layers, c.hidden_size, c.intermediate_size),
        (30, 576, 1536)
    );
    assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.head_dim), (9, 3, 64));
    assert_eq!(c.vocab_size, 49152);
    assert_eq!(c.rope_theta, 100_000.0);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.num_parameters(), 134_515_008);
}

#[test]
fn smollm2_token_ids_equal_transformers() {
    let tok = &model().tokenizer;
    for case in reference()["tokenization"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text).unwrap(), ids(&case["ids"]), "text {text:?}");
        assert_eq!(
            tok.decode(&ids(&case["ids"]), false).unwrap(),
            case["decoded"].as_str().unwrap()
        );
    }
}

#[test]
fn smollm2_chat_template_renders_like_transformers() {
    let tok = &model().tokenizer;
    for case in reference()["chat"].as_array().unwrap() {
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let add = case["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(
            tok.apply_chat_template(&messages, add).unwrap(),
            case["text"].as_str().unwrap()
        );
        assert_eq!(tok.encode_chat(&messages, add).unwrap(), ids(&case["ids"]));
    }
}

#[test]
fn smollm2_logits_match_transformers() {
    let m = model();
    for case in reference()["logits"].as_array().unwrap() {
        let ids = ids(&case["ids"]);
        let rows = logits_rows(m, &ids);
        let positions = case["positions"].as_array().unwrap();
        assert_eq!(rows.len(), positions.len(), "one row of logits per reference position");
        for (pos, (row, want)) in rows.iter().zip(positions).enumerate() {
            let at =
                |list: &serde_json::Value| -> Vec<f32> { self::ids(list).iter().map(|&i| row[i as usize]).collect() };
            let top = max_abs_diff(&at(&want["top_ids"]), &floats(&want["top_values"]));
            let probe = max_abs_diff(&at(&want["probe_ids"]), &floats(&want["probe_values"]));
            let lse = {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
            };
            let lse_diff = (lse - want["logsumexp"].as_f64().unwrap()).abs() as f32;
            assert!(
                top < LOGIT_TOL && probe < LOGIT_TOL && lse_diff < LOGIT_TOL,
                "{:?} position {pos}: top-50 Δ {top}, probe Δ {probe}, logsumexp Δ {lse_diff}",
                case["text"]
            );
            // The argmax is the reference's top token.
            let argmax = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
            assert_eq!(argmax as u64, want["top_ids"][0].as_u64().unwrap());
        }
    }
}

#[test]
fn smollm2_perplexity_is_within_half_a_percent_of_transformers() {
    let r = &reference()["perplexity"];
    let text = std::fs::read_to_string(fixture("smollm2/ppl_text.txt")).unwrap();
    let seq_len = r["seq_len"].as_u64().unwrap() as usize;
    let got = pollster::block_on(model().perplexity_text(&text, None, seq_len, &mut |_, _| {})).unwrap();
    let want = r["perplexity"].as_f64().unwrap();
    assert_eq!(got.tokens, r["tokens"].as_u64().unwrap() as usize);
    assert_eq!(got.scored, r["scored"].as_u64().unwrap() as usize);
    let rel = (got.perplexity - want).abs() / want;
    assert!(
        rel < 0.005,
        "perplexity {} vs transformers {want} ({:.4}% off)",
        got.perplexity,
        rel * 100.0
    );
}

#[test]
fn smollm2_greedy_continuations_equal_transformers() {
    let m = model();
    for case in reference()["greedy"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let chat = case["chat"].as_bool().unwrap();
        assert_eq!(
            m.prompt_ids(prompt, chat).unwrap(),
            ids(&case["ids"]),
            "prompt ids of {prompt:?}"
        );
        let opts = GenerateOptions {
            max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
            ..Default::default()
        };
        let text = pollster::block_on(m.generate_text(prompt, chat, &opts, &mut |_| {})).unwrap();
        assert_eq!(
            text,
            case["text"].as_str().unwrap(),
            "greedy continuation of {prompt:?} (chat: {chat})"
        );
    }
}
