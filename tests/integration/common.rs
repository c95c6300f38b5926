//! Fixture paths and loaders shared by the tests.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use lora_null::engine::LoadedModel;
use lora_null::io::ModelFiles;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path under tests/fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// The real SmolLM2 GGUF (fetched by scripts/fetch-model.sh; the test command runs it first).
pub fn smollm2_path() -> PathBuf {
    root().join("assets/models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Parsed JSON of a fixture.
pub fn json(rel: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

/// All files of a Hugging Face fixture folder.
pub fn hf_files(dir: &str) -> ModelFiles {
    let mut files = ModelFiles::new();
    for entry in std::fs::read_dir(fixture(dir)).expect("fixture dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".json") && name != "reference.json" || name.ends_with(".safetensors") {
            files.insert(&name, std::fs::read(entry.path()).expect("read fixture"));
        }
    }
    files
}

/// One GGUF file as a model file set.
pub fn gguf_files(path: &std::path::Path) -> ModelFiles {
    let mut files = ModelFiles::new();
    let name = path.file_name().expect("file name").to_string_lossy().to_string();
    files.insert(
        &name,
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    );
    files
}

/// Loads files on the CPU backend, panicking with the error's message.
pub fn load(files: &ModelFiles, device: &Device) -> LoadedModel {
    LoadedModel::load(files, device).unwrap_or_else(|e| panic!("load failed: {e}"))
}

/// Token ids of a JSON array.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("ids array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Floats of a JSON array.
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("float array")
        .iter()
        .map(|x| x.as_f64().expect("float") as f32)
        .collect()
}

/// Logits `[T, V]` for one sequence, as host rows.
pub fn logits_rows(m: &LoadedModel, ids: &[u32]) -> Vec<Vec<f32>> {
    let device = m.model.device();
    let input = Tensor::<2, Int>::from_data(
        TensorData::new(ids.iter().map(|&x| x as i64).collect(), [1, ids.len()]),
        &device,
    );
    let logits = m.model.forward(input);
    let [_, t, v] = logits.dims();
    let flat: Vec<f32> = logits.into_data().try_into_vec_as::<f32>().expect("f32 logits");
    (0..t).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Trains the adapters attached to `m` on `examples` (all for training) with `cfg`, returning
/// every step's metrics; panics with the error's message.
pub fn train_steps(
    m: &mut LoadedModel,
    examples: Vec<lora_null::train::data::Example>,
    cfg: &lora_null::train::TrainConfig,
) -> Vec<lora_null::train::StepMetrics> {
    struct Steps(Vec<lora_null::train::StepMetrics>);
    impl lora_null::engine::TrainHooks for Steps {
        fn on_step(&mut self, m: &lora_null::train::StepMetrics) {
            self.0.push(m.clone());
        }
    }
    let data = lora_null::train::TrainData {
        train: examples,
        val: Vec::new(),
        dropped: 0,
        truncated: 0,
    };
    let mut steps = Steps(Vec::new());
    pollster::block_on(m.train(data, cfg, None, &mut steps)).unwrap_or_else(|e| panic!("training failed: {e}"));
    steps.0
}
