//! A build step's upper dir adopted as a layer directory as it is (no tar round trip), and the
//! blobs of such layers produced later, once, when they are needed.
//!
//! [`adopt_layer`] hashes the tar [`write_layer`](super::write_layer) would write of the upper
//! dir (its diff_id, without writing or compressing it), then renames the dir into
//! `layers/sha256/<diff_id>/` under the layer's lock: an upper dir already is in the layer
//! directories' overlayfs format. The layer's manifest row describes the uncompressed tar
//! (`digest == diff_id`, media type `…tar`), whose blob is not stored yet: [`ensure_blobs`]
//! writes it from the directory on first export, push or save, and [`compress_layers`] writes
//! gzip blobs of such layers (the end of a build with `--compress`), giving new rows. The tar is
//! a function of the directory (sorted walk, no atimes), so a blob made later has exactly the
//! digest recorded when the layer was adopted; both paths check it.

use std::fs::{self, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::layer::{self, LayerOptions};
use super::{io_at, CommitError, LayerCommitted, Result, CHUNK};
use crate::compression::Compression;
use crate::overlay_format::{is_private_xattr, OPAQUE_XATTRS};
use crate::store::{ImageLayerRow, IoContext, Lock, Store};

/// The layer of `upper` (a build container's upper dir, unmounted) recorded without a blob:
/// its directory is `upper` itself, renamed into the layer store (or dropped when the store
/// holds that layer already); an empty directory is left at `upper` for its snapshot's
/// removal. Then `publish` is called as [`super::commit_layer`] calls it. The overlay's private
/// xattrs other than the opaque marker (`origin`, `impure`: what the kernel wrote while the
/// container ran) are removed first: they are no part of a layer.
pub fn adopt_layer<T>(
    store: &mut Store,
    upper: &Path,
    opts: &LayerOptions,
    publish: impl FnOnce(&mut Store, &str, &ImageLayerRow) -> Result<T>,
) -> Result<LayerCommitted<T>> {
    super::produce_layer(
        store,
        |store, staging| {
            normalize(upper, opts.source_date_epoch)?;
            let hash_opts = LayerOptions { compression: Compression::None, ..opts.clone() };
            let info = layer::write_layer(upper, std::io::sink(), &hash_opts)?;
            let diff_id = info.diff_id.clone();
            store.add_lease(&staging.token, &diff_id)?;
            let layer_created = {
                let _lock = store.lock(Lock::Layer(&diff_id))?;
                let dir = store.layer_path(&diff_id);
                if !dir.is_dir() {
                    let mode = fs::symlink_metadata(upper).at(upper)?.permissions();
                    Store::syncfs(upper)?;
                    fs::rename(upper, &dir).at(&dir)?;
                    fs::create_dir(upper).at(upper)?;
                    fs::set_permissions(upper, mode).at(upper)?;
                }
                if store.has_layer(&diff_id)? {
                    false
                } else {
                    store.insert_layer(&diff_id, info.tar_size, info.entries)?;
                    true
                }
            };
            let row = ImageLayerRow {
                diff_id: diff_id.clone(),
                blob_digest: diff_id,
                media_type: Compression::None.media_type().to_string(),
                blob_size: info.tar_size,
                size: info.tar_size,
            };
            Ok((row, info, layer_created))
        },
        publish,
    )
}

/// Removes the overlay's private xattrs but the opaque markers from every entry of `root`, and
/// clamps mtimes to `epoch` (`SOURCE_DATE_EPOCH`) as the tar would: the directory then is what
/// its tar says, and a blob written later without the epoch has the same digest.
fn normalize(root: &Path, epoch: Option<i64>) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    let mut names = vec![0u8; 4096];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p).map_err(io_at(&p))?;
        let n = loop {
            match rustix::fs::llistxattr(&p, &mut names[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
                Err(rustix::io::Errno::NOTSUP) => break 0,
                Err(e) => return Err(io_at(&p)(e.into())),
            }
        };
        for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
            if is_private_xattr(name) && !OPAQUE_XATTRS.iter().any(|o| o.as_bytes() == name) {
                match rustix::fs::lremovexattr(&p, name) {
                    Ok(()) | Err(rustix::io::Errno::NODATA) => {}
                    Err(e) => return Err(io_at(&p)(e.into())),
                }
            }
        }
        if let Some(e) = epoch.filter(|e| std::os::unix::fs::MetadataExt::mtime(&meta) > *e) {
            use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
            let at = |tv_sec| Timespec { tv_sec, tv_nsec: 0 };
            let atime = std::os::unix::fs::MetadataExt::atime(&meta);
            let times = Timestamps { last_access: at(atime), last_modification: at(e) };
            rustix::fs::utimensat(CWD, &p, &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_at(&p)(e.into()))?;
        }
        if meta.is_dir() {
            for e in fs::read_dir(&p).map_err(io_at(&p))? {
                stack.push(e.map_err(io_at(&p))?.path());
            }
        }
    }
    Ok(())
}

/// Whether `row` is a layer recorded by [`adopt_layer`] whose blob is not stored yet.
fn blobless(store: &Store, row: &ImageLayerRow) -> bool {
    row.blob_digest == row.diff_id
        && row.media_type == Compression::None.media_type()
        && !store.has_blob(&row.blob_digest)
}

/// Writes the blob of `dir`'s layer compressed as `opts` says into the blob store, checking
/// that its tar is the layer `diff_id` recorded. Returns the layer's new row.
fn write_blob(store: &Store, row: &ImageLayerRow, opts: &LayerOptions) -> Result<ImageLayerRow> {
    let dir = store.layer_path(&row.diff_id);
    let staging = store.staging()?;
    let tmp = staging.dir.join("layer.blob");
    let f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_at(&tmp))?;
    let (info, w) = layer::write_layer_inner(&dir, BufWriter::with_capacity(CHUNK, f), opts)?;
    let f = w.into_inner().map_err(|e| CommitError::Write(e.into_error()))?;
    f.sync_all().map_err(io_at(&tmp))?;
    drop(f);
    if info.diff_id != row.diff_id {
        return Err(CommitError::BadImage {
            image: row.diff_id.to_string(),
            reason: format!("the layer's directory gives the tar {}, not its diff_id", info.diff_id),
        });
    }
    if !store.has_blob(&info.digest) {
        store.commit_blob_file(&tmp, &info.digest)?;
    }
    Ok(ImageLayerRow {
        diff_id: row.diff_id.clone(),
        blob_digest: info.digest,
        media_type: info.media_type.to_string(),
        blob_size: info.size,
        size: row.size,
    })
}

/// The tar blobs of `layers` recorded without one ([`adopt_layer`]) written from their
/// directories: before an image is exported, pushed or saved. Under the gc lock (shared).
pub fn ensure_blobs(store: &Store, layers: &[ImageLayerRow]) -> Result<()> {
    let _gc = store.gc_shared()?;
    let opts = LayerOptions { compression: Compression::None, ..Default::default() };
    for row in layers {
        if blobless(store, row) {
            let _lock = store.lock(Lock::Layer(&row.diff_id))?;
            if blobless(store, row) {
                write_blob(store, row, &opts)?;
                tracing::info!(layer = %row.diff_id, "wrote the tar blob of a layer made by a build");
            }
        }
    }
    Ok(())
}

/// `layers` with each layer recorded without a blob ([`adopt_layer`]) compressed as `opts`
/// says, its blob stored, and its row replaced (the same diff_id: an image config over them
/// stays the same). Returns None when no layer needed it.
pub fn compress_layers(
    store: &mut Store,
    layers: &[ImageLayerRow],
    opts: &LayerOptions,
) -> Result<Option<Vec<ImageLayerRow>>> {
    let _gc = store.gc_shared()?;
    let mut out = Vec::with_capacity(layers.len());
    let mut changed = false;
    for row in layers {
        if blobless(store, row) {
            let _lock = store.lock(Lock::Layer(&row.diff_id))?;
            out.push(write_blob(store, row, opts)?);
            changed = true;
        } else {
            out.push(row.clone());
        }
    }
    Ok(changed.then_some(out))
}
