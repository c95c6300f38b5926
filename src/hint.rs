//! What the user can do about an error, without naming a front end's controls. Library errors
//! carry [`Hint`]s next to their message; the CLI words them as flags (`lower --lr`), the page as
//! its controls (`lower the learning rate`). Plain data.

/// A setting the user controls (a CLI flag, a field on the page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// The peak learning rate.
    LearningRate,
    /// Micro-batches per optimiser step.
    GradAccum,
    /// Examples per micro-batch.
    Batch,
    /// Optimiser steps.
    Steps,
    /// The token length examples are cut to.
    MaxLen,
    /// Tokens per evaluation or calibration window.
    SeqLen,
    /// The adapted modules.
    Targets,
    /// The LoRA rank.
    Rank,
    /// Asking through the model's chat template.
    Chat,
}

/// An input the user provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Calibration text, and statistics collected from it.
    Calibration,
    /// Fine-tuning data.
    TrainingData,
}

/// One thing to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// Give this input.
    Provide(Input),
    /// Make this setting smaller.
    Lower(Setting),
    /// Make this setting larger.
    Raise(Setting),
    /// Change this setting to a valid value.
    Fix(Setting),
    /// Resume with the same value of this setting as the run being resumed.
    KeepSame(Setting),
    /// Turn this option off.
    TurnOff(Setting),
}

/// Words a list of hints with `word` (a front end's names for settings and inputs), as one
/// clause: "lower --lr, or raise --grad-accum".
pub fn describe(hints: &[Hint], word: &dyn Fn(Hint) -> String) -> Option<String> {
    if hints.is_empty() {
        return None;
    }
    Some(hints.iter().map(|h| word(*h)).collect::<Vec<_>>().join(", or "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_joined_into_one_clause_in_the_front_ends_words() {
        let word = |h: Hint| match h {
            Hint::Lower(Setting::LearningRate) => "lower --lr".to_string(),
            Hint::Raise(Setting::GradAccum) => "raise --grad-accum".to_string(),
            other => format!("{other:?}"),
        };
        let hints = [Hint::Lower(Setting::LearningRate), Hint::Raise(Setting::GradAccum)];
        assert_eq!(
            describe(&hints, &word).as_deref(),
            Some("lower --lr, or raise --grad-accum")
        );
        assert_eq!(describe(&[], &word), None);
    }
}
