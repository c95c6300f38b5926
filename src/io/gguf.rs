//! GGUF v2/v3 reader: metadata, tensor index, and dequantisation to f32.
//!
//! Format: ggml's `docs/gguf.md` (little-endian). Header `GGUF`, version (u32), tensor count
//! (u64), metadata count (u64); then the metadata key/values, the tensor infos, padding to
//! `general.alignment` (default 32), and the tensor data. The parser works on a byte slice and
//! never trusts a count or offset: every read is bounds-checked, so a truncated or corrupt file
//! yields a [`GgufError`] instead of a panic or a huge allocation.

use std::collections::BTreeMap;

use half::{bf16, f16};

use super::file_bytes::{FileBytes, FileView, TensorBytes};
use super::quants::{self, QuantType};
use super::reader::{ByteReader, ReadError};

/// Everything that can go wrong reading a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file (magic bytes {0:02x?}); expected a llama.cpp .gguf model")]
    BadMagic([u8; 4]),
    /// A version this reader does not know.
    #[error("GGUF version {0} is not supported (supported: 2, 3); re-convert the model with a recent llama.cpp")]
    UnsupportedVersion(u32),
    /// The file ends (or an offset points) before the data it announces.
    #[error("GGUF file is truncated or corrupt: {0}; download the file again")]
    Truncated(String),
    /// A metadata value has a type id outside the specification.
    #[error("metadata key `{key}` has unknown value type {type_id}; the file is corrupt")]
    BadValueType {
        /// The key being read.
        key: String,
        /// The type id found.
        type_id: u32,
    },
    /// A string is not valid UTF-8.
    #[error("{what} is not valid UTF-8; the file is corrupt")]
    BadString {
        /// What was being read.
        what: String,
    },
    /// A tensor uses a type we cannot dequantise.
    #[error(
        "tensor {name} uses {ggml_type}, which is not supported; supported: {} (re-quantise the model to one of these, e.g. with llama-quantize ... Q4_K_M)",
        supported_types()
    )]
    UnsupportedType {
        /// Tensor name.
        name: String,
        /// The ggml type's name.
        ggml_type: String,
    },
    /// A tensor's shape cannot hold its type's blocks.
    #[error("tensor {name}: {detail}")]
    BadTensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] crate::io::file_bytes::ReadFailed),
    /// A tensor the caller asked for is absent.
    #[error("tensor {0} is missing from the GGUF file")]
    MissingTensor(String),
    /// A metadata key the caller needs is absent or has the wrong type.
    #[error("metadata key `{key}` is missing or is not {expected}")]
    MissingKey {
        /// The key.
        key: String,
        /// The expected type.
        expected: &'static str,
    },
}

impl From<ReadError> for GgufError {
    fn from(e: ReadError) -> Self {
        GgufError::Truncated(e.to_string())
    }
}

/// A metadata value (GGUF value types 0..=12).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// Any unsigned or signed integer, widened.
    Int(i128),
    /// f32 or f64, widened.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Homogeneous array.
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The value as an integer, if it is one.
    pub fn as_int(&self) -> Option<i128> {
        match self {
            MetaValue::Int(v) => Some(*v),
            _ => None,
        }
    }
    /// The value as a float (integers convert).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            MetaValue::Float(v) => Some(*v),
            MetaValue::Int(v) => Some(*v as f64),
            _ => None,
        }
    }
    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            MetaValue::Bool(b) => Some(*b),
            _ => None,
        }
    }
    /// The value as an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// ggml tensor types: the float types, the block-quantised types we decode, and any other id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    Bf16,
    /// A block-quantised type we decode (Q4_0 … Q8_0, the k-quants, IQ4_NL, IQ4_XS).
    Quant(QuantType),
    /// Any other type id (other IQ types, ternary, …): listed by name in errors, never decoded.
    Other(u32),
}

/// The types this reader decodes, as llama.cpp names them (for error messages).
pub fn supported_types() -> String {
    let mut names = vec!["F32", "F16", "BF16"];
    names.extend(QuantType::ALL.iter().map(|t| t.name()));
    names.join(", ")
}

impl GgmlType {
    /// The type of a ggml id.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            30 => GgmlType::Bf16,
            other => QuantType::from_id(other).map_or(GgmlType::Other(other), GgmlType::Quant),
        }
    }

    /// The ggml id of this type.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Bf16 => 30,
            GgmlType::Quant(q) => q.id(),
            GgmlType::Other(id) => id,
        }
    }

    /// Human name as llama.cpp prints it.
    pub fn name(self) -> String {
        const NAMES: [&str; 42] = [
            "F32",
            "F16",
            "Q4_0",
            "Q4_1",
            "Q4_2",
            "Q4_3",
            "Q5_0",
            "Q5_1",
            "Q8_0",
            "Q8_1",
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "Q8_K",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ3_XXS",
            "IQ1_S",
            "IQ4_NL",
            "IQ3_S",
            "IQ2_S",
            "IQ4_XS",
            "I8",
            "I16",
            "I32",
            "I64",
            "F64",
            "IQ1_M",
            "BF16",
            "Q4_0_4_4",
            "Q4_0_4_8",
            "Q4_0_8_8",
            "TQ1_0",
            "TQ2_0",
            "IQ4_NL_4_4",
            "IQ4_NL_4_8",
            "IQ4_NL_8_8",
            "MXFP4",
            "NVFP4",
            "Q1_0",
        ];
        NAMES
            .get(self.id() as usize)
            .map_or_else(|| format!("ggml type {}", self.id()), |s| s.to_string())
    }

    /// (elements per block, bytes per block) for the types we decode.
    fn block_layout(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::Bf16 => Some((1, 2)),
            GgmlType::Quant(q) => Some((q.block_elems(), q.block_bytes())),
            GgmlType::Other(_) => None,
        }
    }
}

/// One entry of the tensor index.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the contiguous (fastest) axis.
    pub dims: Vec<usize>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Offset of the data, relative to the data section.
    pub offset: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// Shape in PyTorch (row-major) order: ggml dims reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed GGUF file: its header borrowed from the bytes it was read from, its tensors' data
/// there too ([`Self::parse`]) or read from the file on demand ([`Self::parse_head`]).
#[derive(Debug)]
pub struct GgufFile<'a> {
    /// Format version (2 or 3).
    pub version: u32,
    /// All metadata key/values.
    pub metadata: BTreeMap<String, MetaValue>,
    /// Every metadata entry as stored, in file order: key, GGUF value type, and the value's
    /// bytes (what a writer copies to keep the exact types llama.cpp checks).
    pub raw_metadata: Vec<(String, u32, &'a [u8])>,
    /// Tensor index, in file order.
    pub tensors: Vec<TensorInfo>,
    data: FileView<'a>,
    data_start: usize,
    file_len: usize,
}

/// Version, metadata, raw metadata entries and tensor index, as [`GgufFile`] holds them.
type Header<'a> = (
    u32,
    BTreeMap<String, MetaValue>,
    Vec<(String, u32, &'a [u8])>,
    Vec<TensorInfo>,
);

const MAGIC: [u8; 4] = *b"GGUF";

impl<'a> GgufFile<'a> {
    /// Parses the header, metadata and tensor index, and checks that every tensor's bytes lie
    /// inside the file and that its type can be decoded.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, GgufError> {
        Self::parse_in(bytes, bytes.len(), None)
            .map_err(|e| e.unwrap_or_else(|| GgufError::Truncated("the header".into())))
    }

    /// Parses the header from `head`, the first bytes of `file` (called `name`), whose tensors
    /// are read from the file when asked for; checks that every tensor lies inside the file and
    /// that its type can be decoded. `Err(None)` when `head` ends inside the header: read more
    /// and call again.
    pub fn parse_head(head: &'a [u8], file: FileBytes, name: &str) -> Result<Self, Option<GgufError>> {
        let len = usize::try_from(file.len())
            .map_err(|_| Some(GgufError::Truncated(format!("{name} is too large for this platform"))))?;
        Self::parse_in(head, len, Some((file, name.to_string())))
    }

    /// How many of the file's first bytes hold the header (where the tensor data starts).
    pub fn head_len(&self) -> usize {
        self.data_start.min(self.file_len)
    }

    fn parse_in(
        bytes: &'a [u8],
        file_len: usize,
        file: Option<(FileBytes, String)>,
    ) -> Result<Self, Option<GgufError>> {
        let mut r = ByteReader::new(bytes);
        let (version, metadata, raw_metadata, tensors) = match Self::header(&mut r, bytes) {
            Ok(h) => h,
            // A read past the end of a head shorter than the file: more of the file is needed.
            Err(GgufError::Truncated(_)) if bytes.len() < file_len => return Err(None),
            Err(e) => return Err(Some(e)),
        };
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_int() {
                Some(a) if a > 0 && (a as u64).is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => {
                    return Err(Some(GgufError::Truncated(format!(
                        "general.alignment is {v:?}, not a power of two"
                    ))));
                }
            },
        };
        let data_start = r.position().div_ceil(alignment) * alignment;
        let data = match file {
            Some((file, name)) => FileView::File(file, name),
            None => FileView::Borrowed(bytes),
        };
        let file = GgufFile {
            version,
            metadata,
            raw_metadata,
            tensors,
            data,
            data_start,
            file_len,
        };
        for info in &file.tensors {
            file.tensor_range(info)?;
        }
        Ok(file)
    }

    /// Metadata and tensor index, read from the start of `bytes`.
    fn header(r: &mut ByteReader<'a>, bytes: &'a [u8]) -> Result<Header<'a>, GgufError> {
        let magic: [u8; 4] = r.array()?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = r.u64()?;
        let n_meta = r.u64()?;
        let mut metadata = BTreeMap::new();
        let mut raw_metadata = Vec::new();
        for _ in 0..n_meta {
            let key = read_string(r, "metadata key")?;
            let type_id = r.u32()?;
            let start = r.position();
            let value = read_value(r, &key, type_id, 0)?;
            raw_metadata.push((key.clone(), type_id, &bytes[start..r.position()]));
            metadata.insert(key, value);
        }
        let mut tensors = Vec::new();
        for _ in 0..n_tensors {
            tensors.push(read_tensor_info(r)?);
        }
        Ok((version, metadata, raw_metadata, tensors))
    }

    /// Looks a tensor up by name.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw stored bytes of a tensor, after checking its type and bounds: borrowed from the
    /// parsed bytes, or read from the file.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<TensorBytes<'a>, GgufError> {
        Ok(self.data.range(self.tensor_range(info)?)?)
    }

    /// Where a tensor's bytes lie in the whole file, after checking its type and that they lie
    /// inside the file.
    pub fn tensor_range(&self, info: &TensorInfo) -> Result<std::ops::Range<usize>, GgufError> {
        let (block, block_bytes) = info
            .ggml_type
            .block_layout()
            .ok_or_else(|| GgufError::UnsupportedType {
                name: info.name.clone(),
                ggml_type: info.ggml_type.name(),
            })?;
        let row = info.dims.first().copied().unwrap_or(1);
        if row % block != 0 {
            return Err(GgufError::BadTensor {
                name: info.name.clone(),
                detail: format!(
                    "row length {row} is not a multiple of the {} block size {block}",
                    info.ggml_type.name()
                ),
            });
        }
        let n_bytes = (info.numel() / block)
            .checked_mul(block_bytes)
            .ok_or_else(|| GgufError::Truncated(format!("tensor {} is too large", info.name)))?;
        let data_len = self.file_len.saturating_sub(self.data_start);
        match info.offset.checked_add(n_bytes) {
            Some(end) if end <= data_len => Ok(self.data_start + info.offset..self.data_start + end),
            _ => Err(GgufError::Truncated(format!(
                "tensor {} ({} bytes at offset {}) lies past the end of the data section ({} bytes)",
                info.name, n_bytes, info.offset, data_len
            ))),
        }
    }

    /// Dequantises a tensor to f32, returning (values, shape in row-major order).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>), GgufError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_string()))?;
        let bytes = self.tensor_bytes(info)?;
        Ok((dequantize(info.ggml_type, &bytes), info.shape()))
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// A required string value.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get(key)
            .and_then(MetaValue::as_str)
            .ok_or_else(|| GgufError::MissingKey {
                key: key.to_string(),
                expected: "a string",
            })
    }

    /// A required integer value.
    pub fn get_int(&self, key: &str) -> Result<i128, GgufError> {
        self.get(key)
            .and_then(MetaValue::as_int)
            .ok_or_else(|| GgufError::MissingKey {
                key: key.to_string(),
                expected: "an integer",
            })
    }

    /// A required array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let missing = || GgufError::MissingKey {
            key: key.to_string(),
            expected: "an array of strings",
        };
        let arr = self.get(key).and_then(MetaValue::as_array).ok_or_else(missing)?;
        arr.iter().map(|v| v.as_str().ok_or_else(missing)).collect()
    }
}

fn read_string(r: &mut ByteReader<'_>, what: &str) -> Result<String, GgufError> {
    let len = r.u64()?;
    let bytes = r.bytes(len)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::BadString { what: what.to_string() })
}

/// Nested arrays deeper than this are rejected (the spec allows nesting; real files use 1 level).
const MAX_ARRAY_DEPTH: usize = 4;

fn read_value(r: &mut ByteReader<'_>, key: &str, type_id: u32, depth: usize) -> Result<MetaValue, GgufError> {
    Ok(match type_id {
        0 => MetaValue::Int(r.u8()? as i128),
        1 => MetaValue::Int(r.u8()? as i8 as i128),
        2 => MetaValue::Int(r.u16()? as i128),
        3 => MetaValue::Int(r.u16()? as i16 as i128),
        4 => MetaValue::Int(r.u32()? as i128),
        5 => MetaValue::Int(r.u32()? as i32 as i128),
        6 => MetaValue::Float(f32::from_bits(r.u32()?) as f64),
        7 => MetaValue::Bool(r.u8()? != 0),
        8 => MetaValue::Str(read_string(r, &format!("value of `{key}`"))?),
        9 if depth < MAX_ARRAY_DEPTH => {
            let elem_type = r.u32()?;
            let count = r.u64()?;
            // Every element takes at least one byte: a count larger than what is left is corrupt.
            if count > r.remaining() as u64 {
                return Err(GgufError::Truncated(format!(
                    "array `{key}` claims {count} elements but only {} bytes remain",
                    r.remaining()
                )));
            }
            let mut items = Vec::with_capacity(count as usize);
            for _ in 0..count {
                items.push(read_value(r, key, elem_type, depth + 1)?);
            }
            MetaValue::Array(items)
        }
        10 => MetaValue::Int(r.u64()? as i128),
        11 => MetaValue::Int(r.u64()? as i64 as i128),
        12 => MetaValue::Float(f64::from_bits(r.u64()?)),
        _ => {
            return Err(GgufError::BadValueType {
                key: key.to_string(),
                type_id,
            });
        }
    })
}

/// Tensors with more dimensions than this are rejected (ggml's GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;

fn read_tensor_info(r: &mut ByteReader<'_>) -> Result<TensorInfo, GgufError> {
    let name = read_string(r, "tensor name")?;
    let n_dims = r.u32()?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(GgufError::BadTensor {
            name,
            detail: format!("has {n_dims} dimensions (expected 1..={MAX_DIMS}); the file is corrupt"),
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    let mut numel: usize = 1;
    for _ in 0..n_dims {
        let d = usize::try_from(r.u64()?).unwrap_or(usize::MAX);
        numel = numel.checked_mul(d).ok_or_else(|| GgufError::BadTensor {
            name: name.clone(),
            detail: "dimensions overflow; the file is corrupt".into(),
        })?;
        dims.push(d);
    }
    let ggml_type = GgmlType::from_id(r.u32()?);
    let offset = usize::try_from(r.u64()?).unwrap_or(usize::MAX);
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
    })
}

/// Decodes stored bytes of a supported type to f32. `bytes` must hold whole blocks
/// (guaranteed by [`GgufFile::tensor_bytes`]); block-quantised types decode exactly as gguf-py's
/// `gguf.quants.dequantize` (see `io::quants`).
pub fn dequantize(ggml_type: GgmlType, bytes: &[u8]) -> Vec<f32> {
    match ggml_type {
        GgmlType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        GgmlType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        GgmlType::Bf16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        GgmlType::Quant(q) => quants::dequantize(q.id(), bytes).unwrap_or_default(),
        GgmlType::Other(_) => Vec::new(),
    }
}
