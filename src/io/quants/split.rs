//! The block types as integer codes and per-group scales (and offsets): the layout a GPU reads to
//! dequantise a matrix without the host (`model::dequant`). Every type decoded here fits one
//! form: element `x = t(q)·s + o`, where `q` is an unsigned code of a few bits, `s` and `o` are
//! f32 per group of consecutive elements, and `t(q)` is `q − zero` or, for the IQ4 types, the
//! codebook entry `IQ4_VALUES[q]`.
//!
//! The numbers are the decoders' ([`super::dequantize_into`]): `s` is the same f32 product
//! (`d·sc`), `t(q)·s` the same product (in the other order, which IEEE multiplication does not
//! see), and the offset is the decoder's subtrahend negated (`a − b` and `a + (−b)` are the same
//! IEEE operation), so the form reproduces every value bit for bit, signs of zero included; the
//! tests check it on gguf-py's blocks.

use half::f16;

use super::{
    IQ4_NL_BYTES, IQ4_VALUES, IQ4_XS_BYTES, Q2_K_BYTES, Q3_K_BYTES, Q4_0_BYTES, Q4_1_BYTES, Q4_K_BYTES, Q5_0_BYTES,
    Q5_1_BYTES, Q5_K_BYTES, Q6_K_BYTES, Q8_0_BYTES, QK_K, QuantType,
};

/// The code form of a type: `x = t(q)·s + o` per group of `group` elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeForm {
    /// Bits per code.
    pub bits: u32,
    /// Consecutive elements sharing a scale (and offset).
    pub group: usize,
    /// `t(q) = q − zero` (when there is no codebook).
    pub zero: i32,
    /// `t(q) = codebook[q]` instead.
    pub codebook: Option<&'static [i8]>,
    /// Whether groups have offsets (else `o = 0` and none are stored).
    pub offsets: bool,
}

impl QuantType {
    /// How this type splits into codes (see [`split_into`]).
    pub fn code_form(self) -> CodeForm {
        let form = |bits, group, zero, offsets| CodeForm {
            bits,
            group,
            zero,
            codebook: None,
            offsets,
        };
        match self {
            QuantType::Q4_0 => form(4, 32, 8, false),
            QuantType::Q4_1 => form(4, 32, 0, true),
            QuantType::Q5_0 => form(5, 32, 16, false),
            QuantType::Q5_1 => form(5, 32, 0, true),
            QuantType::Q8_0 => form(8, 32, 128, false),
            QuantType::Q2_K => form(2, 16, 0, true),
            QuantType::Q3_K => form(3, 16, 4, false),
            QuantType::Q4_K => form(4, 32, 0, true),
            QuantType::Q5_K => form(5, 32, 0, true),
            QuantType::Q6_K => form(6, 16, 32, false),
            QuantType::IQ4_NL | QuantType::IQ4_XS => CodeForm {
                codebook: Some(&IQ4_VALUES),
                ..form(4, 32, 0, false)
            },
        }
    }
}

/// Splits `bytes` (whole blocks of `qtype`) into one code per element (`codes`), one scale per
/// group (`scales`) and one offset per group (`offsets`, zeros for types without). `None`, with
/// the outputs in an unspecified state, unless the lengths match.
#[must_use]
pub fn split_into(
    qtype: QuantType,
    bytes: &[u8],
    codes: &mut [u8],
    scales: &mut [f32],
    offsets: &mut [f32],
) -> Option<()> {
    let out = Split { codes, scales, offsets };
    match qtype {
        QuantType::Q4_0 => out.blocks(bytes, split_q4_0),
        QuantType::Q4_1 => out.blocks(bytes, split_q4_1),
        QuantType::Q5_0 => out.blocks(bytes, split_q5_0),
        QuantType::Q5_1 => out.blocks(bytes, split_q5_1),
        QuantType::Q8_0 => out.blocks(bytes, split_q8_0),
        QuantType::Q2_K => out.blocks(bytes, split_q2_k),
        QuantType::Q3_K => out.blocks(bytes, split_q3_k),
        QuantType::Q4_K => out.blocks(bytes, split_q4_k),
        QuantType::Q5_K => out.blocks(bytes, split_q5_k),
        QuantType::Q6_K => out.blocks(bytes, split_q6_k),
        QuantType::IQ4_NL => out.blocks(bytes, split_iq4_nl),
        QuantType::IQ4_XS => out.blocks(bytes, split_iq4_xs),
    }
}

struct Split<'a> {
    codes: &'a mut [u8],
    scales: &'a mut [f32],
    offsets: &'a mut [f32],
}

/// One block's share of the outputs: `E` codes and `G` groups.
struct Block<'a, const E: usize, const G: usize> {
    codes: &'a mut [u8; E],
    scales: &'a mut [f32; G],
    offsets: &'a mut [f32; G],
}

impl Split<'_> {
    /// Runs a per-block splitter over whole blocks after checking every length.
    fn blocks<const B: usize, const E: usize, const G: usize>(
        self,
        bytes: &[u8],
        split: impl Fn(&[u8; B], Block<'_, E, G>),
    ) -> Option<()> {
        let (blocks, rest) = bytes.as_chunks::<B>();
        let (codes, codes_rest) = self.codes.as_chunks_mut::<E>();
        let (scales, scales_rest) = self.scales.as_chunks_mut::<G>();
        let (offsets, offsets_rest) = self.offsets.as_chunks_mut::<G>();
        let n = blocks.len();
        if !(rest.is_empty() && codes_rest.is_empty() && scales_rest.is_empty() && offsets_rest.is_empty())
            || codes.len() != n
            || scales.len() != n
            || offsets.len() != n
        {
            return None;
        }
        for (((block, codes), scales), offsets) in blocks.iter().zip(codes).zip(scales).zip(offsets) {
            offsets.fill(0.0);
            split(block, Block { codes, scales, offsets });
        }
        Some(())
    }
}

/// The f16 at `block[at..at + 2]`, widened (exactly) to f32.
fn f16_at(block: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

/// Q4_0's and IQ4_NL's code order: the low nibbles of `qs` are elements 0..16, the high ones 16..32.
fn nibbles_32(qs: &[u8], codes: &mut [u8]) {
    let (lo, hi) = codes.split_at_mut(16);
    for ((&q, c0), c1) in qs.iter().zip(lo).zip(hi) {
        *c0 = q & 0x0f;
        *c1 = q >> 4;
    }
}

/// The 5-bit codes of Q5_0 / Q5_1: nibbles as Q4_0, bit 4 of element `j` is bit `j` of `qh`.
fn codes_5bit(qs: &[u8], qh: u32, codes: &mut [u8; 32]) {
    nibbles_32(qs, codes);
    for (j, c) in codes.iter_mut().enumerate() {
        *c |= (((qh >> j) & 1) << 4) as u8;
    }
}

fn split_q4_0(block: &[u8; Q4_0_BYTES], out: Block<'_, 32, 1>) {
    out.scales[0] = f16_at(block, 0);
    nibbles_32(&block[2..], out.codes);
}

fn split_q4_1(block: &[u8; Q4_1_BYTES], out: Block<'_, 32, 1>) {
    (out.scales[0], out.offsets[0]) = (f16_at(block, 0), f16_at(block, 2));
    nibbles_32(&block[4..], out.codes);
}

fn split_q5_0(block: &[u8; Q5_0_BYTES], out: Block<'_, 32, 1>) {
    out.scales[0] = f16_at(block, 0);
    let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    codes_5bit(&block[6..], qh, out.codes);
}

fn split_q5_1(block: &[u8; Q5_1_BYTES], out: Block<'_, 32, 1>) {
    (out.scales[0], out.offsets[0]) = (f16_at(block, 0), f16_at(block, 2));
    let qh = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
    codes_5bit(&block[8..], qh, out.codes);
}

fn split_q8_0(block: &[u8; Q8_0_BYTES], out: Block<'_, 32, 1>) {
    out.scales[0] = f16_at(block, 0);
    // The signed byte q as the unsigned code q + 128 (zero 128).
    for (&q, c) in block[2..].iter().zip(out.codes.iter_mut()) {
        *c = q ^ 0x80;
    }
}

fn split_q2_k(block: &[u8; Q2_K_BYTES], out: Block<'_, QK_K, 16>) {
    let (scales, qs) = (&block[..16], &block[16..80]);
    let (d, dmin) = (f16_at(block, 80), f16_at(block, 82));
    for (g, (codes, &sm)) in out.codes.chunks_exact_mut(16).zip(scales).enumerate() {
        out.scales[g] = d * (sm & 0x0f) as f32;
        out.offsets[g] = -(dmin * (sm >> 4) as f32);
        let (h, s, half) = (g / 8, (g / 2) % 4, g % 2);
        for (c, &q) in codes.iter_mut().zip(&qs[32 * h + 16 * half..][..16]) {
            *c = (q >> (2 * s)) & 3;
        }
    }
}

fn split_q3_k(block: &[u8; Q3_K_BYTES], out: Block<'_, QK_K, 16>) {
    let (hmask, qs, scales) = (&block[..32], &block[32..96], &block[96..108]);
    let d = f16_at(block, 108);
    for (g, codes) in out.codes.chunks_exact_mut(16).enumerate() {
        let low = if g < 8 { scales[g] & 0x0f } else { scales[g - 8] >> 4 };
        let high = (scales[8 + g % 4] >> (2 * (g / 4))) & 3;
        out.scales[g] = d * ((low | high << 4) as i32 - 32) as f32;
        let (h, s, half) = (g / 8, (g / 2) % 4, g % 2);
        let bit = g / 2;
        let (src, hm) = (&qs[32 * h + 16 * half..][..16], &hmask[16 * half..][..16]);
        // The decoder's `low − (hbit ? 0 : 4)` is `code − 4` with code = low + 4·hbit.
        for ((c, &q), &m) in codes.iter_mut().zip(src).zip(hm) {
            *c = ((q >> (2 * s)) & 3) | ((m >> bit) & 1) << 2;
        }
    }
}

/// Q4_K's and Q5_K's scales and offsets: sub-block `j` has `d·sc_j` and `−(dmin·m_j)`.
fn k4_groups(block: &[u8], scales: &mut [f32; 8], offsets: &mut [f32; 8]) {
    let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
    let s = &block[4..16];
    for j in 0..8 {
        let (sc, m) = if j < 4 {
            (s[j] & 63, s[j + 4] & 63)
        } else {
            (
                (s[j + 4] & 0x0f) | (s[j - 4] >> 6) << 4,
                (s[j + 4] >> 4) | (s[j] >> 6) << 4,
            )
        };
        scales[j] = d * sc as f32;
        offsets[j] = -(dmin * m as f32);
    }
}

/// Q4_K's code order: sub-block `2c` is the low nibbles of `qs[32c..32c + 32]`, `2c + 1` the high.
fn k4_nibbles(qs: &[u8], codes: &mut [u8; QK_K]) {
    for (xs, src) in codes.chunks_exact_mut(64).zip(qs.chunks_exact(32)) {
        let (lo, hi) = xs.split_at_mut(32);
        for ((&q, c0), c1) in src.iter().zip(lo).zip(hi) {
            *c0 = q & 0x0f;
            *c1 = q >> 4;
        }
    }
}

fn split_q4_k(block: &[u8; Q4_K_BYTES], out: Block<'_, QK_K, 8>) {
    k4_groups(block, out.scales, out.offsets);
    k4_nibbles(&block[16..144], out.codes);
}

fn split_q5_k(block: &[u8; Q5_K_BYTES], out: Block<'_, QK_K, 8>) {
    k4_groups(block, out.scales, out.offsets);
    let qh = &block[16..48];
    k4_nibbles(&block[48..176], out.codes);
    for (j, sub) in out.codes.chunks_exact_mut(32).enumerate() {
        for (c, &h) in sub.iter_mut().zip(qh) {
            *c |= ((h >> j) & 1) << 4;
        }
    }
}

fn split_q6_k(block: &[u8; Q6_K_BYTES], out: Block<'_, QK_K, 16>) {
    let (ql, qh, scales) = (&block[..128], &block[128..192], &block[192..208]);
    let d = f16_at(block, 208);
    for (s, &sc) in out.scales.iter_mut().zip(scales) {
        *s = d * (sc as i8) as f32;
    }
    // Each half of 128: element 32·s + l has low bits from ql[32·(s % 2) + l], high from qh[l].
    for (xs, (ql, qh)) in out
        .codes
        .chunks_exact_mut(128)
        .zip(ql.chunks_exact(64).zip(qh.chunks_exact(32)))
    {
        for (s, x32) in xs.chunks_exact_mut(32).enumerate() {
            let (low, shift) = (&ql[32 * (s % 2)..][..32], 4 * (s / 2));
            for ((c, &l), &hb) in x32.iter_mut().zip(low).zip(qh) {
                *c = ((l >> shift) & 0x0f) | ((hb >> (2 * s)) & 3) << 4;
            }
        }
    }
}

fn split_iq4_nl(block: &[u8; IQ4_NL_BYTES], out: Block<'_, 32, 1>) {
    out.scales[0] = f16_at(block, 0);
    nibbles_32(&block[2..], out.codes);
}

fn split_iq4_xs(block: &[u8; IQ4_XS_BYTES], out: Block<'_, QK_K, 8>) {
    let d = f16_at(block, 0);
    let scales_h = u16::from_le_bytes([block[2], block[3]]);
    let (scales_l, qs) = (&block[4..8], &block[8..136]);
    for (j, (codes, src)) in out.codes.chunks_exact_mut(32).zip(qs.chunks_exact(16)).enumerate() {
        let low = (scales_l[j / 2] >> (4 * (j % 2))) & 0x0f;
        let high = ((scales_h >> (2 * j)) & 3) as u8;
        out.scales[j] = d * ((low | high << 4) as i32 - 32) as f32;
        nibbles_32(src, codes);
    }
}
