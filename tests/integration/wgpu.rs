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
