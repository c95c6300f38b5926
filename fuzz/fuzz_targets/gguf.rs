//! Fuzzes the GGUF reader: header, metadata, tensor index, config and tokenizer reconstruction,
//! and dequantisation. Run: `cargo fuzz run gguf fuzz/seeds/gguf` (see fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lora_null::io::gguf::GgufFile;
use lora_null::io::gguf_model::config_from_gguf;
use lora_null::io::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = GgufFile::parse(data) {
        let _ = config_from_gguf(&file);
        let _ = Tokenizer::from_gguf(&file);
        for t in &file.tensors {
            let _ = file.tensor_f32(&t.name);
        }
    }
});
