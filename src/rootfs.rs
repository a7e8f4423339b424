//! `strata container export`: a container's merged root filesystem as one flat tar, as
//! `docker export` writes it (whiteouts applied, opaque directories applied, no `.wh.` entries).
//!
//! Hardlinks are kept as link entries, as the kernel overlay shows them. strata-fuse reports each
//! path of a hardlinked file as a separate inode, so a container mounted with `--backend fuse` is
//! exported from a private read-only kernel view of its layers and upper dir instead of its FUSE
//! mount (where the kernel cannot mount overlays, from the FUSE mount: hardlinks then come out
//! as separate copies with the same content and metadata).
//!
//! `strata image import-rootfs` is the way back, as `docker import`: a flat rootfs tar (plain,
//! gzip or zstd, sniffed) is unpacked by the import unpacker (confined to its root, the same
//! checks as a layer) into a staging directory, which is then committed as the one layer of a new
//! image by [`crate::commit::commit`] (the commit tar writer and compressor, `--change`, history)
//! over an empty base config of the host's platform.
//!
//! The merged view is walked, not the layers: a mounted container is read where it is mounted
//! (kernel overlay or strata-fuse); otherwise its layers are mounted read-only (the upper dir as
//! the top lower layer, so nothing in it changes) on a private staging directory for the length of
//! the export. The tar is written by the commit writer ([`crate::commit::write_layer`],
//! uncompressed), so the entries are the same deterministic ustar/PAX entries a layer has, sparse
//! files included, pre-1970 mtimes stored as 0 as in a layer; the merged view hides overlayfs's whiteouts and private xattrs, so none appear.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::commit::{CommitError, LayerOptions};
use crate::container::{self, ContainerError};
use crate::image::Compression;
use crate::store::Store;
use kernel_overlay::OverlaySpec;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("container {name:?}: exporting {root}")]
    Write { name: String, root: PathBuf, source: Box<CommitError> },
    #[error("{source_name}")]
    Unpack { source_name: String, source: crate::unpack::UnpackError },
    #[error("{source_name}")]
    Read { source_name: String, source: std::io::Error },
    #[error(transparent)]
    Commit(#[from] Box<CommitError>),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("container {name:?}: read-only mount of its layers")]
    Mount { name: String, source: kernel_overlay::Error },
}

impl RootfsError {
    /// What class of failure this is (see [`crate::error::ErrorKind`]).
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            RootfsError::Container(e) => e.kind(),
            RootfsError::Write { source, .. } | RootfsError::Commit(source) => source.kind(),
            RootfsError::Unpack { source, .. } => source.kind(),
            RootfsError::Read { source, .. } => ErrorKind::of_io(source),
            RootfsError::Store(e) => e.kind(),
            RootfsError::Mount { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = RootfsError> = std::result::Result<T, E>;

/// What [`export_container`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// Tar entries.
    pub entries: u64,
    /// Bytes of tar.
    pub size: u64,
}

/// Unmounts a temporary mount when dropped (before its staging directory goes).
struct TempMount {
    at: PathBuf,
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Err(e) = kernel_overlay::unmount(&self.at, kernel_overlay::UnmountMode::Detach) {
            tracing::warn!(at = %self.at.display(), error = %crate::error::report(&e), "unmounting the export view");
        }
    }
}

/// Write container `name`'s merged root filesystem to `out` as one flat tar.
pub fn export_container(store: &mut Store, name: &str, out: impl Write) -> Result<Exported> {
    let write = |root: &Path, out| {
        let opts = LayerOptions { compression: Compression::None, ..Default::default() };
        crate::commit::write_layer(root, out, &opts).map_err(|e| RootfsError::Write {
            name: name.to_string(),
            root: root.to_path_buf(),
            source: Box::new(e),
        })
    };
    // The lock container::mount takes: no mount of it starts while its layers are mounted here.
    let _g = container::lock(store, name)?;
    let mounted = container::mounted_at(store, name)?;
    if let Some(at) = &mounted {
        if container::backend_at(at) == Some(container::Backend::Kernel) {
            let info = write(at, out)?;
            return Ok(Exported { entries: info.entries, size: info.tar_size });
        }
    }
    let spec = read_only_view(store, name)?;
    let staging = store.staging().map_err(ContainerError::from)?;
    let at = staging.dir.clone();
    let info = match (kernel_overlay::mount(&spec, &at), &mounted) {
        (Ok(_), _) => {
            let guard = TempMount { at };
            let info = write(&guard.at, out);
            drop(guard);
            info
        }
        (Err(e), Some(fuse_at)) => {
            tracing::warn!(container = name, error = %crate::error::report(&e), "no kernel view; exporting the FUSE mount (hardlinks become copies)");
            write(fuse_at, out)
        }
        (Err(e), None) => return Err(RootfsError::Mount { name: name.to_string(), source: e }),
    };
    drop(staging);
    let info = info?;
    Ok(Exported { entries: info.entries, size: info.tar_size })
}

/// A read-only overlay of a container's layers with its upper dir (if any) as the top lower, its
/// layers unpacked first (a committed layer is unpacked at its first use).
fn read_only_view(store: &mut Store, name: &str) -> Result<OverlaySpec> {
    let c = container::row(store, name)
        .map_err(ContainerError::from)?
        .ok_or_else(|| ContainerError::NotFound(name.to_string()))?;
    for l in container::layers(store, name).map_err(ContainerError::from)? {
        crate::layers::materialize_layer(store, &l).map_err(ContainerError::Layer)?;
    }
    let spec = container::overlay_spec(store, &c)?;
    let mut lowers = Vec::with_capacity(spec.lowers.len() + 1);
    lowers.extend(spec.upper.clone());
    lowers.extend(spec.lowers.iter().cloned());
    let mut view = OverlaySpec::read_only(lowers);
    view.empty_lower = spec.empty_lower.clone();
    Ok(view)
}

/// Import the flat rootfs tar read from `tar` (named `source_name` in messages and in the
/// history comment when `opts.message` is unset) as image `name`, one layer. Nothing is left
/// behind on failure: the unpacked tree lives in staging, and a failed commit undoes itself.
pub fn import_rootfs(
    store: &mut Store,
    tar: impl std::io::Read,
    source_name: &str,
    name: &str,
    opts: &crate::commit::CommitOptions,
) -> Result<crate::commit::Committed> {
    use std::io::BufReader;
    // Cheap checks before any unpacking.
    crate::reference::validate_image_name(name).map_err(|e| Box::new(CommitError::from(e)))?;
    crate::commit::apply_changes(&mut serde_json::json!({}), &opts.changes).map_err(Box::new)?;

    let read_err = |e| RootfsError::Read { source_name: source_name.to_string(), source: e };
    let plain = Compression::sniffing_decoder(BufReader::with_capacity(1 << 18, tar)).map_err(read_err)?;
    let staging = store.staging()?;
    let tree = staging.dir.join("rootfs");
    std::fs::create_dir(&tree)
        .map_err(|e| RootfsError::Read { source_name: tree.display().to_string(), source: e })?;
    crate::unpack::unpack_layer(plain, &tree, &crate::unpack::UnpackOptions::for_this_process())
        .map_err(|e| RootfsError::Unpack { source_name: source_name.to_string(), source: e })?;

    let plat = crate::image::Platform::host();
    let mut base = serde_json::json!({
        "architecture": plat.arch, "os": plat.os,
        "config": {}, "rootfs": {"type": "layers", "diff_ids": []}, "history": [],
    });
    if let Some(v) = plat.variant {
        base["variant"] = v.into();
    }
    let base_bytes = serde_json::to_vec(&base).map_err(|e| RootfsError::Read {
        source_name: source_name.to_string(),
        source: std::io::Error::other(e),
    })?;
    let base_digest = store.put_blob(&base_bytes)?;
    let parent =
        crate::commit::Parent { name: source_name.to_string(), config_digest: base_digest, layers: vec![] };
    let mut opts = opts.clone();
    if opts.message.is_none() {
        opts.message = Some(format!("Imported from {source_name}"));
    }
    let done = crate::commit::commit(store, &tree, &parent, name, &opts).map_err(Box::new)?;
    drop(staging);
    Ok(done)
}
