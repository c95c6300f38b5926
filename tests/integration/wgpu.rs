//! The GPU path: the same models on burn's wgpu backend (mesa's lavapipe software Vulkan driver
//! on CI, which the test command installs). Tiny models only: lavapipe is slow.

use lora_null::device::{DevicePreference, select_device};

use crate::common::*;

/// GPU kernels sum in a different order than the CPU (and fuse differently): 1e-3 absolute on
/// logits ~1 still catches a wrong rotation or norm (≥1e-2).
const WGPU_LOGIT_TOL: f32 = 1e-3;

#[test]
fn tiny_models_on_wgpu_match_transformers() {
    let choice = pollster::block_on(select_device(DevicePreference::Wgpu));
    let adapter = choice.adapter.as_ref().unwrap_or_else(|| {
        panic!(
            "no wgpu adapter: {} (install mesa-vulkan-drivers; scripts/setup.sh does)",
            choice.warning.clone().unwrap_or_default()
        )
    });
    eprintln!("wgpu adapter: {} ({})", adapter.name, adapter.backend);
    for arch in ["llama", "qwen2"] {
        let m = load(&hf_files(&format!("tiny/{arch}")), &choice.device);
        let r = json(&format!("tiny/{arch}/reference.json"));
        for case in r["cases"].as_array().unwrap() {
            let ids = ids(&case["ids"]);
            let (rows, want_rows) = (logits_rows(&m, &ids), case["logits"].as_array().unwrap());
            assert_eq!(rows.len(), want_rows.len(), "one row of logits per token");
            for (pos, (got, want)) in rows.iter().zip(want_rows).enumerate() {
                let d = max_abs_diff(got, &floats(want));
                assert!(
                    d < WGPU_LOGIT_TOL,
                    "{arch} on {}: position {pos}: max |Δlogit| {d}",
                    adapter.name
                );
            }
        }
    }
}

/// A packed base on the GPU stays there in its stored precision and is dequantised by the
/// device; its logits are the f32 base's on the same device (the same values meet matmuls that
/// read the weight transposed: rounding only).
#[test]
fn a_packed_base_lives_on_the_gpu_and_matches_the_f32_base() {
    use lora_null::engine::{BaseStorage, LoadedModel};
    let choice = pollster::block_on(select_device(DevicePreference::Wgpu));
    assert!(choice.adapter.is_some(), "no wgpu adapter: {:?}", choice.warning);
    let ids: Vec<u32> = (0..16).map(|i| (i * 37 + 5) % 300).collect();
    for rel in [
        "tiny/llama-gguf/q4_0.gguf",
        "tiny/llama-kquant/Q4_K_M.gguf",
        "tiny/gemma3-gguf/gemma3-f16.gguf",
    ] {
        let files = gguf_files(&fixture(rel));
        let load = |base| LoadedModel::load_as(&files, &choice.device, base).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let (dense, mut packed) = (load(BaseStorage::F32), load(BaseStorage::Packed));
        let placed: Vec<bool> = (0..packed.model.num_layers())
            .flat_map(|i| lora_null::model::Target::ALL.map(move |t| (i, t)))
            .filter_map(|(i, t)| packed.model.linear(i, t))
            .filter_map(|l| l.base.packed.as_ref().map(|p| p.is_on_device()))
            .collect();
        assert!(
            !placed.is_empty() && placed.iter().all(|&d| d),
            "{rel}: packed layers not all on the GPU"
        );
        packed.model.vocab_chunk = 100;
        let d = max_abs_diff(
            &logits_rows(&dense, &ids).concat(),
            &logits_rows(&packed, &ids).concat(),
        );
        eprintln!("{rel}: packed on the GPU vs f32 logits differ by {d:.1e}");
        assert!(d < WGPU_LOGIT_TOL, "{rel}: packed on the GPU differs by {d}");
    }
}
