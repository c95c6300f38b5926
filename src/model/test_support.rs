//! Inputs the model's unit tests share: deterministic tensors, their largest difference, and a
//! toy packed matrix.

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use super::packed::{PackedMatrix, RowDecoder, SharedBytes};

/// `len` values in [−1, 1), a different sequence for each seed.
pub fn vals(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// A tensor of `shape` holding [`vals`].
pub fn tensor<const D: usize>(shape: [usize; D], seed: usize, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(vals(shape.iter().product(), seed), shape), device)
}

/// `max |a − b|`.
pub fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

/// A toy packed `[rows, cols]` matrix (one byte per value, value = (byte − 128) / 64) and its
/// values.
pub fn packed_matrix(rows: usize, cols: usize) -> (Arc<PackedMatrix>, Vec<f32>) {
    let raw: Vec<u8> = (0..rows * cols).map(|i| (i * 37 % 251) as u8).collect();
    let values = raw.iter().map(|&b| (f32::from(b) - 128.0) / 64.0).collect();
    let decode: RowDecoder = Arc::new(|b: &[u8], out: &mut [f32]| {
        (b.len() == out.len()).then(|| {
            out.iter_mut()
                .zip(b)
                .for_each(|(o, &b)| *o = (f32::from(b) - 128.0) / 64.0)
        })
    });
    let len = raw.len();
    let shared = SharedBytes::new(Arc::new(raw), 0..len).expect("the range is the whole buffer");
    let matrix = PackedMatrix::new(shared, rows, cols, "toy", decode).expect("the bytes match the shape");
    (Arc::new(matrix), values)
}
