//! The one-way rule of docs/architecture.md, checked on the source: every `crate::x` a module
//! names must sit strictly below it (or be plain data every layer may use).

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::root;

/// Each top-level module's layer; a module may only name modules of a lower layer.
const LAYERS: [(&str, u32); 15] = [
    ("hint", 0),
    ("linalg", 0),
    ("wasm", 0),
    ("device", 1),
    ("model", 1),
    ("io", 2),
    ("calib", 3),
    ("eval", 3),
    ("train", 3),
    ("plot", 4),
    ("lora", 5),
    ("engine", 6),
    ("app", 7),
    ("bin", 8),
    ("lib", 9),
];

fn layer_of(name: &str) -> Option<u32> {
    LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_run_one_way_from_linalg_to_the_front_ends() {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut wrong = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(&src).unwrap();
        let top = rel
            .iter()
            .next()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let Some(own) = layer_of(&top) else {
            panic!(
                "{} is not in the layer table; add it to LAYERS and docs/architecture.md",
                rel.display()
            );
        };
        *seen.entry(top.clone()).or_default() += 1;
        let text = std::fs::read_to_string(path).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name == top {
                continue;
            }
            match layer_of(&name) {
                Some(l) if l < own => {}
                _ => wrong.push(format!("{} names crate::{name}", rel.display())),
            }
        }
    }
    assert!(
        seen.contains_key("engine") && seen.contains_key("model"),
        "the check saw the source"
    );
    assert!(
        wrong.is_empty(),
        "imports against the one-way rule:\n{}",
        wrong.join("\n")
    );
}
