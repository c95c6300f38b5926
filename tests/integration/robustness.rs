//! Mutation corpus over the parsers: truncated and bit-flipped GGUF and safetensors files must
//! give an error or a model, never a panic. (The cargo-fuzz targets in fuzz/ explore further.)

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::Device;
use lora_null::engine::LoadedModel;
use lora_null::io::ModelFiles;
use lora_null::linalg::Rng;

use crate::common::*;

/// Cut points: every byte of the first 600 (header, metadata, tensor index) and 100 more spread
/// over the rest.
fn cut_points(len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..600.min(len)).collect();
    cuts.extend((0..100).map(|i| 600 + (len.saturating_sub(600)) * i / 100));
    cuts.retain(|&c| c < len);
    cuts.dedup();
    cuts
}

/// Loads every mutant through the whole pipeline (parse, config, tokenizer, model build) and
/// returns how many loaded; panics (failing the test) if any mutant panicked.
fn survive(mutants: impl Iterator<Item = (String, ModelFiles)>) -> (usize, usize) {
    let device = Device::flex();
    let (mut ok, mut total) = (0, 0);
    for (what, files) in mutants {
        total += 1;
        match catch_unwind(AssertUnwindSafe(|| LoadedModel::load(&files, &device).is_ok())) {
            Ok(loaded) => ok += loaded as usize,
            Err(_) => panic!("panicked on {what}"),
        }
    }
    (ok, total)
}

fn flips(len: usize, n: usize, seed: u64, header: usize) -> Vec<(usize, u8)> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            // Half the flips in the header region, where structure lives.
            let pos = if i % 2 == 0 {
                rng.below(header.min(len))
            } else {
                rng.below(len)
            };
            (pos, 1u8 << rng.below(8))
        })
        .collect()
}

#[test]
fn truncated_and_bit_flipped_gguf_files_never_panic() {
    let original = std::fs::read(fixture("tiny/llama-gguf/q4_1.gguf")).unwrap();
    let gguf = |bytes: Vec<u8>| {
        let mut f = ModelFiles::new();
        f.insert("m.gguf", bytes);
        f
    };
    let truncated = cut_points(original.len())
        .into_iter()
        .map(|c| (format!("cut at {c}"), gguf(original[..c].to_vec())));
    let (ok, total) = survive(truncated);
    assert_eq!(ok, 0, "a truncated GGUF must not load ({ok} of {total} did)");

    let flipped = flips(original.len(), 400, 7, 20_000).into_iter().map(|(pos, bit)| {
        let mut b = original.clone();
        b[pos] ^= bit;
        (format!("bit {bit:#x} at {pos}"), gguf(b))
    });
    let (ok, total) = survive(flipped);
    assert!(ok < total, "some header flips must be rejected");
}

#[test]
fn truncated_and_bit_flipped_safetensors_never_panic() {
    let original = std::fs::read(fixture("tiny/llama/model.safetensors")).unwrap();
    let hf = |bytes: Vec<u8>| {
        let mut f = hf_files("tiny/llama");
        f.insert("model.safetensors", bytes);
        f
    };
    let truncated = cut_points(original.len())
        .into_iter()
        .map(|c| (format!("cut at {c}"), hf(original[..c].to_vec())));
    let (ok, total) = survive(truncated);
    assert_eq!(
        ok, 0,
        "a truncated safetensors file must not load ({ok} of {total} did)"
    );

    let flipped = flips(original.len(), 400, 11, 4_000).into_iter().map(|(pos, bit)| {
        let mut b = original.clone();
        b[pos] ^= bit;
        (format!("bit {bit:#x} at {pos}"), hf(b))
    });
    survive(flipped);
}

#[test]
fn corrupt_config_and_tokenizer_json_never_panic() {
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        let original = std::fs::read(fixture(&format!("tiny/llama/{name}"))).unwrap();
        let mutants = cut_points(original.len()).into_iter().step_by(7).map(|c| {
            let mut f = hf_files("tiny/llama");
            f.insert(name, original[..c].to_vec());
            (format!("{name} cut at {c}"), f)
        });
        survive(mutants);
    }
}
