//! The local side of a remote layer (`pull --lazy`, see docs/lazy.md): its verified TOC read
//! back from the store ([`stored_toc`]) and its *skeleton* ([`skeleton`]): a directory tree with
//! every TOC entry's metadata (mode, owner, mtime, xattrs, symlink targets, hard links,
//! whiteouts and opaque directories), regular files sparse at their final size and without data.
//! strata-fuse stacks the skeleton as the layer's lower directory, so names resolve and list as
//! in any layer, and only file contents are read through the registry.
//!
//! The skeleton is built by the very unpacker every layer goes through ([`crate::unpack`]): the
//! TOC is written as a metadata-only layer tar ([`skeleton_tar`]: each regular file a GNU sparse
//! 1.0 entry whose map has no data), which `unpack_layer` applies. A hostile TOC (names through
//! symlinks, hard links to what is not there, bad whiteouts) is refused exactly as a hostile tar
//! is; the TOC itself was checked when it was parsed (no `..`, no absolute names). The tar goes
//! through a staging file, the tree is built in staging and renamed into place under the layer's
//! lock, as a layer directory is.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{LayerError, Result};
use crate::compression::Compression;
use crate::digest::Sha256Digest;
use crate::seekable::{self, EntryKind, Format, Toc};
use crate::store::{IoContext, Lock, RemoteLayerRow, Store};
use crate::tar::sparse::{map_block, placeholder_name};
use crate::tar::write::{EntryMeta, LayerWriter, Sparse};
use crate::unpack::{self, UnpackOptions, UnpackStats};

/// The seekable format of a remote layer of `media_type`.
pub fn format_of(media_type: &str) -> Option<Format> {
    match Compression::of_media_type(media_type)? {
        Compression::Gzip => Some(Format::Estargz),
        Compression::Zstd => Some(Format::ZstdChunked),
        _ => None,
    }
}

/// Remote layer `row`'s TOC, from the blob the lazy pull stored after verifying it against the
/// layer's descriptor: checked again against its digest (the row's `toc_digest`), then parsed
/// and checked entry by entry as when it was fetched.
pub fn stored_toc(store: &Store, row: &RemoteLayerRow) -> Result<Toc> {
    let layer = row.diff_id.to_string();
    let json = store.read_blob(&row.toc_digest)?;
    let actual = Sha256Digest::of(&json);
    if actual != row.toc_digest {
        return Err(LayerError::DigestMismatch {
            layer,
            expected: row.toc_digest.to_string(),
            actual: actual.to_string(),
        });
    }
    let format = format_of(&row.media_type).ok_or_else(|| LayerError::MediaType(row.media_type.clone()))?;
    // A version 4 row does not know where the data ends: the blob's end bounds the chunks.
    let data_end = if row.data_end > 0 { row.data_end } else { row.blob_size };
    Toc::parse(&json, format, data_end).map_err(|source| LayerError::Toc { layer, source })
}

/// Make sure remote layer `row`'s skeleton tree exists (built once, under the layer's lock);
/// returns its path ([`Store::remote_tree`]).
pub fn skeleton(store: &Store, row: &RemoteLayerRow) -> Result<PathBuf> {
    let tree = store.remote_tree(&row.diff_id);
    if tree.is_dir() {
        return Ok(tree);
    }
    let _gc = store.gc_shared()?;
    let _lock = store.lock(Lock::Layer(&row.diff_id))?;
    if tree.is_dir() {
        return Ok(tree);
    }
    let toc = stored_toc(store, row)?;
    let staging = store.staging()?;
    let dir = staging.dir.join("tree");
    fs::create_dir(&dir).at(&dir)?;
    let stats = build_tree(&toc, &staging.dir.join("skeleton.tar"), &dir, &UnpackOptions::for_this_process())
        .map_err(|e| e.in_layer(&row.diff_id))?;
    Store::syncfs(&dir)?;
    let parent = store.remote_dir(&row.diff_id);
    fs::create_dir_all(&parent).at(&parent)?;
    fs::rename(&dir, &tree).at(&tree)?;
    tracing::info!(layer = %row.diff_id, entries = stats.entries, "skeleton of a remote layer built from its TOC");
    Ok(tree)
}

/// Build the skeleton of `toc` in the existing, empty directory `dest`, through the tar file
/// `scratch` (written, read, removed).
pub fn build_tree(toc: &Toc, scratch: &Path, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats> {
    let local = |source| LayerError::Read { layer: scratch.display().to_string(), source };
    let file = File::create(scratch).map_err(local)?;
    let mut out = skeleton_tar(toc, BufWriter::new(file)).map_err(local)?;
    out.flush().map_err(local)?;
    drop(out);
    let file = File::open(scratch).map_err(local)?;
    let stats = unpack::unpack_layer(BufReader::new(file), dest, opts)
        .map_err(|source| LayerError::Unpack { layer: "(skeleton)".into(), source });
    let _ = fs::remove_file(scratch);
    stats
}

/// `toc` as a metadata-only layer tar: each entry as the layer's tar has it, regular files of
/// non-zero size as GNU sparse 1.0 entries with no data (the map alone), so unpacking makes
/// them sparse at their size. The TOC and the prefetch landmarks are left out
/// ([`seekable::HIDDEN_NAMES`]).
pub fn skeleton_tar<W: Write>(toc: &Toc, out: W) -> io::Result<W> {
    let mut w = LayerWriter { builder: tar::Builder::new(out), entries: 0, epoch: None };
    for e in &toc.entries {
        if seekable::HIDDEN_NAMES.contains(&e.name.as_str()) {
            continue;
        }
        let name: &[u8] = if e.name.is_empty() { b"." } else { e.name.as_bytes() };
        // Exact (containers/storage's TOCs have nanoseconds; times before 1970 exist): through
        // a PAX record when the ustar field cannot hold it.
        let exact = e.modtime.as_deref().and_then(crate::time::parse_rfc3339_exact).unwrap_or((0, 0));
        let mtime = exact.0.clamp(0, crate::tar::ustar::MAX_SIZE as i64) as u64;
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> =
            e.xattrs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.clone())).collect();
        let kind = match e.kind {
            EntryKind::Dir => tar::EntryType::Directory,
            EntryKind::Reg => tar::EntryType::Regular,
            EntryKind::Symlink => tar::EntryType::Symlink,
            EntryKind::Hardlink => tar::EntryType::Link,
            EntryKind::Char => tar::EntryType::Char,
            EntryKind::Block => tar::EntryType::Block,
            EntryKind::Fifo => tar::EntryType::Fifo,
        };
        let link = match e.kind {
            EntryKind::Symlink | EntryKind::Hardlink => Some(e.link_name.as_bytes()),
            _ => None,
        };
        let dev = matches!(e.kind, EntryKind::Char | EntryKind::Block).then_some((e.dev_major, e.dev_minor));
        let sparse = e.kind == EntryKind::Reg && e.size > 0;
        let placeholder;
        let map;
        let (path, size, data): (&[u8], u64, &[u8]) = if sparse {
            placeholder = placeholder_name(name);
            map = map_block(&[], e.size);
            (&placeholder, map.len() as u64, &map)
        } else {
            (name, 0, &[])
        };
        let meta = EntryMeta {
            path,
            kind,
            mode: e.mode,
            uid: u64::from(e.uid),
            gid: u64::from(e.gid),
            mtime,
            exact_mtime: Some(exact),
            size,
            link,
            dev,
            xattrs: &xattrs,
            sparse: sparse.then_some(Sparse { name, realsize: e.size }),
        };
        w.append(&meta, &mut &*data)?;
    }
    w.builder.into_inner()
}

impl LayerError {
    /// An unpack error of a skeleton, named by its layer.
    fn in_layer(self, diff_id: &Sha256Digest) -> LayerError {
        match self {
            LayerError::Unpack { source, .. } => LayerError::Unpack { layer: diff_id.to_string(), source },
            e => e,
        }
    }
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;
