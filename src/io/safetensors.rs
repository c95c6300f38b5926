//! Hugging Face safetensors: reading (single file or shards with `model.safetensors.index.json`)
//! and writing (atomic-ready byte buffers, F32/F16/BF16).

use std::collections::BTreeMap;
use std::sync::Arc;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use super::host::HostTensor;
use crate::model::packed::{DeviceForm, PackedMatrix, SharedBytes, bf16_rows, f16_rows};
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
    shards: Vec<(String, SafeTensors<'a>)>,
    /// Tensor name → shard position.
    index: BTreeMap<String, usize>,
    /// The shards' buffers, shared, for serving 16-bit matrices packed ([`Weights::packed`]).
    buffers: Vec<Option<Arc<Vec<u8>>>>,
}

impl<'a> SafetensorsSource<'a> {
    /// Parses every shard (`(file name, bytes)`); if `index_json` is given, checks that every
    /// shard it names is present.
    pub fn new(files: &[(&str, &'a [u8])], index_json: Option<&[u8]>) -> Result<Self, SafetensorsError> {
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for (name, bytes) in files {
            let st = SafeTensors::deserialize(bytes).map_err(|e| SafetensorsError::Corrupt {
                file: name.to_string(),
                message: e.to_string(),
            })?;
            for tensor in st.names() {
                index.insert(tensor.to_string(), shards.len());
            }
            shards.push((name.to_string(), st));
        }
        if let Some(json) = index_json {
            let v: serde_json::Value =
                serde_json::from_slice(json).map_err(|e| SafetensorsError::Index(e.to_string()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| SafetensorsError::Index("no `weight_map` object".into()))?;
            for shard in map.values().filter_map(|s| s.as_str()) {
                if !shards.iter().any(|(n, _)| n == shard) {
                    return Err(SafetensorsError::MissingShard(shard.to_string()));
                }
            }
        }
        let buffers = vec![None; shards.len()];
        Ok(Self { shards, index, buffers })
    }

    /// Serves F16/BF16 matrices packed from the shards' shared buffers (`buffer(name)` is the
    /// buffer the shard `name` was parsed from).
    pub fn with_shared(mut self, buffer: impl Fn(&str) -> Option<Arc<Vec<u8>>>) -> Self {
        self.buffers = self.shards.iter().map(|(name, _)| buffer(name)).collect();
        self
    }

    /// All tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Reads one tensor as f32.
    pub fn read(&self, name: &str) -> Result<Option<HostTensor>, SafetensorsError> {
        let Some(&pos) = self.index.get(name) else {
            return Ok(None);
        };
        let (file, st) = &self.shards[pos];
        let view = st.tensor(name).map_err(|e| SafetensorsError::Corrupt {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
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
                    file: file.clone(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok(Some(HostTensor::new(data, view.shape().to_vec())))
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
        let (Some(buffer), (file, st)) = (&self.buffers[pos], &self.shards[pos]) else {
            return Ok(None);
        };
        let source = |e: String| WeightError::Source(format!("{file}: {key}: {e}"));
        let view = st.tensor(key).map_err(|e| source(e.to_string()))?;
        let (decode, exponent_bits) = match view.dtype() {
            Dtype::F16 => (f16_rows(), 5),
            Dtype::BF16 => (bf16_rows(), 8),
            _ => return Ok(None),
        };
        let &[rows, cols] = view.shape() else {
            return Ok(None);
        };
        let bytes = SharedBytes::within(buffer, view.data())
            .ok_or_else(|| source("the tensor lies outside the shard it was parsed from".into()))?;
        PackedMatrix::new(bytes, rows, cols, &format!("{:?}", view.dtype()), decode)
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
