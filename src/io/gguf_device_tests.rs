//! The device layout of every packed type against the host decoder (`model::dequant`).

use super::*;
use crate::io::quants::QuantType;
use crate::model::dequant::DeviceMatrix;
use crate::model::packed::SharedBytes;
use burn::tensor::Device;

/// A `[rows, cols]` matrix of type `t` over `bytes`, with its device form.
fn matrix(t: GgmlType, bytes: Vec<u8>, rows: usize, cols: usize) -> PackedMatrix {
    let len = bytes.len();
    let shared = SharedBytes::new(Arc::new(bytes), 0..len).expect("whole buffer");
    let m =
        PackedMatrix::new(shared, rows, cols, &t.name(), row_decoder(t).expect("packable type")).expect("whole rows");
    let m = m.with_device_form(device_form(t).expect("a device form"));
    assert!(m.device_form().is_some(), "{}: no device form", t.name());
    m
}

/// The device's dequantisation (on the CPU backend: the same tensor operations as on a GPU)
/// against the host decoder, bit for bit, with rows selected, narrowed and reordered.
fn assert_device_matches_host(m: &PackedMatrix) {
    assert_matches_host_on(m, &Device::flex());
}

/// A wgpu device (lavapipe here), for the GPU's own kernel.
#[cfg(not(target_arch = "wasm32"))]
fn gpu() -> Device {
    let choice = pollster::block_on(crate::device::select_device(crate::device::DevicePreference::Wgpu));
    assert!(choice.adapter.is_some(), "no wgpu adapter: {:?}", choice.warning);
    choice.device
}

/// [`assert_device_matches_host`] on `device`.
fn assert_matches_host_on(m: &PackedMatrix, device: &Device) {
    let device = device.clone();
    let (rows, cols) = m.dims();
    let d = DeviceMatrix::upload(m, &device).expect("uploads");
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let got = d.dequantize().into_data().try_to_vec::<f32>().expect("f32");
    assert_eq!(
        bits(got),
        bits(m.decode_range(0..rows)),
        "{}: whole matrix",
        m.encoding()
    );
    let got = d
        .narrow(1..rows)
        .dequantize()
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    assert_eq!(bits(got), bits(m.decode_range(1..rows)), "{}: rows 1..", m.encoding());
    let ids = [rows - 1, 0, rows - 1];
    let index = burn::tensor::Tensor::<1, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), [3]),
        &device,
    );
    let got = d
        .select(index)
        .dequantize()
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    let mut want = vec![0f32; 3 * cols];
    m.decode_rows_into(&ids, &mut want);
    assert_eq!(bits(got), bits(want), "{}: selected rows", m.encoding());
}

/// A matrix of every block type over its reference blocks (rows of 256 values where the fixture
/// allows, else of one 32-value block).
fn block_matrices() -> Vec<PackedMatrix> {
    QuantType::ALL
        .into_iter()
        .map(|q| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/quants")
                .join(format!("{}.bin", q.name()));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let elems = bytes.len() / q.block_bytes() * q.block_elems();
            let cols = if elems.is_multiple_of(256) && elems / 256 >= 2 {
                256
            } else {
                32
            };
            matrix(GgmlType::Quant(q), bytes, elems / cols, cols)
        })
        .collect()
}

/// An f16 and a bf16 matrix of every 16-bit pattern but inf / NaN: both signs, zeros,
/// subnormals, all exponents.
fn half_matrices() -> Vec<PackedMatrix> {
    [(GgmlType::F16, 0x7c00u16), (GgmlType::Bf16, 0x7f80u16)]
        .into_iter()
        .map(|(t, exponent_mask)| {
            let values: Vec<u16> = (0..=u16::MAX).filter(|h| h & exponent_mask != exponent_mask).collect();
            let cols = 64;
            let values = &values[..values.len() / cols * cols];
            let bytes: Vec<u8> = values.iter().flat_map(|h| h.to_le_bytes()).collect();
            matrix(t, bytes, values.len() / cols, cols)
        })
        .collect()
}

#[test]
fn every_block_type_dequantises_on_the_device_as_on_the_host() {
    for m in block_matrices() {
        assert_device_matches_host(&m);
    }
}

#[test]
fn halves_dequantise_on_the_device_as_on_the_host() {
    for m in half_matrices() {
        assert_device_matches_host(&m);
    }
}

/// On a GPU the matrix is dequantised by one kernel (`model::dequant_kernel`), not the tensor
/// operations: the same values as the host decoder, bit for bit, for every block type, whole,
/// narrowed (a row offset into the words) and with rows selected.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn every_block_type_dequantises_on_a_gpu_by_one_kernel_as_on_the_host() {
    let device = gpu();
    assert!(
        crate::model::dequant_kernel::applies(&device),
        "the kernel runs on wgpu"
    );
    for m in block_matrices().iter().chain(&half_matrices()) {
        assert_matches_host_on(m, &device);
    }
}
