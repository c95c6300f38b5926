//! [`HostTensor`]: a dense f32 tensor in host memory, the unit the file formats read and write
//! (safetensors, PEFT adapters, checkpoints) and the model is built from.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};

use crate::model::weights::{WeightError, Weights, read_f32};

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
        Tensor::from_data(self.to_data(), device)
    }

    /// As burn host data.
    pub fn to_data(&self) -> TensorData {
        TensorData::new(self.data.clone(), self.shape.clone())
    }

    /// Reads a device tensor back (async: the browser cannot block on the GPU).
    pub async fn read<const D: usize>(t: Tensor<D>) -> Result<Self, String> {
        let shape = t.dims().to_vec();
        Ok(Self::new(read_f32(t).await?, shape))
    }
}

/// An in-memory weight source, used by tests and by exports that re-load what they wrote.
impl Weights for BTreeMap<String, HostTensor> {
    fn tensor(&self, key: &str) -> Result<Option<TensorData>, WeightError> {
        Ok(self.get(key).map(HostTensor::to_data))
    }
}
