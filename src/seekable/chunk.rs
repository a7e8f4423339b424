//! One chunk: its compressed bytes (the blob's `blob_offset..blob_end`) to its content,
//! verified against the TOC's digest before any of it is handed on.

use std::io::{self, Read, Write};

use sha2::Digest as _;

use super::{Chunk, Format, SeekableError};
use crate::digest::Sha256Digest;

/// Decompresses `chunk` from `compressed` (exactly its `blob_offset..blob_end` bytes) into
/// `out`, hashing as it goes; fails when fewer than `chunk.size` bytes come out or their digest
/// is not the TOC's. `out` sees unverified bytes: give it a staging file or buffer that is
/// thrown away on error (see [`decode_chunk_to_vec`]).
pub fn decode_chunk<W: Write>(
    format: Format,
    compressed: &[u8],
    name: &str,
    chunk: &Chunk,
    out: &mut W,
) -> Result<(), SeekableError> {
    let fail = |reason: String| SeekableError::Chunk {
        name: name.to_string(),
        file_offset: chunk.file_offset,
        reason,
    };
    if compressed.len() as u64 != chunk.blob_end - chunk.blob_offset {
        return Err(fail(format!(
            "{} compressed bytes where {} were due",
            compressed.len(),
            chunk.blob_end - chunk.blob_offset
        )));
    }
    let dec: Box<dyn Read + '_> = match format {
        // One member: the chunk starts a gzip member, and what follows it in the member (the
        // tar's padding and the next headers) is not read.
        Format::Estargz => Box::new(flate2::read::GzDecoder::new(compressed)),
        Format::ZstdChunked => Box::new(
            zstd::stream::read::Decoder::with_buffer(compressed).map_err(|e| fail(format!("zstd: {e}")))?,
        ),
    };
    let mut hashing = HashingWriter { inner: out, hasher: sha2::Sha256::new(), n: 0 };
    io::copy(&mut dec.take(chunk.size), &mut hashing).map_err(|e| fail(format!("decompressing: {e}")))?;
    if hashing.n != chunk.size {
        return Err(fail(format!("decompresses to {} bytes, the TOC says {}", hashing.n, chunk.size)));
    }
    let actual = Sha256Digest::from_bytes(&hashing.hasher.finalize());
    if actual != chunk.digest {
        return Err(SeekableError::ChunkDigest {
            name: name.to_string(),
            file_offset: chunk.file_offset,
            expected: chunk.digest.clone(),
            actual,
        });
    }
    Ok(())
}

/// [`decode_chunk`] into memory: the content only when verified.
pub fn decode_chunk_to_vec(
    format: Format,
    compressed: &[u8],
    name: &str,
    chunk: &Chunk,
) -> Result<Vec<u8>, SeekableError> {
    // The TOC's size is not trusted for the allocation; the vector grows with what comes out.
    let mut out = Vec::with_capacity(chunk.size.min(1 << 20) as usize);
    decode_chunk(format, compressed, name, chunk, &mut out)?;
    Ok(out)
}

struct HashingWriter<'a, W> {
    inner: &'a mut W,
    hasher: sha2::Sha256,
    n: u64,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
