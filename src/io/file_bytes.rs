//! A model file's bytes, held in memory or read a range at a time from wherever they lie (a
//! file on disk, a `File` the user gave the page), so that a model is loaded tensor by tensor
//! without the whole file ever being in memory. The reading itself is the caller's: the CLI
//! reads from disk, the page through `Blob.slice`; this module only asks for ranges.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, Weak};

use crate::model::packed::SharedBytes;

/// `Send + Sync` natively, nothing in wasm32: the page's readers hold JS objects, which stay on
/// the one thread that made them.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeShared: Send + Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + Sync + ?Sized> MaybeShared for T {}
/// `Send + Sync` natively, nothing in wasm32: the page's readers hold JS objects, which stay on
/// the one thread that made them.
#[cfg(target_arch = "wasm32")]
pub trait MaybeShared {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeShared for T {}

/// Random access to a file that is not read whole.
pub trait ReadAt: MaybeShared {
    /// The file's length in bytes.
    fn len(&self) -> u64;

    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `out` with the bytes from `offset` on; an error says why it could not (the text is
    /// shown to the user after the file's name).
    fn read_at(&self, offset: u64, out: &mut [u8]) -> Result<(), String>;
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> Result<(), String> {
        (**self).read_at(offset, out)
    }
}

/// A read that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read bytes {start}..{end} of `{name}`: {message}")]
pub struct ReadFailed {
    /// The file's name.
    pub name: String,
    /// Where the read started.
    pub start: u64,
    /// Where it ended.
    pub end: u64,
    /// What the reader said.
    pub message: String,
}

/// A file's bytes: all of them in memory, or a reader that fetches ranges on demand.
#[derive(Clone)]
pub enum FileBytes {
    /// The whole file, shared: ranges are views of it (no copy).
    Memory(Arc<Vec<u8>>),
    /// Read on demand: a range gets a buffer of its own, shared by everyone who asks for the
    /// same range while someone still holds it (a tied output layer and the embedding table are
    /// one tensor, read once).
    Reader(Arc<OnDemand>),
}

/// A reader and the ranges of it still held somewhere.
pub struct OnDemand {
    reader: Box<dyn ReadAt>,
    held: Mutex<Held>,
}

/// Buffers read, by the range they hold, while someone holds them.
type Held = BTreeMap<(u64, u64), Weak<Vec<u8>>>;

impl FileBytes {
    /// A file read on demand through `reader`.
    // In wasm32 the page's reader holds JS objects (neither `Send` nor `Sync`, and with one
    // thread there is nobody to send them to); natively `ReadAt` requires both.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    pub fn reader(reader: impl ReadAt + 'static) -> Self {
        FileBytes::Reader(Arc::new(OnDemand {
            reader: Box::new(reader),
            held: Mutex::default(),
        }))
    }
}

impl std::fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileBytes::Memory(b) => write!(f, "FileBytes::Memory({} bytes)", b.len()),
            FileBytes::Reader(r) => write!(f, "FileBytes::Reader({} bytes)", r.reader.len()),
        }
    }
}

impl FileBytes {
    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            FileBytes::Memory(b) => b.len() as u64,
            FileBytes::Reader(r) => r.reader.len(),
        }
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the bytes are all in memory.
    pub fn in_memory(&self) -> Option<&[u8]> {
        match self {
            FileBytes::Memory(b) => Some(b.as_slice()),
            FileBytes::Reader(_) => None,
        }
    }

    /// The bytes of `range` (of the file called `name`, for the error): a view of the memory,
    /// or a buffer read for it. A range past the end is an error, never a short read.
    pub fn read(&self, name: &str, range: Range<u64>) -> Result<SharedBytes, ReadFailed> {
        let failed = |message: String| ReadFailed {
            name: name.to_string(),
            start: range.start,
            end: range.end,
            message,
        };
        if range.start > range.end || range.end > self.len() {
            return Err(failed(format!("the file has {} bytes", self.len())));
        }
        let too_big = || failed("the range does not fit this platform's address space".into());
        let start = usize::try_from(range.start).map_err(|_| too_big())?;
        let end = usize::try_from(range.end).map_err(|_| too_big())?;
        match self {
            FileBytes::Memory(b) => SharedBytes::new(b.clone(), start..end).ok_or_else(too_big),
            FileBytes::Reader(r) => {
                let key = (range.start, range.end);
                let mut held = r.held.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(buffer) = held.get(&key).and_then(Weak::upgrade) {
                    return SharedBytes::new(buffer, 0..end - start).ok_or_else(too_big);
                }
                let mut out = Vec::new();
                out.try_reserve_exact(end - start)
                    .map_err(|_| failed(format!("no memory for {} bytes", end - start)))?;
                out.resize(end - start, 0);
                r.reader.read_at(range.start, &mut out).map_err(failed)?;
                let buffer = Arc::new(out);
                held.retain(|_, w| w.strong_count() > 0);
                held.insert(key, Arc::downgrade(&buffer));
                SharedBytes::new(buffer, 0..end - start).ok_or_else(too_big)
            }
        }
    }
}

/// Where a parsed file's tensor data is: the whole file borrowed, or its bytes held or read on
/// demand (`name` for errors). Both parsers (GGUF, safetensors) read their tensors through it.
#[derive(Debug)]
pub enum FileView<'a> {
    /// The whole file, borrowed: ranges are borrowed slices (never served packed).
    Borrowed(&'a [u8]),
    /// The file's bytes: ranges are shared buffers (a packed matrix keeps them).
    File(FileBytes, String),
}

impl<'a> FileView<'a> {
    /// The bytes of `range` of the whole file; a range past the end is an error.
    pub fn range(&self, range: Range<usize>) -> Result<TensorBytes<'a>, ReadFailed> {
        match self {
            FileView::Borrowed(b) => b
                .get(range.clone())
                .map(TensorBytes::Borrowed)
                .ok_or_else(|| ReadFailed {
                    name: "the file".into(),
                    start: range.start as u64,
                    end: range.end as u64,
                    message: format!("the file has {} bytes", b.len()),
                }),
            FileView::File(file, name) => Ok(TensorBytes::Shared(
                file.read(name, range.start as u64..range.end as u64)?,
            )),
        }
    }
}

/// A tensor's stored bytes: borrowed from the bytes a file was parsed from, or a range of the
/// file (shared, so a packed matrix keeps them without a copy).
#[derive(Debug)]
pub enum TensorBytes<'a> {
    /// Borrowed.
    Borrowed(&'a [u8]),
    /// A range of the file's bytes.
    Shared(SharedBytes),
}

impl std::ops::Deref for TensorBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            TensorBytes::Borrowed(b) => b,
            TensorBytes::Shared(s) => s.as_slice(),
        }
    }
}
