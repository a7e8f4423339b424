//! Reading a remote layer's files on demand (the next step of `pull --lazy`, see docs/lazy.md):
//! a file's chunks, as its verified TOC locates them, fetched by byte ranges (adjacent chunks in
//! one request, up to a bound), each verified against its digest before any byte of it is
//! returned, and cached content-addressed (`<cache>/<chunk digest hex>`, written under a
//! temporary name and renamed, so a killed reader leaves no chunk that was not verified).
//!
//! The byte source is a trait ([`RangeSource`]: the registry's [`Client::blob_range`] for real,
//! anything for tests); strata-fuse's remote lowers are to read through [`RemoteFiles::read_at`].

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{Client, RegistryError};
use crate::seekable::chunk::decode_chunk_to_vec;
use crate::seekable::{Chunk, EntryKind, SeekableError, Toc};

/// The most bytes one request fetches when it joins adjacent chunks.
pub const MAX_REQUEST: u64 = 4 << 20;

/// Where a remote layer's bytes come from.
pub trait RangeSource: Send + Sync {
    /// Exactly the blob's bytes `range`.
    fn range(&self, range: Range<u64>) -> Result<Vec<u8>, RegistryError>;
}

/// A blob of a registry repository.
pub struct RegistryBlob<'a> {
    pub client: &'a Client,
    pub digest: String,
}

impl RangeSource for RegistryBlob<'_> {
    fn range(&self, range: Range<u64>) -> Result<Vec<u8>, RegistryError> {
        self.client.blob_range(&self.digest, range)
    }
}

/// The regular files of a remote layer, read by name and offset.
pub struct RemoteFiles<S> {
    toc: Toc,
    /// Regular files (and hard links, resolved to their target) by name: their TOC index.
    files: HashMap<String, usize>,
    source: S,
    cache: PathBuf,
    /// Names the layer in errors and logs.
    label: String,
}

impl<S: RangeSource> RemoteFiles<S> {
    /// Files of the layer `label` whose verified TOC is `toc`, fetched from `source`, verified
    /// chunks cached in `cache` (made when missing).
    pub fn new(toc: Toc, source: S, cache: &Path, label: &str) -> Result<Self, RegistryError> {
        fs::create_dir_all(cache).map_err(|source| local(cache, source))?;
        let mut files = HashMap::new();
        for (i, e) in toc.entries.iter().enumerate() {
            if e.kind == EntryKind::Reg {
                files.insert(e.name.clone(), i);
            }
        }
        for e in &toc.entries {
            if e.kind == EntryKind::Hardlink {
                if let Some(&i) = files.get(&e.link_name) {
                    files.insert(e.name.clone(), i);
                }
            }
        }
        Ok(RemoteFiles { toc, files, source, cache: cache.to_path_buf(), label: label.to_string() })
    }

    /// The size of regular file `name`, if the layer has it.
    pub fn size(&self, name: &str) -> Option<u64> {
        self.files.get(name).map(|&i| self.toc.entries[i].size)
    }

    /// Read file `name` from `offset` into `buf`: what is missing of the chunks covering it is
    /// fetched and verified first. Returns the bytes read (fewer only at the end of the file).
    pub fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<usize, RegistryError> {
        let &i = self.files.get(name).ok_or_else(|| RegistryError::Invalid {
            what: format!("layer {}", self.label),
            reason: format!("no regular file {name:?}"),
        })?;
        let entry = &self.toc.entries[i];
        let end = entry.size.min(offset.saturating_add(buf.len() as u64));
        if offset >= end {
            return Ok(0);
        }
        let wanted: Vec<&Chunk> =
            entry.chunks.iter().filter(|c| c.file_offset < end && c.file_offset + c.size > offset).collect();
        self.fetch_missing(name, &wanted)?;
        let mut done = 0usize;
        for c in wanted {
            let data = fs::read(self.chunk_path(c)).map_err(|source| local(&self.chunk_path(c), source))?;
            if data.len() as u64 != c.size {
                return Err(RegistryError::Invalid {
                    what: format!("layer {}: {name}", self.label),
                    reason: format!("cached chunk {} has {} bytes, not {}", c.digest, data.len(), c.size),
                });
            }
            let from = offset.max(c.file_offset);
            let to = end.min(c.file_offset + c.size);
            let src = &data[(from - c.file_offset) as usize..(to - c.file_offset) as usize];
            let at = (from - offset) as usize;
            buf[at..at + src.len()].copy_from_slice(src);
            done = done.max(at + src.len());
        }
        Ok(done)
    }

    fn chunk_path(&self, c: &Chunk) -> PathBuf {
        self.cache.join(c.digest.hex())
    }

    /// Fetch the chunks of `wanted` that are not cached: runs of chunks adjacent in the blob in
    /// one request each (at most [`MAX_REQUEST`] bytes), each chunk verified, then cached.
    fn fetch_missing(&self, name: &str, wanted: &[&Chunk]) -> Result<(), RegistryError> {
        let missing: Vec<&Chunk> = wanted.iter().copied().filter(|c| !self.chunk_path(c).is_file()).collect();
        let mut k = 0;
        while k < missing.len() {
            let mut run = vec![missing[k]];
            k += 1;
            while k < missing.len() {
                let (last, next) = (run[run.len() - 1], missing[k]);
                if next.blob_offset != last.blob_end || next.blob_end - run[0].blob_offset > MAX_REQUEST {
                    break;
                }
                run.push(next);
                k += 1;
            }
            let start = run[0].blob_offset;
            let bytes = self.source.range(start..run[run.len() - 1].blob_end)?;
            for c in run {
                let part = bytes
                    .get((c.blob_offset - start) as usize..(c.blob_end - start) as usize)
                    .ok_or_else(|| RegistryError::Invalid {
                        what: format!("layer {}: {name}", self.label),
                        reason: "the registry sent a short range".into(),
                    })?;
                let data =
                    decode_chunk_to_vec(self.toc.format, part, name, c).map_err(|e| self.bad(name, e))?;
                self.cache_chunk(c, &data)?;
            }
        }
        Ok(())
    }

    fn bad(&self, name: &str, e: SeekableError) -> RegistryError {
        let what = format!("layer {}: {name}", self.label);
        match e {
            SeekableError::ChunkDigest { expected, actual, file_offset, .. } => {
                tracing::error!(layer = %self.label, file = name, file_offset, "chunk digest mismatch: not served");
                RegistryError::DigestMismatch {
                    what: format!("{what}: chunk at {file_offset}"),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                }
            }
            e => RegistryError::Invalid { what, reason: crate::error::report(&e) },
        }
    }

    /// Store a verified chunk under its digest: a temporary file, synced, renamed.
    fn cache_chunk(&self, c: &Chunk, data: &[u8]) -> Result<(), RegistryError> {
        let dst = self.chunk_path(c);
        let tmp = self.cache.join(format!(".tmp-{}-{}", c.digest.hex(), std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, &dst)
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&tmp);
            local(&dst, source)
        })
    }
}

fn local(path: &Path, source: io::Error) -> RegistryError {
    RegistryError::Local { path: path.display().to_string(), source }
}

#[cfg(test)]
#[path = "chunks_tests.rs"]
mod tests;
