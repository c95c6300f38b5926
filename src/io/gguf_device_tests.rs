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

/// An f16 and a bf16 matrix, 70 × 96, of normal values (products of them stay finite).
#[cfg(not(target_arch = "wasm32"))]
fn normal_half_matrices() -> Vec<PackedMatrix> {
    let (rows, cols) = (70, 96);
    let mut rng = crate::linalg::Rng::new(11);
    let values: Vec<f32> = (0..rows * cols).map(|_| rng.normal() as f32).collect();
    let f16: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let bf16: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    vec![
        matrix(GgmlType::F16, f16, rows, cols),
        matrix(GgmlType::Bf16, bf16, rows, cols),
    ]
}

/// `x · Wᵀ`, or `x · W` when `transpose`, in f64 from the host decoder's values of rows
/// `rows` of `m`, with the sums of `|x|·|W|` (each result's rounding scale).
#[cfg(not(target_arch = "wasm32"))]
fn host_product(m: &PackedMatrix, rows: std::ops::Range<usize>, x: &[f32], transpose: bool) -> (Vec<f64>, Vec<f64>) {
    let cols = m.dims().1;
    let w = m.decode_range(rows.clone());
    let (inner, outer) = if transpose {
        (rows.len(), cols)
    } else {
        (cols, rows.len())
    };
    let at = |o: usize, q: usize| f64::from(if transpose { w[q * cols + o] } else { w[o * cols + q] });
    let t = x.len() / inner;
    let (mut value, mut scale) = (vec![0.0; t * outer], vec![0.0; t * outer]);
    for i in 0..t {
        for o in 0..outer {
            for q in 0..inner {
                let p = f64::from(x[i * inner + q]) * at(o, q);
                value[i * outer + o] += p;
                scale[i * outer + o] += p.abs();
            }
        }
    }
    (value, scale)
}

/// On a GPU a packed matrix multiplies without being decoded first (`model::dequant_kernel`'s
/// dequantising product): `x · Wᵀ` and `x · W` for every block type and both 16-bit floats,
/// whole and narrowed, with 37 rows of x (a tile and a ragged one), equal the host decoder's
/// values multiplied in f64 within f32's rounding of each sum.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn every_block_type_multiplies_on_a_gpu_dequantised_inside_the_product() {
    use burn::tensor::{Tensor, TensorData};
    let device = gpu();
    let mut rng = crate::linalg::Rng::new(5);
    for m in block_matrices().iter().chain(&normal_half_matrices()) {
        let rows = m.dims().0;
        let whole = DeviceMatrix::upload(m, &device).expect("uploads");
        for (d, range) in [(whole.clone(), 0..rows), (whole.narrow(1..rows), 1..rows)] {
            let (n, cols) = d.dims();
            for transpose in [false, true] {
                let inner = if transpose { n } else { cols };
                let t = 37;
                let x: Vec<f32> = (0..t * inner).map(|_| rng.normal() as f32).collect();
                let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [t, inner]), &device);
                let got = d
                    .fused_product(xt, transpose)
                    .expect("the fused product runs on wgpu")
                    .into_data()
                    .try_to_vec::<f32>()
                    .expect("f32");
                let (want, scale) = host_product(m, range.clone(), &x, transpose);
                assert_eq!(got.len(), want.len(), "{}: output size", m.encoding());
                let worst = got
                    .iter()
                    .zip(want.iter().zip(&scale))
                    .map(|(&g, (&w, &s))| (f64::from(g) - w).abs() / (s + f64::MIN_POSITIVE))
                    .fold(0.0, f64::max);
                assert!(
                    worst < 1e-5,
                    "{} ({range:?}, transpose {transpose}): off by {worst:e} of the sum of |x|·|W|",
                    m.encoding()
                );
            }
        }
    }
}
