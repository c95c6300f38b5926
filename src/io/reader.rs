//! A bounds-checked little-endian cursor over a byte slice, shared by the binary parsers.

/// Reading past the end of the input.
#[derive(Debug, thiserror::Error)]
#[error("needed {needed} bytes at offset {offset}, but the input has {len} bytes")]
pub struct ReadError {
    /// Bytes requested.
    pub needed: u64,
    /// Where the read started.
    pub offset: usize,
    /// Total input length.
    pub len: usize,
}

/// Little-endian cursor; every read checks the remaining length first.
pub struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Current offset from the start.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left after the cursor.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: u64) -> Result<&'a [u8], ReadError> {
        let err = ReadError {
            needed: n,
            offset: self.pos,
            len: self.bytes.len(),
        };
        let n = usize::try_from(n).map_err(|_| ReadError { ..err })?;
        if n > self.remaining() {
            return Err(err);
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N as u64)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, ReadError> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16, ReadError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, ReadError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, ReadError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}
