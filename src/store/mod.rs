//! The state root: `blobs/sha256/<hex>`, `layers/sha256/<hex>/`, `snapshots/<id>/` (see
//! [`crate::snapshot`]), `staging/`, `locks/`, `containers/<name>/`, and the metadata database
//! `strata.db` ([`crate::meta`], reached only through the store).
//!
//! The second layer of the stack: it uses meta and nothing above (not the snapshot core, which
//! stands on it). It owns paths, staging, trash, blobs, typed locks ([`Lock`]), recovery, and the
//! typed reads of image, container and layer rows the layers above need ([`Store::image`]).
//!
//! Crash safety: everything is built under `staging/<token>/` while the builder holds an flock on
//! `staging/<token>.lock`, and renamed into place only when complete and verified. On open, staging
//! entries whose lock is free belong to dead processes and are removed, with their leases and the
//! layers only they held (see [`Store::recover`]).
//!
//! Files: here the root (opening, checking, paths) and the typed reads of rows; `locks.rs` the
//! typed locks; `staging.rs` staging entries and trash; `blobs.rs` the blob store;
//! `reserve.rs` the space kept for a full disk; `recovery.rs` recovery and the removal of what
//! nothing references.

mod blobs;
mod locks;
mod recovery;
mod reserve;
mod staging;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::digest::Sha256Digest;
pub use crate::meta::{ContainerRow, ImageLayerRow, NewImage, RemoteLayerRow, RemovedImage};
use crate::meta::{Db, MetaError};
use locks::lock_file;
pub use locks::{Lock, LockGuard};
use reserve::Reserve;
pub use reserve::RESERVE_BYTES;
pub use staging::Staging;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("blob {digest} not found in the store")]
    MissingBlob { digest: String },
    #[error("image {0:?} not found")]
    NoImage(String),
    #[error("image {image:?} is used by container(s) {containers}; remove them first")]
    ImageInUse { image: String, containers: String },
    #[error("refusing state root: {path} {reason}")]
    Untrusted { path: PathBuf, reason: String },
    /// `--root` names something that is not a directory, or a path under one.
    #[error("state root {} is not a directory{detail}", root.display())]
    NotADirectory { root: PathBuf, detail: String },
    /// A rootless store opened by root, or root's store opened in rootless mode: their layers
    /// differ (`user.` or `trusted.` markers, owners shifted by a user namespace or not).
    #[error("{}", wrong_mode(root, *rootless_store))]
    WrongMode { root: PathBuf, rootless_store: bool },
}

fn wrong_mode(root: &Path, rootless_store: bool) -> String {
    if rootless_store {
        format!(
            "state root {} is a rootless store (its layers carry user.overlay.* markers and owners \
             shifted by a user's namespace): root cannot use it; run strata as the user who made it",
            root.display()
        )
    } else {
        format!(
            "state root {} is root's store (trusted.overlay.* markers, host owners): rootless strata \
             cannot use it; give another --root (the default is $XDG_DATA_HOME/strata)",
            root.display()
        )
    }
}

/// The file that marks a store made in rootless mode (see [`crate::userns`]).
pub const ROOTLESS_MARK: &str = "rootless";

impl StoreError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            StoreError::Io { source, .. } => ErrorKind::of_io(source),
            StoreError::MissingBlob { .. } | StoreError::NoImage(_) => ErrorKind::NotFound,
            StoreError::ImageInUse { .. } => ErrorKind::FailedPrecondition,
            StoreError::Untrusted { .. } | StoreError::NotADirectory { .. } => ErrorKind::InvalidArgument,
            StoreError::WrongMode { .. } => ErrorKind::FailedPrecondition,
            StoreError::Meta(e) => e.kind(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attach a path to an io::Error.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|source| StoreError::Io { path: path.as_ref().to_path_buf(), source })
    }
}

/// The opened state root.
pub struct Store {
    root: PathBuf,
    /// Private: the layers above read rows through the store's typed accessors, and only the
    /// snapshot core runs transactions ([`Store::meta_mut`]).
    db: Db,
    /// Declared after `db`: dropped after the database connection has closed.
    _reserve: Reserve,
}

/// A stored image: its name, ID (the config digest), manifest digest, when it was stored (Unix
/// seconds) and its layers, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredImage {
    pub name: String,
    pub manifest_digest: Sha256Digest,
    pub config_digest: Sha256Digest,
    pub created: i64,
    pub layers: Vec<ImageLayerRow>,
}

pub use crate::fsutil::remove_tree;

/// The state root and what strata keeps directly in it must be strata's own: real directories
/// (and a real database file), not symlinks, owned by this user (root), and the root writable by
/// nobody else. Another user who owns or can write the root could swap `containers/` for a link
/// and make root create and delete files anywhere, or rewrite `strata.db` (containerd and podman
/// refuse such roots the same way). With the root refused unless it is root's and 0700, nobody
/// else can plant a link anywhere below it.
fn check_ownership(root: &Path) -> Result<()> {
    let euid = rustix::process::geteuid().as_raw();
    let refuse = |path: &Path, reason: String| StoreError::Untrusted { path: path.to_path_buf(), reason };
    let md = fs::symlink_metadata(root).at(root)?;
    if md.file_type().is_symlink() {
        return Err(refuse(root, "is a symbolic link; give the real directory".into()));
    }
    check_owned(&md, euid).map_err(|r| refuse(root, r))?;
    if md.mode() & 0o022 != 0 {
        return Err(refuse(root, format!("is writable by group or others (mode {:o})", md.mode() & 0o7777)));
    }
    for sub in [
        "blobs",
        "blobs/sha256",
        "layers",
        "layers/sha256",
        "staging",
        "locks",
        "containers",
        "runc",
        "remote",
        "strata.db",
    ] {
        let p = root.join(sub);
        let md = match fs::symlink_metadata(&p) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).at(&p),
        };
        let want_dir = sub != "strata.db";
        let ft = md.file_type();
        if ft.is_symlink() || (want_dir && !ft.is_dir()) || (!want_dir && !ft.is_file()) {
            let what = if want_dir { "a directory" } else { "a regular file" };
            return Err(refuse(
                &p,
                format!("is not {what} (planted?); strata does not follow links in its root"),
            ));
        }
        check_owned(&md, euid).map_err(|r| refuse(&p, r))?;
    }
    Ok(())
}

fn check_owned(md: &fs::Metadata, euid: u32) -> std::result::Result<(), String> {
    if md.uid() != euid {
        return Err(format!("is owned by uid {}, not by uid {euid} which runs strata", md.uid()));
    }
    Ok(())
}

/// The state root, or the nearest of its ancestors that exists, must be a directory (missing
/// ones are created). Symlinks to directories are fine.
fn check_root_path(root: &Path) -> Result<()> {
    let mut p = root;
    loop {
        match fs::metadata(p) {
            Ok(md) if md.is_dir() => return Ok(()),
            Ok(md) => {
                let ft = md.file_type();
                use std::os::unix::fs::FileTypeExt;
                let kind = if ft.is_file() {
                    "a regular file"
                } else if ft.is_fifo() {
                    "a FIFO"
                } else if ft.is_socket() {
                    "a socket"
                } else if ft.is_char_device() || ft.is_block_device() {
                    "a device"
                } else {
                    "not a directory"
                };
                let detail = if p == root {
                    format!(" (it is {kind})")
                } else {
                    format!(" ({} is {kind})", p.display())
                };
                return Err(StoreError::NotADirectory { root: root.to_path_buf(), detail });
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                if fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
                    let detail = format!(" ({} is a symbolic link to a missing target)", p.display());
                    return Err(StoreError::NotADirectory { root: root.to_path_buf(), detail });
                }
                match p.parent() {
                    Some(q) if !q.as_os_str().is_empty() => p = q,
                    _ => return Ok(()),
                }
            }
            // Anything else (EACCES, ELOOP) is reported by the creation below, with its path.
            Err(_) => return Ok(()),
        }
    }
}

/// A store is root's or rootless, for good: a new one made in rootless mode gets the
/// [`ROOTLESS_MARK`] file; an existing one must have been made in this process's mode. Called
/// under the database-open lock, so concurrent first opens agree.
fn check_mode(root: &Path) -> Result<()> {
    let rootless = crate::userns::is_rootless();
    let mark = root.join(ROOTLESS_MARK);
    let fresh = !root.join("strata.db").exists();
    if fresh && rootless {
        fs::write(&mark, b"made by rootless strata: layers with user.overlay.* markers\n").at(&mark)?;
        return Ok(());
    }
    let marked = match fs::symlink_metadata(&mark) {
        Ok(md) if md.file_type().is_file() => true,
        Ok(_) => {
            return Err(StoreError::Untrusted { path: mark, reason: "is not a regular file".into() });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).at(&mark),
    };
    if marked != rootless {
        return Err(StoreError::WrongMode { root: root.to_path_buf(), rootless_store: marked });
    }
    Ok(())
}

fn random_token() -> String {
    format!("{}-{}", std::process::id(), hex::encode(crate::fsutil::random_bytes::<8>()))
}

impl Store {
    /// Default state root.
    pub const DEFAULT_ROOT: &'static str = "/var/lib/strata";

    /// Open (creating if needed) the state root and recover from interrupted operations.
    pub fn open(root: &Path) -> Result<Store> {
        check_root_path(root)?;
        let mut b = fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        b.create(root).at(root)?;
        check_ownership(root).map_err(|e| {
            // Root at a rootless store: that is what to say, not whose files they are.
            if !crate::userns::is_rootless() && root.join(ROOTLESS_MARK).is_file() {
                StoreError::WrongMode { root: root.to_path_buf(), rootless_store: true }
            } else {
                e
            }
        })?;
        // The root must not let host users reach setuid binaries inside layers.
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).at(root)?;
        for sub in ["blobs/sha256", "layers/sha256", "snapshots", "staging", "locks", "containers", "remote"]
        {
            let p = root.join(sub);
            b.create(&p).at(&p)?;
        }
        let reserve = Reserve::balance(root);
        // Creating, switching to WAL and migrating the database take turns: concurrent first
        // opens of a fresh root would otherwise fail with "database is locked" (SQLite does not
        // wait on a lock it can only get by upgrading a read).
        let db = {
            let _g = lock_file(&root.join("locks/db-open.lock"), true)?;
            check_mode(root)?;
            Db::open(&root.join("strata.db"))?
        };
        let mut store = Store { root: root.to_path_buf(), db, _reserve: reserve };
        store.migrate_container_dirs()?;
        store.recover()?;
        Ok(store)
    }

    /// Another handle on this opened state root, for a worker thread: its own database
    /// connection (a connection is not shared between threads), without the checks and the
    /// recovery [`Store::open`] already did.
    pub fn reopen(&self) -> Result<Store> {
        let db = {
            let _g = lock_file(&self.root.join("locks/db-open.lock"), true)?;
            Db::open(&self.root.join("strata.db"))?
        };
        Ok(Store { root: self.root.clone(), db, _reserve: Reserve { root: self.root.clone() } })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Sha256Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn layer_path(&self, diff_id: &Sha256Digest) -> PathBuf {
        self.root.join("layers/sha256").join(diff_id.hex())
    }

    /// `remote/<diff_id hex>/`: what a remote layer (`pull --lazy`) has locally: `tree/`, its
    /// skeleton (every entry of its TOC, regular files sparse), `chunks/<digest hex>`, the
    /// verified chunks fetched, and `tmp/`, chunks being written (`<pid>-...`).
    pub fn remote_dir(&self, diff_id: &Sha256Digest) -> PathBuf {
        self.root.join("remote").join(diff_id.hex())
    }

    /// The skeleton tree of remote layer `diff_id` (see [`Store::remote_dir`]).
    pub fn remote_tree(&self, diff_id: &Sha256Digest) -> PathBuf {
        self.remote_dir(diff_id).join("tree")
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// `snapshots/`: one short directory per snapshot.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// A snapshot's directory, `snapshots/<id>` (made and removed by the snapshot core).
    pub fn snapshot_dir(&self, id: i64) -> PathBuf {
        self.snapshots_dir().join(id.to_string())
    }

    /// The metadata database, for reads of the layers that own its rows (the snapshot core).
    pub(crate) fn meta(&self) -> &Db {
        &self.db
    }

    /// The metadata database, for the snapshot core's transactions.
    pub(crate) fn meta_mut(&mut self) -> &mut Db {
        &mut self.db
    }
    /// The image a user means by `name`, as docker finds it: the name as stored, else its
    /// canonical form (`busybox` finds `busybox:latest`), else a unique prefix of an image ID
    /// (the config digest, with or without `sha256:`). Use the returned `name` for everything
    /// after.
    pub fn image(&self, name: &str) -> Result<Option<StoredImage>> {
        match self.db.image(name)? {
            Some(row) => Ok(Some(self.stored_image(row)?)),
            None => Ok(None),
        }
    }

    /// Every stored image, by name.
    pub fn images(&self) -> Result<Vec<StoredImage>> {
        self.db.images()?.into_iter().map(|row| self.stored_image(row)).collect()
    }

    fn stored_image(&self, row: crate::meta::ImageRow) -> Result<StoredImage> {
        let layers = self.db.image_layers(&row.name)?;
        Ok(StoredImage {
            name: row.name,
            manifest_digest: row.manifest_digest,
            config_digest: row.config_digest,
            created: row.created,
            layers,
        })
    }

    /// Remove an image name, saying why not when it cannot go (see [`Store::remove_image`]).
    pub fn try_remove_image(&mut self, name: &str) -> Result<RemovedImage> {
        Ok(self.db.remove_image(name)?)
    }

    /// Container `name`'s row (read through [`crate::container`]).
    pub(crate) fn container_row(&self, name: &str) -> Result<Option<ContainerRow>> {
        Ok(self.db.container(name)?)
    }

    /// Every container's row, by name.
    pub(crate) fn container_rows(&self) -> Result<Vec<ContainerRow>> {
        Ok(self.db.containers()?)
    }

    /// The layers container `name` stands on, bottom first.
    pub(crate) fn container_layers(&self, name: &str) -> Result<Vec<ImageLayerRow>> {
        Ok(self.db.container_layers(name)?)
    }

    /// Whether layer `diff_id` has its row (its directory is complete).
    pub fn has_layer(&self, diff_id: &Sha256Digest) -> Result<bool> {
        Ok(self.db.has_layer(diff_id)?)
    }

    /// The unpacked size of layer `diff_id`, if it has its row.
    pub fn layer_size(&self, diff_id: &Sha256Digest) -> Result<Option<u64>> {
        Ok(self.db.layer_size(diff_id)?)
    }

    /// Record a remote layer (a lazy pull's: its TOC stored and verified, its blob in the
    /// registry) with its layer row; `false` when the layer has its row already.
    pub fn insert_remote_layer(&mut self, row: &RemoteLayerRow, size: u64, entries: u64) -> Result<bool> {
        Ok(self.db.insert_remote_layer(row, size, entries)?)
    }

    /// Layer `diff_id`'s remote row, if its blob is still in the registry.
    pub fn remote_layer(&self, diff_id: &Sha256Digest) -> Result<Option<RemoteLayerRow>> {
        Ok(self.db.remote_layer(diff_id)?)
    }

    /// `bytes` more of remote layer `diff_id`'s blob are local (informational; counted in
    /// batches by the reader).
    pub fn add_remote_bytes(&mut self, diff_id: &Sha256Digest, bytes: u64) -> Result<()> {
        Ok(self.db.add_remote_bytes(diff_id, bytes)?)
    }

    /// Remote layer `diff_id` sent a chunk that does not match its TOC: nothing more is fetched.
    pub fn mark_remote_bad(&mut self, diff_id: &Sha256Digest, reason: &str) -> Result<()> {
        Ok(self.db.mark_remote_bad(diff_id, reason)?)
    }

    /// Layer `diff_id` is complete, unpacked and verified: remote no more.
    pub fn remove_remote_layer(&mut self, diff_id: &Sha256Digest) -> Result<()> {
        Ok(self.db.remove_remote_layer(diff_id)?)
    }

    /// Every layer with a row.
    pub fn layers(&self) -> Result<Vec<Sha256Digest>> {
        Ok(self.db.all_layers()?)
    }

    /// Record layer `diff_id` (its directory is in place): its size and entries.
    pub(crate) fn insert_layer(&mut self, diff_id: &Sha256Digest, size: u64, entries: u64) -> Result<()> {
        Ok(self.db.insert_layer(diff_id, size, entries)?)
    }

    /// Hold layer `diff_id` for the operation of staging token `token` (an import or commit):
    /// gc and recovery leave it alone while the token is live.
    pub(crate) fn add_lease(&mut self, token: &str, diff_id: &Sha256Digest) -> Result<()> {
        Ok(self.db.add_lease(token, diff_id)?)
    }

    /// Release what staging token `token` held.
    pub(crate) fn drop_leases(&mut self, token: &str) -> Result<()> {
        Ok(self.db.drop_leases(token)?)
    }

    /// Remove an image name; refuses while containers stand on the image and this is its last
    /// name (see [`crate::db::Db::remove_image`]). Returns the name as it was stored.
    pub fn remove_image(&mut self, name: &str) -> Result<String> {
        match self.db.remove_image(name)? {
            RemovedImage::Removed(stored) => Ok(stored),
            RemovedImage::NotFound => Err(StoreError::NoImage(name.to_string())),
            RemovedImage::InUse(users) => {
                Err(StoreError::ImageInUse { image: name.to_string(), containers: users.join(", ") })
            }
        }
    }

    /// Sync the filesystem holding `path`.
    pub fn syncfs(path: &Path) -> Result<()> {
        crate::fsutil::syncfs(path).at(path)
    }
}

#[cfg(test)]
mod migration_tests;

/// The files of a remote layer's partial blob in its `remote/<hex>/` directory (its data, then
/// its record of ranges; see `registry::partial`).
pub const PARTIAL_BLOB_FILES: [&str; 2] = ["blob.partial", "blob.ranges"];

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Recovery running in other processes (every command opens the store) never takes a live
    /// staging entry for a dead one: not while its lock file is being made, not when the
    /// directory appears after recovery listed the lock files.
    #[test]
    fn recovery_leaves_live_staging_alone() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        drop(Store::open(&root).unwrap());
        let stop = AtomicBool::new(false);
        // Stops the recovering threads however the main loop ends (a failed assertion too).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        Store::open(&root).unwrap();
                    }
                });
            }
            let _stop = StopOnDrop(&stop);
            let store = Store::open(&root).unwrap();
            let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
            let mut n = 0;
            while std::time::Instant::now() < until {
                let st = store.staging().unwrap_or_else(|e| panic!("staging #{n}: {e}"));
                fs::write(st.dir.join("f"), b"x").unwrap_or_else(|e| panic!("staging #{n} dir: {e}"));
                std::thread::yield_now();
                assert!(st.dir.join("f").is_file(), "staging #{n} removed under its owner");
                drop(st);
                n += 1;
            }
            assert!(n > 100, "only {n} rounds");
        });
    }
}
