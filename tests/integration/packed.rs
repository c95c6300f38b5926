//! The packed base (QLoRA-style): a GGUF's quantised and 16-bit matrices stay as stored and are
//! decoded when their layer runs; training then goes block by block with the loss taken a
//! vocabulary piece at a time. Both must give what the f32 base gives: the same decoded values
//! meet the same arithmetic.

use burn::tensor::{Device, Tensor, TensorData};
use lora_null::engine::{BaseStorage, LoadedModel, TrainHooks};
use lora_null::lora::LoraAdapter;
use lora_null::model::Target;
use lora_null::train::data::Example;
use lora_null::train::{StepMetrics, TrainConfig, TrainData};

use crate::common::*;

/// Logits of the packed and the f32 base: the same decoded weights, the same matmuls (the head
/// split into pieces only changes which columns one call computes), so they agree to rounding;
/// 1e-5 on logits of size ~1 leaves room for a different blocking inside the matmul.
const LOGIT_ABS_TOL: f32 = 1e-5;
/// Loss and gradient norm of a step: the same sums in another order (blockwise backward, the
/// online log-sum-exp); 1e-5 relative, as against PyTorch in train_parity.
const STEP_REL_TOL: f64 = 1e-5;
/// Factors after two steps (they move by ~1e-2 at lr 5e-3); as train_parity's bound.
const FACTOR_ABS_TOL: f32 = 1e-5;

/// GGUF fixtures covering the packed encodings (Q4_0, Q8_0, a K-quant mix, F16), llama's q/k row
/// permutation, tied and untied heads, Qwen3's q/k norms, Gemma's soft-caps and Phi-3's fused
/// projections.
const FIXTURES: [&str; 8] = [
    "tiny/llama-gguf/q4_0.gguf",
    "tiny/llama-gguf/q8_0.gguf",
    "tiny/llama-gguf/f16.gguf",
    "tiny/llama-kquant/Q4_K_M.gguf",
    "tiny/qwen3-gguf/qwen3-f16.gguf",
    "tiny/gemma2-gguf/gemma2-f16.gguf",
    "tiny/gemma3-gguf/gemma3-f16.gguf",
    "tiny/phi3-gguf/phi3-f16.gguf",
];

fn load_as(rel: &str, base: BaseStorage) -> LoadedModel {
    LoadedModel::load_as(&gguf_files(&fixture(rel)), &Device::flex(), base)
        .unwrap_or_else(|e| panic!("{rel}: load failed: {e}"))
}

#[test]
fn packed_logits_equal_f32_logits() {
    let ids: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 300).collect();
    for rel in FIXTURES {
        let dense = load_as(rel, BaseStorage::F32);
        let mut packed = load_as(rel, BaseStorage::Packed);
        assert!(!dense.model.has_packed_weights(), "{rel}: f32 load packed something");
        assert!(packed.model.has_packed_weights(), "{rel}: nothing was packed");
        // Pieces of 100 vocabulary rows: several, the last one short.
        packed.model.vocab_chunk = 100;
        let (a, b) = (logits_rows(&dense, &ids), logits_rows(&packed, &ids));
        let d = max_abs_diff(&a.concat(), &b.concat());
        eprintln!("{rel}: packed vs f32 logits differ by {d:.1e}");
        assert!(d <= LOGIT_ABS_TOL, "{rel}: packed logits differ by {d}");
    }
}

#[test]
fn packed_weights_hold_their_stored_size() {
    let dense = load_as("tiny/llama-gguf/q4_0.gguf", BaseStorage::F32);
    let packed = load_as("tiny/llama-gguf/q4_0.gguf", BaseStorage::Packed);
    let bytes = |m: &LoadedModel| -> usize {
        (0..m.model.num_layers())
            .flat_map(|i| Target::ALL.map(move |t| (i, t)))
            .filter_map(|(i, t)| m.model.linear(i, t))
            .map(|l| l.base.weight_bytes())
            .sum()
    };
    let (d, p) = (bytes(&dense), bytes(&packed));
    // Q4_0: 18 bytes per 32 weights against 128 as f32.
    assert_eq!(p * 128, d * 18, "packed {p} bytes vs f32 {d}");
}

#[derive(Default)]
struct Steps(Vec<StepMetrics>);

impl TrainHooks for Steps {
    fn on_step(&mut self, m: &StepMetrics) {
        self.0.push(m.clone());
    }
}

/// Attaches the same small nonzero factors to every adaptable layer (r = 2), so both factors
/// get gradients from the first step.
fn attach(m: &mut LoadedModel) {
    let device = m.model.device();
    for layer in 0..m.model.num_layers() {
        for (k, t) in Target::ALL.into_iter().enumerate() {
            let Some(lin) = m.model.linear_mut(layer, t) else {
                continue;
            };
            let (out, inp) = lin.base.dims();
            let fill = |n: usize, seed: usize| -> Vec<f32> {
                (0..n)
                    .map(|i| (((i * 7919 + seed * 104_729 + 13) % 2001) as f32 / 1000.0 - 1.0) * 0.05)
                    .collect()
            };
            let a = Tensor::from_data(TensorData::new(fill(2 * inp, layer * 16 + k), [2, inp]), &device);
            let b = Tensor::from_data(TensorData::new(fill(out * 2, layer * 16 + k + 8), [out, 2]), &device);
            lin.adapter = Some(LoraAdapter::new(a, b, 2.0, true, true));
        }
    }
}

fn two_steps(m: &mut LoadedModel, blockwise: bool) -> (Vec<StepMetrics>, Vec<f32>) {
    attach(m);
    let examples: Vec<Example> = (0..3)
        .map(|e| {
            let len = 10 + 3 * e;
            Example {
                ids: (0..len).map(|i| ((i * 31 + e * 17 + 3) % 300) as u32).collect(),
                target: (0..len).map(|i| i >= 2 + e).collect(),
            }
        })
        .collect();
    let cfg = TrainConfig {
        lr: 5e-3,
        steps: Some(2),
        batch: 3,
        warmup_ratio: 0.0,
        checkpoint_blocks: Some(blockwise),
        ..TrainConfig::default()
    };
    let data = TrainData {
        train: examples,
        val: Vec::new(),
        dropped: 0,
        truncated: 0,
    };
    let mut steps = Steps::default();
    pollster::block_on(m.train(data, &cfg, None, &mut steps)).unwrap_or_else(|e| panic!("training failed: {e}"));
    let mut factors = Vec::new();
    for layer in 0..m.model.num_layers() {
        for t in Target::ALL {
            if let Some(a) = m.model.linear(layer, t).and_then(|l| l.adapter.as_ref()) {
                for p in [&a.lora_a, &a.lora_b] {
                    factors.extend(p.val().into_data().try_into_vec_as::<f32>().unwrap());
                }
            }
        }
    }
    (steps.0, factors)
}

#[test]
fn training_on_a_packed_base_block_by_block_equals_the_f32_base() {
    for rel in [
        "tiny/llama-gguf/q4_0.gguf",
        "tiny/gemma2-gguf/gemma2-f16.gguf",
        "tiny/phi3-gguf/phi3-f16.gguf",
    ] {
        let mut dense = load_as(rel, BaseStorage::F32);
        let mut packed = load_as(rel, BaseStorage::Packed);
        packed.model.vocab_chunk = 100;
        let (want, want_factors) = two_steps(&mut dense, false);
        let (got, got_factors) = two_steps(&mut packed, true);
        for (g, w) in got.iter().zip(&want) {
            let (dl, dn) = (
                (g.loss - w.loss).abs() / w.loss,
                (g.grad_norm - w.grad_norm).abs() / w.grad_norm,
            );
            eprintln!(
                "{rel} step {}: loss {:.6} vs {:.6} ({dl:.1e}), grad norm {:.1e} relative",
                g.step, g.loss, w.loss, dn
            );
            assert!(
                dl <= STEP_REL_TOL,
                "{rel} step {}: loss {} vs {}",
                g.step,
                g.loss,
                w.loss
            );
            assert!(
                dn <= STEP_REL_TOL,
                "{rel} step {}: gradient norm {} vs {}",
                g.step,
                g.grad_norm,
                w.grad_norm
            );
        }
        let d = max_abs_diff(&got_factors, &want_factors);
        assert!(d <= FACTOR_ABS_TOL, "{rel}: factors differ by {d}");
        assert!(
            got[1].loss < got[0].loss,
            "{rel}: training should lower the loss ({} then {})",
            got[0].loss,
            got[1].loss
        );
    }
}

/// Perplexity through the chunked loss of a packed head equals the f32 path's log-softmax.
#[test]
fn packed_perplexity_equals_f32_perplexity() {
    let ids: Vec<u32> = (0..70).map(|i| (i * 53 + 11) % 300).collect();
    for rel in ["tiny/llama-gguf/q4_0.gguf", "tiny/gemma2-gguf/gemma2-f16.gguf"] {
        let dense = load_as(rel, BaseStorage::F32);
        let mut packed = load_as(rel, BaseStorage::Packed);
        packed.model.vocab_chunk = 100;
        let ppl = |m: &LoadedModel| {
            pollster::block_on(lora_null::eval::perplexity(&m.model, &ids, 32, &mut |_, _| {}))
                .unwrap()
                .perplexity
        };
        let (want, got) = (ppl(&dense), ppl(&packed));
        eprintln!("{rel}: perplexity packed {got} vs f32 {want}");
        assert!(
            (got - want).abs() <= STEP_REL_TOL * want,
            "{rel}: perplexity {got} vs {want}"
        );
    }
}
