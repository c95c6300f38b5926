//! The page's words for the library's neutral hints: settings are the page's fields and buttons.

use crate::engine::EngineError;
use crate::hint::{Hint, Input, Setting, describe};

/// What the page calls a setting.
fn control(s: Setting) -> &'static str {
    match s {
        Setting::LearningRate => "the learning rate",
        Setting::GradAccum => "the batch size (the page has no gradient accumulation)",
        Setting::Batch => "the batch size",
        Setting::Steps => "the number of steps",
        Setting::MaxLen => "the max length",
        Setting::SeqLen => "the tokens per window",
        Setting::Targets => "the adapted modules",
        Setting::Rank => "the rank",
        Setting::Chat => "the chat template",
    }
}

/// One hint as the page says it.
fn word(h: Hint) -> String {
    match h {
        Hint::Provide(Input::Calibration) => "press “Collect statistics” first".into(),
        Hint::Provide(Input::TrainingData) => "load a fine-tuning dataset first".into(),
        Hint::Lower(Setting::GradAccum) | Hint::Raise(Setting::GradAccum) => "lower the learning rate further".into(),
        Hint::Lower(s) => format!("lower {}", control(s)),
        Hint::Raise(s) => format!("raise {}", control(s)),
        Hint::Fix(s) => format!("check {}", control(s)),
        Hint::KeepSame(s) => format!("keep {} unchanged", control(s)),
        Hint::TurnOff(s) => format!("do without {}", control(s)),
    }
}

/// An engine error as the page shows it: the message, then what to do on this page.
pub fn page_error(e: &EngineError) -> String {
    match describe(&e.hints(), &word) {
        Some(todo) => format!("{e}; {todo}"),
        None => e.to_string(),
    }
}
