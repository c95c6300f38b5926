//! Fuzzes the safetensors reader and the f32 conversion of every tensor.
//! Run: `cargo fuzz run safetensors fuzz/seeds/safetensors` (see fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lora_null::io::safetensors::SafetensorsSource;

fuzz_target!(|data: &[u8]| {
    if let Ok(src) = SafetensorsSource::new(&[("model.safetensors", data)], None) {
        let names: Vec<String> = src.names().map(str::to_string).collect();
        for n in names {
            let _ = src.read(&n);
        }
    }
});
