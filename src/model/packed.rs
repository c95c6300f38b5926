//! Frozen weights kept as the file stores them (GGUF blocks, 16-bit floats) and decoded to f32 a
//! piece at a time, when a layer runs: the QLoRA idea. A 1.24 B model stored as Q4_0 holds 0.7 GB
//! this way against 5 GB as f32; only the layer being computed exists in f32 at any moment.
//!
//! The bytes are shared with the file they came from ([`SharedBytes`]), so holding the model
//! costs no second copy. Decoding is a function handed over by whoever knows the format (`io`),
//! so this module knows no file format; so is the [`DeviceForm`], which lays a matrix out for a
//! GPU to dequantise itself ([`PackedMatrix::device_planes`], read by `model::dequant`).

use std::ops::Range;
use std::sync::Arc;

/// Decodes whole rows: `bytes` holds `out.len() / cols` rows as stored; `None` if the lengths
/// do not match the format's blocks.
pub type RowDecoder = Arc<dyn Fn(&[u8], &mut [f32]) -> Option<()> + Send + Sync>;

/// Decodes little-endian IEEE half floats.
pub fn f16_rows() -> RowDecoder {
    Arc::new(|b, o| halves(b, o, |c| half::f16::from_le_bytes(c).to_f32()))
}

/// Decodes little-endian bfloat16.
pub fn bf16_rows() -> RowDecoder {
    Arc::new(|b, o| halves(b, o, |c| half::bf16::from_le_bytes(c).to_f32()))
}

fn halves(bytes: &[u8], out: &mut [f32], f: fn([u8; 2]) -> f32) -> Option<()> {
    (bytes.len() == 2 * out.len()).then(|| {
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *o = f([c[0], c[1]]);
        }
    })
}

/// Splits one stored row into one code per element, one scale per group and one offset per
/// group (see [`DeviceForm::Codes`]); `None` if the lengths do not match the format's blocks.
pub type RowSplitter = Arc<dyn Fn(&[u8], &mut [u8], &mut [f32], &mut [f32]) -> Option<()> + Send + Sync>;

/// How a device reads a matrix without the host decoding it (`model::dequant`), given by
/// whoever knows the format.
#[derive(Clone)]
pub enum DeviceForm {
    /// Element `x = t(q)·s + o`: `q` an unsigned code of `bits` bits, `s` and `o` f32 per group
    /// of `group` consecutive elements of a row (`o` only when `offsets`), and `t(q)` the
    /// `codebook` entry or else `q − zero`. The block-quantised types.
    Codes {
        /// Bits per code (at most 8).
        bits: u32,
        /// Elements per scale.
        group: usize,
        /// `t(q) = q − zero` without a codebook.
        zero: i32,
        /// `t(q) = codebook[q]`.
        codebook: Option<Arc<[f32]>>,
        /// Whether groups have offsets.
        offsets: bool,
        /// Splits stored rows.
        split: RowSplitter,
    },
    /// A 16-bit IEEE-style float stored little-endian as it is: `exponent_bits` 5 is f16 (10
    /// mantissa bits), 8 is bfloat16 (7).
    Half {
        /// 5 or 8.
        exponent_bits: u32,
    },
}

/// A matrix re-laid out for the device: each element's code split into bit planes packed in
/// 32-bit words, with the group scales and offsets (see [`PackedMatrix::device_planes`]).
#[derive(Debug, Clone)]
pub struct HostPlanes {
    /// `(rows, cols)`.
    pub dims: (usize, usize),
    /// Each plane: `(words, width, shift)`; `words` is `[rows, cols·width/32]` row-major, element
    /// `j` of a row in bits `(j mod 32/width)·width ..` of word `j / (32/width)`, and holds bits
    /// `shift .. shift + width` of the code.
    pub planes: Vec<(Vec<i32>, u32, u32)>,
    /// `[rows, cols/group]` scales (empty for halves).
    pub scales: Vec<f32>,
    /// `[rows, cols/group]` offsets, when the form has them.
    pub offsets: Option<Vec<f32>>,
}

/// The bit planes a code of `bits` bits is split into: `(width, shift)`, widths dividing 32.
pub fn plane_widths(bits: u32) -> Vec<(u32, u32)> {
    match bits {
        1 | 2 | 4 | 8 | 16 => vec![(bits, 0)],
        3 => vec![(2, 0), (1, 2)],
        5 => vec![(4, 0), (1, 4)],
        6 => vec![(4, 0), (2, 4)],
        _ => vec![(4, 0), (2, 4), (1, 6)],
    }
}

/// A range of bytes inside a buffer shared with others (a whole model file, or the range read
/// from it).
#[derive(Clone)]
pub struct SharedBytes {
    buffer: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedBytes({:?} of {} bytes)", self.range, self.buffer.len())
    }
}

impl SharedBytes {
    /// `buffer[range]`; `None` if the range lies outside the buffer.
    pub fn new(buffer: Arc<Vec<u8>>, range: Range<usize>) -> Option<Self> {
        (range.start <= range.end && range.end <= buffer.len()).then_some(Self { buffer, range })
    }

    /// `sub`, a slice borrowed from `buffer`, as a shared range; `None` if it lies elsewhere.
    pub fn within(buffer: &Arc<Vec<u8>>, sub: &[u8]) -> Option<Self> {
        let start = (sub.as_ptr() as usize).checked_sub(buffer.as_ptr() as usize)?;
        Self::new(buffer.clone(), start..start.checked_add(sub.len())?)
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buffer[self.range.clone()]
    }
}

/// A `[rows, cols]` matrix stored row by row in some encoding, with an optional row order
/// (llama.cpp stores q/k rows permuted for its rotary layout; we read them back in Hugging Face
/// order without rewriting the bytes).
#[derive(Clone)]
pub struct PackedMatrix {
    bytes: SharedBytes,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    decode: RowDecoder,
    encoding: String,
    row_order: Option<Arc<[u32]>>,
    form: Option<DeviceForm>,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedMatrix({}x{} {})", self.rows, self.cols, self.encoding)
    }
}

impl PackedMatrix {
    /// A matrix over `bytes` (exactly `rows` rows of equal size) decoded by `decode`. Checks the
    /// sizes and decodes the first row once, so later decoding cannot fail; `Err` says why not.
    pub fn new(
        bytes: SharedBytes,
        rows: usize,
        cols: usize,
        encoding: &str,
        decode: RowDecoder,
    ) -> Result<Self, String> {
        let len = bytes.as_slice().len();
        if rows == 0 || cols == 0 || !len.is_multiple_of(rows) {
            return Err(format!("{len} bytes of {encoding} are not {rows} rows"));
        }
        let row_bytes = len / rows;
        let mut probe = vec![0f32; cols];
        decode(&bytes.as_slice()[..row_bytes], &mut probe)
            .ok_or_else(|| format!("a {encoding} row of {row_bytes} bytes does not decode to {cols} values"))?;
        Ok(Self {
            bytes,
            rows,
            cols,
            row_bytes,
            decode,
            encoding: encoding.to_string(),
            row_order: None,
            form: None,
        })
    }

    /// Says how a device can read this matrix, when its rows split into whole words (`cols` a
    /// multiple of 32, of 2 for halves) and whole groups; otherwise it stays host-only.
    pub fn with_device_form(mut self, form: DeviceForm) -> Self {
        let fits = match &form {
            DeviceForm::Codes { bits, group, split, .. } => {
                *bits <= 8 && *group > 0 && self.cols.is_multiple_of(32) && self.cols.is_multiple_of(*group) && {
                    let groups = self.cols / group;
                    let (mut c, mut s, mut o) = (vec![0u8; self.cols], vec![0f32; groups], vec![0f32; groups]);
                    split(&self.bytes.as_slice()[..self.row_bytes], &mut c, &mut s, &mut o).is_some()
                }
            }
            DeviceForm::Half { exponent_bits } => matches!(exponent_bits, 5 | 8) && self.cols.is_multiple_of(2),
        };
        if fits {
            self.form = Some(form);
        }
        self
    }

    /// How a device reads this matrix, if it can.
    pub fn device_form(&self) -> Option<&DeviceForm> {
        self.form.as_ref()
    }

    /// Reads row `i` from stored row `order[i]`; `Err` unless `order` is a permutation.
    pub fn with_row_order(mut self, order: Vec<u32>) -> Result<Self, String> {
        let mut seen = vec![false; self.rows];
        let ok = order.len() == self.rows
            && order
                .iter()
                .all(|&r| (r as usize) < self.rows && !std::mem::replace(&mut seen[r as usize], true));
        if !ok {
            return Err(format!("a row order for {} rows is not a permutation", self.rows));
        }
        self.row_order = Some(order.into());
        Ok(self)
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes held (the stored encoding, not f32).
    pub fn stored_bytes(&self) -> usize {
        self.rows * self.row_bytes
    }

    /// The encoding's name, e.g. `Q4_0`.
    pub fn encoding(&self) -> &str {
        &self.encoding
    }

    fn stored_row(&self, i: usize) -> &[u8] {
        let r = self.row_order.as_ref().map_or(i, |o| o[i] as usize);
        &self.bytes.as_slice()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Decodes the given rows into `out` (`[ids.len(), cols]`). Rows out of range decode as zeros
    /// (callers pass ids they have checked against the vocabulary).
    pub fn decode_rows_into(&self, ids: &[usize], out: &mut [f32]) {
        debug_assert_eq!(out.len(), ids.len() * self.cols);
        let decode_one = |(row, &i): (&mut [f32], &usize)| {
            if i < self.rows {
                // Cannot fail: every row has the size `new` checked.
                let _ = (self.decode)(self.stored_row(i), row);
            } else {
                row.fill(0.0);
            }
        };
        // On one thread: a layer is decoded right after a product, while faer's workers still
        // spin, and a rayon loop then made a packed forward pass 5-16% slower (BENCHMARKS.md).
        out.chunks_mut(self.cols).zip(ids.iter()).for_each(decode_one);
    }

    /// The whole matrix in its device layout (rows in their read order); `None` without a
    /// [`DeviceForm`].
    pub fn device_planes(&self) -> Option<HostPlanes> {
        let form = self.form.as_ref()?;
        let (rows, cols) = (self.rows, self.cols);
        let (bits, group, offsets) = match form {
            DeviceForm::Codes {
                bits, group, offsets, ..
            } => (*bits, *group, *offsets),
            DeviceForm::Half { .. } => (16, cols, false),
        };
        let widths = plane_widths(bits);
        let groups = if matches!(form, DeviceForm::Half { .. }) {
            0
        } else {
            cols / group
        };
        let mut planes: Vec<(Vec<i32>, u32, u32)> = widths
            .iter()
            .map(|&(w, s)| (vec![0i32; rows * cols * w as usize / 32], w, s))
            .collect();
        let mut scales = vec![0f32; rows * groups];
        let mut offs = vec![0f32; rows * groups];
        // One row at a time: its codes, then each plane's words.
        let mut codes = vec![0u16; cols];
        let mut bytes8 = vec![0u8; cols];
        for i in 0..rows {
            let stored = self.stored_row(i);
            match form {
                DeviceForm::Codes { split, .. } => {
                    let g = i * groups..(i + 1) * groups;
                    // Cannot fail: `with_device_form` split a row of this size.
                    let _ = split(stored, &mut bytes8, &mut scales[g.clone()], &mut offs[g]);
                    codes.iter_mut().zip(&bytes8).for_each(|(c, &b)| *c = u16::from(b));
                }
                DeviceForm::Half { .. } => {
                    for (c, b) in codes.iter_mut().zip(stored.chunks_exact(2)) {
                        *c = u16::from_le_bytes([b[0], b[1]]);
                    }
                }
            }
            for (words, w, shift) in &mut planes {
                let per = (32 / *w) as usize;
                let mask = (1u32 << *w) - 1;
                let row = &mut words[i * cols / per..(i + 1) * cols / per];
                for (word, chunk) in row.iter_mut().zip(codes.chunks_exact(per)) {
                    let packed = chunk.iter().enumerate().fold(0u32, |acc, (k, &c)| {
                        acc | ((u32::from(c) >> *shift) & mask) << (k as u32 * *w)
                    });
                    *word = packed as i32;
                }
            }
        }
        Some(HostPlanes {
            dims: (rows, cols),
            planes,
            scales,
            offsets: offsets.then_some(offs),
        })
    }

    /// Rows `range` as f32, `[range.len(), cols]` row-major.
    pub fn decode_range(&self, range: Range<usize>) -> Vec<f32> {
        let ids: Vec<usize> = range.collect();
        let mut out = vec![0f32; ids.len() * self.cols];
        self.decode_rows_into(&ids, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy encoding: one byte per value, value = byte − 128.
    fn bytes_matrix(rows: usize, cols: usize) -> (PackedMatrix, Vec<f32>) {
        let raw: Vec<u8> = (0..rows * cols).map(|i| (i * 7 % 251) as u8).collect();
        let values = raw.iter().map(|&b| f32::from(b) - 128.0).collect();
        let decode: RowDecoder = Arc::new(|b: &[u8], out: &mut [f32]| {
            (b.len() == out.len()).then(|| out.iter_mut().zip(b).for_each(|(o, &b)| *o = f32::from(b) - 128.0))
        });
        let len = raw.len();
        let shared = SharedBytes::new(Arc::new(raw), 0..len).unwrap();
        (PackedMatrix::new(shared, rows, cols, "toy", decode).unwrap(), values)
    }

    #[test]
    fn decodes_rows_and_ranges() {
        let (m, values) = bytes_matrix(5, 3);
        assert_eq!(m.decode_range(0..5), values);
        assert_eq!(m.decode_range(2..4), values[6..12].to_vec());
        let mut out = vec![1f32; 6];
        m.decode_rows_into(&[4, 9], &mut out);
        assert_eq!(&out[..3], &values[12..15]);
        assert_eq!(&out[3..], &[0.0; 3]);
    }

    #[test]
    fn row_order_reads_stored_rows_in_the_given_order() {
        let (m, values) = bytes_matrix(3, 2);
        let m = m.with_row_order(vec![2, 0, 1]).unwrap();
        assert_eq!(
            m.decode_range(0..3),
            [&values[4..6], &values[0..2], &values[2..4]].concat()
        );
        let (m, _) = bytes_matrix(3, 2);
        assert!(m.clone().with_row_order(vec![0, 0, 1]).is_err());
        assert!(m.with_row_order(vec![0, 1]).is_err());
    }

    #[test]
    fn refuses_bytes_that_are_not_whole_rows() {
        let decode: RowDecoder = Arc::new(|b: &[u8], out: &mut [f32]| (b.len() == out.len()).then_some(()));
        let shared = SharedBytes::new(Arc::new(vec![0u8; 10]), 0..10).unwrap();
        assert!(PackedMatrix::new(shared.clone(), 3, 3, "toy", decode.clone()).is_err());
        assert!(PackedMatrix::new(shared, 2, 4, "toy", decode).is_err());
        assert!(SharedBytes::new(Arc::new(vec![0u8; 4]), 2..8).is_none());
    }
}
