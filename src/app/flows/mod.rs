//! What each command does, inside the engine worker: plain async functions over the engine and
//! the session that report through events. Every flow yields between chunks of work, and on
//! error puts back what it took from the session, so nothing the user loaded is lost.

mod adapt;
mod check;
mod load;

use wasm_bindgen::{JsCast, JsValue};

use super::protocol::Command;

/// Default assets served next to the page (fetched by scripts/run.sh).
pub const DEFAULT_MODEL: &str = "assets/models/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Default fine-tuning data.
pub const DEFAULT_TRAIN: &str = "assets/data/sample_train.jsonl";
/// Default calibration text.
pub const DEFAULT_CALIB: &str = "assets/data/sample_calib.txt";
/// Default probe.
pub const DEFAULT_PROBE: &str = "assets/data/probe_small.jsonl";
/// Default knowledge prose.
pub const DEFAULT_PROSE: &str = "assets/data/knowledge_prose.txt";

/// Runs one task command (pause and cancel never get here).
pub async fn run(command: Command, payload: JsValue) -> Result<(), String> {
    match command {
        Command::InitDevice { cpu } => load::init_device(cpu).await,
        Command::LoadModel => load::load_model_files(files_in(&payload)).await,
        Command::SetDataset { calib } => load::read_datasets(files_in(&payload), calib).await,
        Command::LoadDefault => load::load_default().await,
        Command::Calibrate(opts) => adapt::calibrate(opts).await,
        Command::Generate { prompt, after } => check::generate(prompt, after).await,
        Command::Train(opts) => adapt::train(opts).await,
        Command::Export {
            merged,
            gguf,
            gguf_merged,
        } => check::export(merged, gguf, gguf_merged).await,
        Command::Forgetting { after, questions } => check::forgetting(after, questions).await,
        Command::Pause(_) | Command::Cancel => Ok(()),
    }
}

/// The `File`s of a payload (an array of them).
fn files_in(payload: &JsValue) -> Vec<web_sys::File> {
    js_sys::Array::from(payload)
        .iter()
        .filter_map(|f| f.dyn_into::<web_sys::File>().ok())
        .collect()
}
