//! Models read on demand (`ModelFiles::insert_reader`): the page reads a `File` a tensor at a
//! time, the CLI a file on disk. The model must be the one loaded from the file in memory, and
//! the file must never be asked for whole: only its header (kept) and one tensor at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::Device;
use lora_null::engine::{BaseStorage, LoadedModel};
use lora_null::io::ModelFiles;
use lora_null::io::checkpoint::FIRST_READ;
use lora_null::io::file_bytes::{FileBytes, ReadAt};
use lora_null::io::gguf::GgufFile;
use lora_null::io::gguf_write::{WriteTensor, WriteValue, write_gguf};

use crate::common::*;

/// A reader over bytes in memory that records what it is asked for; `fail_after` makes every
/// read starting at or past that offset fail, as a file that vanished mid-load would.
struct Recording {
    bytes: Vec<u8>,
    total: AtomicU64,
    largest: AtomicU64,
    fail_after: Option<u64>,
}

impl Recording {
    fn new(bytes: Vec<u8>) -> Arc<Self> {
        Arc::new(Self {
            bytes,
            total: AtomicU64::new(0),
            largest: AtomicU64::new(0),
            fail_after: None,
        })
    }
}

impl ReadAt for Recording {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> Result<(), String> {
        if self.fail_after.is_some_and(|f| offset >= f) {
            return Err("the device was removed".into());
        }
        let start = offset as usize;
        let src = self.bytes.get(start..start + out.len()).ok_or("past the end")?;
        out.copy_from_slice(src);
        self.total.fetch_add(out.len() as u64, Ordering::Relaxed);
        self.largest.fetch_max(out.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn reader_files(name: &str, reader: Arc<Recording>) -> ModelFiles {
    let mut files = ModelFiles::new();
    files.insert_reader(name, reader);
    files
}

fn load(files: &ModelFiles, base: BaseStorage) -> Result<LoadedModel, String> {
    LoadedModel::load_as(files, &Device::flex(), base).map_err(|e| e.to_string())
}

const IDS: [u32; 12] = [1, 17, 230, 5, 99, 42, 7, 300, 12, 64, 3, 150];

#[test]
fn both_forms_of_a_file_give_the_same_ranges_and_refuse_past_the_end() {
    let data: Vec<u8> = (0..=255).collect();
    let memory = FileBytes::Memory(Arc::new(data.clone()));
    let reader = FileBytes::reader(Recording::new(data));
    for f in [&memory, &reader] {
        assert_eq!(f.len(), 256);
        assert_eq!(f.read("x", 10..14).unwrap().as_slice(), &[10, 11, 12, 13]);
        assert!(f.read("x", 256..256).unwrap().as_slice().is_empty());
        let e = f.read("model.gguf", 250..300).unwrap_err().to_string();
        assert!(
            e.contains("model.gguf") && e.contains("250..300") && e.contains("256 bytes"),
            "{e}"
        );
    }
    assert!(memory.in_memory().is_some() && reader.in_memory().is_none());
}

/// Every GGUF encoding and base storage: the model read on demand has the logits of the one
/// loaded from memory, bit for bit, and no read asked for more than the header or one tensor.
#[test]
fn a_gguf_read_on_demand_is_the_gguf_in_memory_one_tensor_at_a_time() {
    for rel in [
        "tiny/llama-gguf/q4_0.gguf",
        "tiny/llama-gguf/f32.gguf",
        "tiny/llama-kquant/Q4_K_M.gguf",
        "tiny/qwen3-gguf/qwen3-f16.gguf",
        "tiny/gemma2-gguf/gemma2-f16.gguf",
        "tiny/phi3-gguf/phi3-f16.gguf",
    ] {
        let bytes = std::fs::read(fixture(rel)).unwrap();
        let file = GgufFile::parse(&bytes).unwrap();
        let largest_tensor = file
            .tensors
            .iter()
            .map(|t| file.tensor_range(t).unwrap().len())
            .max()
            .unwrap() as u64;
        let head = file.head_len() as u64;
        for base in [BaseStorage::F32, BaseStorage::Packed, BaseStorage::PackedDevice] {
            let in_memory = load(&gguf_files(&fixture(rel)), base).unwrap();
            let reader = Recording::new(bytes.clone());
            let files = reader_files("model.gguf", reader.clone());
            let streamed = load(&files, base).unwrap_or_else(|e| panic!("{rel} {base:?}: {e}"));
            assert_eq!(
                logits_rows(&in_memory, &IDS).concat(),
                logits_rows(&streamed, &IDS).concat(),
                "{rel} {base:?}: logits differ"
            );
            let largest = reader.largest.load(Ordering::Relaxed);
            assert!(
                largest <= head.max(largest_tensor).max(FIRST_READ),
                "{rel} {base:?}: one read of {largest} bytes (header {head}, largest tensor {largest_tensor})"
            );
            assert!(
                files.held_bytes() == head,
                "{rel}: {} bytes held, the header is {head}",
                files.held_bytes()
            );
            assert_eq!(files.total_bytes(), bytes.len() as u64);
            if base == BaseStorage::Packed && !rel.ends_with("f32.gguf") {
                // The header's read, then every tensor once: a tied head shares the packed
                // table's bytes (f32 tables are decoded and dropped, so read again).
                let data = bytes.len() as u64 - head;
                let total = reader.total.load(Ordering::Relaxed);
                assert!(head <= FIRST_READ, "{rel}: the bound below assumes one header read");
                assert!(
                    total <= FIRST_READ.min(bytes.len() as u64) + data,
                    "{rel}: {total} bytes read for {data} bytes of tensors"
                );
            }
        }
    }
}

/// A header longer than the first read (a big tokenizer) is read again, longer, until whole.
#[test]
fn a_header_longer_than_the_first_read_is_read_whole() {
    let bytes = std::fs::read(fixture("tiny/llama-gguf/q4_0.gguf")).unwrap();
    let file = GgufFile::parse(&bytes).unwrap();
    let mut metadata: Vec<(String, WriteValue)> = file
        .raw_metadata
        .iter()
        .map(|(k, t, b)| (k.clone(), WriteValue::Raw(*t, b.to_vec())))
        .collect();
    metadata.push(("test.padding".into(), WriteValue::Str("x".repeat(6 << 20))));
    let tensors: Vec<WriteTensor> = file
        .tensors
        .iter()
        .map(|t| WriteTensor {
            name: t.name.clone(),
            shape: t.shape(),
            ggml_type: t.ggml_type.id(),
            bytes: file.tensor_bytes(t).unwrap().to_vec(),
        })
        .collect();
    let padded = write_gguf(&metadata, &tensors);
    let reader = Recording::new(padded.clone());
    let files = reader_files("padded.gguf", reader.clone());
    let streamed = load(&files, BaseStorage::Packed).unwrap();
    let original = load(&gguf_files(&fixture("tiny/llama-gguf/q4_0.gguf")), BaseStorage::Packed).unwrap();
    assert_eq!(logits_rows(&original, &IDS), logits_rows(&streamed, &IDS));
    let head = GgufFile::parse(&padded).unwrap().head_len() as u64;
    assert!(head > 6 << 20);
    assert_eq!(files.held_bytes(), head, "only the header is kept");
}

/// A Hugging Face folder whose safetensors are read on demand: the same model; truncated or
/// unreadable files are refused with the file's name and what is wrong.
#[test]
fn safetensors_read_on_demand_are_the_folder_in_memory() {
    let memory = hf_files("tiny/llama");
    let bytes = memory.get("model.safetensors").unwrap().to_vec();
    let mut files = memory.clone();
    let reader = Recording::new(bytes.clone());
    files.insert_reader("model.safetensors", reader.clone());
    for base in [BaseStorage::F32, BaseStorage::Packed] {
        let a = load(&memory, base).unwrap();
        let b = load(&files, base).unwrap();
        assert_eq!(logits_rows(&a, &IDS), logits_rows(&b, &IDS), "{base:?}");
    }
    assert!(reader.largest.load(Ordering::Relaxed) < bytes.len() as u64 / 2);

    let mut cut = memory.clone();
    cut.insert_reader("model.safetensors", Recording::new(bytes[..bytes.len() - 10].to_vec()));
    let e = load(&cut, BaseStorage::F32).err().unwrap();
    assert!(
        e.contains("model.safetensors") && e.contains("the header announces"),
        "{e}"
    );
}

/// Truncated or unreadable GGUFs read on demand: a clear error naming the file, and nothing
/// read past what the header promised.
#[test]
fn truncated_or_unreadable_gguf_read_on_demand_is_refused_with_the_reason() {
    let bytes = std::fs::read(fixture("tiny/llama-gguf/q4_0.gguf")).unwrap();
    let head = GgufFile::parse(&bytes).unwrap().head_len();

    let cut = reader_files("cut.gguf", Recording::new(bytes[..bytes.len() - 100].to_vec()));
    let e = load(&cut, BaseStorage::Packed).err().unwrap();
    assert!(
        e.contains("truncated") && e.contains("past the end of the data section"),
        "{e}"
    );

    let header_only = reader_files("cut.gguf", Recording::new(bytes[..head / 2].to_vec()));
    let e = load(&header_only, BaseStorage::Packed).err().unwrap();
    assert!(e.contains("truncated"), "{e}");

    let failing = Arc::new(Recording {
        fail_after: Some(head as u64),
        ..Arc::into_inner(Recording::new(bytes)).unwrap()
    });
    let e = load(&reader_files("gone.gguf", failing), BaseStorage::Packed)
        .err()
        .unwrap();
    assert!(e.contains("gone.gguf") && e.contains("the device was removed"), "{e}");
}
