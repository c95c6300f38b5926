//! Dequantisation of ggml block-quantised tensor data to f32.
//!
//! Types: the 32-element blocks Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and IQ4_NL, and the 256-element
//! super-blocks ("k-quants") Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS. The formats are those of
//! ggml's block structs (`ggml-common.h`) and `dequantize_row_*` functions (`ggml-quants.c`), as
//! implemented by gguf-py's `gguf/quants.py` (`<TYPE>.dequantize_blocks`, gguf 0.19.0), which is
//! the reference here: every function below gives results bit-identical to
//! `gguf.quants.dequantize`, checked against `tests/fixtures/quants/` (written by
//! `scripts/make_reference.py --only quants`).
//!
//! Precision: gguf-py computes in numpy float32, one operation at a time; this module does the same
//! operations in f32 in the same order (`f16` fields widened exactly to f32, integer codes converted
//! exactly). Every product involved is in fact exact in f32 (an f16 scale has 11 significant bits,
//! a sub-block scale at most 7 and a code at most 7, never more than 24 together), so the only
//! rounding is the final `+ m` / `− dmin·m` of Q4_1, Q5_1, Q2_K, Q4_K and Q5_K, and a fused
//! multiply-add or another grouping of the products would give the same numbers. What the form of
//! the formula does decide is the sign of zero results, which the tests compare too: Q4_0 is
//! `d·(q − 8)` (−0.0 when `d < 0` and `q = 8`), not `d·q − 8·d` (+0.0); Q6_K is `(d·sc)·q`, not
//! `d·(sc·q)`; the k-quants with a min are `(d·sc)·q − (dmin·m)`, not `−(dmin·m − (d·sc)·q)`.
//!
//! Layout notation: all multi-byte fields are little-endian; `f16` is IEEE binary16; "low nibble"
//! is bits 0..4 of a byte and "high nibble" bits 4..8. Offsets are in bytes from the block start.
//! Corrupt data cannot make these functions panic: a non-finite f16 scale just yields non-finite
//! values, [`dequantize`] / [`dequantize_into`] check every length up front, and the per-block
//! functions take fixed-size arrays, so all their indices are in bounds by construction.

pub use blocks::*;

mod blocks;
pub mod quantize;
pub mod split;
#[cfg(test)]
mod tests;

/// Elements per k-quant super-block (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// The IQ4_NL / IQ4_XS non-linear 4-bit codebook (ggml's `kvalues_iq4nl`): code `q` stands for
/// `IQ4_VALUES[q]`, times the block or sub-block scale.
pub const IQ4_VALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// The block-quantised ggml types decoded here (ids as in ggml's `enum ggml_type`). Variants are
/// spelled as ggml spells the types.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// id 2: 32 elements in 18 bytes.
    Q4_0,
    /// id 3: 32 elements in 20 bytes.
    Q4_1,
    /// id 6: 32 elements in 22 bytes.
    Q5_0,
    /// id 7: 32 elements in 24 bytes.
    Q5_1,
    /// id 8: 32 elements in 34 bytes.
    Q8_0,
    /// id 10: 256 elements in 84 bytes.
    Q2_K,
    /// id 11: 256 elements in 110 bytes.
    Q3_K,
    /// id 12: 256 elements in 144 bytes.
    Q4_K,
    /// id 13: 256 elements in 176 bytes.
    Q5_K,
    /// id 14: 256 elements in 210 bytes.
    Q6_K,
    /// id 20: 32 elements in 18 bytes.
    IQ4_NL,
    /// id 23: 256 elements in 136 bytes.
    IQ4_XS,
}

impl QuantType {
    /// Every supported type, in ggml id order.
    pub const ALL: [QuantType; 12] = [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q2_K,
        QuantType::Q3_K,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
        QuantType::IQ4_NL,
        QuantType::IQ4_XS,
    ];

    /// The type with this ggml type id, if it is one decoded here.
    pub fn from_id(type_id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == type_id)
    }

    /// The ggml type id (`enum ggml_type`, also GGUF's tensor type field).
    pub fn id(self) -> u32 {
        match self {
            QuantType::Q4_0 => 2,
            QuantType::Q4_1 => 3,
            QuantType::Q5_0 => 6,
            QuantType::Q5_1 => 7,
            QuantType::Q8_0 => 8,
            QuantType::Q2_K => 10,
            QuantType::Q3_K => 11,
            QuantType::Q4_K => 12,
            QuantType::Q5_K => 13,
            QuantType::Q6_K => 14,
            QuantType::IQ4_NL => 20,
            QuantType::IQ4_XS => 23,
        }
    }

    /// The name as ggml / llama.cpp print it, e.g. `Q4_K`.
    pub fn name(self) -> &'static str {
        match self {
            QuantType::Q4_0 => "Q4_0",
            QuantType::Q4_1 => "Q4_1",
            QuantType::Q5_0 => "Q5_0",
            QuantType::Q5_1 => "Q5_1",
            QuantType::Q8_0 => "Q8_0",
            QuantType::Q2_K => "Q2_K",
            QuantType::Q3_K => "Q3_K",
            QuantType::Q4_K => "Q4_K",
            QuantType::Q5_K => "Q5_K",
            QuantType::Q6_K => "Q6_K",
            QuantType::IQ4_NL => "IQ4_NL",
            QuantType::IQ4_XS => "IQ4_XS",
        }
    }

    /// Elements per block (32, or [`QK_K`] = 256 for the k-quants and IQ4_XS).
    pub fn block_elems(self) -> usize {
        match self {
            QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q5_0 | QuantType::Q5_1 | QuantType::Q8_0 => 32,
            QuantType::IQ4_NL => 32,
            QuantType::Q2_K | QuantType::Q3_K | QuantType::Q4_K | QuantType::Q5_K | QuantType::Q6_K => QK_K,
            QuantType::IQ4_XS => QK_K,
        }
    }

    /// Bytes per block (gguf-py's `GGML_QUANT_SIZES[type][1]`).
    pub fn block_bytes(self) -> usize {
        match self {
            QuantType::Q4_0 => Q4_0_BYTES,
            QuantType::Q4_1 => Q4_1_BYTES,
            QuantType::Q5_0 => Q5_0_BYTES,
            QuantType::Q5_1 => Q5_1_BYTES,
            QuantType::Q8_0 => Q8_0_BYTES,
            QuantType::Q2_K => Q2_K_BYTES,
            QuantType::Q3_K => Q3_K_BYTES,
            QuantType::Q4_K => Q4_K_BYTES,
            QuantType::Q5_K => Q5_K_BYTES,
            QuantType::Q6_K => Q6_K_BYTES,
            QuantType::IQ4_NL => IQ4_NL_BYTES,
            QuantType::IQ4_XS => IQ4_XS_BYTES,
        }
    }
}

/// Bytes per Q4_0 block.
pub const Q4_0_BYTES: usize = 2 + 16;
/// Bytes per Q4_1 block.
pub const Q4_1_BYTES: usize = 2 + 2 + 16;
/// Bytes per Q5_0 block.
pub const Q5_0_BYTES: usize = 2 + 4 + 16;
/// Bytes per Q5_1 block.
pub const Q5_1_BYTES: usize = 2 + 2 + 4 + 16;
/// Bytes per Q8_0 block.
pub const Q8_0_BYTES: usize = 2 + 32;
/// Bytes per Q2_K super-block.
pub const Q2_K_BYTES: usize = QK_K / 16 + QK_K / 4 + 2 + 2;
/// Bytes per Q3_K super-block.
pub const Q3_K_BYTES: usize = QK_K / 8 + QK_K / 4 + 12 + 2;
/// Bytes per Q4_K super-block.
pub const Q4_K_BYTES: usize = 2 + 2 + 12 + QK_K / 2;
/// Bytes per Q5_K super-block.
pub const Q5_K_BYTES: usize = 2 + 2 + 12 + QK_K / 8 + QK_K / 2;
/// Bytes per Q6_K super-block.
pub const Q6_K_BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;
/// Bytes per IQ4_NL block.
pub const IQ4_NL_BYTES: usize = 2 + 16;
/// Bytes per IQ4_XS super-block.
pub const IQ4_XS_BYTES: usize = 2 + 2 + QK_K / 64 + QK_K / 2;

/// `(elements per block, bytes per block)` of a ggml type id decoded here; `None` for any other id
/// (including F32 / F16 / BF16, which are not block-quantised).
pub fn block_layout(type_id: u32) -> Option<(usize, usize)> {
    QuantType::from_id(type_id).map(|t| (t.block_elems(), t.block_bytes()))
}

/// Dequantises `bytes`, a whole number of blocks of ggml type `type_id`, to f32 (element order as
/// stored). `None` if the type is not one of [`QuantType::ALL`] or `bytes.len()` is not a multiple
/// of its block size; an empty input gives an empty vector.
pub fn dequantize(type_id: u32, bytes: &[u8]) -> Option<Vec<f32>> {
    let qtype = QuantType::from_id(type_id)?;
    let (elems, block) = (qtype.block_elems(), qtype.block_bytes());
    if !bytes.len().is_multiple_of(block) {
        return None;
    }
    let mut out = vec![0.0f32; bytes.len() / block * elems];
    dequantize_into(qtype, bytes, &mut out)?;
    Some(out)
}

/// Dequantises `bytes` (whole blocks of `qtype`) into `out`, which must hold exactly
/// `bytes.len() / block_bytes * block_elems` values; `None` (and `out` untouched) otherwise. For
/// decoding a large tensor in pieces or in parallel: any split at block boundaries gives the same
/// values as one call.
#[must_use]
pub fn dequantize_into(qtype: QuantType, bytes: &[u8], out: &mut [f32]) -> Option<()> {
    match qtype {
        QuantType::Q4_0 => decode_blocks(bytes, out, dequantize_block_q4_0),
        QuantType::Q4_1 => decode_blocks(bytes, out, dequantize_block_q4_1),
        QuantType::Q5_0 => decode_blocks(bytes, out, dequantize_block_q5_0),
        QuantType::Q5_1 => decode_blocks(bytes, out, dequantize_block_q5_1),
        QuantType::Q8_0 => decode_blocks(bytes, out, dequantize_block_q8_0),
        QuantType::Q2_K => decode_blocks(bytes, out, dequantize_block_q2_k),
        QuantType::Q3_K => decode_blocks(bytes, out, dequantize_block_q3_k),
        QuantType::Q4_K => decode_blocks(bytes, out, dequantize_block_q4_k),
        QuantType::Q5_K => decode_blocks(bytes, out, dequantize_block_q5_k),
        QuantType::Q6_K => decode_blocks(bytes, out, dequantize_block_q6_k),
        QuantType::IQ4_NL => decode_blocks(bytes, out, dequantize_block_iq4_nl),
        QuantType::IQ4_XS => decode_blocks(bytes, out, dequantize_block_iq4_xs),
    }
}

/// Runs a per-block decoder over `bytes`, block `i` into `out[i·E .. (i+1)·E]`, after checking that
/// both lengths are whole and match.
fn decode_blocks<const B: usize, const E: usize>(
    bytes: &[u8],
    out: &mut [f32],
    decode: impl Fn(&[u8; B], &mut [f32; E]),
) -> Option<()> {
    let (blocks, rest) = bytes.as_chunks::<B>();
    let (outs, out_rest) = out.as_chunks_mut::<E>();
    if !rest.is_empty() || !out_rest.is_empty() || blocks.len() != outs.len() {
        return None;
    }
    for (block, values) in blocks.iter().zip(outs) {
        decode(block, values);
    }
    Some(())
}
