//! Bit-exactness against gguf-py on random blocks of every type (tests/fixtures/quants).

use super::*;
use half::f16;
use std::path::PathBuf;

/// The fixtures written by `scripts/make_reference.py --only quants`.
fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quants")
}

fn reference() -> serde_json::Value {
    let path = fixture_dir().join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("reference.json parses")
}

fn fixture_blocks(qtype: QuantType) -> Vec<u8> {
    let path = fixture_dir().join(format!("{}.bin", qtype.name()));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hex_f32_bits(hex: &str) -> Vec<u32> {
    let nibble = |c: u8| (c as char).to_digit(16).expect("hex digit");
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks_exact(2)
        .map(|p| (nibble(p[0]) << 4 | nibble(p[1])) as u8)
        .collect();
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn block_layouts_match_gguf_py() {
    let reference = reference();
    let types = reference["types"].as_object().expect("types");
    assert_eq!(types.len(), QuantType::ALL.len());
    for qtype in QuantType::ALL {
        let entry = &types[qtype.name()];
        assert_eq!(entry["id"].as_u64(), Some(qtype.id() as u64), "{}", qtype.name());
        assert_eq!(
            entry["block_elems"].as_u64(),
            Some(qtype.block_elems() as u64),
            "{}",
            qtype.name()
        );
        assert_eq!(
            entry["block_bytes"].as_u64(),
            Some(qtype.block_bytes() as u64),
            "{}",
            qtype.name()
        );
        assert_eq!(QuantType::from_id(qtype.id()), Some(qtype));
        assert_eq!(
            block_layout(qtype.id()),
            Some((qtype.block_elems(), qtype.block_bytes()))
        );
    }
}

#[test]
fn every_type_decodes_bit_exactly_like_gguf_py() {
    let reference = reference();
    for qtype in QuantType::ALL {
        let entry = &reference["types"][qtype.name()];
        let bytes = fixture_blocks(qtype);
        let blocks = entry["blocks"].as_u64().expect("blocks") as usize;
        assert_eq!(bytes.len(), blocks * qtype.block_bytes(), "{}", qtype.name());
        let expected = hex_f32_bits(entry["values_f32_hex"].as_str().expect("values_f32_hex"));
        assert_eq!(expected.len(), blocks * qtype.block_elems(), "{}", qtype.name());
        let got = dequantize(qtype.id(), &bytes).expect("whole blocks decode");
        assert_eq!(got.len(), expected.len(), "{}", qtype.name());
        let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i].to_bits() != expected[i]).collect();
        if let Some(&i) = bad.first() {
            panic!(
                "{}: {} of {} values differ; first at {i} (block {}): got {:e} ({:#010x}), gguf-py {:e} ({:#010x})",
                qtype.name(),
                bad.len(),
                got.len(),
                i / qtype.block_elems(),
                got[i],
                got[i].to_bits(),
                f32::from_bits(expected[i]),
                expected[i]
            );
        }
    }
}

#[test]
fn decoding_in_pieces_gives_the_same_values_as_at_once() {
    for qtype in QuantType::ALL {
        let bytes = fixture_blocks(qtype);
        let whole = dequantize(qtype.id(), &bytes).expect("decodes");
        let cut = 3 * qtype.block_bytes();
        let mut parts = vec![f32::NAN; whole.len()];
        let (a, b) = parts.split_at_mut(3 * qtype.block_elems());
        dequantize_into(qtype, &bytes[..cut], a).expect("first part");
        dequantize_into(qtype, &bytes[cut..], b).expect("second part");
        assert!(
            whole.iter().zip(&parts).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{}",
            qtype.name()
        );
    }
}

#[test]
fn partial_blocks_and_other_types_are_refused() {
    for qtype in QuantType::ALL {
        let bytes = fixture_blocks(qtype);
        for len in [bytes.len() - 1, 1, qtype.block_bytes() - 1, qtype.block_bytes() + 1] {
            assert_eq!(
                dequantize(qtype.id(), &bytes[..len]),
                None,
                "{} len {len}",
                qtype.name()
            );
        }
        assert_eq!(dequantize(qtype.id(), &[]), Some(Vec::new()));
        // an output of the wrong size is refused and left untouched
        let mut out = vec![1.5f32; qtype.block_elems() + 1];
        assert_eq!(dequantize_into(qtype, &bytes[..qtype.block_bytes()], &mut out), None);
        assert!(out.iter().all(|&x| x == 1.5));
        let mut out = vec![0.0f32; qtype.block_elems()];
        assert_eq!(
            dequantize_into(qtype, &bytes[..2 * qtype.block_bytes()], &mut out),
            None
        );
    }
    for id in [0, 1, 4, 5, 9, 15, 16, 19, 21, 22, 24, 30, 39, u32::MAX] {
        assert_eq!(block_layout(id), None, "type {id}");
        assert_eq!(dequantize(id, &[0; 4 * 256]), None, "type {id}");
    }
}

#[test]
fn two_hand_decoded_blocks_keep_their_signs_of_zero() {
    // Q4_0, d = -1: code 8 is -0.0 (d·(q − 8)), code 0 is 8, code 15 is -7
    let mut block = [0u8; Q4_0_BYTES];
    block[..2].copy_from_slice(&f16::from_f32(-1.0).to_le_bytes());
    block[2] = 0x08 | 0xf0;
    let mut out = [0.0f32; 32];
    dequantize_block_q4_0(&block, &mut out);
    assert_eq!(out[0].to_bits(), (-0.0f32).to_bits());
    assert_eq!((out[16], out[1], out[17]), (-7.0, 8.0, 8.0));

    // Q3_K, d = 0.5, every scale 33 (6-bit 33 − 32 = 1): a clear hmask bit subtracts 4
    let mut block = [0u8; Q3_K_BYTES];
    block[0] = 0b01; // hmask[0]: high bit of element 0 set (bit 0), of element 32 clear (bit 1)
    block[32] = 0b1111; // qs[0]: low 2 bits of element 0 (bits 0..2) and element 32 (bits 2..4) = 3
    block[96..104].fill(0x11); // low 4 bits of all 16 scales = 1
    block[104..108].fill(0b1010_1010); // high 2 bits of all 16 scales = 2, so scale = 33 - 32 = 1
    block[108..110].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
    let mut out = [0.0f32; QK_K];
    dequantize_block_q3_k(&block, &mut out);
    assert_eq!((out[0], out[32], out[1]), (1.5, -0.5, -2.0));
}

/// `t(q)·s (+ o)` from a split, in f32 as the device computes it.
fn rebuild(form: split::CodeForm, codes: &[u8], scales: &[f32], offsets: &[f32]) -> Vec<f32> {
    codes
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let g = i / form.group;
            let t = match form.codebook {
                Some(book) => book[q as usize] as f32,
                None => (q as i32 - form.zero) as f32,
            };
            if form.offsets {
                t * scales[g] + offsets[g]
            } else {
                t * scales[g]
            }
        })
        .collect()
}

#[test]
fn split_codes_rebuild_every_type_bit_for_bit() {
    for qtype in QuantType::ALL {
        let bytes = fixture_blocks(qtype);
        let form = qtype.code_form();
        let n = bytes.len() / qtype.block_bytes() * qtype.block_elems();
        let (mut codes, mut scales, mut offsets) =
            (vec![0u8; n], vec![0f32; n / form.group], vec![0f32; n / form.group]);
        split::split_into(qtype, &bytes, &mut codes, &mut scales, &mut offsets).expect("whole blocks split");
        assert!(
            codes.iter().all(|&q| u32::from(q) < 1 << form.bits),
            "{}: a code over {} bits",
            qtype.name(),
            form.bits
        );
        if !form.offsets {
            assert!(
                offsets.iter().all(|&o| o == 0.0),
                "{}: offsets for a type without",
                qtype.name()
            );
        }
        let want = dequantize(qtype.id(), &bytes).expect("fixture decodes");
        let got = rebuild(form, &codes, &scales, &offsets);
        let bad = want
            .iter()
            .zip(&got)
            .position(|(a, b)| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()));
        assert!(bad.is_none(), "{}: element {bad:?} differs", qtype.name());
    }
}

#[test]
fn split_refuses_lengths_that_do_not_match() {
    let bytes = fixture_blocks(QuantType::Q4_0);
    let (mut c, mut s, mut o) = (vec![0u8; 32], vec![0f32; 1], vec![0f32; 1]);
    assert!(split::split_into(QuantType::Q4_0, &bytes[..Q4_0_BYTES], &mut c, &mut s, &mut o).is_some());
    assert!(split::split_into(QuantType::Q4_0, &bytes[..Q4_0_BYTES + 1], &mut c, &mut s, &mut o).is_none());
    assert!(split::split_into(QuantType::Q4_0, &bytes[..2 * Q4_0_BYTES], &mut c, &mut s, &mut o).is_none());
}
