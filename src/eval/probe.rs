//! The knowledge probe: greedy answers to short questions, scored by exact match after the
//! lm-eval-harness normalisation (lower case, no punctuation, no articles a/an/the, collapsed
//! whitespace; we also fold accents), and by "answer contained" as a second metric.

use serde::{Deserialize, Serialize};

use super::EvalError;

/// One question with its accepted answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeItem {
    /// The question.
    pub question: String,
    /// Accepted answers (aliases).
    pub answers: Vec<String>,
}

/// Probe scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeScore {
    /// Share of items whose normalised answer equals a normalised alias.
    pub exact_match: f64,
    /// Share of items whose normalised answer contains a normalised alias.
    pub contains: f64,
    /// Items scored.
    pub n: usize,
}

/// The plain prompt: `Question: {q}\nAnswer:`.
pub fn plain_prompt(question: &str) -> String {
    format!("Question: {question}\nAnswer:")
}

/// Parses probe lines `{"question": ..., "answers": [...]}`; errors name the line.
pub fn parse_probe(file: &str, text: &str) -> Result<Vec<ProbeItem>, EvalError> {
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item: ProbeItem = serde_json::from_str(line).map_err(|e| {
            EvalError::Invalid(format!(
                "{file}:{}: expected {{\"question\": \"...\", \"answers\": [\"...\"]}}: {e}",
                i + 1
            ))
        })?;
        if item.answers.is_empty() {
            return Err(EvalError::Invalid(format!("{file}:{}: \"answers\" is empty", i + 1)));
        }
        items.push(item);
    }
    if items.is_empty() {
        return Err(EvalError::Invalid(format!("{file}: no probe items")));
    }
    Ok(items)
}

/// Folds common Latin accents to their base letter.
fn fold_accent(c: char) -> char {
    const FROM: &str = "àáâãäåāăąçćčďèéêëēėęěìíîïīįłñńňòóôõöøōőřśšşťùúûüūůűųýÿžźżÀÁÂÃÄÅĀĂĄÇĆČĎÈÉÊËĒĖĘĚÌÍÎÏĪĮŁÑŃŇÒÓÔÕÖØŌŐŘŚŠŞŤÙÚÛÜŪŮŰŲÝŸŽŹŻ";
    const TO: &str = "aaaaaaaaacccdeeeeeeeeiiiiiilnnnoooooooorsssstuuuuuuuuyyzzzAAAAAAAAACCCDEEEEEEEEIIIIIILNNNOOOOOOOORSSSTUUUUUUUUYYZZZ";
    FROM.chars()
        .position(|f| f == c)
        .and_then(|i| TO.chars().nth(i))
        .unwrap_or(c)
}

/// lm-eval's normalisation: lower case, accents folded, punctuation removed, articles
/// (a, an, the) removed, whitespace collapsed.
pub fn normalize(s: &str) -> String {
    let lowered: String = s
        .chars()
        .map(fold_accent)
        .flat_map(char::to_lowercase)
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    lowered
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The answer part of a generation: up to the first newline, trimmed.
pub fn cut_answer(generated: &str) -> &str {
    generated.split('\n').next().unwrap_or("").trim()
}

/// (exact, contains) for one generated answer.
pub fn score(generated: &str, answers: &[String]) -> (bool, bool) {
    let got = normalize(cut_answer(generated));
    let golds: Vec<String> = answers.iter().map(|a| normalize(a)).filter(|a| !a.is_empty()).collect();
    let exact = golds.contains(&got);
    let padded = format!(" {got} ");
    let contains = golds.iter().any(|g| padded.contains(&format!(" {g} ")));
    (exact, contains)
}

/// Aggregates per-item results.
pub fn aggregate(results: &[(bool, bool)]) -> ProbeScore {
    let n = results.len();
    let frac = |f: &dyn Fn(&(bool, bool)) -> bool| results.iter().filter(|r| f(r)).count() as f64 / n.max(1) as f64;
    ProbeScore {
        exact_match: frac(&|r| r.0),
        contains: frac(&|r| r.1),
        n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_follows_lm_eval_and_folds_accents() {
        assert_eq!(normalize("  The Hague! "), "hague");
        assert_eq!(normalize("Bogotá, D.C."), "bogota d c");
        assert_eq!(normalize("An Apple a day"), "apple day");
    }

    #[test]
    fn scoring_cuts_at_the_newline_and_checks_exact_and_contained() {
        let answers = vec!["Paris".to_string()];
        assert_eq!(score(" Paris.\nThe answer is", &answers), (true, true));
        assert_eq!(score(" It is Paris, France", &answers), (false, true));
        assert_eq!(score(" Lyon", &answers), (false, false));
        assert_eq!(score(" Parisian", &answers), (false, false));
    }
}
