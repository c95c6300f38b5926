//! Bit-exactness against llama.cpp's reference quantisers (tests/fixtures/quantize), round trips
//! through the dequantisers, and the documented behaviour on odd inputs.

use super::super::{QuantType, dequantize, dequantize_block_q8_0};
use super::*;
use std::path::PathBuf;

/// The fixtures written by `scripts/make_reference.py --only quantize`.
fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quantize")
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn reference() -> serde_json::Value {
    serde_json::from_slice(&read("reference.json")).expect("reference.json parses")
}

fn input() -> Vec<f32> {
    read("input.bin")
        .as_chunks::<4>()
        .0
        .iter()
        .map(|&b| f32::from_le_bytes(b))
        .collect()
}

/// Bytes of one 256-value stretch of `qtype` (8 Q8_0 blocks, one K-quant block).
fn bytes_per_256(qtype: QuantType) -> usize {
    QK_K / qtype.block_elems() * qtype.block_bytes()
}

#[test]
fn fixtures_are_consistent() {
    let reference = reference();
    let x = input();
    assert_eq!(reference["input"]["values"].as_u64(), Some(x.len() as u64));
    let blocks = reference["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len() * QK_K, x.len());
    for (i, block) in blocks.iter().enumerate() {
        let finite = x[QK_K * i..QK_K * (i + 1)].iter().all(|v| v.is_finite());
        assert_eq!(block["finite"].as_bool(), Some(finite), "block {i}");
    }
    for qtype in QUANTIZE_TYPES {
        let entry = &reference["types"][qtype.name()];
        assert_eq!(entry["id"].as_u64(), Some(qtype.id() as u64));
        assert_eq!(entry["block_elems"].as_u64(), Some(qtype.block_elems() as u64));
        assert_eq!(entry["block_bytes"].as_u64(), Some(qtype.block_bytes() as u64));
        let want = read(&format!("{}.bin", qtype.name()));
        assert_eq!(entry["bytes"].as_u64(), Some(want.len() as u64));
        assert_eq!(want.len(), x.len() / QK_K * bytes_per_256(qtype));
    }
}

#[test]
fn every_type_quantises_bit_exactly_like_llama_cpp() {
    let reference = reference();
    let blocks = reference["blocks"].as_array().expect("blocks");
    let x = input();
    for qtype in QUANTIZE_TYPES {
        let want = read(&format!("{}.bin", qtype.name()));
        let got = quantize(qtype, &x).expect("whole blocks");
        assert_eq!(got.len(), want.len(), "{}", qtype.name());
        let per = bytes_per_256(qtype);
        let bad: Vec<usize> = (0..blocks.len())
            .filter(|&i| got[per * i..per * (i + 1)] != want[per * i..per * (i + 1)])
            .collect();
        if let Some(&i) = bad.first() {
            let at = (per * i..per * (i + 1)).find(|&k| got[k] != want[k]).unwrap_or(per * i);
            panic!(
                "{}: {} of {} 256-value blocks differ ({bad:?}); first: block {i} ({}), byte {} of it: \
                 got {:#04x}, llama.cpp {:#04x}",
                qtype.name(),
                bad.len(),
                blocks.len(),
                blocks[i]["kind"],
                at - per * i,
                got[at],
                want[at]
            );
        }
    }
}

#[test]
fn round_trips_are_close() {
    // The finite fixture blocks whose largest |x| is at least 0.01 (so the scales are well
    // inside f16's range): max |dequantize(quantize(x)) − x| relative to max |x|, per block.
    let reference = reference();
    let finite_blocks = reference["input"]["finite_blocks"].as_u64().expect("finite_blocks") as usize;
    let x = &input()[..finite_blocks * QK_K];
    for (qtype, bound) in [
        (QuantType::Q8_0, 0.0046),
        (QuantType::Q4_K, 0.12),
        (QuantType::Q6_K, 0.02),
    ] {
        let back = dequantize(qtype.id(), &quantize(qtype, x).expect("quantises")).expect("decodes");
        for (i, (xs, ys)) in x.chunks_exact(QK_K).zip(back.chunks_exact(QK_K)).enumerate() {
            let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if amax < 0.01 {
                continue;
            }
            let err = xs.iter().zip(ys).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= bound * amax,
                "{} block {i}: error {err} vs max |x| {amax}",
                qtype.name()
            );
        }
    }
}

#[test]
fn zeros_give_zero_bytes_and_exact_values() {
    for qtype in QUANTIZE_TYPES {
        let bytes = quantize(qtype, &[0.0; QK_K]).expect("quantises");
        assert!(bytes.iter().all(|&b| b == 0), "{}", qtype.name());
        let bytes = quantize(qtype, &[-0.0; QK_K]).expect("quantises");
        assert!(bytes.iter().all(|&b| b == 0), "{}", qtype.name());
    }
    // integers are exact in Q8_0 when max |x| = 127 (d = 1)
    let x: [f32; 32] = std::array::from_fn(|i| if i == 0 { -127.0 } else { i as f32 * 7.0 - 100.0 });
    let mut block = [0u8; Q8_0_BYTES];
    quantize_block_q8_0(&x, &mut block);
    let mut back = [0.0f32; 32];
    dequantize_block_q8_0(&block, &mut back);
    assert_eq!(back, x);
}

#[test]
fn other_types_partial_blocks_and_wrong_outputs_are_refused() {
    for qtype in QuantType::ALL {
        if !QUANTIZE_TYPES.contains(&qtype) {
            assert_eq!(quantize(qtype, &[0.0; QK_K]), None, "{}", qtype.name());
            assert_eq!(quantize_into(qtype, &[0.0; QK_K], &mut [0u8; 1024]), None);
        }
    }
    for qtype in QUANTIZE_TYPES {
        let e = qtype.block_elems();
        assert_eq!(quantize(qtype, &[]), Some(Vec::new()), "{}", qtype.name());
        for len in [1, e - 1, e + 1, 2 * e - 1] {
            assert_eq!(quantize(qtype, &vec![0.5; len]), None, "{} len {len}", qtype.name());
        }
        // an output of the wrong size is refused and left untouched
        for out_len in [
            0,
            qtype.block_bytes() - 1,
            qtype.block_bytes() + 1,
            2 * qtype.block_bytes(),
        ] {
            let mut out = vec![0xa5u8; out_len];
            assert_eq!(quantize_into(qtype, &vec![0.5; e], &mut out), None);
            assert!(out.iter().all(|&b| b == 0xa5));
        }
    }
}

#[test]
fn quantising_in_pieces_gives_the_same_bytes() {
    let x = input();
    for qtype in QUANTIZE_TYPES {
        let whole = quantize(qtype, &x).expect("quantises");
        let cut = 5 * QK_K;
        let at = cut / qtype.block_elems() * qtype.block_bytes();
        let mut parts = vec![0u8; whole.len()];
        let (a, b) = parts.split_at_mut(at);
        quantize_into(qtype, &x[..cut], a).expect("first part");
        quantize_into(qtype, &x[cut..], b).expect("second part");
        assert!(whole == parts, "{}", qtype.name());
    }
}

#[test]
fn non_finite_inputs_give_well_formed_blocks() {
    let mut x = [0.0f32; QK_K];
    for (i, v) in x.iter_mut().enumerate() {
        *v = ((i * 37 % 101) as f32 - 50.0) * 0.01;
    }
    let specials = [
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
        1e-45,
    ];
    for (k, &s) in specials.iter().enumerate() {
        for at in [0, 17, 255] {
            let mut y = x;
            y[at] = s;
            y[(at + 100 + k) % QK_K] = s;
            for qtype in QUANTIZE_TYPES {
                let bytes = quantize(qtype, &y).expect("quantises");
                assert_eq!(bytes.len(), bytes_per_256(qtype));
                // decodes (maybe to non-finite values) without trouble
                assert_eq!(dequantize(qtype.id(), &bytes).map(|v| v.len()), Some(QK_K));
            }
        }
    }
    for qtype in QUANTIZE_TYPES {
        for s in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert!(quantize(qtype, &[s; QK_K]).is_some());
        }
    }
    // Q8_0: an infinite value makes d = inf (f16 0x7c00), its own code 0 and every finite one 0
    let mut y = [0.25f32; 32];
    y[7] = f32::NEG_INFINITY;
    let mut block = [0u8; Q8_0_BYTES];
    quantize_block_q8_0(&y, &mut block);
    assert_eq!(u16::from_le_bytes([block[0], block[1]]), 0x7c00);
    assert!(block[2..].iter().all(|&q| q == 0));
    // a NaN is forgotten by the running maximum once a later value is compared with it
    let mut y: [f32; 32] = std::array::from_fn(|i| i as f32 - 16.0);
    y[3] = f32::NAN;
    quantize_block_q8_0(&y, &mut block);
    assert_eq!(
        f16::from_le_bytes([block[0], block[1]]).to_f32(),
        f16::from_f32(15.0 / 127.0).to_f32()
    );
    assert_eq!(block[2 + 3], 0); // the NaN's code
    assert_eq!(block[2] as i8, round_to_i8(-16.0 * (127.0 / 15.0))); // -135 wraps to 121, as in C
    assert_eq!(block[2] as i8, 121);
}

#[test]
fn nearest_int_rounds_ties_to_even() {
    let cases = [
        (0.0f32, 0),
        (-0.0, 0),
        (0.5, 0),
        (1.5, 2),
        (2.5, 2),
        (-2.5, -2),
        (-3.5, -4),
        (0.49999997, 0),
        (7.4999995, 7),
        (-7.5000005, -8),
        (4194303.0, 4194303),
        (-4194303.0, -4194303),
    ];
    for (v, want) in cases {
        assert_eq!(nearest_int(v), want, "{v}");
    }
    // out of range or NaN: meaningless but bounded
    for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30] {
        assert!((-(1 << 22)..(1 << 22)).contains(&nearest_int(v)), "{v}");
    }
}

#[test]
fn f16_rounding_is_ggml_s() {
    let cases = [
        (65504.0f32, 0x7bffu16),
        (65519.996, 0x7bff),
        (65520.0, 0x7c00),
        (-1e10, 0xfc00),
        (1.0 + 1.0 / 2048.0, 0x3c00),          // tie to even (down)
        (1.0 + 3.0 / 2048.0, 0x3c02),          // tie to even (up)
        (2.0f32.powi(-25), 0x0000),            // half the smallest subnormal: tie to even zero
        (2.0f32.powi(-25) * 1.000001, 0x0001), // just above it
        (3.0 * 2.0f32.powi(-25), 0x0002),      // 1.5 subnormal steps: tie to even
        (-0.0, 0x8000),
        (f32::NAN, 0x7e00),
        (-f32::NAN, 0xfe00),
        (f32::from_bits(0x7f80_0001), 0x7e00),
    ];
    for (v, want) in cases {
        assert_eq!(f16_bits(v), want, "{v:e} ({:#010x})", v.to_bits());
    }
}
