//! Reading model and data files from disk into the library's byte containers.

use std::path::Path;

use anyhow::{Context, bail};
use lora_null::io::ModelFiles;
use lora_null::io::file_bytes::ReadAt;

/// File names we read from a Hugging Face folder (plus every *.safetensors).
const HF_FILES: [&str; 5] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors.index.json",
    "generation_config.json",
];

/// Reads a .gguf file, or the model files of a Hugging Face folder; exports name the file or
/// folder as the base model.
pub fn read_model_files(path: &Path) -> anyhow::Result<ModelFiles> {
    let mut files = ModelFiles::new();
    if let Some(name) = path.file_name() {
        files.set_origin(&name.to_string_lossy());
    }
    if path.is_dir() {
        let mut any = false;
        for entry in std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".safetensors") {
                files.insert_reader(&name, open(&entry.path())?);
                any = true;
            } else if HF_FILES.contains(&name.as_str()) {
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
                [one] => files.insert_reader(&one.file_name().to_string_lossy(), open(&one.path())?),
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
        files.insert_reader(&name, open(path)?);
    }
    Ok(files)
}

/// A model file on disk, read a tensor at a time (the weights are never all in memory as file
/// bytes; packed ones are read into buffers of their own).
struct DiskFile {
    file: std::fs::File,
    len: u64,
}

impl ReadAt for DiskFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> Result<(), String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.file.read_exact_at(out, offset).map_err(|e| e.to_string())
        }
        #[cfg(windows)]
        {
            use std::os::windows::fs::FileExt;
            let mut done = 0;
            while done < out.len() {
                match self.file.seek_read(&mut out[done..], offset + done as u64) {
                    Ok(0) => return Err("the file ended early (was it changed while loading?)".into()),
                    Ok(n) => done += n,
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(())
        }
    }
}

/// Opens a model file for reading a range at a time, naming it in the error.
fn open(path: &Path) -> anyhow::Result<DiskFile> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    Ok(DiskFile { file, len })
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

/// Writes `files` (relative names, possibly with sub-folders) into `dir` whole or not at all:
/// everything goes to a fresh temporary folder beside `dir` first; only when every file is
/// written and flushed are they moved into place (a rename of the whole folder when `dir` is
/// new, else one rename per file). On error the temporary folder is removed and `dir` is as it was.
pub fn write_files_atomically(dir: &Path, files: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    use std::io::Write;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "out".into());
    let tmp = parent.join(format!(".{base}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| -> anyhow::Result<()> {
        for (name, bytes) in files {
            let path = tmp.join(name);
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p)?;
            }
            let mut f = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
            f.write_all(bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
            f.sync_all()?;
        }
        if !dir.exists() {
            std::fs::rename(&tmp, dir).with_context(|| format!("cannot move the export to {}", dir.display()))?;
            return Ok(());
        }
        for (name, _) in files {
            let target = dir.join(name);
            if let Some(p) = target.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::rename(tmp.join(name), &target).with_context(|| format!("cannot move {}", target.display()))?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Writes one file whole or not at all: to a temporary file beside it, flushed, then renamed.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot move the file to {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a dataset file (any supported format), naming the file in errors.
pub fn read_dataset(path: &Path) -> anyhow::Result<Vec<lora_null::io::dataset::Record>> {
    let bytes = read(path)?;
    let name = path.display().to_string();
    Ok(lora_null::io::dataset::parse_dataset(&name, &bytes)?)
}
