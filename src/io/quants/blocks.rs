//! The per-block decoders: one function per type, each taking one block as a fixed-size array
//! (so every index is in bounds by construction) and writing its elements.

use half::f16;

use super::{
    IQ4_NL_BYTES, IQ4_VALUES, IQ4_XS_BYTES, Q2_K_BYTES, Q3_K_BYTES, Q4_0_BYTES, Q4_1_BYTES, Q4_K_BYTES, Q5_0_BYTES,
    Q5_1_BYTES, Q5_K_BYTES, Q6_K_BYTES, Q8_0_BYTES, QK_K,
};

/// The f16 at `block[at..at + 2]`, widened (exactly) to f32.
#[inline(always)]
fn f16_at(block: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

/// One Q4_0 block (`block_q4_0`; ggml `dequantize_row_q4_0`, gguf-py `Q4_0`).
///
/// Layout (18 bytes): `d: f16` at 0, `qs: [u8; 16]` at 2. Element `j < 16` is the low nibble of
/// `qs[j]`, element `j + 16` its high nibble; each 4-bit code `q` decodes to `x = d·(q − 8)`
/// (the integer `q − 8` first, then one f32 product).
pub fn dequantize_block_q4_0(block: &[u8; Q4_0_BYTES], out: &mut [f32; 32]) {
    let d = f16_at(block, 0);
    let qs = &block[2..];
    let (lo, hi) = out.split_at_mut(16);
    for ((&q, x0), x1) in qs.iter().zip(lo).zip(hi) {
        *x0 = d * ((q & 0x0f) as i32 - 8) as f32;
        *x1 = d * ((q >> 4) as i32 - 8) as f32;
    }
}

/// One Q4_1 block (`block_q4_1`; ggml `dequantize_row_q4_1`, gguf-py `Q4_1`).
///
/// Layout (20 bytes): `d: f16` at 0, `m: f16` at 2, `qs: [u8; 16]` at 4. Element `j < 16` is the
/// low nibble of `qs[j]`, element `j + 16` its high nibble; `x = d·q + m` (product rounded, then
/// the sum).
pub fn dequantize_block_q4_1(block: &[u8; Q4_1_BYTES], out: &mut [f32; 32]) {
    let (d, m) = (f16_at(block, 0), f16_at(block, 2));
    let qs = &block[4..];
    let (lo, hi) = out.split_at_mut(16);
    for ((&q, x0), x1) in qs.iter().zip(lo).zip(hi) {
        *x0 = d * (q & 0x0f) as f32 + m;
        *x1 = d * (q >> 4) as f32 + m;
    }
}

/// One Q5_0 block (`block_q5_0`; ggml `dequantize_row_q5_0`, gguf-py `Q5_0`).
///
/// Layout (22 bytes): `d: f16` at 0, `qh: u32` at 2 (bit `j` is bit 4 of element `j`), `qs: [u8; 16]`
/// at 6 (low nibble of `qs[j]` = bits 0..4 of element `j`, high nibble = of element `j + 16`).
/// The 5-bit code `q` decodes to `x = d·(q − 16)`.
pub fn dequantize_block_q5_0(block: &[u8; Q5_0_BYTES], out: &mut [f32; 32]) {
    let d = f16_at(block, 0);
    let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    let qs = &block[6..];
    let (lo, hi) = out.split_at_mut(16);
    for (j, ((&q, x0), x1)) in qs.iter().zip(lo).zip(hi).enumerate() {
        let q0 = (q & 0x0f) as u32 | ((qh >> j) & 1) << 4;
        let q1 = (q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        *x0 = d * (q0 as i32 - 16) as f32;
        *x1 = d * (q1 as i32 - 16) as f32;
    }
}

/// One Q5_1 block (`block_q5_1`; ggml `dequantize_row_q5_1`, gguf-py `Q5_1`).
///
/// Layout (24 bytes): `d: f16` at 0, `m: f16` at 2, `qh: u32` at 4, `qs: [u8; 16]` at 8, the 5-bit
/// codes packed as in [`dequantize_block_q5_0`]; `x = d·q + m`.
pub fn dequantize_block_q5_1(block: &[u8; Q5_1_BYTES], out: &mut [f32; 32]) {
    let (d, m) = (f16_at(block, 0), f16_at(block, 2));
    let qh = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
    let qs = &block[8..];
    let (lo, hi) = out.split_at_mut(16);
    for (j, ((&q, x0), x1)) in qs.iter().zip(lo).zip(hi).enumerate() {
        let q0 = (q & 0x0f) as u32 | ((qh >> j) & 1) << 4;
        let q1 = (q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        *x0 = d * q0 as f32 + m;
        *x1 = d * q1 as f32 + m;
    }
}

/// One Q8_0 block (`block_q8_0`; ggml `dequantize_row_q8_0`, gguf-py `Q8_0`).
///
/// Layout (34 bytes): `d: f16` at 0, `qs: [i8; 32]` at 2; `x[j] = d·qs[j]`.
pub fn dequantize_block_q8_0(block: &[u8; Q8_0_BYTES], out: &mut [f32; 32]) {
    let d = f16_at(block, 0);
    for (&q, x) in block[2..].iter().zip(out) {
        *x = d * (q as i8) as f32;
    }
}

/// One Q2_K super-block (`block_q2_K`; ggml `dequantize_row_q2_K`, gguf-py `Q2_K`).
///
/// Layout (84 bytes): `scales: [u8; 16]` at 0, `qs: [u8; 64]` at 16, `d: f16` at 80, `dmin: f16` at 82.
/// 16 sub-blocks of 16 elements; sub-block `g` has scale `sc = scales[g] & 15` and min
/// `m = scales[g] >> 4`. The 2-bit codes: element `128·h + 32·s + l` (`h < 2`, `s < 4`, `l < 32`) is
/// bits `2s..2s+2` of `qs[32·h + l]`. `x = (d·sc)·q − (dmin·m)`, each product rounded to f32.
pub fn dequantize_block_q2_k(block: &[u8; Q2_K_BYTES], out: &mut [f32; QK_K]) {
    let (scales, qs) = (&block[..16], &block[16..80]);
    let (d, dmin) = (f16_at(block, 80), f16_at(block, 82));
    for (g, (xs, &sm)) in out.chunks_exact_mut(16).zip(scales).enumerate() {
        let dl = d * (sm & 0x0f) as f32;
        let ml = dmin * (sm >> 4) as f32;
        let (h, s, half) = (g / 8, (g / 2) % 4, g % 2);
        let src = &qs[32 * h + 16 * half..][..16];
        for (x, &q) in xs.iter_mut().zip(src) {
            *x = dl * ((q >> (2 * s)) & 3) as f32 - ml;
        }
    }
}

/// One Q3_K super-block (`block_q3_K`; ggml `dequantize_row_q3_K`, gguf-py `Q3_K`).
///
/// Layout (110 bytes): `hmask: [u8; 32]` at 0, `qs: [u8; 64]` at 32, `scales: [u8; 12]` at 96,
/// `d: f16` at 108. 16 sub-blocks of 16 elements with signed 6-bit scales: scale `g` has low 4 bits
/// = low nibble of `scales[g]` (`g < 8`) or high nibble of `scales[g − 8]` (`g ≥ 8`), and high 2 bits
/// = bits `2·(g / 4)..+2` of `scales[8 + g % 4]`; `sc = that − 32`. Element `i = 128·h + 32·s + l`
/// (`h < 2`, `s < 4`, `l < 32`) has low 2 bits = bits `2s..2s+2` of `qs[32·h + l]` and a high bit =
/// bit `i / 32` of `hmask[l]`; `q = low − 4` when the high bit is 0, `q = low` when it is 1 (so
/// `q ∈ −4..=3`). `x = (d·sc)·q`.
pub fn dequantize_block_q3_k(block: &[u8; Q3_K_BYTES], out: &mut [f32; QK_K]) {
    let (hmask, qs, scales) = (&block[..32], &block[32..96], &block[96..108]);
    let d = f16_at(block, 108);
    for (g, xs) in out.chunks_exact_mut(16).enumerate() {
        let low = if g < 8 { scales[g] & 0x0f } else { scales[g - 8] >> 4 };
        let high = (scales[8 + g % 4] >> (2 * (g / 4))) & 3;
        let dl = d * ((low | high << 4) as i32 - 32) as f32;
        let (h, s, half) = (g / 8, (g / 2) % 4, g % 2);
        let bit = g / 2; // = i / 32 for every element i of this sub-block
        let src = &qs[32 * h + 16 * half..][..16];
        let hm = &hmask[16 * half..][..16];
        for ((x, &q), &m) in xs.iter_mut().zip(src).zip(hm) {
            let low = ((q >> (2 * s)) & 3) as i32;
            let minus = if (m >> bit) & 1 == 0 { 4 } else { 0 };
            *x = dl * (low - minus) as f32;
        }
    }
}

/// The eight 6-bit (scale, min) pairs of a Q4_K / Q5_K super-block from its 12 packed bytes `s`
/// (ggml `get_scale_min_k4`): for `j < 4`, `sc = s[j] & 63`, `m = s[j + 4] & 63`; for `j ≥ 4`,
/// `sc = (s[j + 4] & 15) | (s[j − 4] >> 6) << 4` and `m = (s[j + 4] >> 4) | (s[j] >> 6) << 4`.
#[inline(always)]
fn k4_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | (s[j - 4] >> 6) << 4,
            (s[j + 4] >> 4) | (s[j] >> 6) << 4,
        )
    }
}

/// One Q4_K super-block (`block_q4_K`; ggml `dequantize_row_q4_K`, gguf-py `Q4_K`).
///
/// Layout (144 bytes): `d: f16` at 0, `dmin: f16` at 2, `scales: [u8; 12]` at 4 (eight 6-bit scale /
/// min pairs, see `k4_scale_min`), `qs: [u8; 128]` at 16. 8 sub-blocks of 32 elements: sub-block
/// `2c` is the low nibbles of `qs[32c..32c + 32]`, sub-block `2c + 1` their high nibbles.
/// `x = (d·sc)·q − (dmin·m)`, each product rounded to f32.
pub fn dequantize_block_q4_k(block: &[u8; Q4_K_BYTES], out: &mut [f32; QK_K]) {
    let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
    let (scales, qs) = (&block[4..16], &block[16..144]);
    for (c, (xs, src)) in out.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
        let (lo, hi) = xs.split_at_mut(32);
        let (sc0, m0) = k4_scale_min(scales, 2 * c);
        let (sc1, m1) = k4_scale_min(scales, 2 * c + 1);
        let (d0, dm0) = (d * sc0 as f32, dmin * m0 as f32);
        let (d1, dm1) = (d * sc1 as f32, dmin * m1 as f32);
        for ((&q, x0), x1) in src.iter().zip(lo).zip(hi) {
            *x0 = d0 * (q & 0x0f) as f32 - dm0;
            *x1 = d1 * (q >> 4) as f32 - dm1;
        }
    }
}

/// One Q5_K super-block (`block_q5_K`; ggml `dequantize_row_q5_K`, gguf-py `Q5_K`).
///
/// Layout (176 bytes): `d: f16` at 0, `dmin: f16` at 2, `scales: [u8; 12]` at 4 (as Q4_K),
/// `qh: [u8; 32]` at 16, `qs: [u8; 128]` at 48. 8 sub-blocks of 32: the low 4 bits of element `l` of
/// sub-block `j` are packed like Q4_K's codes, bit 4 is bit `j` of `qh[l]`.
/// `x = (d·sc)·q − (dmin·m)`, each product rounded to f32.
pub fn dequantize_block_q5_k(block: &[u8; Q5_K_BYTES], out: &mut [f32; QK_K]) {
    let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
    let (scales, qh, qs) = (&block[4..16], &block[16..48], &block[48..176]);
    for (c, (xs, src)) in out.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
        let (lo, hi) = xs.split_at_mut(32);
        let (sc0, m0) = k4_scale_min(scales, 2 * c);
        let (sc1, m1) = k4_scale_min(scales, 2 * c + 1);
        let (d0, dm0) = (d * sc0 as f32, dmin * m0 as f32);
        let (d1, dm1) = (d * sc1 as f32, dmin * m1 as f32);
        for (((&q, &h), x0), x1) in src.iter().zip(qh).zip(lo).zip(hi) {
            let q0 = (q & 0x0f) | ((h >> (2 * c)) & 1) << 4;
            let q1 = (q >> 4) | ((h >> (2 * c + 1)) & 1) << 4;
            *x0 = d0 * q0 as f32 - dm0;
            *x1 = d1 * q1 as f32 - dm1;
        }
    }
}

/// One Q6_K super-block (`block_q6_K`; ggml `dequantize_row_q6_K`, gguf-py `Q6_K`).
///
/// Layout (210 bytes): `ql: [u8; 128]` at 0, `qh: [u8; 64]` at 128, `scales: [i8; 16]` at 192,
/// `d: f16` at 208. Two halves of 128 elements; in half `h`, element `64·n + l` (`n < 2`, `l < 64`)
/// has low 4 bits = nibble `n` of `ql[64h + l]`, and element `32·s + l` (`s < 4`, `l < 32`) has high
/// 2 bits = bits `2s..2s+2` of `qh[32h + l]`; `q = that 6-bit code − 32`. 16 sub-blocks of 16 with
/// scale `scales[g]`: `x = (d·scales[g])·q`.
pub fn dequantize_block_q6_k(block: &[u8; Q6_K_BYTES], out: &mut [f32; QK_K]) {
    let (ql, qh, scales) = (&block[..128], &block[128..192], &block[192..208]);
    let d = f16_at(block, 208);
    for (h, (xs, (ql, qh))) in out
        .chunks_exact_mut(128)
        .zip(ql.chunks_exact(64).zip(qh.chunks_exact(32)))
        .enumerate()
    {
        // element 32·s + l of this half, for s < 4 and l < 32
        for (s, x32) in xs.chunks_exact_mut(32).enumerate() {
            let low = &ql[32 * (s % 2)..][..32];
            let shift = 4 * (s / 2);
            for (half, x16) in x32.chunks_exact_mut(16).enumerate() {
                let dl = d * (scales[8 * h + 2 * s + half] as i8) as f32;
                let (low, high) = (&low[16 * half..][..16], &qh[16 * half..][..16]);
                for ((x, &l), &hb) in x16.iter_mut().zip(low).zip(high) {
                    let q = ((l >> shift) & 0x0f) | ((hb >> (2 * s)) & 3) << 4;
                    *x = dl * (q as i32 - 32) as f32;
                }
            }
        }
    }
}

/// One IQ4_NL block (`block_iq4_nl`; ggml `dequantize_row_iq4_nl`, gguf-py `IQ4_NL`).
///
/// Layout (18 bytes): `d: f16` at 0, `qs: [u8; 16]` at 2, the 4-bit codes packed as in Q4_0.
/// `x = d·IQ4_VALUES[q]`.
pub fn dequantize_block_iq4_nl(block: &[u8; IQ4_NL_BYTES], out: &mut [f32; 32]) {
    let d = f16_at(block, 0);
    let (lo, hi) = out.split_at_mut(16);
    for ((&q, x0), x1) in block[2..].iter().zip(lo).zip(hi) {
        *x0 = d * IQ4_VALUES[(q & 0x0f) as usize] as f32;
        *x1 = d * IQ4_VALUES[(q >> 4) as usize] as f32;
    }
}

/// One IQ4_XS super-block (`block_iq4_xs`; ggml `dequantize_row_iq4_xs`, gguf-py `IQ4_XS`).
///
/// Layout (136 bytes): `d: f16` at 0, `scales_h: u16` at 2, `scales_l: [u8; 4]` at 4,
/// `qs: [u8; 128]` at 8. 8 sub-blocks of 32: sub-block `j` has the 6-bit scale with low 4 bits =
/// nibble `j % 2` of `scales_l[j / 2]` and high 2 bits = bits `2j..2j+2` of `scales_h`, `sc = that − 32`;
/// its codes are `qs[16j..16j + 16]`, low nibbles for elements 0..16 and high nibbles for 16..32.
/// `x = (d·sc)·IQ4_VALUES[q]`.
pub fn dequantize_block_iq4_xs(block: &[u8; IQ4_XS_BYTES], out: &mut [f32; QK_K]) {
    let d = f16_at(block, 0);
    let scales_h = u16::from_le_bytes([block[2], block[3]]);
    let (scales_l, qs) = (&block[4..8], &block[8..136]);
    for (j, (xs, src)) in out.chunks_exact_mut(32).zip(qs.chunks_exact(16)).enumerate() {
        let low = (scales_l[j / 2] >> (4 * (j % 2))) & 0x0f;
        let high = ((scales_h >> (2 * j)) & 3) as u8;
        let dl = d * ((low | high << 4) as i32 - 32) as f32;
        let (lo, hi) = xs.split_at_mut(16);
        for ((&q, x0), x1) in src.iter().zip(lo).zip(hi) {
            *x0 = dl * IQ4_VALUES[(q & 0x0f) as usize] as f32;
            *x1 = dl * IQ4_VALUES[(q >> 4) as usize] as f32;
        }
    }
}
