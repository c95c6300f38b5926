//! Reading model and data files from disk into the library's byte containers.

use std::path::Path;

use anyhow::{Context, bail};
use lora_null::io::ModelFiles;

/// File names we read from a Hugging Face folder (plus every *.safetensors).
const HF_FILES: [&str; 5] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors.index.json",
    "generation_config.json",
];

/// Reads a .gguf file, or the model files of a Hugging Face folder.
pub fn read_model_files(path: &Path) -> anyhow::Result<ModelFiles> {
    let mut files = ModelFiles::new();
    if path.is_dir() {
        let mut any = false;
        for entry in std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if HF_FILES.contains(&name.as_str()) || name.ends_with(".safetensors") {
                files.insert(&name, read(&entry.path())?);
                any = true;
            }
        }
        if !any {
            let ggufs: Vec<_> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".gguf"))
                .collect();
            match ggufs.as_slice() {
                [one] => files.insert(&one.file_name().to_string_lossy(), read(&one.path())?),
                _ => bail!(
                    "{} holds neither a Hugging Face model (config.json, *.safetensors) nor exactly one .gguf file",
                    path.display()
                ),
            }
        }
    } else {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if !name.ends_with(".gguf") {
            bail!(
                "{} is not a .gguf file; pass a .gguf file or a Hugging Face model folder",
                path.display()
            );
        }
        files.insert(&name, read(path)?);
    }
    Ok(files)
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Reads a UTF-8 text file, naming it in the error.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = read(path)?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 text (invalid byte at offset {}); convert it to UTF-8",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}
