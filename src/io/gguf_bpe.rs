//! A GGUF byte-level BPE vocabulary (`tokenizer.ggml.model = "gpt2"`: tokens, merges, token
//! types, and the pre-tokenizer's name in `tokenizer.ggml.pre`) rebuilt as the tokenizer.json
//! transformers builds for it: GPT-2's byte alphabet, the family's split regex, byte-level
//! decoding.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Pre-tokenizer split regexes for GGUF `tokenizer.ggml.pre` families (transformers'
/// `GGUF_PRE_TOKENIZER_SPLITS`); others use the plain GPT-2 byte-level regex.
fn split_regex(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    // Phi-4-mini's (tokenizer.json), which llama.cpp names "gpt-4o".
    const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "dbrx" | "smaug-bpe" => Some(LLAMA3),
        "qwen2" | "deepseek-r1-qwen" => Some(QWEN2),
        "gpt-4o" => Some(GPT4O),
        _ => None,
    }
}

/// GPT-2's byte → printable-character table (`bytes_to_unicode`).
fn byte_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("invariant: latin-1 range")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("invariant: small code point")
        };
    }
    table
}

/// The tokenizer.json transformers builds for a GGUF byte-level BPE vocabulary.
pub fn gguf_tokenizer_json(tokens: &[&str], merges: &[&str], types: &[i128], pre: &str) -> Value {
    let alphabet = byte_alphabet();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let spell = |t: &str| -> String {
        if in_alphabet(t) {
            t.to_string()
        } else {
            t.bytes().map(|b| alphabet[b as usize]).collect()
        }
    };
    let vocab: BTreeMap<String, usize> = tokens.iter().enumerate().map(|(i, t)| (spell(t), i)).collect();
    // Control tokens (type 3) become special added tokens; user-defined (type 4) plain added ones.
    const CONTROL: i128 = 3;
    const USER_DEFINED: i128 = 4;
    let added: Vec<Value> = tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (t, ty))| (**ty == CONTROL && in_alphabet(t)) || **ty == USER_DEFINED)
        .map(|(id, (t, ty))| {
            json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": *ty == CONTROL})
        })
        .collect();
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let pre_tokenizer = match split_regex(pre) {
        Some(regex) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            byte_level(false)]}),
        None => byte_level(true),
    };
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| {
            let (a, b) = m.split_once(' ').unwrap_or((m, ""));
            json!([a, b])
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges}
    })
}

#[cfg(test)]
mod tests {
    use super::split_regex;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, SplitDelimiterBehavior};

    #[test]
    fn the_gpt_4o_split_cuts_text_as_hugging_face_tokenizers_does() {
        let regex = split_regex("gpt-4o").expect("gpt-4o has its own split");
        let split = Split::new(
            SplitPattern::Regex(regex.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .unwrap();
        let mut s = PreTokenizedString::from("HelloWORLD's 12345 don't\n\n  x/y");
        split.pre_tokenize(&mut s).unwrap();
        let pieces: Vec<&str> = s
            .get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(p, _, _)| p)
            .collect();
        // `tokenizers.pre_tokenizers.Split(Regex(<Phi-4-mini's regex>), "isolated")` in Python 0.23
        let want = ["Hello", "WORLD's", " ", "123", "45", " don't", "\n\n", " ", " x", "/y"];
        assert_eq!(pieces, want);
    }
}
