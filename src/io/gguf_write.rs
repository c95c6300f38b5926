//! Writing GGUF v3 files (llama.cpp's `docs/gguf.md`): metadata key/values, then the tensor
//! index, then the tensor data, each tensor aligned to 32 bytes. Used for LoRA adapters in
//! llama.cpp's adapter format (`lora::gguf_adapter`).

/// A metadata value to write, with its GGUF type.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteValue {
    /// `UINT32` (type 4).
    U32(u32),
    /// `FLOAT32` (type 6).
    F32(f32),
    /// `BOOL` (type 7).
    Bool(bool),
    /// `STRING` (type 8).
    Str(String),
    /// A value copied as stored in another GGUF file: its type id and bytes.
    Raw(u32, Vec<u8>),
}

/// A tensor to write: its name, shape in PyTorch order (outermost first), ggml type and bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteTensor {
    /// Tensor name (`blk.0.attn_q.weight.lora_a`).
    pub name: String,
    /// Shape, outermost first (written reversed: ggml lists the fastest axis first).
    pub shape: Vec<usize>,
    /// The ggml type id of `bytes` (0: F32, 1: F16, 8: Q8_0, 12: Q4_K, ...).
    pub ggml_type: u32,
    /// The stored bytes (whole blocks of the type).
    pub bytes: Vec<u8>,
}

impl WriteTensor {
    /// An F32 tensor from row-major values.
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, data: &[f32]) -> Self {
        Self {
            name: name.into(),
            shape,
            ggml_type: 0,
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// GGUF's default alignment of the data section and of each tensor.
const ALIGNMENT: usize = 32;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
}

/// Serialises a GGUF v3 file holding `metadata` and `tensors`.
pub fn write_gguf(metadata: &[(String, WriteValue)], tensors: &[WriteTensor]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut out, key);
        match value {
            WriteValue::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            WriteValue::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            WriteValue::Bool(v) => {
                out.extend(7u32.to_le_bytes());
                out.push(u8::from(*v));
            }
            WriteValue::Str(s) => {
                out.extend(8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            WriteValue::Raw(type_id, bytes) => {
                out.extend(type_id.to_le_bytes());
                out.extend(bytes);
            }
        }
    }
    let mut offset = 0usize;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend((t.shape.len() as u32).to_le_bytes());
        for d in t.shape.iter().rev() {
            out.extend((*d as u64).to_le_bytes());
        }
        out.extend(t.ggml_type.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset += t.bytes.len().div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    pad(&mut out);
    for t in tensors {
        out.extend(&t.bytes);
        pad(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::gguf::GgufFile;

    #[test]
    fn a_written_file_reads_back_with_its_metadata_and_tensors() {
        let meta = vec![
            ("general.type".to_string(), WriteValue::Str("adapter".into())),
            ("adapter.lora.alpha".to_string(), WriteValue::F32(16.0)),
            ("some.count".to_string(), WriteValue::U32(7)),
            ("some.flag".to_string(), WriteValue::Bool(true)),
        ];
        let tensors = vec![
            WriteTensor::f32("a", vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            WriteTensor::f32("b", vec![5], &[-1.0; 5]),
        ];
        let bytes = write_gguf(&meta, &tensors);
        let file = GgufFile::parse(&bytes).unwrap();
        assert_eq!(file.get_str("general.type").unwrap(), "adapter");
        assert_eq!(file.get("adapter.lora.alpha").and_then(|v| v.as_f64()), Some(16.0));
        assert_eq!(file.get_int("some.count").unwrap(), 7);
        assert_eq!(file.get("some.flag").and_then(|v| v.as_bool()), Some(true));
        assert_eq!(
            file.tensor_f32("a").unwrap(),
            (vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![2, 3])
        );
        assert_eq!(file.tensor_f32("b").unwrap(), (vec![-1.0; 5], vec![5]));
        // Metadata copied raw from a parsed file writes back to the same bytes.
        let copied: Vec<(String, WriteValue)> = file
            .raw_metadata
            .iter()
            .map(|(k, t, b)| (k.clone(), WriteValue::Raw(*t, b.to_vec())))
            .collect();
        assert_eq!(write_gguf(&copied, &tensors), bytes);
    }
}
