//! A GGUF sentencepiece vocabulary (`tokenizer.ggml.model = "llama"`: tokens, scores, token
//! types, no merges) rebuilt as the tokenizer.json transformers builds for Gemma
//! (`integrations/gguf/gguf_tokenizer_mapping.py`, `gemma_tokenizer` → `GemmaTokenizer`): BPE
//! with byte fallback, merges recovered from the vocabulary with the token ORDER as the
//! priority (Gemma's scores do not follow its merge order; the file order does), spaces spelled
//! `▁` by a normalizer, and no prefix space.

use std::collections::HashMap;

use serde_json::{Value, json};

/// GGUF token types (llama.cpp `llama_token_type`).
const UNKNOWN: i128 = 2;
const CONTROL: i128 = 3;
const USER_DEFINED: i128 = 4;

/// Gemma's files store tokens of two or more spaces as real spaces, while `GemmaTokenizer` looks
/// them up as `▁▁`: spell those with `▁` first, so the recovered merges match.
fn respell(token: &str) -> String {
    if token.contains(' ') && token.trim().is_empty() {
        "\u{2581}".repeat(token.chars().count())
    } else {
        token.to_string()
    }
}

/// The merges a vocabulary implies (transformers' `generate_merges` with `vocab_scores` =
/// `-position`): every split of every token into two vocabulary pieces, best first by the merged
/// token's position, then by the longer left piece, then the longer right piece.
pub fn merges_by_position(tokens: &[String]) -> Vec<(String, String)> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        index.insert(t.as_str(), i); // a repeated token keeps its last position, as a dict does
    }
    // (position of the merged token, left length, right length, left id, right id, left, right)
    let mut merges: Vec<(usize, usize, usize, usize, usize, &str, &str)> = Vec::new();
    for (pos, token) in tokens.iter().enumerate() {
        if index.get(token.as_str()) != Some(&pos) {
            continue;
        }
        let bounds: Vec<usize> = token.char_indices().map(|(b, _)| b).skip(1).collect();
        for b in bounds {
            let (l, r) = token.split_at(b);
            if let (Some(&li), Some(&ri)) = (index.get(l), index.get(r)) {
                merges.push((pos, l.chars().count(), r.chars().count(), li, ri, l, r));
            }
        }
    }
    // Python: sorted(key=(score, len(l), len(r)), reverse=True) over the per-token lists, each
    // sorted by (id(l), id(r)); scores are -position, so best = smallest position.
    merges.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.1.cmp(&a.1))
            .then(b.2.cmp(&a.2))
            .then(a.3.cmp(&b.3))
            .then(a.4.cmp(&b.4))
    });
    merges.into_iter().map(|m| (m.5.to_string(), m.6.to_string())).collect()
}

/// The tokenizer.json for a Gemma GGUF vocabulary. `unk` is the unknown token's text.
pub fn gemma_tokenizer_json(tokens: &[&str], types: &[i128], unk: &str) -> Value {
    let spelled: Vec<String> = tokens.iter().map(|t| respell(t)).collect();
    let merges: Vec<Value> = merges_by_position(&spelled)
        .into_iter()
        .map(|(l, r)| json!([l, r]))
        .collect();
    let vocab: serde_json::Map<String, Value> =
        spelled.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    // Control (and unknown) tokens whole as special tokens, user-defined ones whole as plain ones.
    let added: Vec<Value> = spelled
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, ty))| matches!(**ty, UNKNOWN | CONTROL | USER_DEFINED))
        .map(|(id, (t, ty))| {
            json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": *ty != USER_DEFINED})
        })
        .collect();
    let space = |from: &str, to: &str| json!({"type": "Replace", "pattern": {"String": from}, "content": to});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": space(" ", "\u{2581}"),
        // GemmaTokenizer's split on " " (after the normalizer has replaced every space: kept as it is)
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false},
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [space("\u{2581}", " "), {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                  "ignore_merges": false, "vocab": vocab, "merges": merges}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_follow_the_merged_tokens_position_then_the_longer_left_piece() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "abc", "bc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let merges = merges_by_position(&tokens);
        let want = [("a", "b"), ("ab", "c"), ("a", "bc"), ("b", "c")];
        let got: Vec<(&str, &str)> = merges.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn tokens_of_spaces_are_spelled_with_the_metaspace() {
        assert_eq!(respell("  "), "\u{2581}\u{2581}");
        assert_eq!(respell(" a"), " a");
        assert_eq!(respell("x"), "x");
    }
}
