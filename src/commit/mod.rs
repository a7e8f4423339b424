//! `strata container commit`: turn a container's upper directory into a layer and a new image.
//!
//! The layer is written in one pass over the upper directory only (cost grows with the change, not
//! with the image): walk → tar → sha256 (diff_id) → compressor → sha256 + count (digest, size) →
//! a temp file in staging, fsynced and renamed into `blobs/sha256/`. Only the blob is written: the
//! layer directory `layers/sha256/<diff_id>/` is unpacked from it at its first use
//! ([`crate::layers::materialize_layer`]), so it is exactly what importing the exported image
//! would unpack.
//!
//! - [`layer`]: walking an upper dir (overlayfs format) into the layer tar, and the pipeline
//!   (options, hashes, sizes) around it; its module documentation describes the tar format.
//! - [`crate::tar`]: encoding one tar entry (ustar and PAX headers), in the tar format policy
//!   unpack reads with.
//! - `sparse`: files with holes as GNU sparse 1.0 PAX entries.
//! - [`compress`]: the hashing and compressing stream stages (parallel gzip, zstd).
//! - [`config`]: the new image config derived from the parent's.
//! - [`changes`]: the `docker commit --change` instructions.
//! - [`convert`]: a stored image's layers rewritten as eStargz (`image convert`, `push
//!   --compression estargz`).
//! - `container`: [`commit_container`], a container's upper dir over its image, paused meanwhile.
//! - here: the commit steps (blob, layer row, config, manifest, image) and their errors.

mod adopt;
pub mod changes;
pub mod compress;
pub mod config;
mod container;
pub mod convert;
pub mod layer;
mod sparse;

pub use adopt::{adopt_layer, compress_layers, ensure_blobs};

use std::fs::OpenOptions;
use std::io::{self, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::digest::Sha256Digest;
use crate::image::{self, ImageError};
use crate::images::{ImagePublish, ImagesError};
use crate::store::{ImageLayerRow, IoContext, Lock, Store, StoreError};

pub use changes::apply_changes;
pub use config::{derive_config, rfc3339};
pub use container::commit_container;
pub use layer::{
    layer_media_type, parse_compression, source_date_epoch, write_layer, LayerInfo, LayerOptions,
    DEFAULT_GZIP_LEVEL,
};

/// Commit errors. Each names the file or the input and the reason.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("{path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("writing the layer")]
    Write(#[source] io::Error),
    #[error("--change {change:?}: {reason}")]
    Change { change: String, reason: String },
    #[error("SOURCE_DATE_EPOCH={value:?}: not a number of seconds since 1970")]
    SourceDateEpoch { value: String },
    #[error("image {image:?}: {reason}")]
    BadImage { image: String, reason: String },
    /// The image's config, which does not parse (or, derived, cannot be rendered).
    #[error("image {image:?}: config")]
    Config {
        image: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {0:?} not found")]
    NoImage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Publishing the image (its blobs, its rows and its layer chain).
    #[error(transparent)]
    Publish(#[from] ImagesError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Name(#[from] crate::reference::ReferenceError),
    /// A layer that could not be rewritten in a seekable format.
    #[error("layer {layer}: converting to eStargz")]
    Seekable {
        layer: String,
        #[source]
        source: crate::seekable::SeekableError,
    },
    /// The container committed ([`commit_container`]): not found, read-only, or its runtime.
    #[error(transparent)]
    Container(Box<crate::container::ContainerError>),
}

impl CommitError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            CommitError::Io { source, .. } | CommitError::Write(source) => ErrorKind::of_io(source),
            CommitError::Store(e) => e.kind(),
            CommitError::Publish(e) => e.kind(),
            CommitError::NoImage(_) => ErrorKind::NotFound,
            CommitError::Unsupported { .. }
            | CommitError::Change { .. }
            | CommitError::SourceDateEpoch { .. }
            | CommitError::BadImage { .. }
            | CommitError::Config { .. }
            | CommitError::Image(_)
            | CommitError::Name(_) => ErrorKind::InvalidArgument,
            CommitError::Container(e) => e.kind(),
            CommitError::Seekable { source, .. } => source.kind(),
        }
    }
}

pub type Result<T, E = CommitError> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> CommitError + '_ {
    move |source| CommitError::Io { path: path.to_path_buf(), source }
}

const CHUNK: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Commit.

/// Options for [`commit`].
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub layer: LayerOptions,
    pub author: Option<String>,
    /// Commit message (history `comment`).
    pub message: Option<String>,
    /// `docker commit --change` instructions, e.g. `CMD ["sh"]`, `ENV A=b`.
    pub changes: Vec<String>,
}

/// What [`commit`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Committed {
    pub name: String,
    pub manifest_digest: Sha256Digest,
    pub config_digest: Sha256Digest,
    pub layer: LayerInfo,
    /// False when a layer with the same diff_id already existed and was reused.
    pub layer_created: bool,
}

/// Docker media types of layers, as their OCI equivalents (same bytes).
fn oci_layer_media_type(mt: &str) -> String {
    match mt {
        image::MT_DOCKER_LAYER_GZIP => image::MT_OCI_LAYER_GZIP.into(),
        "application/vnd.docker.image.rootfs.diff.tar" => image::MT_OCI_LAYER.into(),
        other => other.into(),
    }
}

/// What a commit stands on: the manifest's config and layers a container was created over.
#[derive(Debug, Clone)]
pub struct Parent {
    /// The image name the container was created from (for messages).
    pub name: String,
    pub config_digest: Sha256Digest,
    /// Bottom first.
    pub layers: Vec<ImageLayerRow>,
}

impl Parent {
    /// What image `name` points to now.
    pub fn of_image(store: &Store, name: &str) -> Result<Parent> {
        let img = store.image(name)?.ok_or_else(|| CommitError::NoImage(name.to_string()))?;
        Ok(Parent { layers: img.layers, name: img.name, config_digest: img.config_digest })
    }
}

/// Commit the upper directory `upper` over `parent` as image `new_name`. Replacing the image a
/// container was created from is fine: containers stand on their manifest, not on the name.
pub fn commit(
    store: &mut Store,
    upper: &Path,
    parent: &Parent,
    new_name: &str,
    opts: &CommitOptions,
) -> Result<Committed> {
    // Everything that can be checked cheaply first: a bad --change must not cost a layer write.
    crate::reference::validate_image_name(new_name)?;
    let parent_image = parent.name.as_str();
    let parent_cfg = store.read_blob(&parent.config_digest)?;
    let mut probe = json!({});
    apply_changes(&mut probe, &opts.changes)?;
    let parent_layers = parent.layers.clone();

    let _gc = store.gc_shared()?;
    let staging = store.staging()?;
    let res = commit_staged(store, &staging, upper, parent_image, new_name, opts, &parent_cfg, parent_layers);
    if res.is_err() {
        // Release what this commit leased; a layer only it held goes with it.
        store.drop_leases(&staging.token)?;
        store.remove_unreferenced_layers()?;
    }
    res
}

#[allow(clippy::too_many_arguments)]
fn commit_staged(
    store: &mut Store,
    staging: &crate::store::Staging,
    upper: &Path,
    parent_image: &str,
    new_name: &str,
    opts: &CommitOptions,
    parent_cfg: &[u8],
    parent_layers: Vec<ImageLayerRow>,
) -> Result<Committed> {
    let (row, info, layer_created) = write_layer_blob(store, staging, upper, &opts.layer)?;

    let epoch = opts.layer.source_date_epoch;
    let now = epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let cfg = derive_config(parent_cfg, &info.diff_id, &rfc3339(now), opts, parent_image)?;
    let cfg_bytes = serde_json::to_vec(&cfg)
        .map_err(|source| CommitError::Config { image: parent_image.to_string(), source })?;

    let mut rows = oci_rows(parent_layers);
    rows.push(row);
    let published = ImagePublish::new(new_name, &cfg_bytes, rows).lease(&staging.token).publish(store)?;
    Ok(Committed {
        name: published.name,
        manifest_digest: published.manifest_digest,
        config_digest: published.config_digest,
        layer: info,
        layer_created,
    })
}

/// The parent's layer rows as an OCI manifest lists them (docker media types renamed).
pub fn oci_rows(layers: Vec<ImageLayerRow>) -> Vec<ImageLayerRow> {
    layers
        .into_iter()
        .map(|mut r| {
            r.media_type = oci_layer_media_type(&r.media_type);
            r
        })
        .collect()
}

/// The layer of `upper` written as a blob and recorded as a layer row, leased to `staging`
/// until an image holds it. Returns its manifest row, what was written, and whether the layer
/// is new to the store.
fn write_layer_blob(
    store: &mut Store,
    staging: &crate::store::Staging,
    upper: &Path,
    opts: &LayerOptions,
) -> Result<(ImageLayerRow, LayerInfo, bool)> {
    let blob_tmp = staging.dir.join("layer.blob");
    let blob = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&blob_tmp).at(&blob_tmp)?;
    // Only the blob is written: the layer's directory is unpacked from it at its first use
    // (`container create`/`mount`, see `layers::materialize_layer`), so a commit writes the change
    // once, and its cost is the walk of the upper dir plus compression.
    let (info, blob) = layer::write_layer_inner(upper, BufWriter::with_capacity(CHUNK, blob), opts)?;
    let blob =
        blob.into_inner().map_err(|e| CommitError::Io { path: blob_tmp.clone(), source: e.into_error() })?;
    blob.sync_all().at(&blob_tmp)?;
    drop(blob);

    let diff_id = info.diff_id.clone();
    store.add_lease(&staging.token, &diff_id)?;
    // Until its directory is unpacked, the layer's size is its tar's size.
    let size = info.tar_size;
    let layer_created = {
        let _lock = store.lock(Lock::Layer(&info.diff_id))?;
        if store.has_layer(&diff_id)? {
            false
        } else {
            store.insert_layer(&diff_id, size, info.entries)?;
            true
        }
    };
    if !store.has_blob(&info.digest) {
        store.commit_blob_file(&blob_tmp, &info.digest)?;
    }
    let row = ImageLayerRow {
        diff_id,
        blob_digest: info.digest.clone(),
        media_type: info.media_type.to_string(),
        blob_size: info.size,
        size,
    };
    Ok((row, info, layer_created))
}

/// What [`commit_layer`] made: the layer, and what the caller's `publish` returned.
#[derive(Debug)]
pub struct LayerCommitted<T> {
    /// The layer's manifest row (blob digest, media type, sizes, diff_id).
    pub row: ImageLayerRow,
    pub info: LayerInfo,
    /// False when a layer with the same diff_id already existed and was reused.
    pub layer_created: bool,
    pub published: T,
}

/// Commit's layer production alone, for a caller that makes its own config (`build`): the
/// layer of `upper` is written as a blob and recorded, then `publish` is called with the store,
/// the lease token that holds the layer until an image does (give it to
/// [`ImagePublish::lease`]) and the layer's row. Under the gc lock (shared) throughout; when
/// anything fails, what the commit leased is released and a layer only it held is removed.
pub fn commit_layer<T>(
    store: &mut Store,
    upper: &Path,
    opts: &LayerOptions,
    publish: impl FnOnce(&mut Store, &str, &ImageLayerRow) -> Result<T>,
) -> Result<LayerCommitted<T>> {
    produce_layer(store, |store, staging| write_layer_blob(store, staging, upper, opts), publish)
}

/// What [`commit_layer`] and [`adopt::adopt_layer`] share: under the gc lock (shared) and a
/// staging lease, `make` records the layer (its row, info, and whether it was created), then
/// `publish` is called with the store, the lease token and the row. When anything fails, what
/// was leased is released and a layer only it held is removed.
pub(crate) fn produce_layer<T>(
    store: &mut Store,
    make: impl FnOnce(&mut Store, &crate::store::Staging) -> Result<(ImageLayerRow, LayerInfo, bool)>,
    publish: impl FnOnce(&mut Store, &str, &ImageLayerRow) -> Result<T>,
) -> Result<LayerCommitted<T>> {
    let _gc = store.gc_shared()?;
    let staging = store.staging()?;
    let res = make(store, &staging).and_then(|(row, info, layer_created)| {
        let published = publish(store, &staging.token, &row)?;
        Ok(LayerCommitted { row, info, layer_created, published })
    });
    if res.is_err() {
        store.drop_leases(&staging.token)?;
        store.remove_unreferenced_layers()?;
    }
    res
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::Value;
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::{symlink, PermissionsExt};

    pub(crate) use strata_test_support::privileged as need_root;

    pub(crate) fn mknod(p: &Path, kind: rustix::fs::FileType, major: u32, minor: u32) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            kind,
            rustix::fs::Mode::from_raw_mode(0o644),
            rustix::fs::makedev(major, minor),
        )
        .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
    }

    pub(crate) fn setx(p: &Path, name: &str, value: &[u8]) {
        rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty())
            .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", p.display()));
    }

    pub(crate) fn set_mtime(p: &Path, secs: i64, nsec: i64) {
        let t = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec { tv_sec: secs, tv_nsec: nsec },
            last_modification: rustix::fs::Timespec { tv_sec: secs, tv_nsec: nsec },
        };
        rustix::fs::utimensat(rustix::fs::CWD, p, &t, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
    }

    fn write(p: &Path, data: &[u8], mode: u32) {
        fs::write(p, data).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    pub(crate) const LONG: usize = 150;
    /// vfs_cap_data v2: effective, permitted = CAP_NET_RAW.
    pub(crate) const CAP: &[u8] =
        b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

    /// A hand-made upper dir with one of everything. Every mtime is 1_000_000_000 except
    /// `etc/passwd` (2_000_000_000).
    pub(crate) fn make_upper(root: &Path) {
        use rustix::fs::FileType as T;
        for d in ["bin", "dev", "etc", "long", "opt", "run", "usr/bin"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        write(&root.join("bin/a"), b"hardlinked\n", 0o4755);
        fs::hard_link(root.join("bin/a"), root.join("bin/b")).unwrap();
        mknod(&root.join("dev/null"), T::CharacterDevice, 1, 3);
        mknod(&root.join("dev/loop0"), T::BlockDevice, 7, 0);
        write(&root.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n", 0o644);
        std::os::unix::fs::lchown(root.join("etc/passwd"), Some(1000), Some(1001)).unwrap();
        mknod(&root.join("etc/shadow"), T::CharacterDevice, 0, 0);
        symlink("usr/lib", root.join("lib")).unwrap();
        write(&root.join("long").join("x".repeat(LONG)), b"long\n", 0o600);
        symlink("t".repeat(200), root.join("long/link")).unwrap();
        setx(&root.join("opt"), "trusted.overlay.opaque", b"y");
        write(&root.join("opt/new"), b"new\n", 0o640);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("run/fifo"),
            T::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(root.join("run/sock")).unwrap();
        write(&root.join("usr/bin/ping"), b"\x7fELF", 0o755);
        setx(&root.join("usr/bin/ping"), "security.capability", CAP);
        setx(&root.join("usr/bin/ping"), "user.foo", b"bar");
        setx(&root.join("usr/bin/ping"), "trusted.overlay.origin", b"junk");
        fs::set_permissions(root.join("run"), fs::Permissions::from_mode(0o1777)).unwrap();
        let mut all = vec![];
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if fs::symlink_metadata(&p).unwrap().is_dir() {
                    stack.push(p.clone());
                }
                all.push(p);
            }
        }
        // Children before parents, so setting a child's time does not move its parent's.
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in all {
            set_mtime(&p, 1_000_000_000, 5);
        }
        set_mtime(&root.join("etc/passwd"), 2_000_000_000, 0);
    }

    #[derive(Debug, PartialEq, Eq)]
    pub(crate) struct E {
        pub path: String,
        pub kind: char,
        pub mode: u32,
        pub uid: u64,
        pub gid: u64,
        pub mtime: u64,
        pub link: Option<String>,
        pub dev: Option<(u32, u32)>,
        pub xattrs: Vec<(String, Vec<u8>)>,
        pub data: Vec<u8>,
    }

    pub(crate) fn read_tar(bytes: &[u8]) -> Vec<E> {
        let mut a = tar::Archive::new(bytes);
        let mut out = vec![];
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut xattrs = vec![];
            if let Some(px) = e.pax_extensions().unwrap() {
                for x in px {
                    let x = x.unwrap();
                    if let Some(k) = x.key().unwrap().strip_prefix("SCHILY.xattr.") {
                        xattrs.push((k.to_string(), x.value_bytes().to_vec()));
                    }
                }
            }
            let h = e.header().clone();
            assert!(h.as_ustar().is_some(), "ustar headers only");
            assert_eq!(h.username_bytes(), Some(&b""[..]), "no user names");
            assert_eq!(h.groupname_bytes(), Some(&b""[..]), "no group names");
            let mut data = vec![];
            e.read_to_end(&mut data).unwrap();
            out.push(E {
                path: String::from_utf8(e.path_bytes().to_vec()).unwrap(),
                kind: h.entry_type().as_byte() as char,
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link: e.link_name_bytes().map(|l| String::from_utf8(l.to_vec()).unwrap()),
                dev: match h.entry_type() {
                    tar::EntryType::Char | tar::EntryType::Block => {
                        Some((h.device_major().unwrap().unwrap(), h.device_minor().unwrap().unwrap()))
                    }
                    _ => None,
                },
                xattrs,
                data,
            });
        }
        out
    }

    /// A store with image "base": one layer holding `etc/base`.
    fn base_store(t: &Path) -> Store {
        let mut store = Store::open(&t.join("root")).unwrap();
        let l = t.join("base-layer");
        fs::create_dir_all(l.join("etc")).unwrap();
        fs::write(l.join("etc/base"), b"base\n").unwrap();
        let mut blob = vec![];
        let info = write_layer(&l, &mut blob, &LayerOptions::default()).unwrap();
        store.put_blob(&blob).unwrap();
        store.insert_layer(&info.diff_id, info.tar_size, info.entries).unwrap();
        let rows = vec![ImageLayerRow {
            diff_id: info.diff_id.clone(),
            blob_digest: info.digest.clone(),
            // As a docker-archive import records it: commit must write the OCI equivalent.
            media_type: image::MT_DOCKER_LAYER_GZIP.into(),
            blob_size: info.size,
            size: info.tar_size,
        }];
        let config = json!({
            "architecture": "amd64", "os": "linux", "config": { "Cmd": ["sh"] },
            "rootfs": { "type": "layers", "diff_ids": [info.diff_id.to_string()] },
            "history": [{ "created_by": "base" }],
        });
        crate::images::put_test_image(&mut store, "base", &config, rows);
        store
    }

    fn count_files(dir: &Path) -> usize {
        fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
    }

    #[test]
    fn commit_checks_before_writing() {
        let t = tempfile::tempdir().unwrap();
        let mut store = base_store(t.path());
        let upper = t.path().join("upper");
        fs::create_dir(&upper).unwrap();
        let blobs_before = count_files(&store.root().join("blobs/sha256"));
        let opts = CommitOptions { changes: vec!["BOGUS x".into()], ..Default::default() };
        let base = Parent::of_image(&store, "base").unwrap();
        let e = commit(&mut store, &upper, &base, "new", &opts).unwrap_err();
        assert!(matches!(e, CommitError::Change { .. }), "{e}");
        let e = Parent::of_image(&store, "nope").unwrap_err();
        assert!(matches!(e, CommitError::NoImage(_)), "{e}");
        assert_eq!(count_files(&store.root().join("blobs/sha256")), blobs_before);
        assert!(store.image("new").unwrap().is_none());
    }

    /// Committing over the name a container was created from moves the name; the container keeps
    /// the manifest and layers it was created over.
    #[test]
    fn commit_over_a_used_name_leaves_its_containers_alone() {
        let t = tempfile::tempdir().unwrap();
        let mut store = base_store(t.path());
        let upper = t.path().join("upper");
        fs::create_dir(&upper).unwrap();
        fs::write(upper.join("new-file"), b"x").unwrap();
        let before = store.image("base").unwrap().unwrap();
        let row =
            crate::snapshot::Snapshots::new(&mut store).create_container("c1", "base", false, false).unwrap();
        assert_eq!(row.manifest_digest, before.manifest_digest);
        let layers_before = store.container_layers("c1").unwrap();
        let base = Parent::of_image(&store, "base").unwrap();
        let c = commit(&mut store, &upper, &base, "base", &CommitOptions::default()).unwrap();
        assert_ne!(c.manifest_digest, before.manifest_digest);
        assert_eq!(store.image("base").unwrap().unwrap().manifest_digest, c.manifest_digest);
        let row = store.container_row("c1").unwrap().unwrap();
        assert_eq!((row.manifest_digest, row.config_digest), (before.manifest_digest, before.config_digest));
        assert_eq!(store.container_layers("c1").unwrap(), layers_before);
        assert_eq!(store.image("base").unwrap().unwrap().layers.len(), layers_before.len() + 1);
    }

    #[test]
    fn commit_end_to_end() {
        if !need_root("commit_end_to_end") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let mut store = base_store(t.path());
        let upper = t.path().join("upper");
        fs::create_dir(&upper).unwrap();
        make_upper(&upper);
        let opts = CommitOptions {
            layer: LayerOptions { source_date_epoch: Some(1_600_000_000), ..Default::default() },
            author: Some("tester".into()),
            message: Some("one of everything".into()),
            changes: vec!["ENV A=1".into(), "CMD [\"/bin/a\"]".into()],
        };
        let base = Parent::of_image(&store, "base").unwrap();
        let c = commit(&mut store, &upper, &base, "derived", &opts).unwrap();
        assert!(c.layer_created);
        // Only the blob was written; the directory comes at first use.
        assert!(!store.layer_path(&c.layer.diff_id).exists());
        let layers = store.image("derived").unwrap().unwrap().layers;
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0].media_type, image::MT_OCI_LAYER_GZIP);
        assert_eq!(layers[1].diff_id, c.layer.diff_id);
        let cfg: Value = serde_json::from_slice(&store.read_blob(&c.config_digest).unwrap()).unwrap();
        assert_eq!(cfg["created"], "2020-09-13T12:26:40Z");
        assert_eq!(cfg["config"]["Cmd"], json!(["/bin/a"]));
        assert_eq!(cfg["history"].as_array().unwrap().len(), 2);
        // The layer directory is the upper dir, minus what a layer cannot carry.
        fn keep(name: &str) -> bool {
            !name.starts_with("security.") && name != "trusted.overlay.origin"
        }
        let topts = strata_test_support::tree::Options {
            mtime: true,
            xattr_filter: keep,
            skip: vec![PathBuf::from("run/sock"), PathBuf::from(".")],
            ..Default::default()
        };
        let mut want = strata_test_support::tree::Tree::capture_with(&upper, &topts).unwrap();
        for e in want.entries.values_mut() {
            e.mtime = e.mtime.map(|m| m.min(1_600_000_000));
        }
        let top = layers[1].clone();
        assert!(crate::layers::materialize_layer(&mut store, &top).unwrap());
        assert!(!crate::layers::materialize_layer(&mut store, &top).unwrap(), "unpacked once");
        let got = strata_test_support::tree::Tree::capture_with(&store.layer_path(&c.layer.diff_id), &topts)
            .unwrap();
        strata_test_support::tree::assert_trees_eq(&got, &want, "committed layer directory vs upper");
        // Same change again: the layer is reused.
        let again = commit(&mut store, &upper, &base, "derived2", &opts).unwrap();
        assert!(!again.layer_created);
        assert_eq!(again.layer.diff_id, c.layer.diff_id);
        // And skopeo can read the exported result.
        let dir = t.path().join("out");
        crate::export::export(
            &store,
            "derived",
            &format!("{}:d", dir.display()),
            crate::export::ExportFormat::Oci,
        )
        .unwrap();
        let out = std::process::Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:d", dir.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
