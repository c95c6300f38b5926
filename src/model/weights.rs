//! Where module weights come from: a [`Weights`] source answers Hugging Face checkpoint keys with
//! host tensors, and a [`VarBuilder`] walks the module tree so that each module asks for its own
//! key (`model.layers.3.self_attn.q_proj.weight`) and gets a shape-checked burn tensor.
//!
//! The model only states what it needs; the file formats that answer (GGUF, safetensors, an
//! in-memory map) implement [`Weights`] in `io`.

use burn::tensor::{Device, Tensor, TensorData};

use super::linear::PackedWeight;
use super::packed::PackedMatrix;
use crate::linalg::Matrix;

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

/// Anything that produces tensors by Hugging Face key (a GGUF file, safetensors shards, an
/// in-memory map), as f32 host data.
pub trait Weights {
    /// The tensor stored under `key`, dequantised to f32; `Ok(None)` if absent.
    fn tensor(&self, key: &str) -> Result<Option<TensorData>, WeightError>;

    /// The 2-D tensor under `key` in its stored encoding, when the source can serve it without
    /// decoding (quantised GGUF blocks, 16-bit floats); `Ok(None)` means "ask [`Weights::tensor`]".
    fn packed(&self, key: &str) -> Result<Option<PackedMatrix>, WeightError> {
        let _ = key;
        Ok(None)
    }

    /// Where a Hugging Face key is stored, for error messages (e.g. the GGUF tensor name).
    fn describe(&self, key: &str) -> String {
        let _ = key;
        String::new()
    }
}

/// The shape of host data.
pub fn shape_of(data: &TensorData) -> Vec<usize> {
    data.shape().iter().copied().collect()
}

/// Walks the module tree: `vb.pp("model").pp("layers").pp(3)` builds the key prefix.
#[derive(Clone)]
pub struct VarBuilder<'a> {
    source: &'a dyn Weights,
    prefix: String,
    device: Device,
    arch: &'static str,
    pack: bool,
    pack_lookups: bool,
    pack_on_device: bool,
}

impl<'a> VarBuilder<'a> {
    /// A builder at the root of the key tree.
    pub fn new(source: &'a dyn Weights, device: &Device, arch: &'static str) -> Self {
        Self {
            source,
            prefix: String::new(),
            device: device.clone(),
            arch,
            pack: false,
            pack_lookups: false,
            pack_on_device: false,
        }
    }

    /// Whether frozen matrices stay in their stored encoding where the source allows
    /// ([`VarBuilder::packed`]); off by default.
    pub fn with_packing(mut self, pack: bool) -> Self {
        self.pack = pack;
        self.pack_lookups = pack;
        self
    }

    /// Whether lookup tables (the token embedding) may stay packed on the host: a host lookup
    /// reads the token ids back synchronously, which the browser cannot (there the table goes to
    /// the device layout instead, see [`VarBuilder::packed_lookup`]).
    pub fn with_packed_lookups(mut self, pack: bool) -> Self {
        self.pack_lookups = self.pack && pack;
        self
    }

    /// Whether packed matrices go to the device layout even on the CPU backend (where they are
    /// otherwise decoded on the host; see [`PackedWeight::place`]): for tests and benchmarks.
    pub fn with_packs_on_device(mut self, on_device: bool) -> Self {
        self.pack_on_device = on_device;
        self
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

    /// Reads host data and checks its shape.
    pub fn host(&self, name: &str, expected: &[usize]) -> Result<TensorData, WeightError> {
        let key = self.key(name);
        let t = self.source.tensor(&key)?.ok_or_else(|| WeightError::Missing {
            hint: self.source.describe(&key),
            name: key.clone(),
            arch: self.arch.to_string(),
        })?;
        let got = shape_of(&t);
        if got != expected {
            return Err(WeightError::Shape {
                name: key,
                expected: expected.to_vec(),
                got,
            });
        }
        Ok(t)
    }

    /// The matrix `name` in its stored encoding, shape-checked, when this builder packs and the
    /// source can serve it so; `Ok(None)` otherwise (read it with [`VarBuilder::host`]).
    pub fn packed(&self, name: &str, expected: [usize; 2]) -> Result<Option<PackedMatrix>, WeightError> {
        if !self.pack {
            return Ok(None);
        }
        let key = self.key(name);
        let Some(m) = self.source.packed(&key)? else {
            return Ok(None);
        };
        let (rows, cols) = m.dims();
        if [rows, cols] != expected {
            return Err(WeightError::Shape {
                name: key,
                expected: expected.to_vec(),
                got: vec![rows, cols],
            });
        }
        Ok(Some(m))
    }

    /// [`VarBuilder::packed`], placed on the host or the device ([`PackedWeight::place`]).
    pub fn packed_weight(&self, name: &str, expected: [usize; 2]) -> Result<Option<PackedWeight>, WeightError> {
        Ok(self
            .packed(name, expected)?
            .map(|m| PackedWeight::place(m, &self.device, self.pack_on_device)))
    }

    /// A lookup table (the token embedding) in its stored encoding, when this builder packs and
    /// the source can: on the host where lookups may read the ids back
    /// ([`VarBuilder::with_packed_lookups`]), else in the device layout, on the CPU backend too,
    /// whose lookup selects rows without a read-back. `Ok(None)` when neither applies (the
    /// format has no device layout): read it with [`VarBuilder::get`].
    pub fn packed_lookup(&self, name: &str, expected: [usize; 2]) -> Result<Option<PackedWeight>, WeightError> {
        let on_device = self.pack_on_device || !self.pack_lookups;
        Ok(self
            .packed(name, expected)?
            .map(|m| PackedWeight::place(m, &self.device, on_device))
            .filter(|p| p.is_on_device() || self.pack_lookups))
    }

    /// Reads a tensor of the expected shape onto the device.
    pub fn get<const D: usize>(&self, name: &str, expected: [usize; D]) -> Result<Tensor<D>, WeightError> {
        Ok(Tensor::from_data(self.host(name, &expected)?, &self.device))
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
