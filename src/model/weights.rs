//! Where module weights come from: a [`TensorSource`] answers Hugging Face checkpoint keys, and a
//! [`VarBuilder`] walks the module tree so that each module asks for its own key
//! (`model.layers.3.self_attn.q_proj.weight`) and gets a shape-checked burn tensor.

use burn::tensor::{Device, Tensor, TensorData};

use crate::linalg::Matrix;

/// A dense f32 tensor on the host, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Values, row-major.
    pub data: Vec<f32>,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
}

impl HostTensor {
    /// Wraps values and a shape; the caller guarantees `data.len()` equals the shape's product.
    pub fn new(data: Vec<f32>, shape: Vec<usize>) -> Self {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        Self { data, shape }
    }

    /// Uploads to a device as a rank-`D` tensor (shape checked by the caller).
    pub fn to_tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(self.data.clone(), self.shape.clone()), device)
    }
}

/// Errors while building modules from a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// A tensor the architecture needs is absent.
    #[error("tensor `{name}` is missing from the checkpoint{hint}; the file is incomplete or is not a {arch} model")]
    Missing {
        /// The Hugging Face key.
        name: String,
        /// Extra context (e.g. the GGUF name it maps to).
        hint: String,
        /// Architecture being loaded.
        arch: String,
    },
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}; the checkpoint does not match its config")]
    Shape {
        /// The Hugging Face key.
        name: String,
        /// Shape the config implies.
        expected: Vec<usize>,
        /// Shape found.
        got: Vec<usize>,
    },
    /// The underlying file could not produce the tensor.
    #[error("{0}")]
    Source(String),
}

/// Anything that can produce tensors by Hugging Face key (a GGUF file, safetensors shards,
/// an in-memory map).
pub trait TensorSource {
    /// The tensor stored under `name`, dequantised to f32; `Ok(None)` if absent.
    fn tensor(&self, name: &str) -> Result<Option<HostTensor>, WeightError>;

    /// Where a Hugging Face key is stored, for error messages (e.g. the GGUF tensor name).
    fn describe(&self, name: &str) -> String {
        let _ = name;
        String::new()
    }
}

/// Walks the module tree: `vb.pp("model").pp("layers").pp(3)` builds the key prefix.
#[derive(Clone)]
pub struct VarBuilder<'a> {
    source: &'a dyn TensorSource,
    prefix: String,
    device: Device,
    arch: &'static str,
}

impl<'a> VarBuilder<'a> {
    /// A builder at the root of the key tree.
    pub fn new(source: &'a dyn TensorSource, device: &Device, arch: &'static str) -> Self {
        Self {
            source,
            prefix: String::new(),
            device: device.clone(),
            arch,
        }
    }

    /// Descends into a sub-module.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        };
        Self { prefix, ..self.clone() }
    }

    /// The device tensors are created on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The full key of a tensor under this prefix.
    pub fn key(&self, name: &str) -> String {
        self.pp(name).prefix
    }

    /// Reads a host tensor and checks its shape.
    pub fn host(&self, name: &str, expected: &[usize]) -> Result<HostTensor, WeightError> {
        let key = self.key(name);
        let t = self.try_host(name)?.ok_or_else(|| WeightError::Missing {
            hint: self.source.describe(&key),
            name: key.clone(),
            arch: self.arch.to_string(),
        })?;
        if t.shape != expected {
            return Err(WeightError::Shape {
                name: key,
                expected: expected.to_vec(),
                got: t.shape,
            });
        }
        Ok(t)
    }

    /// Reads a host tensor if present (no shape check).
    pub fn try_host(&self, name: &str) -> Result<Option<HostTensor>, WeightError> {
        self.source.tensor(&self.key(name))
    }

    /// Reads a tensor of the expected shape onto the device.
    pub fn get<const D: usize>(&self, name: &str, expected: [usize; D]) -> Result<Tensor<D>, WeightError> {
        Ok(self.host(name, &expected)?.to_tensor(&self.device))
    }
}

/// An in-memory [`TensorSource`], used by tests and by exports that re-load what they wrote.
impl TensorSource for std::collections::BTreeMap<String, HostTensor> {
    fn tensor(&self, name: &str) -> Result<Option<HostTensor>, WeightError> {
        Ok(self.get(name).cloned())
    }
}

/// Reads a tensor back to the host as f32 values (async: the browser cannot block on the GPU).
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
    let data = t.into_data_async().await.map_err(|e| format!("{e:?}"))?;
    data.try_into_vec_as::<f32>().map_err(|e| format!("{e:?}"))
}

/// Reads a 2-D tensor to the host as an f64 matrix.
pub async fn read_matrix(t: Tensor<2>) -> Result<Matrix, String> {
    let [m, n] = t.dims();
    let v = read_f32(t).await?;
    Matrix::from_f32(m, n, &v).ok_or_else(|| "unexpected tensor size".to_string())
}
