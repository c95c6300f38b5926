//! The merged GGUF: a trained model (tiny llama, GGUF source) merged and written as one GGUF at
//! each precision loads back in our own loader with the trained model's function (within the
//! precision's rounding), with the source's metadata and the Q4_K_M mix's tensor types.
//! (llama.cpp reading it: scripts/check-llama-cpp.sh.)

use burn::tensor::Device;
use lora_null::io::gguf::GgufFile;
use lora_null::io::{HostTensor, ModelFiles};
use lora_null::lora::InitMethod;
use lora_null::lora::gguf_merged::MergedQuant;

use crate::adapters::{calibrate, config, train_a_few_steps};
use crate::common::*;

/// f16 keeps 11 significant bits (relative 5e-4 per weight); through two layers the logits move
/// by ~1e-3 of their range. 5e-3 still fails a wrong permutation or a missing merge (≥1e-1).
const F16_LOGIT_REL_TOL: f32 = 5e-3;
/// Q8_0: 8-bit codes per block of 32, ~4e-3 relative per weight; ~1e-2 on these logits.
const Q8_0_LOGIT_REL_TOL: f32 = 3e-2;
/// Q4_K / Q6_K: the relative RMS error of a tensor is ~0.07 (Q4_K) and ~0.02 (Q6_K) on normal
/// weights (tests/fixtures/tiny/llama-kquant); 0.1 flags a wrong layout or scale (≥0.5).
const Q4_K_M_WEIGHT_REL_RMS_TOL: f64 = 0.1;

const IDS: [u32; 9] = [5, 77, 120, 33, 250, 9, 64, 180, 2];

fn rel(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| max_abs_diff(x, y)).fold(0.0, f32::max) / scale
}

/// A null adapter trained a few steps on the GGUF at `path`.
fn trained(path: &std::path::Path) -> (ModelFiles, lora_null::engine::LoadedModel) {
    let files = gguf_files(path);
    let mut m = load(&files, &Device::flex());
    let calib = calibrate(&m);
    pollster::block_on(m.init_adapters(
        config(InitMethod::Null, 4, 8.0),
        Some(&calib),
        &mut lora_null::engine::EighCache::default(),
        &lora_null::engine::Inline,
        &mut |_, _| {},
    ))
    .unwrap();
    train_a_few_steps(&mut m);
    (files, m)
}

fn reload(bytes: Vec<u8>) -> lora_null::engine::LoadedModel {
    let mut files = ModelFiles::new();
    files.insert("merged.gguf", bytes);
    load(&files, &Device::flex())
}

#[test]
fn a_merged_gguf_in_f16_or_q8_0_computes_the_trained_model() {
    let (files, m) = trained(&fixture("tiny/llama-gguf/f32.gguf"));
    let want = logits_rows(&m, &IDS);
    let base = logits_rows(&load(&files, &Device::flex()), &IDS);
    assert!(
        rel(&want, &base) > 10.0 * F16_LOGIT_REL_TOL,
        "training must move the logits beyond the tolerance"
    );
    for (quant, tol) in [
        (MergedQuant::F16, F16_LOGIT_REL_TOL),
        (MergedQuant::Q8_0, Q8_0_LOGIT_REL_TOL),
    ] {
        let bytes = pollster::block_on(m.export_gguf_merged(&files, quant)).unwrap();
        let source = GgufFile::parse(files.get("f32.gguf").unwrap()).unwrap();
        let merged = GgufFile::parse(&bytes).unwrap();
        for (key, _, raw) in &source.raw_metadata {
            if key != "general.file_type" {
                let copied = merged.raw_metadata.iter().find(|(k, _, _)| k == key).map(|e| e.2);
                assert_eq!(copied, Some(*raw), "{quant:?}: metadata `{key}` copied as stored");
            }
        }
        let d = rel(&logits_rows(&reload(bytes), &IDS), &want);
        assert!(
            d < tol,
            "{quant:?}: merged GGUF's logits differ from the trained model by {d} relative"
        );
    }
}

#[test]
fn a_merged_q4_k_m_gguf_follows_llama_cpp_s_mix_within_quantisation_error() {
    let (files, m) = trained(&fixture("tiny/llama-kquant/Q4_K_M.gguf"));
    let bytes = pollster::block_on(m.export_gguf_merged(&files, MergedQuant::Q4KM)).unwrap();
    let merged = GgufFile::parse(&bytes).unwrap();
    // Every tensor gets the type llama-quantize gave it in its own Q4_K_M of the same model.
    let llama_cpp = &json("tiny/llama-kquant/reference.json")["types"]["Q4_K_M"]["tensor_types"];
    let types = llama_cpp.as_object().unwrap();
    assert_eq!(types.len(), merged.tensors.len());
    for (name, want) in types {
        let got = merged.tensor_info(name).unwrap().ggml_type.name();
        assert_eq!(
            got,
            want.as_str().unwrap(),
            "{name}: our Q4_K_M mix vs llama-quantize's"
        );
    }
    // Each merged matrix against the trained model's own merged weights, in f32.
    let exact = pollster::block_on(lora_null::lora::export::model_tensors(&m.model, true)).unwrap();
    for (hf, want) in &exact {
        let name = lora_null::io::gguf_model::gguf_name(hf, m.config.model_type).unwrap();
        if want.shape.len() < 2 || name.contains("attn_q") || name.contains("attn_k") {
            continue; // 1-D tensors stay f32; q/k rows are stored permuted (checked by the logits test).
        }
        let (got, _) = merged.tensor_f32(&name).unwrap();
        let got = HostTensor::new(got, want.shape.clone());
        let err: f64 = got
            .data
            .iter()
            .zip(&want.data)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>();
        let norm: f64 = want.data.iter().map(|b| (*b as f64).powi(2)).sum::<f64>();
        let rms = (err / norm).sqrt();
        assert!(rms < Q4_K_M_WEIGHT_REL_RMS_TOL, "{name}: relative RMS error {rms}");
    }
    let logits = logits_rows(&reload(bytes), &IDS);
    assert!(logits.iter().flatten().all(|v| v.is_finite()));
}

#[test]
fn a_merged_gemma_gguf_keeps_llama_cpp_s_norms_and_computes_the_trained_model() {
    for arch in ["gemma2", "gemma3"] {
        let name = format!("{arch}-f32.gguf");
        let (files, m) = trained(&fixture(&format!("tiny/{arch}-gguf/{name}")));
        let want = logits_rows(&m, &IDS);
        let bytes = pollster::block_on(m.export_gguf_merged(&files, MergedQuant::F16)).unwrap();
        let source = GgufFile::parse(files.get(&name).unwrap()).unwrap();
        let merged = GgufFile::parse(&bytes).unwrap();
        // llama.cpp's converter stores Gemma's norms as 1 + w: the loader took the 1 off, the
        // merged file must put it back (a missing 1 scales every norm by ~0.1).
        for info in source.tensors.iter().filter(|t| t.name.ends_with("norm.weight")) {
            let (a, _) = source.tensor_f32(&info.name).unwrap();
            let (b, _) = merged.tensor_f32(&info.name).unwrap();
            assert!(max_abs_diff(&a, &b) < 1e-6, "{arch}: {} differs", info.name);
        }
        let d = rel(&logits_rows(&reload(bytes), &IDS), &want);
        assert!(d < F16_LOGIT_REL_TOL, "{arch}: merged f16 GGUF differs by {d} relative");
    }
}

#[test]
fn a_merged_phi3_gguf_keeps_the_fused_layers_and_longrope_factors() {
    let (files, m) = trained(&fixture("tiny/phi3-gguf/phi3-f32.gguf"));
    let want = logits_rows(&m, &IDS);
    let bytes = pollster::block_on(m.export_gguf_merged(&files, MergedQuant::F16)).unwrap();
    let merged = GgufFile::parse(&bytes).unwrap();
    for name in [
        "rope_factors_long.weight",
        "rope_factors_short.weight",
        "blk.0.attn_qkv.weight",
    ] {
        assert!(merged.tensor_info(name).is_some(), "{name} kept");
    }
    let d = rel(&logits_rows(&reload(bytes), &IDS), &want);
    assert!(d < F16_LOGIT_REL_TOL, "merged phi3 GGUF differs by {d} relative");
}
