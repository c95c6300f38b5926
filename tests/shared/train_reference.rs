//! PyTorch's training run of the tiny llama (`tests/fixtures/tiny/train/reference.json`, from
//! scripts/make_reference.py --only train) and the checks against it: given LoRA factors on all
//! 14 modules, the masked loss over a padded batch, global-norm clipping, AdamW with weight
//! decay, and the warmup + cosine schedule, step by step. Shared by the native test
//! (`tests/integration/train_parity.rs`) and the browser test of the CPU backend in wasm.

use burn::tensor::{Device, Tensor, TensorData};
use lora_null::engine::LoadedModel;
use lora_null::lora::LoraAdapter;
use lora_null::model::Target;
use lora_null::train::data::Example;
use lora_null::train::{AdamWConfig, StepMetrics, TrainConfig, TrainData};
use serde_json::Value;

/// Losses of the same f32 model in another order of operations: 2.6e-7 between PyTorch f32 and
/// f64 (meta.f64_vs_f32); 1e-5 relative leaves room for a different summation order.
const LOSS_REL_TOL: f64 = 1e-5;
/// Gradient norms: 1.2e-6 between f32 and f64 in PyTorch; 1e-5 relative likewise.
const GRAD_NORM_REL_TOL: f64 = 1e-5;
/// The schedule is the same f64 formula on both sides: equal to rounding.
const LR_TOL: f64 = 1e-12;
/// Factors after four steps (they move by ~2e-2): 5e-7 between f32 and f64 in PyTorch (4e-7 seen
/// here), but Adam divides each gradient element by its own size, so tiny elements (~2e-6)
/// magnify rounding; 1e-5 leaves that room and is 2000 times below the distance travelled.
const FACTOR_ABS_TOL: f32 = 1e-5;

/// The reference run (the fixture's JSON).
pub struct TrainReference(pub Value);

fn num(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| num(x) as f32).collect()
}

/// A matrix given as rows, flattened row-major, with its shape.
fn matrix(v: &Value) -> (Vec<f32>, [usize; 2]) {
    let rows: Vec<Vec<f32>> = v.as_array().expect("rows").iter().map(floats).collect();
    let shape = [rows.len(), rows[0].len()];
    (rows.concat(), shape)
}

/// `"0.q_proj"` → layer 0, `q_proj`.
fn module(key: &str) -> (usize, Target) {
    let (layer, module) = key.split_once('.').expect("layer.module");
    let target = Target::parse(module).unwrap_or_else(|e| panic!("{e}"));
    (layer.parse().expect("layer"), target)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

impl TrainReference {
    /// Puts the reference's initial factors on every module of `m`.
    pub fn attach_initial_factors(&self, m: &mut LoadedModel) {
        let device: Device = m.model.device();
        let scale = num(&self.0["config"]["scale"]);
        for (key, f) in self.0["init"].as_object().expect("init") {
            let (layer, target) = module(key);
            let tensor = |v: &Value| {
                let (values, shape) = matrix(v);
                Tensor::<2>::from_data(TensorData::new(values, shape), &device)
            };
            m.model.linear_mut(layer, target).expect("adapted module").adapter = Some(LoraAdapter::new(
                tensor(&f["lora_A"]),
                tensor(&f["lora_B"]),
                scale,
                true,
                true,
            ));
        }
    }

    /// The reference's batch, all of it for training.
    pub fn data(&self) -> TrainData {
        let train = self.0["examples"]
            .as_array()
            .expect("examples")
            .iter()
            .map(|e| Example {
                ids: e["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|x| x.as_u64().expect("id") as u32)
                    .collect(),
                target: e["target"]
                    .as_array()
                    .expect("target")
                    .iter()
                    .map(|b| b.as_bool().expect("bool"))
                    .collect(),
            })
            .collect();
        TrainData {
            train,
            val: Vec::new(),
            dropped: 0,
            truncated: 0,
        }
    }

    /// The reference's optimiser and schedule, whole graph or block by block.
    pub fn config(&self, blockwise: bool) -> TrainConfig {
        let c = &self.0["config"];
        let total = c["total_steps"].as_u64().expect("total_steps") as usize;
        TrainConfig {
            lr: num(&c["lr"]),
            steps: Some(total),
            // Every step sees the whole (3-example) batch, as the reference does.
            batch: self.0["examples"].as_array().expect("examples").len(),
            grad_accum: 1,
            // ceil(ratio · total) = the reference's warmup steps.
            warmup_ratio: num(&c["warmup_steps"]) / total as f64,
            max_grad_norm: Some(num(&c["max_grad_norm"])),
            adamw: AdamWConfig {
                beta1: num(&c["betas"][0]),
                beta2: num(&c["betas"][1]),
                eps: num(&c["eps"]),
                weight_decay: num(&c["weight_decay"]),
            },
            checkpoint_blocks: Some(blockwise),
            ..TrainConfig::default()
        }
    }

    /// Asserts that `steps` (loss, gradient norm, learning rate) and `m`'s factors afterwards are
    /// the reference's within the tolerances above, and that the factors moved far more than
    /// the tolerance; the worst differences, as a line to print.
    pub fn check(&self, steps: &[StepMetrics], m: &LoadedModel) -> String {
        let want = self.0["steps"].as_array().expect("steps");
        assert_eq!(steps.len(), want.len(), "steps taken");
        let (mut worst_loss, mut worst_norm) = (0f64, 0f64);
        for (got, want) in steps.iter().zip(want) {
            let (loss, norm, lr) = (num(&want["loss"]), num(&want["grad_norm"]), num(&want["lr"]));
            let step = got.step;
            worst_loss = worst_loss.max((got.loss - loss).abs() / loss);
            worst_norm = worst_norm.max((got.grad_norm - norm).abs() / norm);
            assert!(
                (got.loss - loss).abs() <= LOSS_REL_TOL * loss,
                "step {step}: loss {} vs {loss}",
                got.loss
            );
            assert!(
                (got.grad_norm - norm).abs() <= GRAD_NORM_REL_TOL * norm,
                "step {step}: gradient norm {} vs {norm}",
                got.grad_norm
            );
            assert!(
                (got.lr - lr).abs() <= LR_TOL,
                "step {step}: learning rate {} vs {lr}",
                got.lr
            );
        }
        let (mut moved, mut worst_factor) = (0f32, 0f32);
        for (key, f) in self.0["final"].as_object().expect("final") {
            let (layer, target) = module(key);
            let adapter = m
                .model
                .linear(layer, target)
                .expect("module")
                .adapter
                .as_ref()
                .expect("adapter");
            for (param, name) in [(&adapter.lora_a, "lora_A"), (&adapter.lora_b, "lora_B")] {
                let got: Vec<f32> = param.val().into_data().try_into_vec_as::<f32>().expect("f32 factor");
                let (want, _) = matrix(&f[name]);
                let (init, _) = matrix(&self.0["init"][key][name]);
                let d = max_abs_diff(&got, &want);
                worst_factor = worst_factor.max(d);
                assert!(d < FACTOR_ABS_TOL, "{key} {name}: differs from PyTorch by {d}");
                moved = moved.max(max_abs_diff(&want, &init));
            }
        }
        assert!(
            moved > 100.0 * FACTOR_ABS_TOL,
            "the factors must move far more than the tolerance: {moved}"
        );
        format!(
            "loss {worst_loss:.1e} relative, gradient norm {worst_norm:.1e} relative, factors {worst_factor:.1e} \
             (they moved {moved:.1e})"
        )
    }
}
