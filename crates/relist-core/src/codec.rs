//! The one binary codec of relist's stored formats: the streamed, checksummed little-endian
//! encoding of the index snapshot ([`Encoder`], [`Decoder`], used by [`crate::snapshot`],
//! [`crate::matcher`] and [`crate::index`]) and the big-endian reader of the store's compact
//! fingerprints records (`Reader`, used by [`crate::store`]). Both formats are contracts,
//! versioned by their owners; this module only moves bytes.
use std::io::{self, Read, Write};

use xxhash_rust::xxh3::Xxh3;

/// Bytes read or written per I/O call and hashed per checksum update.
const CHUNK: usize = 4 << 20;

/// Why a snapshot was not used. Never fatal: the index is then loaded from the store.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file could not be read.
    #[error("reading the snapshot: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a snapshot this relist can trust (the reason says why).
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn invalid(what: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid(what.into())
}

/// A big-endian u64 from 8 bytes.
pub(crate) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

/// A little-endian u16 from 2 bytes.
#[inline]
pub(crate) fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

/// A little-endian u32 from 4 bytes.
#[inline]
pub(crate) fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_le_bytes(a)
}

/// A little-endian u64 from 8 bytes.
#[inline]
pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// Writes little-endian values through a large buffer, hashing everything written.
pub struct Encoder<W: Write> {
    inner: W,
    hash: Xxh3,
    buf: Vec<u8>,
    written: u64,
}

impl<W: Write> Encoder<W> {
    /// An encoder writing to `inner`; call [`Encoder::finish`] to write the checksum.
    pub fn new(inner: W) -> Self {
        Encoder {
            inner,
            hash: Xxh3::new(),
            buf: Vec::with_capacity(CHUNK + 64),
            written: 0,
        }
    }

    fn spill(&mut self) -> io::Result<()> {
        self.hash.update(&self.buf);
        self.inner.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    #[inline]
    fn room(&mut self) -> io::Result<()> {
        if self.buf.len() >= CHUNK {
            self.spill()?;
        }
        Ok(())
    }

    /// `b` as it is.
    pub fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        for c in b.chunks(CHUNK) {
            self.buf.extend_from_slice(c);
            self.room()?;
        }
        Ok(())
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) -> io::Result<()> {
        self.buf.push(v);
        self.room()
    }

    /// A little-endian u16.
    pub fn u16(&mut self, v: u16) -> io::Result<()> {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self.room()
    }

    /// A little-endian u32.
    pub fn u32(&mut self, v: u32) -> io::Result<()> {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self.room()
    }

    /// A little-endian u64.
    pub fn u64(&mut self, v: u64) -> io::Result<()> {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self.room()
    }

    /// Each of `v` as `N` little-endian bytes (`to_le` is e.g. `u32::to_le_bytes`).
    pub fn words<T: Copy, const N: usize>(&mut self, v: &[T], to_le: fn(T) -> [u8; N]) -> io::Result<()> {
        for c in v.chunks(CHUNK / N) {
            self.buf.extend(c.iter().flat_map(|&w| to_le(w)));
            self.room()?;
        }
        Ok(())
    }

    /// Writes what is buffered and the checksum trailer; returns the writer, the checksum
    /// and the total bytes written.
    pub fn finish(mut self) -> io::Result<(W, u64, u64)> {
        self.spill()?;
        let checksum = self.hash.digest();
        self.inner.write_all(&checksum.to_le_bytes())?;
        self.inner.flush()?;
        Ok((self.inner, checksum, self.written + 8))
    }
}

/// Reads little-endian values from a snapshot body of known length, hashing everything read.
/// Every count is checked against the bytes left before anything is allocated for it.
pub struct Decoder<R: Read> {
    inner: R,
    hash: Xxh3,
    /// Body bytes not read yet (the checksum trailer excluded).
    remaining: u64,
    scratch: Vec<u8>,
}

impl<R: Read> Decoder<R> {
    /// A decoder of `body` bytes, which the 8-byte checksum trailer follows.
    pub fn new(inner: R, body: u64) -> Self {
        Decoder {
            inner,
            hash: Xxh3::new(),
            remaining: body,
            scratch: Vec::new(),
        }
    }

    /// The next `n` bytes of the body.
    pub fn take(&mut self, n: usize) -> std::result::Result<&[u8], SnapshotError> {
        if n as u64 > self.remaining {
            return Err(invalid("snapshot is truncated"));
        }
        if self.scratch.len() < n {
            self.scratch.resize(n, 0);
        }
        let b = &mut self.scratch[..n];
        self.inner.read_exact(b)?;
        self.hash.update(b);
        self.remaining -= n as u64;
        Ok(&self.scratch[..n])
    }

    /// One byte.
    pub fn u8(&mut self) -> std::result::Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> std::result::Result<u32, SnapshotError> {
        self.take(4).map(le_u32)
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> std::result::Result<u64, SnapshotError> {
        self.take(8).map(le_u64)
    }

    /// Whether `n` items of `size` bytes fit in what is left of the body.
    pub fn fits(&self, n: u64, size: u64) -> bool {
        n.checked_mul(size).is_some_and(|b| b <= self.remaining)
    }

    /// A count (u64) of items of `size` bytes that follow: checked to fit in the body.
    pub fn count(&mut self, size: u64) -> std::result::Result<usize, SnapshotError> {
        let n = self.u64()?;
        if !self.fits(n, size) {
            return Err(invalid(format!("count {n} runs past the end of the snapshot")));
        }
        usize::try_from(n).map_err(|_| invalid("count too large"))
    }

    /// Calls `f` with each of `n` records of `size` bytes (checked to fit), read in large
    /// chunks.
    pub fn records(
        &mut self,
        n: usize,
        size: usize,
        mut f: impl FnMut(&[u8]),
    ) -> std::result::Result<(), SnapshotError> {
        if size == 0 || !self.fits(n as u64, size as u64) {
            return Err(invalid("records run past the end of the snapshot"));
        }
        let per_chunk = (CHUNK / size).max(1);
        let mut left = n;
        while left > 0 {
            let k = left.min(per_chunk);
            self.take(k * size)?.chunks_exact(size).for_each(&mut f);
            left -= k;
        }
        Ok(())
    }

    /// `n` values of `size` bytes each, parsed by `parse`; checked to fit before anything is
    /// allocated for them.
    pub fn array<T>(
        &mut self,
        n: usize,
        size: usize,
        parse: impl Fn(&[u8]) -> T,
    ) -> std::result::Result<Vec<T>, SnapshotError> {
        if !self.fits(n as u64, size as u64) {
            return Err(invalid("array runs past the end of the snapshot"));
        }
        let mut v = Vec::with_capacity(n);
        self.records(n, size, |b| v.push(parse(b)))?;
        Ok(v)
    }

    /// Checks that the body was read to its end and that the trailer is its checksum, and
    /// that nothing follows; returns the checksum.
    pub fn finish(mut self) -> std::result::Result<u64, SnapshotError> {
        if self.remaining != 0 {
            return Err(invalid(format!(
                "{} unread bytes at the end of the snapshot",
                self.remaining
            )));
        }
        let mut t = [0u8; 8];
        self.inner
            .read_exact(&mut t)
            .map_err(|_| invalid("snapshot checksum missing"))?;
        let digest = self.hash.digest();
        if u64::from_le_bytes(t) != digest {
            return Err(invalid("snapshot checksum mismatch (the file is corrupt)"));
        }
        let mut extra = [0u8; 1];
        if self.inner.read(&mut extra)? != 0 {
            return Err(invalid("bytes after the snapshot checksum"));
        }
        Ok(digest)
    }
}

/// Reads big-endian values from a record held in memory (the store's fingerprints records);
/// `None` once a read runs past the end.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).and_then(|b| b.try_into().ok()).map(u16::from_be_bytes)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
    }
}
