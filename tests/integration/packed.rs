//! The packed base (QLoRA-style): a GGUF's quantised and 16-bit matrices stay as stored and are
//! decoded when their layer runs; training then goes block by block with the loss taken a
//! vocabulary piece at a time. Both must give what the f32 base gives: the same decoded values
//! meet the same arithmetic.

use burn::tensor::{Device, Tensor, TensorData};
use lora_null::engine::{BaseStorage, LoadedModel};
use lora_null::lora::LoraAdapter;
use lora_null::model::Target;
use lora_null::train::data::Example;
use lora_null::train::{StepMetrics, TrainConfig};

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
        assert!(!dense.model.has_packed_weights(), "{rel}: f32 load packed something");
        let a = logits_rows(&dense, &ids);
        // Decoded on the host, and dequantised by the device's tensor operations.
        for base in [BaseStorage::Packed, BaseStorage::PackedDevice] {
            let mut packed = load_as(rel, base);
            assert!(packed.model.has_packed_weights(), "{rel}: nothing was packed");
            let on_device = packed
                .model
                .model
                .embed_tokens
                .packed
                .as_ref()
                .map(|p| p.is_on_device());
            assert_eq!(
                on_device,
                Some(base == BaseStorage::PackedDevice),
                "{rel} {base:?}: where the table lives"
            );
            // Pieces of 100 vocabulary rows: several, the last one short.
            packed.model.vocab_chunk = 100;
            let b = logits_rows(&packed, &ids);
            let d = max_abs_diff(&a.concat(), &b.concat());
            eprintln!("{rel} {base:?}: packed vs f32 logits differ by {d:.1e}");
            assert!(d <= LOGIT_ABS_TOL, "{rel} {base:?}: packed logits differ by {d}");
        }
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
    let steps = train_steps(m, examples, &cfg);
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
    (steps, factors)
}

#[test]
fn training_on_a_packed_base_block_by_block_equals_the_f32_base() {
    for rel in [
        "tiny/llama-gguf/q4_0.gguf",
        "tiny/gemma2-gguf/gemma2-f16.gguf",
        "tiny/phi3-gguf/phi3-f16.gguf",
    ] {
        let mut dense = load_as(rel, BaseStorage::F32);
        let (want, want_factors) = two_steps(&mut dense, false);
        // Decoded on the host, and by the device's operations.
        for base in [BaseStorage::Packed, BaseStorage::PackedDevice] {
            let mut packed = load_as(rel, base);
            packed.model.vocab_chunk = 100;
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

/// A Hugging Face folder in bfloat16 (the tiny llama's weights rounded to bf16 and written
/// back): packed, its 16-bit matrices stay as stored, and the logits equal the f32 load of the
/// same file.
#[test]
fn bf16_safetensors_pack_and_match_their_f32_load() {
    use lora_null::io::safetensors::{SafetensorsSource, SaveDtype, to_safetensors_bytes};
    let f32_bytes = std::fs::read(fixture("tiny/llama/model.safetensors")).unwrap();
    let source = SafetensorsSource::new(&[("model.safetensors", &f32_bytes)], None).unwrap();
    let tensors = source
        .names()
        .map(|n| (n.to_string(), source.read(n).unwrap().unwrap()))
        .collect();
    let mut files = hf_files("tiny/llama");
    files.insert(
        "model.safetensors",
        to_safetensors_bytes(&tensors, SaveDtype::Bf16, None).unwrap(),
    );
    let device = Device::flex();
    let load = |base| LoadedModel::load_as(&files, &device, base).unwrap();
    let (dense, packed) = (load(BaseStorage::F32), load(BaseStorage::Packed));
    assert!(packed.model.has_packed_weights() && !dense.model.has_packed_weights());
    let ids: Vec<u32> = (0..16).map(|i| (i * 41 + 7) % 300).collect();
    let d = max_abs_diff(
        &logits_rows(&dense, &ids).concat(),
        &logits_rows(&packed, &ids).concat(),
    );
    assert!(d <= LOGIT_ABS_TOL, "bf16 folder: packed logits differ by {d}");
    let q = packed.model.linear(0, Target::Q).unwrap();
    let (out, inp) = q.base.dims();
    assert_eq!(q.base.weight_bytes(), out * inp * 2, "bf16 keeps 2 bytes per weight");
}

/// The calibration options of `adapters::calibrate`.
fn calib_options() -> lora_null::engine::CalibOptions {
    lora_null::engine::CalibOptions {
        samples: 6,
        seq_len: 32,
        seed: 233,
        ..Default::default()
    }
}

fn prose() -> Vec<lora_null::io::dataset::Record> {
    vec![lora_null::io::dataset::Record::Text(crate::adapters::PROSE.repeat(3))]
}

fn factors(m: &LoadedModel) -> Vec<f32> {
    let state = m.adapter.as_ref().expect("adapters");
    state
        .init
        .factors
        .values()
        .flat_map(|(a, b)| a.data.iter().chain(&b.data).copied())
        .collect()
}

/// Calibrates on the prose and initialises `method` (rank 4, alpha 8) block by block through
/// `exec`.
fn init_by_block(
    m: &mut LoadedModel,
    method: lora_null::lora::InitMethod,
    exec: &dyn lora_null::engine::Executor,
) -> lora_null::engine::StreamedCalibration {
    pollster::block_on(m.init_adapters_streaming(
        crate::adapters::config(method, 4, 8.0),
        &prose(),
        &calib_options(),
        exec,
        &mut |_, _| {},
    ))
    .unwrap()
}

/// Block by block, the calibration and initialisation give the factors of the one-pass run:
/// the same windows through the same unadapted blocks, the same seeds in the same order.
#[test]
fn block_by_block_calibration_gives_the_one_pass_factors() {
    use lora_null::engine::Inline;
    use lora_null::lora::InitMethod;
    for method in [InitMethod::NullV2, InitMethod::CordaKpm] {
        let one_pass = crate::adapters::init(method, 8.0);
        let mut m = crate::adapters::tiny();
        let streamed = init_by_block(&mut m, method, &Inline);
        assert_eq!(streamed.windows, 6);
        let (want, got) = (factors(&one_pass), factors(&m));
        let d = max_abs_diff(&got, &want);
        eprintln!("{}: block-by-block factors differ by {d:.1e}", method.name());
        // The covariances are the same f32 sums; the decompositions run on identical input.
        assert!(d == 0.0, "{}: factors differ by {d}", method.name());
        // The energies the summary reports are the one-pass run's (calibrated on the base).
        let calib = crate::adapters::calibrate(&crate::adapters::tiny());
        let energy = one_pass.adapter_input_energy(&calib);
        assert_eq!(streamed.input_energy.len(), energy.len());
        for (k, e) in &energy {
            assert!(
                (streamed.input_energy[k] - e).abs() <= 1e-12,
                "{k:?}: energy {} vs {e}",
                streamed.input_energy[k]
            );
        }
    }
}

/// Runs each job when first awaited (not when sent), and counts itself as two workers: what the
/// page's worker pool looks like to the engine. Records the kinds sent, in order.
struct Deferred(std::cell::RefCell<Vec<char>>);

impl lora_null::engine::Executor for Deferred {
    fn submit(&self, job: lora_null::linalg::jobs::Job) -> lora_null::engine::jobs::JobFuture<'_> {
        use lora_null::linalg::jobs::Job;
        self.0.borrow_mut().push(match &job {
            Job::SmallestEigh { .. } => 'S',
            Job::Factors { .. } => 'F',
            _ => 'E',
        });
        Box::pin(async move { lora_null::linalg::jobs::run(job).map_err(lora_null::engine::JobError::from) })
    }

    fn parallelism(&self) -> usize {
        2
    }
}

/// With two workers, a layer's null-basis jobs are in flight while the next block is calibrated
/// (both layers' jobs are sent before the first layer's factors), and the factors are still
/// the one-pass run's.
#[test]
fn block_by_block_null_bases_overlap_the_next_layer_and_give_the_one_pass_factors() {
    use lora_null::lora::InitMethod;
    let one_pass = crate::adapters::init(InitMethod::NullV2, 8.0);
    let mut m = crate::adapters::tiny();
    let layers = m.model.num_layers();
    let exec = Deferred(Default::default());
    init_by_block(&mut m, InitMethod::NullV2, &exec);
    let d = max_abs_diff(&factors(&m), &factors(&one_pass));
    assert!(d == 0.0, "factors differ by {d}");
    let sent = exec.0.into_inner();
    let per_layer = sent.iter().filter(|&&k| k == 'S').count() / layers;
    let before_factors = sent.iter().take_while(|&&k| k == 'S').count();
    assert!(layers >= 2 && per_layer > 0);
    assert_eq!(
        before_factors,
        2 * per_layer,
        "jobs sent: {}",
        sent.iter().collect::<String>()
    );
}

/// LoRA-Null changes the base (`W − s·B₀A₀`): a packed base keeps its bytes and subtracts the
/// product when it runs, so it stays packed; the initialised model still computes the base's
/// logits, as the f32 one does.
#[test]
fn null_v2_on_a_packed_base_keeps_it_packed_and_the_logits_unchanged() {
    use lora_null::engine::Inline;
    use lora_null::lora::InitMethod;
    let rel = "tiny/llama-gguf/q8_0.gguf";
    let ids: Vec<u32> = (0..20).map(|i| (i * 29 + 3) % 300).collect();
    let base = logits_rows(&load_as(rel, BaseStorage::F32), &ids).concat();
    let scale = base.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut per_storage = Vec::new();
    for storage in [BaseStorage::F32, BaseStorage::Packed] {
        let mut m = load_as(rel, storage);
        init_by_block(&mut m, InitMethod::NullV2, &Inline);
        assert_eq!(m.model.has_packed_weights(), storage == BaseStorage::Packed);
        let logits = logits_rows(&m, &ids).concat();
        let d = max_abs_diff(&logits, &base) / scale;
        eprintln!("{storage:?}: null-v2 at init moves the logits by {d:.1e} relative");
        // As adapters.rs's INIT_LOGIT_TOL: residual + factors reproduce the base to rounding.
        assert!(d < 1e-4, "{storage:?}: relative logit change {d}");
        per_storage.push(factors(&m));
    }
    let d = max_abs_diff(&per_storage[0], &per_storage[1]);
    assert!(d == 0.0, "the factors depend on the storage: {d}");
}

/// The page's builder (wasm cannot read token ids back, so no lookup on the host): the packed
/// table takes the device layout, on the CPU backend too, instead of being decoded to f32, and
/// the logits are the f32 base's.
#[test]
fn without_host_lookups_the_table_stays_packed_in_the_device_layout() {
    use lora_null::io::Checkpoint;
    use lora_null::model::{ModelBuilder, VarBuilder};
    let ids: Vec<u32> = (0..16).map(|i| (i * 41 + 7) % 250).collect();
    for rel in ["tiny/llama-gguf/q4_0.gguf", "tiny/gemma3-gguf/gemma3-f16.gguf"] {
        let files = gguf_files(&fixture(rel));
        let ckpt = Checkpoint::parse(&files).unwrap();
        let weights = ckpt.weights().unwrap();
        let vb = VarBuilder::new(weights.source(), &Device::flex(), ckpt.config.model_type.model_type())
            .with_packing(true)
            .with_packed_lookups(false);
        let model = ModelBuilder::new(vb, &ckpt.config, weights.rope_freq_factors())
            .finish()
            .unwrap();
        let table = model.model.embed_tokens.packed.as_ref();
        assert!(
            table.is_some_and(|p| p.is_on_device()),
            "{rel}: the table is not in the device layout"
        );
        let input = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
            TensorData::new(ids.iter().map(|&x| x as i64).collect(), [1, ids.len()]),
            &Device::flex(),
        );
        let got: Vec<f32> = model.forward(input).into_data().try_to_vec::<f32>().unwrap();
        let want = logits_rows(&load_as(rel, BaseStorage::F32), &ids).concat();
        let d = max_abs_diff(&got, &want);
        assert!(d <= LOGIT_ABS_TOL, "{rel}: logits differ by {d}");
    }
}
