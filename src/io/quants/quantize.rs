//! Quantisation of f32 values to ggml's Q8_0, Q4_K and Q6_K blocks, for writing GGUF files.
//!
//! Each function gives exactly the bytes of llama.cpp's reference quantiser of the same type
//! (`quantize_row_q8_0_ref`, `quantize_row_q4_K_ref`, `quantize_row_q6_K_ref` in `ggml-quants.c`),
//! which is what `llama-quantize` (via `ggml_quantize_chunk`) uses when it is given no importance
//! matrix. Checked against `tests/fixtures/quantize/` (written by
//! `scripts/make_reference.py --only quantize`, which runs those functions of the llama.cpp
//! vendored by llama-cpp-python 0.3.36). The block layouts are the ones the per-block dequantisers
//! (`blocks.rs`) document, and [`super::dequantize`] of the output approximates the input.
//!
//! Bit-exactness needs the same f32 operations in the same order as the C code, which is compiled
//! without fast-math and (ggml-base has no `-march` flags) without fused multiply-adds on x86-64;
//! every intermediate is f32, never f64, and sums are accumulated left to right. In particular:
//!
//! * `nearest_int` rounds by adding 1.5·2²³ and reading the low mantissa bits, i.e. to the nearest
//!   integer with ties to even (not `f32::round`, which rounds ties away from zero; Q8_0 does use
//!   that one, C's `roundf`).
//! * A product such as `w·l·l` (f32 times an integer code, twice) is `(w·l)·l`, each step rounded.
//! * `d` and `dmin` are rounded to f16 (nearest, ties to even; NaN to the quiet NaN `0x7e00` with
//!   its sign), and the final codes are recomputed from the *rounded* scales, as in C.
//! * Integer-to-byte conversions wrap (`as u8` / `as i8`), as C's do on the targets llama.cpp
//!   supports.
//!
//! Non-finite or extreme inputs never panic and never produce out-of-range fields, but the block
//! does not represent them usefully. The bytes are still those of llama.cpp's x86-64 build, with
//! the one exception noted for Q4_K / Q6_K (checked on the fixture's NaN, inf and extreme blocks and
//! on larger fuzz sets), although some of these cases are undefined behaviour in C (out-of-range
//! float-to-integer conversions):
//! * Q8_0: a block containing ±inf gets `d = +inf` and all codes 0; a block whose `max |x| / 127`
//!   exceeds the f16 range gets `d = +inf` and normal codes. A NaN is skipped by the running
//!   maximum only in part (`max(a, NaN)` is NaN, `max(NaN, b)` is `b`, as C's `MAX` macro), so the
//!   scale comes from the elements after the last NaN; the NaN elements get code 0, and codes that
//!   overflow a byte are converted like x86-64's `cvttss2si` followed by truncation to 8 bits.
//! * Q4_K / Q6_K: NaN or infinite values make the block's scales NaN, infinite or zero. The code of
//!   a NaN element comes from NaN payload bits (`nearest_int` reads the mantissa); where two NaNs
//!   meet in one operation (a NaN input in a block whose f16 scales overflowed), which payload
//!   survives depends on the compiler's operand order, so such elements' 4-bit codes can differ
//!   from llama.cpp's (seen in Q4_K on random bit patterns; every other byte still matched).
//!
//! An all-zero block is all zero bytes in every type (so is a Q6_K block whose values are all below
//! about 3.2e-14 in magnitude: every group's fitted scale, about max |x| / 32, is then below ggml's
//! `GROUP_MAX_EPS` = 1e-15).

use half::f16;

use super::{Q4_K_BYTES, Q6_K_BYTES, Q8_0_BYTES, QK_K, QuantType};

/// The types [`quantize`] can write.
pub const QUANTIZE_TYPES: [QuantType; 3] = [QuantType::Q8_0, QuantType::Q4_K, QuantType::Q6_K];

/// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below this is all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Quantises `values` (a whole number of blocks of `qtype`: 32 values for Q8_0, [`QK_K`] = 256 for
/// Q4_K and Q6_K) to that type's blocks, in order. `None` for any other type or a length that is not
/// a multiple of the block size; an empty input gives an empty vector.
pub fn quantize(qtype: QuantType, values: &[f32]) -> Option<Vec<u8>> {
    if !QUANTIZE_TYPES.contains(&qtype) || !values.len().is_multiple_of(qtype.block_elems()) {
        return None;
    }
    let mut out = vec![0u8; values.len() / qtype.block_elems() * qtype.block_bytes()];
    quantize_into(qtype, values, &mut out)?;
    Some(out)
}

/// Quantises `values` (whole blocks of `qtype`) into `out`, which must hold exactly
/// `values.len() / block_elems * block_bytes` bytes; `None` (and `out` untouched) otherwise, or
/// when `qtype` is not one of [`QUANTIZE_TYPES`]. Every block is independent, so any split at
/// block boundaries (e.g. by rows, in parallel) gives the same bytes as one call.
#[must_use]
pub fn quantize_into(qtype: QuantType, values: &[f32], out: &mut [u8]) -> Option<()> {
    match qtype {
        QuantType::Q8_0 => encode_blocks(values, out, quantize_block_q8_0),
        QuantType::Q4_K => encode_blocks(values, out, quantize_block_q4_k),
        QuantType::Q6_K => encode_blocks(values, out, quantize_block_q6_k),
        _ => None,
    }
}

/// Runs a per-block encoder over `values`, block `i` into `out[i·B .. (i+1)·B]`, after checking that
/// both lengths are whole and match.
fn encode_blocks<const E: usize, const B: usize>(
    values: &[f32],
    out: &mut [u8],
    encode: impl Fn(&[f32; E], &mut [u8; B]),
) -> Option<()> {
    let (xs, rest) = values.as_chunks::<E>();
    let (outs, out_rest) = out.as_chunks_mut::<B>();
    if !rest.is_empty() || !out_rest.is_empty() || xs.len() != outs.len() {
        return None;
    }
    for (x, block) in xs.iter().zip(outs) {
        encode(x, block);
    }
    Some(())
}

/// ggml's `nearest_int`: `fval` rounded to the nearest integer, ties to even, for
/// `|fval| ≤ 4194303`: adding 1.5·2²³ leaves the integer in the low 23 mantissa bits. Outside that
/// range (and for NaN, where it reads the NaN's payload) the result is meaningless but it is always
/// in `-2²² .. 2²²`; callers clamp it.
#[inline(always)]
fn nearest_int(fval: f32) -> i32 {
    let bits = (fval + 12_582_912.0f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// The f16 bit pattern of `x` as ggml's `GGML_FP32_TO_FP16` rounds it: to nearest, ties to even
/// (subnormals included, overflow to ±inf); every NaN becomes `0x7e00` with the sign of `x`.
#[inline]
fn f16_bits(x: f32) -> u16 {
    if x.is_nan() {
        ((x.to_bits() >> 16) as u16 & 0x8000) | 0x7e00
    } else {
        f16::from_f32(x).to_bits()
    }
}

/// An f16 bit pattern widened (exactly) to f32.
#[inline]
fn f16_value(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// C's `(int8_t) roundf(v)` as llama.cpp's x86-64 build evaluates it: round half away from zero,
/// then `cvttss2si` (NaN and values outside the i32 range give `i32::MIN`), then the low byte.
/// For ordinary blocks `|v|` is at most 127 plus a rounding error, so this is plain rounding; the
/// rest matters only for blocks with a NaN or with max |x| below about 1.5e-36 (`d` an f32
/// subnormal, so `1/d` is inexact or infinite), where C's conversion is out of range.
#[inline(always)]
fn round_to_i8(v: f32) -> i8 {
    let r = v.round();
    let i = if r.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&r) {
        i32::MIN
    } else {
        r as i32
    };
    i as i8
}

/// One Q8_0 block (`block_q8_0`; ggml `quantize_row_q8_0_ref`).
///
/// Layout (34 bytes, as [`super::dequantize_block_q8_0`]): `d: f16` at 0, `qs: [i8; 32]` at 2.
/// `d = max |x| / 127` (rounded to f16 only when stored) and `qs[j] = round(x[j] / d)` computed as
/// `x[j]·(1/d)` with the f32 `d`, halves away from zero; an all-zero block is all zero bytes.
pub fn quantize_block_q8_0(x: &[f32; 32], out: &mut [u8; Q8_0_BYTES]) {
    // C: amax = MAX(amax, fabsf(v)) with MAX(a, b) = a > b ? a : b, starting from 0
    let amax = x.iter().fold(0.0f32, |m, &v| {
        let a = v.abs();
        if m > a { m } else { a }
    });
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
    for (q, &v) in out[2..].iter_mut().zip(x) {
        *q = round_to_i8(v * id) as u8;
    }
}

/// ggml's `make_qkx2_quants` for Q4_K (`n = 32`, `nmax = 15`, `rmin = −1`, `rdelta = 0.1`,
/// `nstep = 20`, squared error): an asymmetric 4-bit fit `x ≈ scale·L + min` of one group with
/// weights `w`. Starts from the range `[min(x, 0), max(x)]`, then tries the 21 inverse scales
/// `(15 − 1 + 0.1·is)/(max − min)`, each followed by a weighted least-squares refit of scale and
/// min (min clamped to ≤ 0), and keeps the one with the smallest weighted squared error. Writes the
/// codes into `l` and returns `(scale, −min)`.
fn make_qkx2_quants_q4(x: &[f32; 32], w: &[f32; 32], l: &mut [u8; 32]) -> (f32, f32) {
    const NMAX: i32 = 15;
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for (&xi, &wi) in x.iter().zip(w).skip(1) {
        if xi < min {
            min = xi;
        }
        if xi > max {
            max = xi;
        }
        sum_w += wi;
        sum_x += wi * xi;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let mut iscale = NMAX as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for ((li, &xi), &wi) in l.iter_mut().zip(x).zip(w) {
        *li = nearest_int(iscale * (xi - min)).clamp(0, NMAX) as u8;
        let diff = scale * *li as f32 + min - xi;
        best_error += wi * (diff * diff);
    }
    let mut laux = [0u8; 32];
    for is in 0..=20 {
        iscale = (-1.0f32 + 0.1f32 * is as f32 + NMAX as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((la, &xi), &wi) in laux.iter_mut().zip(x).zip(w) {
            let q = nearest_int(iscale * (xi - min)).clamp(0, NMAX);
            *la = q as u8;
            let q = q as f32;
            sum_l += wi * q;
            sum_l2 += wi * q * q;
            sum_xl += wi * q * xi;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for ((&la, &xi), &wi) in laux.iter().zip(x).zip(w) {
                let diff = this_scale * la as f32 + this_min - xi;
                cur_error += wi * (diff * diff);
            }
            if cur_error < best_error {
                *l = laux;
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// One Q4_K super-block (`block_q4_K`; ggml `quantize_row_q4_K_ref`).
///
/// Layout (144 bytes, as [`super::dequantize_block_q4_k`]): `d: f16` at 0, `dmin: f16` at 2,
/// `scales: [u8; 12]` at 4, `qs: [u8; 128]` at 16. Each 32-value group `j` is fitted as
/// `scale_j·q + min_j` (q in 0..=15) by `make_qkx2_quants` with weights `rms(group) + |x|`; then
/// `d = max scale_j / 63`, `dmin = max (−min_j) / 63` (f16) and the 6-bit `sc_j`, `m_j` are the
/// nearest integers to `63·scale_j / max scale` and `63·(−min_j) / max(−min)` (at most 63), packed
/// as `k4_scale_min` unpacks them: for `j < 4`, `scales[j] = sc_j` and `scales[j + 4] = m_j`; for
/// `j ≥ 4`, `scales[j + 4] = (sc_j & 15) | (m_j & 15) << 4`, and the top two bits of `sc_j` / `m_j`
/// go to bits 6..8 of `scales[j − 4]` / `scales[j]`. Finally every code is recomputed from the
/// rounded scales, `q = nearest((x + dmin·m_j) / (d·sc_j))` clamped to 0..=15 (a group whose
/// `d·sc_j` is 0 keeps the codes of its fit), and packed two per byte: group `2c` in the low
/// nibbles of `qs[32c..32c + 32]`, group `2c + 1` in the high nibbles.
pub fn quantize_block_q4_k(x: &[f32; QK_K], out: &mut [u8; Q4_K_BYTES]) {
    let mut codes = [[0u8; 32]; QK_K / 32];
    let mut scales = [0.0f32; QK_K / 32];
    let mut mins = [0.0f32; QK_K / 32];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    let (groups, _) = x.as_chunks::<32>();
    for (j, g) in groups.iter().enumerate() {
        let mut sum_x2 = 0.0f32;
        for &v in g {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|i| av_x + g[i].abs());
        let (scale, min) = make_qkx2_quants_q4(g, &weights, &mut codes[j]);
        (scales[j], mins[j]) = (scale, min);
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }

    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    let mut sc = [0u8; QK_K / 32];
    let mut m = [0u8; QK_K / 32];
    for j in 0..QK_K / 32 {
        // C: uint8_t ls = nearest_int(...) (wrapping), then MIN(63, ls)
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        (sc[j], m[j]) = (ls, lm);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0f) | (lm & 0x0f) << 4;
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d_bits = f16_bits(max_scale / 63.0);
    let dmin_bits = f16_bits(max_min / 63.0);
    let (d_all, dmin_all) = (f16_value(d_bits), f16_value(dmin_bits));
    for (j, (g, codes)) in groups.iter().zip(&mut codes).enumerate() {
        let d = d_all * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m[j] as f32;
        for (q, &v) in codes.iter_mut().zip(g) {
            *q = nearest_int((v + dm) / d).clamp(0, 15) as u8;
        }
    }

    out[0..2].copy_from_slice(&d_bits.to_le_bytes());
    out[2..4].copy_from_slice(&dmin_bits.to_le_bytes());
    out[4..16].copy_from_slice(&packed);
    for (c, qs) in out[16..].chunks_exact_mut(32).enumerate() {
        let (lo, hi) = (&codes[2 * c], &codes[2 * c + 1]);
        for ((q, &a), &b) in qs.iter_mut().zip(lo).zip(hi) {
            *q = a | b << 4;
        }
    }
}

/// ggml's `make_qx_quants` for Q6_K (`n = 16`, `nmax = 32`, `rmse_type = 1`, no importance
/// weights): a symmetric 6-bit fit `x ≈ scale·(L − 32)` of one group, weighting each value by `x²`.
/// Takes `max` = the first value of largest magnitude, starts from the inverse scale `−32 / max`
/// and its least-squares scale, then tries `−(32 + 0.1·is) / max` for `is` in ±1..=9 and keeps a
/// candidate when it explains more weighted energy (`(Σwxl)² / Σwl²` strictly larger). Writes the
/// codes `L ∈ 0..64` into `l` and returns the scale (0 for a group below [`GROUP_MAX_EPS`]).
fn make_qx_quants_q6(x: &[f32; 16], l: &mut [u8; 16]) -> f32 {
    const NMAX: i32 = 32;
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-NMAX, NMAX - 1);
    // Σ w·x·l and Σ w·l² with w = x², each product rounded left to right as in C
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let q = code(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let iscale = -(NMAX as f32) / max;
    for (li, &v) in l.iter_mut().zip(x) {
        *li = (code(iscale, v) + NMAX) as u8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(NMAX as f32 + 0.1f32 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (code(iscale, v) + NMAX) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// One Q6_K super-block (`block_q6_K`; ggml `quantize_row_q6_K_ref`).
///
/// Layout (210 bytes, as [`super::dequantize_block_q6_k`]): `ql: [u8; 128]` at 0, `qh: [u8; 64]`
/// at 128, `scales: [i8; 16]` at 192, `d: f16` at 208. Each 16-value group `j` is fitted as
/// `scale_j·q` (q in −32..=31) by `make_qx_quants`; `max_scale` = the `scale_j` of largest
/// magnitude (the first such), `d = −max_scale / 128` (f16, stored as `1 / (−128 / max_scale)`) and
/// `scales[j] = min(127, nearest(−128·scale_j / max_scale))`. Then every code is recomputed from the
/// rounded scales, `q = nearest(x / (d·scales[j]))` clamped to −32..=31 (a group whose `d·scales[j]`
/// is 0 keeps the codes of its fit), and stored as `q + 32` in 6 bits: in half `h` (128 values),
/// value `32s + l` has its low nibble in `ql[64h + 32·(s % 2) + l]` (low nibble for `s < 2`, high for
/// `s ≥ 2`) and its top two bits at bits `2s..2s + 2` of `qh[32h + l]`. A block whose largest
/// `|scale_j|` is below 1e-15 is all zero bytes.
pub fn quantize_block_q6_k(x: &[f32; QK_K], out: &mut [u8; Q6_K_BYTES]) {
    let mut codes = [[0u8; 16]; QK_K / 16];
    let mut scales = [0.0f32; QK_K / 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    let (groups, _) = x.as_chunks::<16>();
    for (j, g) in groups.iter().enumerate() {
        let scale = make_qx_quants_q6(g, &mut codes[j]);
        scales[j] = scale;
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        out.fill(0);
        return;
    }

    let iscale = -128.0f32 / max_scale;
    let d_bits = f16_bits(1.0 / iscale);
    let d_all = f16_value(d_bits);
    // C: int8_t scales[j] = MIN(127, nearest_int(...)) (wrapping)
    let sc: [i8; QK_K / 16] = std::array::from_fn(|j| nearest_int(iscale * scales[j]).min(127) as i8);
    for (j, (g, codes)) in groups.iter().zip(&mut codes).enumerate() {
        let d = d_all * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        for (q, &v) in codes.iter_mut().zip(g) {
            *q = (nearest_int(v / d).clamp(-32, 31) + 32) as u8;
        }
    }

    let codes = codes.as_flattened();
    let (ql, rest) = out.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    let (sc_out, d_out) = rest.split_at_mut(16);
    for (h, (ql, qh)) in ql.chunks_exact_mut(64).zip(qh.chunks_exact_mut(32)).enumerate() {
        let half = &codes[128 * h..][..128];
        for l in 0..32 {
            let (q1, q2, q3, q4) = (half[l], half[l + 32], half[l + 64], half[l + 96]);
            ql[l] = (q1 & 0x0f) | (q3 & 0x0f) << 4;
            ql[l + 32] = (q2 & 0x0f) | (q4 & 0x0f) << 4;
            qh[l] = (q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6;
        }
    }
    for (o, &s) in sc_out.iter_mut().zip(&sc) {
        *o = s as u8;
    }
    d_out.copy_from_slice(&d_bits.to_le_bytes());
}

#[cfg(test)]
#[path = "quantize_tests.rs"]
mod tests;
