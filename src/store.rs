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

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use sha2::{Digest as _, Sha256};

use crate::digest::Sha256Digest;
pub use crate::meta::{ContainerRow, ImageLayerRow, NewImage, RemovedImage};
use crate::meta::{Db, MetaError};

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
}

impl StoreError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            StoreError::Io { source, .. } => ErrorKind::of_io(source),
            StoreError::MissingBlob { .. } | StoreError::NoImage(_) => ErrorKind::NotFound,
            StoreError::ImageInUse { .. } => ErrorKind::FailedPrecondition,
            StoreError::Untrusted { .. } | StoreError::NotADirectory { .. } => ErrorKind::InvalidArgument,
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

/// The locks under `locks/`, each named here once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock<'a> {
    /// Taken exclusively by gc; shared ([`Store::gc_shared`]) by whatever writes or reads blobs and
    /// layers that no image references yet.
    Gc,
    /// A layer's unpack, and its removal.
    Layer(&'a Sha256Digest),
    /// Every change of a container's state (create, mount, umount, rm, commit, export, run;
    /// recovery of its directory).
    Container(&'a str),
    /// A running `strata run` of a container (it records its pid there).
    Run(&'a str),
    /// The networks' files and the published ports of attachments (`network/`).
    Networks,
}

impl Lock<'_> {
    /// The lock's name: its file is `locks/<name>.lock`.
    pub fn name(&self) -> String {
        match self {
            Lock::Gc => "gc".to_string(),
            Lock::Layer(d) => format!("layer-{}", d.hex()),
            Lock::Container(name) => format!("container-{name}"),
            Lock::Run(name) => format!("run-{name}"),
            Lock::Networks => "networks".to_string(),
        }
    }
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

/// An exclusive flock held until drop.
pub struct LockGuard {
    file: File,
}

impl LockGuard {
    /// Write `text` into the lock file (who holds it, for messages to those who find it taken).
    pub fn record(&self, text: &str) -> io::Result<()> {
        let mut f = &self.file;
        f.set_len(0)?;
        std::io::Seek::seek(&mut f, io::SeekFrom::Start(0))?;
        f.write_all(text.as_bytes())
    }
}

fn lock_file(path: &Path, blocking: bool) -> Result<Option<LockGuard>> {
    let op = if blocking { FlockOperation::LockExclusive } else { FlockOperation::NonBlockingLockExclusive };
    flock_file(path, op)
}

fn flock_file(path: &Path, op: FlockOperation) -> Result<Option<LockGuard>> {
    let file = OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path).at(path)?;
    let blocking = matches!(op, FlockOperation::LockExclusive | FlockOperation::LockShared);
    match rustix::fs::flock(&file, op) {
        Ok(()) => Ok(Some(LockGuard { file })),
        Err(rustix::io::Errno::WOULDBLOCK) if !blocking => Ok(None),
        Err(e) => Err(io::Error::from(e)).at(path),
    }
}

/// A private working directory under `staging/`, removed on drop unless it was consumed.
pub struct Staging {
    pub token: String,
    pub dir: PathBuf,
    lock_path: PathBuf,
    _lock: LockGuard,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if fs::symlink_metadata(&self.dir).is_ok() {
            let _ = remove_tree(&self.dir);
        }
        let _ = fs::remove_file(&self.lock_path);
    }
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

/// Size of `<root>/reserve`, space held back so that strata still works on a full filesystem.
pub const RESERVE_BYTES: u64 = 8 << 20;
/// Below this much free space the reserve is released.
const RESERVE_RELEASE_BELOW: u64 = 4 << 20;

/// The space a full filesystem needs to let strata free space: `<root>/reserve`, released just
/// before the database opens when the filesystem is (nearly) full, and taken back when the
/// store closes, from the space the command freed or that was left free. Released and retaken
/// by every command that finds the disk full, so listing, `image rm`, `container rm` and `gc`
/// work however often the disk fills; only a process killed in between leaves it released, until
/// the next command closes its store.
///
/// Why a reserve and not a SQLite setting: in WAL mode the first connection to open the
/// database truncates and regrows the `-shm` WAL index, page by page, which fails with ENOSPC
/// ("disk I/O error ... xShmMap") on a full filesystem even for a read, and any write needs WAL
/// (or, in rollback mode, journal) pages; `locking_mode=EXCLUSIVE` would keep the index in memory
/// but serialize every strata process for the life of its connection (`strata run` holds one for
/// the whole run). Releasing 8 MiB before opening the database gives SQLite the pages it needs;
/// when the last connection closes, SQLite removes the WAL and its index, and the space is back.
struct Reserve {
    root: PathBuf,
}

impl Reserve {
    fn path(root: &Path) -> PathBuf {
        root.join("reserve")
    }

    /// Release the reserve if the filesystem is nearly full.
    fn balance(root: &Path) -> Reserve {
        let reserve = Self::path(root);
        if free_bytes(root).is_some_and(|free| free < RESERVE_RELEASE_BELOW)
            && fs::symlink_metadata(&reserve).is_ok()
        {
            tracing::warn!(root = %root.display(), "filesystem nearly full: releasing strata's reserve");
            let _ = fs::remove_file(&reserve);
        }
        Reserve { root: root.to_path_buf() }
    }
}

impl Drop for Reserve {
    /// Take the reserve back when there is room for it.
    fn drop(&mut self) {
        let reserve = Self::path(&self.root);
        if fs::symlink_metadata(&reserve).is_ok() || free_bytes(&self.root).is_none_or(|f| f < RESERVE_BYTES)
        {
            return;
        }
        // Under the name of a blob temp file, which recovery removes if this process dies.
        let tmp = self.root.join("staging").join(format!("blob-{}", random_token()));
        let made = (|| -> io::Result<()> {
            let f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, RESERVE_BYTES)?;
            fs::rename(&tmp, &reserve)
        })();
        if made.is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}

/// Free bytes for an unprivileged writer on the filesystem of `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    rustix::fs::statvfs(path).ok().map(|st| st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether anything is mounted at or below `dir` (a container directory must never be removed
/// from under a mount).
fn is_mount_point_below(dir: &Path) -> bool {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    kernel_overlay::mountinfo::parse(&text).iter().any(|m| m.mount_point.starts_with(dir))
}

/// Suffix of a staging lock file being created (see [`Store::staging`]).
const LOCK_NEW: &str = ".lock-new";

/// Whether the staging entry `token` belongs to a live operation: its lock file exists and is
/// locked. (A dead one's lock is free; the probe's own lock goes with the file handle.)
fn staging_live(staging: &Path, token: &str) -> Result<bool> {
    let p = staging.join(format!("{token}.lock"));
    let file = match OpenOptions::new().write(true).open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).at(&p),
    };
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(false),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(true),
        Err(e) => Err(io::Error::from(e)).at(&p),
    }
}

/// Whether the process whose pid starts `token` ("<pid>-<hex>") is alive.
fn token_pid_alive(token: &str) -> bool {
    token
        .split('-')
        .next()
        .and_then(|p| p.parse::<i32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
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
        check_ownership(root)?;
        // The root must not let host users reach setuid binaries inside layers.
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).at(root)?;
        for sub in ["blobs/sha256", "layers/sha256", "snapshots", "staging", "locks", "containers"] {
            let p = root.join(sub);
            b.create(&p).at(&p)?;
        }
        let reserve = Reserve::balance(root);
        // Creating, switching to WAL and migrating the database take turns: concurrent first
        // opens of a fresh root would otherwise fail with "database is locked" (SQLite does not
        // wait on a lock it can only get by upgrading a read).
        let db = {
            let _g = lock_file(&root.join("locks/db-open.lock"), true)?;
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

    pub fn has_blob(&self, d: &Sha256Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Read a whole (small) blob: manifests and configs.
    pub fn read_blob(&self, d: &Sha256Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        fs::read(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::MissingBlob { digest: d.to_string() }
            } else {
                StoreError::Io { path: p.clone(), source: e }
            }
        })
    }

    /// Take lock `lock` exclusively, waiting for it.
    pub fn lock(&self, lock: Lock<'_>) -> Result<LockGuard> {
        let p = self.lock_path(lock);
        lock_file(&p, true)?
            .ok_or_else(|| StoreError::Io { path: p, source: io::ErrorKind::WouldBlock.into() })
    }

    /// Hold off `gc` (which takes this lock exclusively) while blobs and layers are written or
    /// read that no image references yet, or that an export is copying: imports, commits,
    /// exports and layer unpacks hold it shared for their whole run, so gc never takes what they
    /// have just written for garbage.
    pub fn gc_shared(&self) -> Result<LockGuard> {
        let p = self.lock_path(Lock::Gc);
        flock_file(&p, FlockOperation::LockShared)?
            .ok_or_else(|| StoreError::Io { path: p, source: io::ErrorKind::WouldBlock.into() })
    }

    /// Take lock `lock` if it is free; `Ok(None)` when another holds it.
    pub fn try_lock(&self, lock: Lock<'_>) -> Result<Option<LockGuard>> {
        lock_file(&self.lock_path(lock), false)
    }

    /// What the holder of lock `lock` recorded in it ([`LockGuard::record`]).
    pub fn lock_record(&self, lock: Lock<'_>) -> String {
        fs::read_to_string(self.lock_path(lock)).unwrap_or_default()
    }

    fn lock_path(&self, lock: Lock<'_>) -> PathBuf {
        self.root.join("locks").join(format!("{}.lock", lock.name()))
    }

    /// A new private staging directory.
    pub fn staging(&self) -> Result<Staging> {
        let st = self.staging_entry()?;
        fs::DirBuilder::new().mode(0o700).create(&st.dir).at(&st.dir)?;
        Ok(st)
    }

    /// Take `path` (a file or a tree) out of its place in one rename, into a staging entry that
    /// removes it when dropped, or, if this process dies first, the next recovery. A removal is
    /// then atomic as seen by everyone else: the thing is whole at its place or gone from it, never
    /// half deleted and reused. Returns `None` when `path` does not exist. The rename needs no
    /// free space, so removals work on a full filesystem.
    pub fn trash(&self, path: &Path) -> Result<Option<Staging>> {
        let st = self.staging_entry()?;
        match fs::rename(path, &st.dir) {
            Ok(()) => Ok(Some(st)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(path),
        }
    }

    /// A locked staging token and the (not yet created) directory that goes with it.
    fn staging_entry(&self) -> Result<Staging> {
        let token = random_token();
        let lock_path = self.root.join("staging").join(format!("{token}.lock"));
        // The lock file appears under its name already locked (made under a name recovery leaves
        // to live processes, then renamed): a concurrent `recover` must never find it unlocked.
        let new_path = self.root.join("staging").join(format!("{token}{LOCK_NEW}"));
        let lock = lock_file(&new_path, false)?.ok_or_else(|| StoreError::Io {
            path: new_path.clone(),
            source: io::ErrorKind::WouldBlock.into(),
        })?;
        if let Err(e) = fs::rename(&new_path, &lock_path) {
            let _ = fs::remove_file(&new_path);
            return Err(StoreError::Io { path: lock_path, source: e });
        }
        let dir = self.root.join("staging").join(&token);
        Ok(Staging { token, dir, lock_path, _lock: lock })
    }

    /// Write a small blob (manifest, config) atomically; returns its digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<Sha256Digest> {
        let d = Sha256Digest::from_bytes(&Sha256::digest(data));
        let dst = self.blob_path(&d);
        if dst.is_file() {
            return Ok(d);
        }
        let tmp = self.root.join("staging").join(format!("blob-{}", random_token()));
        let res = (|| -> io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, &dst)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.at(&dst)?;
        Ok(d)
    }

    /// Move a complete, verified file into the blob store.
    pub fn commit_blob_file(&self, tmp: &Path, d: &Sha256Digest) -> Result<()> {
        let dst = self.blob_path(d);
        fs::rename(tmp, &dst).at(&dst)
    }

    /// Clean up after interrupted operations: staging entries of dead processes, their leases, and
    /// layers (directories and rows) only those leases held.
    pub fn recover(&mut self) -> Result<()> {
        let staging = self.root.join("staging");
        // Other commands may be creating staging entries while this runs: an entry is dead only
        // if its lock file is free (or gone) when looked at, never because an earlier listing
        // did not show it.
        let mut live = std::collections::HashSet::new();
        let mut dead_tokens = Vec::new();
        for e in fs::read_dir(&staging).at(&staging)? {
            let e = e.at(&staging)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(token) = name.strip_suffix(".lock") {
                if let Some(_guard) = lock_file(&e.path(), false)? {
                    let _ = remove_tree(&staging.join(token));
                    let _ = fs::remove_file(e.path());
                    dead_tokens.push(token.to_string());
                } else {
                    live.insert(token.to_string());
                }
            }
        }
        for e in fs::read_dir(&staging).at(&staging)? {
            let e = e.at(&staging)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".lock") {
                continue;
            }
            let keep = if let Some(token) = name.strip_suffix(LOCK_NEW) {
                token_pid_alive(token)
            } else if let Some(token) = name.strip_prefix("blob-") {
                // Blob temp files carry the token after "blob-".
                token_pid_alive(token)
            } else {
                live.contains(&name) || staging_live(&staging, &name)?
            };
            if !keep {
                let _ = remove_tree(&e.path());
            }
        }
        // Leases of imports that are gone.
        for token in self.db.lease_tokens()? {
            if !live.contains(&token) && !staging_live(&staging, &token)? {
                self.db.drop_leases(&token)?;
                dead_tokens.push(token);
            }
        }
        if !dead_tokens.is_empty() {
            self.remove_unreferenced_layers()?;
        }
        // Layer directories without a row: an import died between rename and insert.
        let layers = self.root.join("layers/sha256");
        let known: std::collections::HashSet<Sha256Digest> = self.db.all_layers()?.into_iter().collect();
        for e in fs::read_dir(&layers).at(&layers)? {
            let e = e.at(&layers)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(d) = Sha256Digest::from_hex(&name) else {
                let _ = remove_tree(&e.path());
                continue;
            };
            if !known.contains(&d) {
                // Only if nobody is importing it right now.
                if let Some(_g) = self.try_lock(Lock::Layer(&d))? {
                    if !self.db.has_layer(&d)? {
                        tracing::info!(layer = %d, "removing layer directory without metadata");
                        drop(self.trash(&e.path())?);
                    }
                }
            }
        }
        self.recover_containers()?;
        self.remove_orphan_snapshot_dirs()?;
        Ok(())
    }

    /// A root written before snapshots keeps a container's upper and work dirs under
    /// `containers/<name>/`; its migration (in the database, on open) gave each container a
    /// snapshot, and this moves the dirs there, each in one rename, under the container's lock.
    /// A crash between the renames is finished by the next open.
    fn migrate_container_dirs(&mut self) -> Result<()> {
        for c in self.db.containers()? {
            let Some(id) = c.snapshot else { continue };
            let old = self.containers_dir().join(&c.name);
            let sdir = self.snapshot_dir(id);
            let moves = [(old.join("upper"), sdir.join("fs")), (old.join("work"), sdir.join("work"))];
            let pending = !sdir.is_dir() || moves.iter().any(|(from, _)| fs::symlink_metadata(from).is_ok());
            if !pending {
                continue;
            }
            let _g = self.lock(Lock::Container(&c.name))?;
            let mut b = fs::DirBuilder::new();
            b.mode(0o700);
            match b.create(&sdir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e).at(&sdir),
                _ => {}
            }
            for (from, to) in &moves {
                if fs::symlink_metadata(from).is_ok() && fs::symlink_metadata(to).is_err() {
                    tracing::info!(container = %c.name, from = %from.display(), to = %to.display(), "moving into the container's snapshot");
                    fs::rename(from, to).at(from)?;
                }
            }
            let fs_dir = sdir.join("fs");
            if fs::symlink_metadata(&fs_dir).is_err() {
                b.create(&fs_dir).at(&fs_dir)?;
                fs::set_permissions(&fs_dir, fs::Permissions::from_mode(0o755)).at(&fs_dir)?;
            }
            let work = sdir.join("work");
            if !c.read_only && fs::symlink_metadata(&work).is_err() {
                b.create(&work).at(&work)?;
            }
        }
        Ok(())
    }

    /// Container directories without a row: a `container rm` died after removing the row (it
    /// removes the row first, so a container is listed whole or not at all), or a `container
    /// create` died before writing it. Taken under the container's lock, as create holds it.
    fn recover_containers(&mut self) -> Result<()> {
        let dir = self.containers_dir();
        let known: std::collections::HashSet<String> =
            self.db.containers()?.into_iter().map(|c| c.name).collect();
        for e in fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if known.contains(&name) {
                continue;
            }
            if let Some(_g) = self.try_lock(Lock::Container(&name))? {
                if self.db.container(&name)?.is_none() && !is_mount_point_below(&e.path()) {
                    tracing::info!(container = %name, "removing container directory without metadata");
                    drop(self.trash(&e.path())?);
                }
            }
        }
        Ok(())
    }

    /// Remove layers (rows and directories) that no image, container or lease references.
    pub fn remove_unreferenced_layers(&mut self) -> Result<Vec<Sha256Digest>> {
        let mut removed = Vec::new();
        for diff_id in self.db.unreferenced_layers()? {
            let d = diff_id.clone();
            let _g = self.lock(Lock::Layer(&d))?;
            // Re-check under the lock: an import may have leased it meanwhile.
            if self.db.layer_refcount(&diff_id)? > 0 {
                continue;
            }
            // The row goes first, then the directory in one rename: a kill at any point leaves
            // the layer whole with its row, or a directory without a row (recovery removes it),
            // never a half-deleted directory that an import would take for the layer.
            self.db.remove_layer_row(&diff_id)?;
            drop(self.trash(&self.layer_path(&d))?);
            removed.push(diff_id);
        }
        Ok(removed)
    }

    /// Remove the blobs no image or container references (none while an import holds a lease:
    /// its blobs are not referenced yet). Part of gc (`crate::images::gc`), under its lock.
    pub(crate) fn remove_unreferenced_blobs(&mut self) -> Result<Vec<Sha256Digest>> {
        let referenced = self.db.referenced_blobs()?;
        let mut blobs = Vec::new();
        let dir = self.root.join("blobs/sha256");
        let leased = !self.db.lease_tokens()?.is_empty();
        for e in fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(digest) = Sha256Digest::from_hex(&name) else { continue };
            // While an import runs, its blobs are not referenced yet: leave blobs alone then.
            if !referenced.contains(&digest) && !leased {
                fs::remove_file(e.path()).at(e.path())?;
                self.db.remove_blob_row(&digest)?;
                blobs.push(digest);
            }
        }
        Ok(blobs)
    }

    /// Remove what no row owns under `snapshots/`: directories a crashed snapshot create or
    /// remove left. Runs in a write transaction, so no create is between its rename and its
    /// commit meanwhile.
    pub(crate) fn remove_orphan_snapshot_dirs(&mut self) -> Result<Vec<PathBuf>> {
        let snaps = self.snapshots_dir();
        // A cheap look first (every command recovers on open): only entries that no row owns now
        // need the write transaction.
        let known = crate::meta::snapshots::ids(self.db.conn())?;
        let suspicious = match fs::read_dir(&snaps) {
            Ok(entries) => entries.flatten().any(|e| {
                !e.file_name()
                    .to_str()
                    .and_then(|n| n.parse::<i64>().ok())
                    .is_some_and(|id| known.contains(&id))
            }),
            Err(_) => false,
        };
        if !suspicious {
            return Ok(Vec::new());
        }
        let orphans = self.db.write(|tx| -> Result<_> {
            let known = crate::meta::snapshots::ids(tx)?;
            let mut orphans = Vec::new();
            let entries = match fs::read_dir(&snaps) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(orphans),
                Err(e) => return Err(e).at(&snaps),
            };
            for e in entries {
                let e = e.at(&snaps)?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.parse::<i64>().is_ok_and(|id| known.contains(&id)) {
                    continue;
                }
                // Renamed out of the numeric namespace while no create can run: an id left by
                // a rolled-back create may be taken again as soon as this transaction ends.
                let gone = if name.starts_with("gone-") {
                    e.path()
                } else {
                    let g = snaps.join(format!("gone-{name}-{}", crate::meta::snapshots::now_ns()));
                    fs::rename(e.path(), &g).at(e.path())?;
                    g
                };
                orphans.push(gone);
            }
            Ok(orphans)
        })?;
        for p in &orphans {
            tracing::info!(path = %p.display(), "removing snapshot directory without metadata");
            drop(self.trash(p)?);
        }
        Ok(orphans)
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
