//! The CLI's words for the library's neutral hints: settings are flags (`lower --lr`).

use lora_null::hint::{Hint, Input, Setting};

/// The flag that sets `s`.
fn flag(s: Setting) -> &'static str {
    match s {
        Setting::LearningRate => "--lr",
        Setting::GradAccum => "--grad-accum",
        Setting::Batch => "--batch",
        Setting::Steps => "--steps",
        Setting::MaxLen => "--max-len",
        Setting::SeqLen => "--seq-len",
        Setting::Targets => "--targets",
        Setting::Rank => "--rank",
        Setting::Chat => "--chat",
    }
}

/// One hint as a CLI instruction.
pub fn word(h: Hint) -> String {
    match h {
        Hint::Provide(Input::Calibration) => "pass --calib FILE (calibration text)".into(),
        Hint::Provide(Input::TrainingData) => "pass --data FILE".into(),
        Hint::Lower(s) => format!("lower {}", flag(s)),
        Hint::Raise(s) => format!("raise {}", flag(s)),
        Hint::Fix(s) => format!("check {}", flag(s)),
        Hint::KeepSame(s) => format!("resume with the same {}", flag(s)),
        Hint::TurnOff(s) => format!("drop {}", flag(s)),
    }
}

/// The error and its causes on one line, followed by what to do in the CLI's words.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ");
    let hints = e
        .chain()
        .find_map(|c| c.downcast_ref::<lora_null::engine::EngineError>())
        .map(|engine| engine.hints())
        .unwrap_or_default();
    if let Some(todo) = lora_null::hint::describe(&hints, &|h| word(h)) {
        line.push_str("; ");
        line.push_str(&todo);
    }
    line
}
