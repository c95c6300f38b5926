//! The LoRA adapter GGUF for llama.cpp: what `export_gguf_adapter` writes equals the PEFT
//! export module by module, once llama.cpp's q/k row permutation and `alpha / r` scale are
//! accounted for. (That llama.cpp itself applies it as we do is checked by
//! scripts/check-llama-cpp.sh, which needs llama.cpp's tools.)

use lora_null::io::HostTensor;
use lora_null::io::gguf::GgufFile;
use lora_null::io::gguf_model::{gguf_name, unpermute_rows};
use lora_null::io::peft::read_adapter;
use lora_null::io::safetensors::SaveDtype;
use lora_null::lora::InitMethod;
use lora_null::model::Target;

use crate::adapters::init_on;
use crate::common::*;

/// The GGUF holds f32 copies of the same factors, and `alpha / r` equals PEFT's scale exactly
/// (powers of two here): only the final multiplication rounds.
const GGUF_FACTOR_TOL: f32 = 1e-6;

fn check(dir: &str, permuted: bool) {
    let mut m = init_on(dir, InitMethod::Null, 8.0);
    crate::adapters::train_a_few_steps(&mut m);
    let (files, doubled) = pollster::block_on(m.export_peft(SaveDtype::F32)).unwrap();
    assert!(doubled, "null changes the base: the export has rank 2r");
    let get = |n: &str| files.iter().find(|(f, _)| f == n).unwrap().1.clone();
    let peft = read_adapter(&get("adapter_config.json"), &get("adapter_model.safetensors")).unwrap();
    let (bytes, _) = pollster::block_on(m.export_gguf_adapter()).unwrap();
    let gguf = GgufFile::parse(&bytes).unwrap();
    assert_eq!(gguf.get_str("general.type").unwrap(), "adapter");
    assert_eq!(gguf.get_str("adapter.type").unwrap(), "lora");
    let alpha = gguf.get("adapter.lora.alpha").and_then(|v| v.as_f64()).unwrap();
    assert_eq!(gguf.tensors.len(), 2 * peft.modules.len());
    for (&(layer, target), module) in &peft.modules {
        let name = gguf_name(
            &format!("model.layers.{layer}.{}.weight", target.path()),
            m.config.model_type,
        )
        .unwrap();
        let (a, a_shape) = gguf.tensor_f32(&format!("{name}.lora_a")).unwrap();
        let (b, b_shape) = gguf.tensor_f32(&format!("{name}.lora_b")).unwrap();
        assert_eq!(
            (a_shape, b_shape),
            (module.a.shape.clone(), module.b.shape.clone()),
            "{name}"
        );
        assert_eq!(a, module.a.data, "{name}: lora_a is PEFT's");
        let r = module.a.shape[0];
        let heads = match target {
            Target::Q if permuted => Some(m.config.num_attention_heads),
            Target::K if permuted => Some(m.config.num_key_value_heads),
            _ => None,
        };
        let b = match heads {
            Some(h) => unpermute_rows(&b, module.b.shape[0], r, h).unwrap(),
            None => b,
        };
        let scale = peft
            .config
            .scale_for(&lora_null::io::peft::peft_prefix(layer, target), r);
        let ours: Vec<f32> = b.iter().map(|v| v * (alpha / r as f64) as f32).collect();
        let want: Vec<f32> = module.b.data.iter().map(|v| v * scale as f32).collect();
        let d = max_abs_diff(&ours, &want);
        assert!(d < GGUF_FACTOR_TOL, "{name}: (alpha/r)·lora_b differs from s·B by {d}");
        if heads.is_some() && module.b.shape[0] > 2 {
            let raw = HostTensor::new(b, module.b.shape.clone());
            assert_ne!(
                raw.data,
                gguf.tensor_f32(&format!("{name}.lora_b")).unwrap().0,
                "{name}: rows permuted"
            );
        }
    }
}

#[test]
fn the_gguf_adapter_holds_the_peft_update_with_llama_cpp_q_k_rows_for_llama() {
    check("tiny/llama", true);
}

#[test]
fn the_gguf_adapter_keeps_hugging_face_rows_for_qwen3() {
    check("tiny/qwen3", false);
}

#[test]
fn the_gguf_adapter_keeps_hugging_face_rows_for_gemma() {
    // llama.cpp runs Gemma with NEOX rope (Hugging Face's rotate-half): its converter permutes nothing.
    check("tiny/gemma2", false);
    check("tiny/gemma3", false);
}

#[test]
fn the_gguf_adapter_names_phi3_s_fused_layers_as_llama_cpp_does() {
    check("tiny/phi3", false);
}
