//! Seekable layer formats: eStargz and zstd:chunked, the layers a container can start from
//! before they have arrived (issue 27).
//!
//! Both are ordinary compressed layer tars (any runtime pulls them whole) whose compressed
//! stream is cut so that every file, or every chunk of a big file, starts a new gzip member or
//! zstd frame, with a table of contents (the TOC, `stargz.index.json`'s JSON schema in both)
//! that says where each file's chunks are and their sha256. A lazy reader fetches the footer
//! and the TOC by byte ranges, verifies the TOC against the layer descriptor's annotation, and
//! later fetches and verifies single chunks.
//!
//! This module is pure: bytes in, typed values out, no I/O. Everything it reads (descriptor
//! annotations, footers, TOCs, chunks) comes from a registry and is hostile: it never panics on
//! it and never allocates more than the bounds below.
//! - [`footer`]: the eStargz footer and the zstd:chunked footer frame, read and written;
//! - [`toc`]: the TOC, decoded, verified and checked ([`Toc`], [`TocEntry`], [`Chunk`]);
//! - [`chunk`]: one chunk's compressed bytes to its verified content;
//! - [`write`]: a plain layer tar to eStargz or zstd:chunked;
//! - [`order`]: a layer tar with the files a command read moved to its front (`image optimize`).

pub mod chunk;
pub mod footer;
pub mod order;
pub mod toc;
pub mod write;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod write_tests;

use std::collections::HashMap;

use crate::digest::{DigestError, Sha256Digest};

pub use toc::{Chunk, EntryKind, Toc, TocEntry};

/// The TOC's name inside an eStargz tar (and the TOC entry of a zstd:chunked one).
pub const TOC_NAME: &str = "stargz.index.json";
/// Files before this entry are the ones to fetch first.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Marks a layer that has nothing to prefetch.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
/// The entries a lazy mount hides, as stargz-snapshotter does.
pub const HIDDEN_NAMES: &[&str] = &[TOC_NAME, PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK];

/// An eStargz layer descriptor's annotation: the sha256 of its TOC JSON.
pub const ANNOTATION_TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";
/// An eStargz layer descriptor's annotation: the size of its uncompressed tar (its diff_id's).
pub const ANNOTATION_UNCOMPRESSED_SIZE: &str = "io.containers.estargz.uncompressed-size";
/// zstd:chunked: the sha256 of the compressed TOC (stargz-snapshotter's spelling).
pub const ANNOTATION_ZSTD_CHECKSUM: &str = "io.containers.zstd-chunked.manifest-checksum";
/// zstd:chunked: `offset:compressed length:uncompressed length:type` of the TOC.
pub const ANNOTATION_ZSTD_POSITION: &str = "io.containers.zstd-chunked.manifest-position";
/// containers/storage's spellings of the same two annotations.
pub const ANNOTATION_ZSTD_CHECKSUM_GH: &str = "io.github.containers.zstd-chunked.manifest-checksum";
pub const ANNOTATION_ZSTD_POSITION_GH: &str = "io.github.containers.zstd-chunked.manifest-position";

/// The largest TOC accepted, compressed or not (a TOC of 100 000 files is about 30 MiB).
pub const MAX_TOC_BYTES: u64 = 64 << 20;
/// The most entries a TOC may have.
pub const MAX_TOC_ENTRIES: usize = 1 << 20;
/// The most xattr bytes (names and values) one entry may carry.
pub const MAX_XATTR_BYTES: usize = 64 << 10;

/// Which seekable format a layer is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Estargz,
    ZstdChunked,
}

impl Format {
    /// The name stored and shown (`estargz`, `zstd:chunked`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Estargz => "estargz",
            Format::ZstdChunked => "zstd:chunked",
        }
    }

    /// From [`Format::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "estargz" => Some(Format::Estargz),
            "zstd:chunked" => Some(Format::ZstdChunked),
            _ => None,
        }
    }
}

/// Where a seekable layer's TOC is and what it must hash to, from its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locator {
    /// eStargz: the footer (the blob's last [`footer::ESTARGZ_FOOTER_SIZE`] bytes) gives the
    /// TOC's offset; the TOC JSON hashes to `toc_digest`.
    Estargz { toc_digest: Sha256Digest },
    /// zstd:chunked: the TOC's compressed bytes are `offset..offset+length` and hash to
    /// `checksum`; `uncompressed` is the JSON's length.
    ZstdChunked { offset: u64, length: u64, uncompressed: u64, checksum: Sha256Digest },
}

impl Locator {
    pub fn format(&self) -> Format {
        match self {
            Locator::Estargz { .. } => Format::Estargz,
            Locator::ZstdChunked { .. } => Format::ZstdChunked,
        }
    }

    /// The digest the TOC is verified against (of its JSON for eStargz, of its compressed
    /// frame for zstd:chunked), as recorded with a remote layer.
    pub fn toc_digest(&self) -> &Sha256Digest {
        match self {
            Locator::Estargz { toc_digest } => toc_digest,
            Locator::ZstdChunked { checksum, .. } => checksum,
        }
    }
}

/// A seekable layer's descriptor: `None` when the layer is an ordinary one (no TOC annotation
/// or a compression without a seekable form), an error when the annotations are there but
/// malformed or do not fit a blob of `blob_size` bytes.
pub fn locate(
    media_type: &str,
    annotations: &HashMap<String, String>,
    blob_size: u64,
) -> Result<Option<Locator>, SeekableError> {
    use crate::compression::Compression;
    match Compression::of_media_type(media_type) {
        Some(Compression::Gzip) => {
            let Some(d) = annotations.get(ANNOTATION_TOC_DIGEST) else {
                return Ok(None);
            };
            let toc_digest = Sha256Digest::parse(d)
                .map_err(|e| SeekableError::Annotation { name: ANNOTATION_TOC_DIGEST, source: Some(e) })?;
            if blob_size < footer::ESTARGZ_FOOTER_SIZE {
                return Err(SeekableError::Footer("blob smaller than its footer".into()));
            }
            Ok(Some(Locator::Estargz { toc_digest }))
        }
        Some(Compression::Zstd) => {
            let pos =
                annotations.get(ANNOTATION_ZSTD_POSITION).map(|p| (ANNOTATION_ZSTD_POSITION, p)).or_else(
                    || annotations.get(ANNOTATION_ZSTD_POSITION_GH).map(|p| (ANNOTATION_ZSTD_POSITION_GH, p)),
                );
            let sum =
                annotations.get(ANNOTATION_ZSTD_CHECKSUM).map(|p| (ANNOTATION_ZSTD_CHECKSUM, p)).or_else(
                    || annotations.get(ANNOTATION_ZSTD_CHECKSUM_GH).map(|p| (ANNOTATION_ZSTD_CHECKSUM_GH, p)),
                );
            let (Some((pos_name, pos)), Some((sum_name, sum))) = (pos, sum) else {
                return Ok(None);
            };
            let checksum = Sha256Digest::parse(sum)
                .map_err(|e| SeekableError::Annotation { name: sum_name, source: Some(e) })?;
            let bad = || SeekableError::Annotation { name: pos_name, source: None };
            let fields: Vec<&str> = pos.split(':').collect();
            let [offset, length, uncompressed, kind] = fields[..] else {
                return Err(bad());
            };
            let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
            let (offset, length, uncompressed) = (num(offset)?, num(length)?, num(uncompressed)?);
            // Type 1 is the CRFS (stargz) TOC; containers/storage writes the same.
            if kind != "1" {
                return Err(bad());
            }
            if length == 0 || length > MAX_TOC_BYTES || uncompressed == 0 || uncompressed > MAX_TOC_BYTES {
                return Err(SeekableError::TooLarge { what: "TOC", limit: MAX_TOC_BYTES });
            }
            if offset.checked_add(length).is_none_or(|end| end > blob_size) {
                return Err(bad());
            }
            Ok(Some(Locator::ZstdChunked { offset, length, uncompressed, checksum }))
        }
        _ => Ok(None),
    }
}

/// What went wrong reading a seekable layer's parts.
#[derive(Debug, thiserror::Error)]
pub enum SeekableError {
    #[error("layer annotation {name} is malformed")]
    Annotation {
        name: &'static str,
        #[source]
        source: Option<DigestError>,
    },
    #[error("bad eStargz footer: {0}")]
    Footer(String),
    #[error("{what} larger than {limit} bytes")]
    TooLarge { what: &'static str, limit: u64 },
    #[error("cannot decompress the {what}")]
    Decompress {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("TOC digest mismatch: the descriptor says {expected}, the TOC is {actual}")]
    TocDigest { expected: Sha256Digest, actual: Sha256Digest },
    #[error("TOC is not valid JSON")]
    TocJson(#[source] serde_json::Error),
    #[error("TOC entry {index} ({name:?}): {reason}")]
    TocEntry { index: usize, name: String, reason: String },
    #[error("chunk of {name:?} at {file_offset}: {reason}")]
    Chunk { name: String, file_offset: u64, reason: String },
    #[error("chunk of {name:?} at {file_offset} has digest {actual}, the TOC says {expected}")]
    ChunkDigest { name: String, file_offset: u64, expected: Sha256Digest, actual: Sha256Digest },
    #[error("writing the seekable layer")]
    Write(#[source] std::io::Error),
}

impl SeekableError {
    /// [`ErrorKind::InvalidArgument`](crate::error::ErrorKind) for what the registry sent,
    /// internal for a failure to write.
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            SeekableError::Write(e) => crate::error::ErrorKind::of_io(e),
            _ => crate::error::ErrorKind::InvalidArgument,
        }
    }
}
