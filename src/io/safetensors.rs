//! Hugging Face safetensors: reading (single file or shards with `model.safetensors.index.json`)
//! and writing (atomic-ready byte buffers, F32/F16/BF16).

use std::collections::BTreeMap;

use half::{bf16, f16};
use safetensors::Dtype;
use safetensors::tensor::{Metadata, TensorInfo};

use super::file_bytes::{FileBytes, FileView, TensorBytes};
use super::host::HostTensor;
use crate::model::packed::{DeviceForm, PackedMatrix, bf16_rows, f16_rows};
use crate::model::weights::{WeightError, Weights};

/// Errors reading safetensors files.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    /// The file's header or offsets are invalid.
    #[error("{file}: not a valid safetensors file ({message}); the file is truncated or corrupt, download it again")]
    Corrupt {
        /// File name.
        file: String,
        /// What the parser said.
        message: String,
    },
    /// A dtype we do not read.
    #[error("{file}: tensor `{name}` has dtype {dtype}, which is not supported; supported: F32, F16, BF16")]
    Dtype {
        /// File name.
        file: String,
        /// Tensor name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// The index names a shard that was not supplied.
    #[error("model.safetensors.index.json refers to shard `{0}`, which was not provided; add all shard files")]
    MissingShard(String),
    /// The index file is malformed.
    #[error("model.safetensors.index.json: {0}")]
    Index(String),
}

/// Tensors served from one or more parsed safetensors files.
pub struct SafetensorsSource<'a> {
    shards: Vec<Shard<'a>>,
    /// Tensor name → shard position.
    index: BTreeMap<String, usize>,
}

/// One file: its header, and where its data is.
struct Shard<'a> {
    name: String,
    metadata: Metadata,
    /// Where the data section starts in the file.
    data_start: usize,
    data: FileView<'a>,
}

/// The header length a safetensors file's first bytes announce (8 bytes of length, then the
/// JSON header), once `prefix` holds all of it; `None` while it does not.
pub fn head_len(file: &str, prefix: &[u8]) -> Result<Option<usize>, SafetensorsError> {
    let Some(n) = prefix.get(..8) else {
        return Ok(None);
    };
    let n = u64::from_le_bytes(n.try_into().unwrap_or_default());
    if n > MAX_HEADER {
        return Err(corrupt(file, format!("a header of {n} bytes (at most {MAX_HEADER})")));
    }
    let need = 8 + n as usize;
    Ok((prefix.len() >= need).then_some(need))
}

/// The safetensors crate's limit on a header's length.
const MAX_HEADER: u64 = 100_000_000;

fn corrupt(file: &str, message: String) -> SafetensorsError {
    SafetensorsError::Corrupt {
        file: file.to_string(),
        message,
    }
}

/// Parses the header from `head` (the file's first bytes, at least the header) of a file of
/// `file_len` bytes, checking what the safetensors crate checks: offsets in order without gaps,
/// each tensor's bytes matching its shape and dtype, the data filling the rest of the file.
fn parse_header(file: &str, head: &[u8], file_len: usize) -> Result<(Metadata, usize), SafetensorsError> {
    let need = head_len(file, head)?.ok_or_else(|| corrupt(file, format!("only {} bytes: no header", head.len())))?;
    let json = std::str::from_utf8(&head[8..need]).map_err(|e| corrupt(file, format!("header: {e}")))?;
    let metadata: Metadata = serde_json::from_str(json).map_err(|e| corrupt(file, format!("header: {e}")))?;
    if need + metadata.data_len() != file_len {
        return Err(corrupt(
            file,
            format!(
                "the header announces {} bytes of data, the file holds {}",
                metadata.data_len(),
                file_len.saturating_sub(need)
            ),
        ));
    }
    Ok((metadata, need))
}

impl<'a> SafetensorsSource<'a> {
    /// Parses every shard (`(file name, bytes)`); if `index_json` is given, checks that every
    /// shard it names is present.
    pub fn new(files: &[(&str, &'a [u8])], index_json: Option<&[u8]>) -> Result<Self, SafetensorsError> {
        let shards = files
            .iter()
            .map(|&(name, bytes)| {
                let (metadata, data_start) = parse_header(name, bytes, bytes.len())?;
                Ok(Shard {
                    name: name.to_string(),
                    metadata,
                    data_start,
                    data: FileView::Borrowed(bytes),
                })
            })
            .collect::<Result<_, SafetensorsError>>()?;
        Self::index(shards, index_json)
    }

    /// Parses every shard from `(file name, its first bytes holding the header, the file)`;
    /// tensors are then read from the files, and 16-bit matrices served packed.
    pub fn open(files: &[(&str, &[u8], FileBytes)], index_json: Option<&[u8]>) -> Result<Self, SafetensorsError> {
        let shards = files
            .iter()
            .map(|(name, head, file)| {
                let len =
                    usize::try_from(file.len()).map_err(|_| corrupt(name, "too large for this platform".into()))?;
                let (metadata, data_start) = parse_header(name, head, len)?;
                Ok(Shard {
                    name: name.to_string(),
                    metadata,
                    data_start,
                    data: FileView::File(file.clone(), name.to_string()),
                })
            })
            .collect::<Result<_, SafetensorsError>>()?;
        Self::index(shards, index_json)
    }

    fn index(shards: Vec<Shard<'a>>, index_json: Option<&[u8]>) -> Result<Self, SafetensorsError> {
        let mut index = BTreeMap::new();
        for (pos, shard) in shards.iter().enumerate() {
            for tensor in shard.metadata.offset_keys() {
                index.insert(tensor, pos);
            }
        }
        if let Some(json) = index_json {
            let v: serde_json::Value =
                serde_json::from_slice(json).map_err(|e| SafetensorsError::Index(e.to_string()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| SafetensorsError::Index("no `weight_map` object".into()))?;
            for shard in map.values().filter_map(|s| s.as_str()) {
                if !shards.iter().any(|s| s.name == shard) {
                    return Err(SafetensorsError::MissingShard(shard.to_string()));
                }
            }
        }
        Ok(Self { shards, index })
    }

    /// All tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// A tensor's shard, header entry and stored bytes.
    fn stored(&self, name: &str) -> Result<Option<(&Shard<'a>, &TensorInfo, TensorBytes<'a>)>, SafetensorsError> {
        let Some(&pos) = self.index.get(name) else {
            return Ok(None);
        };
        let shard = &self.shards[pos];
        let info = shard
            .metadata
            .info(name)
            .ok_or_else(|| corrupt(&shard.name, format!("tensor `{name}` vanished from the header")))?;
        let (s, e) = info.data_offsets;
        let bytes = shard
            .data
            .range(shard.data_start + s..shard.data_start + e)
            .map_err(|e| corrupt(&shard.name, e.to_string()))?;
        Ok(Some((shard, info, bytes)))
    }

    /// Reads one tensor as f32.
    pub fn read(&self, name: &str) -> Result<Option<HostTensor>, SafetensorsError> {
        let Some((shard, info, bytes)) = self.stored(name)? else {
            return Ok(None);
        };
        let data: Vec<f32> = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(SafetensorsError::Dtype {
                    file: shard.name.clone(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok(Some(HostTensor::new(data, info.shape.clone())))
    }
}

impl Weights for SafetensorsSource<'_> {
    fn tensor(&self, key: &str) -> Result<Option<burn::tensor::TensorData>, WeightError> {
        let t = self.read(key).map_err(|e| WeightError::Source(e.to_string()))?;
        Ok(t.map(|t| burn::tensor::TensorData::new(t.data, t.shape)))
    }

    fn packed(&self, key: &str) -> Result<Option<PackedMatrix>, WeightError> {
        let Some(&pos) = self.index.get(key) else {
            return Ok(None);
        };
        let shard = &self.shards[pos];
        let source = |e: String| WeightError::Source(format!("{}: {key}: {e}", shard.name));
        let Some(info) = shard.metadata.info(key) else {
            return Ok(None);
        };
        let (decode, exponent_bits) = match info.dtype {
            Dtype::F16 => (f16_rows(), 5),
            Dtype::BF16 => (bf16_rows(), 8),
            _ => return Ok(None),
        };
        let &[rows, cols] = info.shape.as_slice() else {
            return Ok(None);
        };
        let Some((_, _, TensorBytes::Shared(bytes))) = self.stored(key).map_err(|e| source(e.to_string()))? else {
            return Ok(None);
        };
        PackedMatrix::new(bytes, rows, cols, &format!("{:?}", info.dtype), decode)
            .map(|m| Some(m.with_device_form(DeviceForm::Half { exponent_bits })))
            .map_err(source)
    }
}

/// Storage precision for written tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveDtype {
    /// 32-bit float (default: exact).
    #[default]
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

impl std::str::FromStr for SaveDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Self::F32),
            "f16" | "float16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => Err(format!("unknown dtype `{other}`; use f32, f16 or bf16")),
        }
    }
}

struct OwnedView {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for &OwnedView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Serialises named tensors to safetensors bytes (`__metadata__` as given).
pub fn to_safetensors_bytes(
    tensors: &BTreeMap<String, HostTensor>,
    dtype: SaveDtype,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, String> {
    let views: Vec<(String, OwnedView)> = tensors
        .iter()
        .map(|(name, t)| {
            let (dt, bytes) = match dtype {
                SaveDtype::F32 => (Dtype::F32, t.data.iter().flat_map(|v| v.to_le_bytes()).collect()),
                SaveDtype::F16 => (
                    Dtype::F16,
                    t.data.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
                ),
                SaveDtype::Bf16 => (
                    Dtype::BF16,
                    t.data.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
                ),
            };
            (
                name.clone(),
                OwnedView {
                    dtype: dt,
                    shape: t.shape.clone(),
                    bytes,
                },
            )
        })
        .collect();
    safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), metadata).map_err(|e| e.to_string())
}
