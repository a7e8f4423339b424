//! One hashing stage for every stream strata verifies or produces: sha256 and a byte count of
//! what passes through, reading (import's diff_id) or writing (commit's diff_id and blob digest,
//! export's check of a decompressed layer).

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::digest::Sha256Digest;

/// Hashes and counts what is read from or written to `inner`.
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    count: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Self {
        Hashing { inner, hasher: Sha256::new(), count: 0 }
    }

    /// Bytes so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The stream, the digest of what passed and its length.
    pub fn finish(self) -> (T, Sha256Digest, u64) {
        (self.inner, Sha256Digest::from_bytes(&self.hasher.finalize()), self.count)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_hash_what_passed() {
        let data = b"hello world".repeat(1000);
        let want = Sha256Digest::from_bytes(&Sha256::digest(&data));
        let mut r = Hashing::new(&data[..]);
        let mut out = Vec::new();
        io::copy(&mut r, &mut out).unwrap();
        let (_, d, n) = r.finish();
        assert_eq!((d, n), (want.clone(), data.len() as u64));
        let mut w = Hashing::new(Vec::new());
        w.write_all(&data[..5000]).unwrap();
        assert_eq!(w.count(), 5000);
        w.write_all(&data[5000..]).unwrap();
        let (v, d, n) = w.finish();
        assert_eq!((v, d, n), (data.clone(), want, data.len() as u64));
    }
}
