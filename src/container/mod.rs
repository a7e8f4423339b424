//! Containers: writable snapshots (or read-only views) over an image's layers.
//!
//! A container is a snapshot ([`crate::snapshot`]): an active one, or a view for `--read-only`,
//! whose parent is the top of its image's layer chain when it was created. Its upper and work dirs
//! are the snapshot's, `snapshots/<id>/fs` and `work`. Beside them, `containers/<name>/` holds
//! `rootfs` (the default mount point), `empty` (a read-only view of a one-layer image stacks it
//! below the layer, since overlayfs needs two lowers without an upper) and `bundle/` (the OCI
//! runtime bundle of `strata run`). Whether a container is mounted is read from the kernel's mount
//! table, never from a stored flag.
//!
//! - here: the registry of containers (names, rows, create and remove through the snapshot
//!   core), their locks and running state, runc ids and cgroup paths, exit records, inspect;
//! - [`mount`]: mounting (kernel overlay, or launching strata-fuse), unmounting, where and how a
//!   container is mounted, and the mount targets a user may give.
//!
//! What reads or writes a container's trees is above, in the pipeline that owns it: commit
//! ([`crate::commit::commit_container`]), diff ([`crate::diff::container_diff`]), export
//! ([`crate::rootfs`]).

mod mount;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use kernel_overlay::UnmountMode;

use crate::digest::Sha256Digest;
use crate::snapshot::{SnapshotError, Snapshots};
pub use crate::store::ContainerRow;
use crate::store::{remove_tree, ImageLayerRow, IoContext, Lock, LockGuard, Store, StoreError};

pub use mount::{
    backend_at, fuse_binary, fuse_mount_options, kernel_overlay_refused, mount, mount_spec, mount_with,
    mounted_at, mounts, overlay_spec, umount, LAZY_BACKGROUND_ENV,
};

/// Container errors.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("container {0:?} not found")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error(
        "bad container name {0:?}: use 1-128 characters [A-Za-z0-9_.-], starting with a letter or digit"
    )]
    BadName(String),
    #[error("image {0:?} not found")]
    NoImage(String),
    #[error("container {name:?} is mounted at {target}; unmount it first or use --force")]
    Mounted { name: String, target: String },
    #[error(
        "container {name:?} is already mounted at {target} (strata container umount {name} unmounts it)"
    )]
    AlreadyMounted { name: String, target: String },
    #[error("container {name:?} is running ({how}); {hint}")]
    Running { name: String, how: String, hint: &'static str },
    #[error("container {name:?} did not stop within {secs} s of SIGKILL")]
    WontStop { name: String, secs: u64 },
    #[error("container {name:?}: mount target {target}: {reason}")]
    BadTarget { name: String, target: PathBuf, reason: String },
    /// Resolving the mount target (or the state root it is checked against) failed.
    #[error("container {name:?}: mount target {target}")]
    TargetIo {
        name: String,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {0:?} is a read-only view: it has no changes to commit")]
    ReadOnly(String),
    /// Rootless mode cannot freeze a container: nothing is delegated to the user of the cgroup
    /// hierarchy, so there is no freezer (rootless podman on cgroup v1 refuses the same way).
    #[error(
        "container {name:?} cannot be {verb}: rootless mode has no cgroup freezer (no cgroup is \
         delegated to this user){hint}"
    )]
    NoFreezer { name: String, verb: &'static str, hint: &'static str },
    #[error("container {name:?}")]
    Runtime { name: String, source: crate::runtime::RuntimeError },
    #[error("container {name:?}")]
    Overlay { name: String, source: kernel_overlay::Error },
    #[error("container {name:?}: FUSE backend: {reason}")]
    Fuse { name: String, reason: String },
    #[error("container {name:?}: FUSE backend: running {bin}")]
    FuseRun {
        name: String,
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Kernel overlay asked for over layers whose data is still in the registry.
    #[error(
        "container {name:?} stands on {layers} remote layer(s) (pulled with --lazy): kernel overlay \
         cannot serve them; mount with --backend fuse (or auto), or pull the image without --lazy"
    )]
    RemoteLayers { name: String, layers: usize },
    #[error("container {name:?}: kernel overlay mount failed ({kernel}) and the FUSE fallback failed too ({fuse})")]
    AutoFailed { name: String, kernel: String, fuse: String },
    #[error(transparent)]
    Layer(#[from] crate::layers::LayerError),
    #[error("container {0:?} is not mounted")]
    NotMounted(String),
    #[error("container {name:?}")]
    Snapshot { name: String, source: Box<crate::snapshot::SnapshotError> },
    #[error("container {name:?}")]
    Cgroup { name: String, source: crate::cgroup::CgroupError },
}

impl ContainerError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            ContainerError::Store(e) => e.kind(),
            ContainerError::Snapshot { source, .. } => source.kind(),
            ContainerError::NotFound(_) | ContainerError::NoImage(_) => ErrorKind::NotFound,
            ContainerError::Exists(_) => ErrorKind::AlreadyExists,
            ContainerError::BadName(_)
            | ContainerError::BadTarget { .. }
            | ContainerError::TargetIo { .. } => ErrorKind::InvalidArgument,
            ContainerError::Mounted { .. }
            | ContainerError::AlreadyMounted { .. }
            | ContainerError::Running { .. }
            | ContainerError::ReadOnly(_)
            | ContainerError::NotMounted(_)
            | ContainerError::RemoteLayers { .. } => ErrorKind::FailedPrecondition,
            ContainerError::NoFreezer { .. } => ErrorKind::FailedPrecondition,
            _ => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = ContainerError> = std::result::Result<T, E>;

/// Which filesystem stacks the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Kernel OverlayFS.
    Kernel,
    /// strata-fuse, the userspace union filesystem.
    Fuse,
    /// Kernel when an overlay mount works, FUSE otherwise.
    #[default]
    Auto,
}

/// A container's directories.
pub struct Paths {
    pub dir: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub rootfs: PathBuf,
    pub empty: PathBuf,
    pub bundle: PathBuf,
}

/// `containers/<name>`: mount point, runtime bundle, logs.
pub fn dir(store: &Store, name: &str) -> PathBuf {
    store.containers_dir().join(name)
}

pub fn paths(store: &Store, c: &ContainerRow) -> Paths {
    let dir = dir(store, &c.name);
    let (upper, work) = match c.snapshot {
        Some(id) => (crate::snapshot::fs_dir(store, id), crate::snapshot::work_dir(store, id)),
        // A root from before snapshots whose migration has not run (see Store::open).
        None => (dir.join("upper"), dir.join("work")),
    };
    Paths {
        upper,
        work,
        rootfs: dir.join("rootfs"),
        empty: dir.join("empty"),
        bundle: dir.join("bundle"),
        dir,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Options for [`create`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub read_only: bool,
    pub volatile: bool,
}

/// The lock every change of a container's state takes ([`Lock::Container`]).
pub fn lock(store: &Store, name: &str) -> Result<LockGuard> {
    Ok(store.lock(Lock::Container(name))?)
}

/// A failure of the snapshot core's container operations: the store's and meta's own are said as
/// they say them (as when the container's rows were written apart from its snapshot).
fn snapshot_err(name: &str, e: SnapshotError) -> ContainerError {
    match e {
        SnapshotError::Rows(m) => ContainerError::Store(StoreError::Meta(m)),
        SnapshotError::Store(e) => ContainerError::Store(e),
        e => ContainerError::Snapshot { name: name.to_string(), source: Box::new(e) },
    }
}

/// Container `name`'s row, if it exists.
pub fn row(store: &Store, name: &str) -> Result<Option<ContainerRow>, StoreError> {
    store.container_row(name)
}

/// Every container's row, by name.
pub fn rows(store: &Store) -> Result<Vec<ContainerRow>, StoreError> {
    store.container_rows()
}

/// The layers container `name` stands on (those its image had at create), bottom first.
pub fn layers(store: &Store, name: &str) -> Result<Vec<ImageLayerRow>, StoreError> {
    store.container_layers(name)
}

/// The key of container `name`'s snapshot.
pub fn snapshot_key(name: &str) -> String {
    crate::snapshot::container_key(name)
}

/// What tells this state root's runc ids and cgroups from another root's: 8 hex digits of the
/// SHA-256 of the root's canonical path.
pub fn root_tag(store: &Store) -> String {
    use std::os::unix::ffi::OsStrExt;
    let root = fs::canonicalize(store.root()).unwrap_or_else(|_| store.root().to_path_buf());
    let d = <sha2::Sha256 as sha2::Digest>::digest(root.as_os_str().as_bytes());
    hex::encode(&d[..4])
}

/// The runc id of container `name` in this root, also its cgroup's name (`linux.cgroupsPath`
/// `/<id>`): `strata-<root tag>-NAME`, at most 144 characters (names have at most 128), unique
/// per root and container, so that no root signals, deletes or shares another's.
pub fn runc_id(store: &Store, name: &str) -> String {
    format!("strata-{}-{name}", root_tag(store))
}

/// The runc id strata gave before ids held the root's tag: `strata-NAME`, in every root alike.
pub fn legacy_runc_id(name: &str) -> String {
    format!("strata-{name}")
}

/// runc's state directory for this store.
pub fn runc_state_dir(store: &Store) -> PathBuf {
    // Rootless: runtime state where a user's belongs, `$XDG_RUNTIME_DIR/strata/runc` (container
    // ids name their root, so roots never meet there).
    if let Some(dir) = crate::userns::runtime_dir() {
        return dir.join("runc");
    }
    store.root().join("runc")
}

/// runc's state directory for this store and the id runc knows container `name` by: its
/// [`runc_id`], or the [`legacy_runc_id`] of a container an older strata started, for as long
/// as runc keeps that one's state (so it can still be stopped, exec'd into and removed).
pub fn runc_ids(store: &Store, name: &str) -> (PathBuf, String) {
    let state = runc_state_dir(store);
    let id = runc_id(store, name);
    let legacy = legacy_runc_id(name);
    if !state.join(&id).exists() && state.join(&legacy).join("state.json").exists() {
        return (state, legacy);
    }
    (state, id)
}

/// The cgroup path given to runc (`linux.cgroupsPath`) for container `name`: `/<runc id>`,
/// relative to each hierarchy's root.
pub fn cgroups_path(store: &Store, name: &str) -> String {
    format!("/{}", runc_id(store, name))
}

/// Where a container's exit code is kept.
fn exit_path(store: &Store, name: &str) -> PathBuf {
    dir(store, name).join("exit")
}

/// Where a detached container's stdout and stderr go.
pub fn log_path(store: &Store, name: &str) -> PathBuf {
    dir(store, name).join("container.log")
}

/// Record how a container's process ended (its exit code, 128+signal when killed). Best effort:
/// a container removed meanwhile has no directory to record it in.
pub fn record_exit(store: &Store, name: &str, code: i32) {
    let p = exit_path(store, name);
    let done = crate::fsutil::atomic_write(&p, 0o666, |w| writeln!(w, "{code}"));
    if let Err(e) = done {
        tracing::debug!(container = name, error = %e, "exit code not recorded");
    }
}

/// The recorded exit code of a container's last run, if any.
pub fn recorded_exit(store: &Store, name: &str) -> Option<i32> {
    std::fs::read_to_string(exit_path(store, name)).ok()?.trim().parse().ok()
}

/// Where the mount points strata made in a container's tree are listed (see
/// [`add_placeholders`]).
fn placeholders_path(store: &Store, name: &str) -> PathBuf {
    dir(store, name).join("placeholders")
}

/// Record `paths` (relative to the container's root) as mount points strata created as empty
/// files (for `/etc/hosts` and the like): a commit leaves them out while they are still empty.
pub fn add_placeholders(store: &Store, name: &str, paths: &[PathBuf]) -> Result<()> {
    let mut all = placeholders(store, name);
    for p in paths {
        if !all.contains(p) {
            all.push(p.clone());
        }
    }
    let text: String = all.iter().map(|p| format!("{}\n", p.display())).collect();
    let path = placeholders_path(store, name);
    crate::fsutil::atomic_write(&path, 0o600, |w| w.write_all(text.as_bytes())).at(&path)?;
    Ok(())
}

/// The mount points strata created in container `name`'s tree (relative paths).
pub fn placeholders(store: &Store, name: &str) -> Vec<PathBuf> {
    let text = fs::read_to_string(placeholders_path(store, name)).unwrap_or_default();
    text.lines()
        .map(PathBuf::from)
        .filter(|p| p.is_relative() && !p.components().any(|c| c == std::path::Component::ParentDir))
        .collect()
}

/// Remove, through the container's mount at `rootfs`, the placeholders strata made that are
/// still empty regular files (once its process has ended: the tree is then as the image and the
/// container's own changes make it), and forget them. Best effort: what fails is logged.
pub fn clear_placeholders(store: &Store, name: &str, rootfs: &std::path::Path) {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let list = placeholders(store, name);
    if list.is_empty() {
        return;
    }
    for rel in &list {
        let (Some(parent), Some(file)) = (rel.parent(), rel.file_name()) else { continue };
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut dir = match rustix::fs::open(rootfs, dir_flags, Mode::empty()) {
            Ok(d) => d,
            Err(_) => return,
        };
        let mut ok = true;
        for c in parent.components() {
            match rustix::fs::openat(&dir, c.as_os_str(), dir_flags, Mode::empty()) {
                Ok(d) => dir = d,
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        let empty_file = rustix::fs::statat(&dir, file, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_size == 0);
        if empty_file {
            if let Err(e) = rustix::fs::unlinkat(&dir, file, AtFlags::empty()) {
                tracing::debug!(container = name, path = %rel.display(), error = %e, "placeholder stays");
            }
        }
    }
    let path = placeholders_path(store, name);
    if let Err(e) = fs::remove_file(&path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::debug!(path = %path.display(), error = %e, "placeholder record stays");
        }
    }
}

/// How a container is running, if it is: a `strata run` holding its run lock, or a process runc
/// knows (a `strata run` killed without its runc child leaves one). Call with the container
/// lock held, so that nothing starts or stops a run meanwhile.
pub fn running(store: &Store, name: &str) -> Result<Option<String>> {
    if store.try_lock(Lock::Run(name))?.is_none() {
        let rec = store.lock_record(Lock::Run(name));
        return Ok(Some(if rec.is_empty() { "strata run".to_string() } else { rec }));
    }
    let (state, id) = runc_ids(store, name);
    match crate::runtime::runc::runc_status(&state, &id).as_deref() {
        None | Some("stopped") => Ok(None),
        Some(status) => Ok(Some(format!("runc {id}: {status}"))),
    }
}

/// How a container is running, if it is (see [`running`]); `None` too for a container that does
/// not exist.
pub fn is_running(store: &Store, name: &str) -> Result<Option<String>> {
    let _g = lock(store, name)?;
    running(store, name)
}

/// Mark a container as running for as long as the guard lives: umount, rm (without --force) and
/// another run refuse meanwhile. Drop the guard before cleaning up after the run.
pub fn start_run(store: &Store, name: &str) -> Result<LockGuard> {
    let _g = lock(store, name)?;
    get(store, name)?;
    let busy = |how: String| ContainerError::Running {
        name: name.to_string(),
        how,
        hint: "wait for it to exit or stop it (strata container rm --force)",
    };
    if let Some(how) = running(store, name)? {
        return Err(busy(how));
    }
    let guard = store.try_lock(Lock::Run(name))?.ok_or_else(|| busy("strata run".into()))?;
    let _ = guard.record(&format!("strata run, pid {}", std::process::id()));
    Ok(guard)
}

/// Record a container over `image` and make its directories.
pub fn create(store: &mut Store, image: &str, name: &str, opts: &CreateOptions) -> Result<ContainerRow> {
    if !valid_name(name) {
        return Err(ContainerError::BadName(name.to_string()));
    }
    if store.image(image)?.is_none() {
        return Err(ContainerError::NoImage(image.to_string()));
    }
    let _g = lock(store, name)?;
    if store.container_row(name)?.is_some() {
        return Err(ContainerError::Exists(name.to_string()));
    }
    let cdir = dir(store, name);
    // Leftovers of a container that died half-created.
    remove_tree(&cdir).at(&cdir)?;
    let mut b = fs::DirBuilder::new();
    b.mode(0o700);
    let made = (|| -> Result<()> {
        for d in [&cdir, &cdir.join("rootfs"), &cdir.join("empty")] {
            b.create(d).at(d)?;
        }
        Ok(())
    })();
    if let Err(e) = made {
        let _ = remove_tree(&cdir);
        return Err(e);
    }
    // The row binds the container to what `image` names at this moment (manifest and layers)
    // and creates its snapshot over that chain, in one transaction; the layers it names are
    // then kept by gc for as long as it exists.
    let row = match Snapshots::new(store).create_container(name, image, opts.read_only, opts.volatile) {
        Ok(row) => row,
        Err(e) => {
            let _ = remove_tree(&cdir);
            // Found gone or taken inside the transaction (a racing `image rm` or create).
            return Err(match e.kind() {
                crate::error::ErrorKind::NotFound => ContainerError::NoImage(image.to_string()),
                crate::error::ErrorKind::AlreadyExists => ContainerError::Exists(name.to_string()),
                _ => snapshot_err(name, e),
            });
        }
    };
    if let Err(e) = materialize(store, &row) {
        let _ = Snapshots::new(store).remove_container(name);
        let _ = remove_tree(&cdir);
        return Err(e);
    }
    Ok(row)
}

/// Make sure every layer directory of a container exists (a committed layer is unpacked from its
/// blob at its first use; a remote layer's skeleton is built from its TOC). Returns the remote
/// layers (`pull --lazy`), which only strata-fuse can serve.
fn materialize(store: &mut Store, c: &ContainerRow) -> Result<Vec<crate::store::RemoteLayerRow>> {
    let mut remote = Vec::new();
    for l in store.container_layers(&c.name)? {
        match store.remote_layer(&l.diff_id)? {
            Some(r) => {
                crate::layers::remote::skeleton(store, &r)?;
                remote.push(r);
            }
            None => {
                crate::layers::materialize_layer(store, &l)?;
            }
        }
    }
    Ok(remote)
}

/// The remote layers of container `c` (see [`materialize`]).
fn remote_layers(store: &Store, c: &ContainerRow) -> Result<Vec<crate::store::RemoteLayerRow>> {
    let mut out = Vec::new();
    for l in store.container_layers(&c.name)? {
        out.extend(store.remote_layer(&l.diff_id)?);
    }
    Ok(out)
}

/// Container `name`'s row; [`ContainerError::NotFound`] when there is none.
pub fn get(store: &Store, name: &str) -> Result<ContainerRow> {
    store.container_row(name)?.ok_or_else(|| ContainerError::NotFound(name.to_string()))
}

/// Remove a container: refuses while it runs or is mounted, unless `force`, which stops it (as
/// `podman rm -f` does) and unmounts it.
///
/// Crash-safe: the rows go first, in one transaction, then the directory in one rename to
/// staging, so a kill at any point leaves the container whole and listed, or gone from the
/// listing with whatever remains of its directory removed by the next recovery.
pub fn remove(store: &mut Store, name: &str, force: bool) -> Result<()> {
    let _g = lock(store, name)?;
    get(store, name)?;
    if let Some(how) = running(store, name)? {
        if !force {
            return Err(ContainerError::Running {
                name: name.to_string(),
                how,
                hint: "stop it first, or use --force to kill it",
            });
        }
        stop(store, name)?;
    }
    while let Some(at) = mounted_at(store, name)? {
        if !force {
            return Err(ContainerError::Mounted { name: name.to_string(), target: at.display().to_string() });
        }
        kernel_overlay::unmount(&at, UnmountMode::Detach)
            .map_err(|e| ContainerError::Overlay { name: name.to_string(), source: e })?;
    }
    // runc's state of a stopped container (a `run -d` that exited or was killed) and the cgroups
    // would otherwise outlive the container, its bundle gone.
    remove_runtime(store, name)?;
    // Stopped: its network goes too (what fails is released by the next release_leaked, since a
    // removed container is not live).
    if let Err(e) = crate::network::detach(store, name) {
        tracing::warn!(container = name, error = %crate::error::report(&e), "network not released yet");
    }
    Snapshots::new(store).remove_container(name).map_err(|e| snapshot_err(name, e))?;
    drop(store.trash(&dir(store, name))?);
    Ok(())
}

/// How long [`stop`] waits for a killed container's `strata run` to let go.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Kill a running container's processes (SIGKILL through runc) and wait until neither runc nor a
/// `strata run` holds it. Called with the container lock held.
fn stop(store: &Store, name: &str) -> Result<()> {
    let (state, id) = runc_ids(store, name);
    let rt = |source| ContainerError::Runtime { name: name.to_string(), source };
    let until = std::time::Instant::now() + STOP_WAIT;
    // Signalled again on every round: a `strata run` that holds the run lock may not have
    // created its runc container yet when this starts.
    while running(store, name)?.is_some() {
        match crate::runtime::runc::runc_status(&state, &id).as_deref() {
            // Nobody waits for it: a `strata run` killed before its runc child.
            Some("stopped") => {
                let _ = crate::runtime::runc::runc_verb(&state, "delete", &id, &["--force"]);
            }
            Some(status) => {
                // A paused container takes the signal only once thawed.
                if status == "paused" {
                    crate::runtime::runc::runc_verb(&state, "resume", &id, &[]).map_err(rt)?;
                }
                if let Err(e) = crate::runtime::runc::runc_verb(&state, "kill", &id, &["KILL"]) {
                    // It may have exited meanwhile.
                    if crate::runtime::runc::runc_status(&state, &id).is_some_and(|s| s != "stopped") {
                        return Err(rt(e));
                    }
                }
            }
            None => {}
        }
        if std::time::Instant::now() > until {
            return Err(ContainerError::WontStop { name: name.to_string(), secs: STOP_WAIT.as_secs() });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// Delete what runc keeps of a container that no longer runs (its state, under its id and the
/// legacy one) and the container's cgroup directories. Called with the container lock held and
/// the container stopped ([`stop`]). The cgroups of a legacy id (`/strata-NAME`, the same in
/// every root) are left to `runc delete`: the name alone does not tell whose they are.
fn remove_runtime(store: &Store, name: &str) -> Result<()> {
    let state = runc_state_dir(store);
    let rt = |source| ContainerError::Runtime { name: name.to_string(), source };
    for id in [runc_id(store, name), legacy_runc_id(name)] {
        if !state.join(&id).exists() {
            continue;
        }
        if let Err(e) = crate::runtime::runc::runc_verb(&state, "delete", &id, &["--force"]) {
            if crate::runtime::runc::runc_status(&state, &id).is_some() {
                return Err(rt(e));
            }
            // A directory runc does not know as a container (no state.json): debris.
            let dir = state.join(&id);
            remove_tree(&dir).at(&dir)?;
        }
    }
    crate::cgroup::remove(&runc_id(store, name))
        .map_err(|source| ContainerError::Cgroup { name: name.to_string(), source })
}

/// After a foreground run: kill what still runs of the container (a runc killed behind strata's
/// back leaves its container running), delete runc's state and the cgroups, unmount it.
pub fn release(store: &Store, name: &str) -> Result<()> {
    let _g = lock(store, name)?;
    get(store, name)?;
    stop(store, name)?;
    remove_runtime(store, name)?;
    if let Some(at) = mounted_at(store, name)? {
        kernel_overlay::unmount(&at, UnmountMode::Normal)
            .map_err(|e| ContainerError::Overlay { name: name.to_string(), source: e })?;
    }
    Ok(())
}

/// Delete runc's state and the cgroups of a container that has stopped (see `strata stop`).
pub fn delete_runtime(store: &Store, name: &str) -> Result<()> {
    let _g = lock(store, name)?;
    remove_runtime(store, name)
}

/// What [`gc_runtime`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RuntimeGarbage {
    /// runc ids whose state was deleted.
    pub runc: Vec<String>,
    /// cgroup names removed (from every hierarchy).
    pub cgroups: Vec<String>,
}

/// Delete runc's state and the cgroups of containers that no longer exist in this store: those
/// under this root's runc state directory (either id style), and the cgroups named with this
/// root's tag ([`runc_id`]); never another root's.
pub fn gc_runtime(store: &Store) -> Result<RuntimeGarbage> {
    let mut out = RuntimeGarbage::default();
    let state = runc_state_dir(store);
    let prefix = format!("strata-{}-", root_tag(store));
    // Whose name is still a container, asked under that container's lock: a row is made before
    // runc starts and removed under the lock, so what was seen here without a row is garbage.
    let orphan = |name: &str| -> Result<Option<LockGuard>> {
        if !valid_name(name) {
            return Ok(None);
        }
        let g = lock(store, name)?;
        Ok(store.container_row(name)?.is_none().then_some(g))
    };
    let mut ids: Vec<String> = match fs::read_dir(&state) {
        Ok(rd) => rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(StoreError::Io { path: state, source: e }.into()),
    };
    ids.sort();
    for id in ids {
        let name = match id.strip_prefix(&prefix).or_else(|| id.strip_prefix("strata-")) {
            Some(n) => n,
            None => continue,
        };
        let Some(_g) = orphan(name)? else { continue };
        tracing::info!(id, "deleting runc state of a removed container");
        if let Err(e) = crate::runtime::runc::runc_verb(&state, "delete", &id, &["--force"]) {
            if crate::runtime::runc::runc_status(&state, &id).is_some() {
                return Err(ContainerError::Runtime { name: name.to_string(), source: e });
            }
            let dir = state.join(&id);
            remove_tree(&dir).at(&dir)?;
        }
        out.runc.push(id);
    }
    for leaf in crate::cgroup::top_level_with_prefix(&prefix) {
        let Some(name) = leaf.strip_prefix(&prefix) else { continue };
        let Some(_g) = orphan(name)? else { continue };
        tracing::info!(cgroup = leaf, "removing the cgroup of a removed container");
        crate::cgroup::remove(&leaf)
            .map_err(|source| ContainerError::Cgroup { name: name.to_string(), source })?;
        out.cgroups.push(leaf);
    }
    Ok(out)
}

/// A container as listed.
/// Every container with all `container inspect` shows of it.
pub fn list(store: &Store) -> Result<Vec<Inspected>> {
    store.container_rows()?.iter().map(|row| inspect(store, &row.name)).collect()
}

/// All `container inspect`, `container ls --json` and `ps --json` show of a container. Field
/// names and types are those of every JSON strata prints (see [`crate::images::Listed`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspected {
    pub name: String,
    /// The image name it was created from.
    pub image: String,
    /// The ID of the image it stands on (its config digest).
    pub image_id: Sha256Digest,
    /// The manifest it stands on.
    pub digest: Sha256Digest,
    /// RFC 3339.
    pub created: String,
    /// `created` in Unix seconds.
    #[serde(skip)]
    pub created_secs: i64,
    pub read_only: bool,
    pub volatile: bool,
    /// Bottom first.
    pub layers: Vec<ImageLayerRow>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub mounted: Option<PathBuf>,
    /// `kernel` or `fuse`, while mounted.
    pub backend: Option<&'static str>,
    /// Whether its process runs (or is paused).
    pub running: bool,
    /// `created`, `running`, `paused`, `exited (CODE)`, or `exited` when the code was not
    /// recorded, as docker's ps shows it.
    pub status: String,
    /// How its last run ended (128+signal when killed), once it has.
    pub exit_code: Option<i32>,
    /// What runs it (`strata run, pid N`, or runc's id and status), while it runs.
    pub process: Option<String>,
    /// The network it is attached to, while it is.
    pub network: Option<String>,
    /// Its address there.
    pub ip_address: Option<std::net::Ipv4Addr>,
    /// The ports it publishes (host ports as chosen), while attached.
    pub ports: Vec<crate::network::ports::PortMapping>,
}

/// Everything about a container, for `container inspect`.
pub fn inspect(store: &Store, name: &str) -> Result<Inspected> {
    let c = get(store, name)?;
    let p = paths(store, &c);
    let mounted = mounted_at(store, name)?;
    let backend = mounted.as_ref().and_then(|at| backend_at(at)).map(|b| match b {
        Backend::Kernel => "kernel",
        _ => "fuse",
    });
    let process = is_running(store, name)?;
    let (state, id) = runc_ids(store, name);
    // As docker's ps says it; the exit code as recorded by what observed the end (see
    // crate::lifecycle), since runc's state does not keep it.
    let runc = crate::runtime::runc::runc_status(&state, &id);
    let exit_code = if process.is_none() { recorded_exit(store, name) } else { None };
    let status = match (runc.as_deref(), process.is_some(), exit_code) {
        (Some("paused"), true, _) => "paused".to_string(),
        (_, true, _) => "running".to_string(),
        (_, false, Some(code)) => format!("exited ({code})"),
        (Some("stopped"), false, None) => "exited".to_string(),
        (_, false, None) => "created".to_string(),
    };
    let layers = store.container_layers(name)?;
    let writable = |d: PathBuf| (!c.read_only).then_some(d);
    let attachment = crate::network::attachment(store, name).ok().flatten();
    Ok(Inspected {
        digest: c.manifest_digest.clone(),
        image_id: c.config_digest.clone(),
        created: crate::time::rfc3339(c.created),
        created_secs: c.created,
        read_only: c.read_only,
        volatile: c.volatile,
        layers,
        upper: writable(p.upper),
        work: writable(p.work),
        mounted,
        backend,
        running: process.is_some(),
        status,
        exit_code,
        process,
        network: attachment.as_ref().map(|a| a.network.clone()),
        ip_address: attachment.as_ref().and_then(|a| a.address()),
        ports: attachment.map(|a| a.ports).unwrap_or_default(),
        name: c.name,
        image: c.image,
    })
}
