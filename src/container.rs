//! Containers: writable snapshots (or read-only views) over an image's layers.
//!
//! On disk: `containers/<name>/upper` and `work` (absent for a read-only view), `rootfs` (the default
//! mount point), `empty` (a read-only view of a one-layer image stacks it below the layer, since
//! overlayfs needs two lowers without an upper) and `bundle/` (the OCI runtime bundle of `strata run`).
//! Whether a container is mounted is read from the kernel's mount table, never from a stored flag.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kernel_overlay::{OverlaySpec, UnmountMode};

use crate::db::{ContainerRow, DbError};
use crate::digest::Sha256Digest;
use crate::store::{remove_tree, IoContext, Store, StoreError};

/// Container errors.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] DbError),
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
    #[error("container {name:?}: {source}")]
    Overlay { name: String, source: kernel_overlay::Error },
    #[error("container {name:?}: FUSE backend: {reason}")]
    Fuse { name: String, reason: String },
    #[error("container {name:?}: kernel overlay mount failed ({kernel}) and the FUSE fallback failed too ({fuse})")]
    AutoFailed { name: String, kernel: String, fuse: String },
    #[error("container {name:?}: diff: {reason}")]
    Diff { name: String, reason: String },
    #[error(transparent)]
    Layer(#[from] Box<crate::import::ImportError>),
    #[error("container {0:?} is not mounted")]
    NotMounted(String),
}

pub type Result<T, E = ContainerError> = std::result::Result<T, E>;

/// Which filesystem stacks the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
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

pub fn paths(store: &Store, name: &str) -> Paths {
    let dir = store.containers_dir().join(name);
    Paths {
        upper: dir.join("upper"),
        work: dir.join("work"),
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

/// Record a container over `image` and make its directories.
pub fn create(store: &mut Store, image: &str, name: &str, opts: &CreateOptions) -> Result<ContainerRow> {
    if !valid_name(name) {
        return Err(ContainerError::BadName(name.to_string()));
    }
    if store.db.image(image)?.is_none() {
        return Err(ContainerError::NoImage(image.to_string()));
    }
    materialize(store, image)?;
    let _g = store.lock(&format!("container-{name}"))?;
    if store.db.container(name)?.is_some() {
        return Err(ContainerError::Exists(name.to_string()));
    }
    let p = paths(store, name);
    // Leftovers of a container that died half-created.
    remove_tree(&p.dir).at(&p.dir)?;
    let mut b = fs::DirBuilder::new();
    b.mode(0o700);
    let made = (|| -> Result<()> {
        b.create(&p.dir).at(&p.dir)?;
        let mut dirs = vec![&p.rootfs, &p.empty];
        if !opts.read_only {
            dirs.push(&p.upper);
            dirs.push(&p.work);
        }
        for d in dirs {
            b.create(d).at(d)?;
        }
        // The upper dir becomes the container's "/" when nothing above it says otherwise: the
        // overlay root takes the upper's mode, so match a conventional root.
        if !opts.read_only {
            fs::set_permissions(&p.upper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).at(&p.upper)?;
        }
        Ok(())
    })();
    if let Err(e) = made {
        let _ = remove_tree(&p.dir);
        return Err(e);
    }
    let row = ContainerRow {
        name: name.to_string(),
        image: image.to_string(),
        read_only: opts.read_only,
        volatile: opts.volatile,
        created: crate::db::now(),
    };
    if let Err(e) = store.db.insert_container(&row) {
        let _ = remove_tree(&p.dir);
        return Err(e.into());
    }
    Ok(row)
}

fn get(store: &Store, name: &str) -> Result<ContainerRow> {
    store.db.container(name)?.ok_or_else(|| ContainerError::NotFound(name.to_string()))
}

/// The overlay spec of a container: its image's layers (top first), upper and work.
pub fn overlay_spec(store: &Store, c: &ContainerRow) -> Result<OverlaySpec> {
    let layers = store.db.image_layers(&c.image)?;
    let mut lowers = Vec::with_capacity(layers.len());
    for l in layers.iter().rev() {
        let d = Sha256Digest::parse(&l.diff_id).map_err(|e| StoreError::Io {
            path: PathBuf::from(&l.diff_id),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })?;
        lowers.push(store.layer_path(&d));
    }
    let p = paths(store, &c.name);
    let mut spec = if c.read_only {
        OverlaySpec::read_only(lowers)
    } else {
        OverlaySpec::writable(lowers, p.upper, p.work)
    };
    spec.volatile = c.volatile && !c.read_only;
    spec.empty_lower = Some(p.empty);
    Ok(spec)
}

/// Where a container is mounted now, if anywhere (from the kernel's mount table).
pub fn mounted_at(store: &Store, name: &str) -> Result<Option<PathBuf>> {
    let p = paths(store, name);
    // Default mount point first; then any overlay whose upperdir is ours, or a strata-fuse mount
    // whose source names our directory.
    if let Ok(Some(_)) = kernel_overlay::find_mount(&p.rootfs) {
        return Ok(Some(p.rootfs));
    }
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let upper = format!("upperdir={}", p.upper.display());
    let marker = format!("strata:{}", p.dir.display());
    for m in kernel_overlay::mountinfo::parse(&text) {
        let ours =
            (m.fs_type == "overlay" && m.super_options.split(',').any(|o| o == upper)) || m.source == marker;
        if ours {
            return Ok(Some(m.mount_point));
        }
    }
    Ok(None)
}

/// Make sure every layer directory of `image` exists (a committed layer is unpacked from its blob
/// at its first use).
fn materialize(store: &mut Store, image: &str) -> Result<()> {
    for l in store.db.image_layers(image)? {
        crate::import::materialize_layer(store, &l).map_err(Box::new)?;
    }
    Ok(())
}

/// Mount a container; returns the mount point.
pub fn mount(store: &mut Store, name: &str, target: Option<&Path>, backend: Backend) -> Result<PathBuf> {
    let c = get(store, name)?;
    materialize(store, &c.image)?;
    if let Some(at) = mounted_at(store, name)? {
        return Err(ContainerError::Mounted { name: name.to_string(), target: at.display().to_string() });
    }
    let p = paths(store, name);
    let target = target.map(Path::to_path_buf).unwrap_or(p.rootfs.clone());
    fs::create_dir_all(&target).at(&target)?;
    let spec = overlay_spec(store, &c)?;
    if !c.read_only {
        // A work dir left by an earlier mount may hold debris the kernel refuses.
        let _ = remove_tree(&p.work.join("work"));
    }
    match backend {
        Backend::Kernel => kernel_overlay::mount(&spec, &target)
            .map(|_| ())
            .map_err(|e| ContainerError::Overlay { name: name.to_string(), source: e })?,
        Backend::Fuse => fuse_mount(store, name, &spec, &target)?,
        Backend::Auto => {
            if let Err(k) = kernel_overlay::mount(&spec, &target) {
                tracing::warn!(container = name, error = %k, "kernel overlay mount failed; trying strata-fuse");
                fuse_mount(store, name, &spec, &target).map_err(|f| ContainerError::AutoFailed {
                    name: name.to_string(),
                    kernel: k.to_string(),
                    fuse: f.to_string(),
                })?;
            }
        }
    }
    Ok(target)
}

/// The strata-fuse binary: next to this executable, else on PATH.
pub fn fuse_binary() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let cand = dir.join("strata-fuse");
            if cand.is_file() {
                return cand;
            }
            // Test binaries live in target/*/deps.
            if let Some(up) = dir.parent() {
                let cand = up.join("strata-fuse");
                if cand.is_file() {
                    return cand;
                }
            }
        }
    }
    PathBuf::from("strata-fuse")
}

fn fuse_mount(store: &Store, name: &str, spec: &OverlaySpec, target: &Path) -> Result<()> {
    let err = |reason: String| ContainerError::Fuse { name: name.to_string(), reason };
    let join = |ps: &[&Path]| ps.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    let lowers: Vec<&Path> = spec.lowers.iter().map(PathBuf::as_path).collect();
    let mut opts = format!("lowerdir={}", join(&lowers));
    if let (Some(u), Some(w)) = (&spec.upper, &spec.work) {
        opts.push_str(&format!(",upperdir={},workdir={}", u.display(), w.display()));
        if spec.volatile {
            opts.push_str(",volatile");
        }
    }
    let bin = fuse_binary();
    let source = format!("strata:{}", paths(store, name).dir.display());
    let out = Command::new(&bin)
        .arg("-o")
        .arg(&opts)
        .arg("-o")
        .arg(format!("fsname={source}"))
        .arg(target)
        .output()
        .map_err(|e| err(format!("running {}: {e}", bin.display())))?;
    if !out.status.success() {
        return Err(err(format!(
            "{} exited with {}: {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Unmount a container.
pub fn umount(store: &Store, name: &str, force: bool) -> Result<()> {
    get(store, name)?;
    let at = mounted_at(store, name)?.ok_or_else(|| ContainerError::NotMounted(name.to_string()))?;
    let mode = if force { UnmountMode::Detach } else { UnmountMode::Normal };
    kernel_overlay::unmount(&at, mode)
        .map_err(|e| ContainerError::Overlay { name: name.to_string(), source: e })
}

/// Remove a container: refuses while mounted unless `force` (which unmounts).
pub fn remove(store: &mut Store, name: &str, force: bool) -> Result<()> {
    get(store, name)?;
    let _g = store.lock(&format!("container-{name}"))?;
    while let Some(at) = mounted_at(store, name)? {
        if !force {
            return Err(ContainerError::Mounted { name: name.to_string(), target: at.display().to_string() });
        }
        kernel_overlay::unmount(&at, UnmountMode::Detach)
            .map_err(|e| ContainerError::Overlay { name: name.to_string(), source: e })?;
    }
    let p = paths(store, name);
    remove_tree(&p.dir).at(&p.dir)?;
    store.db.remove_container(name)?;
    Ok(())
}

/// A container as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub row: ContainerRow,
    pub mounted: Option<PathBuf>,
}

pub fn list(store: &Store) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for row in store.db.containers()? {
        let mounted = mounted_at(store, &row.name)?;
        out.push(Listed { row, mounted });
    }
    Ok(out)
}

/// The mount a caller would perform itself (containerd style).
pub fn mounts(store: &Store, name: &str) -> Result<kernel_overlay::MountSpec> {
    let c = get(store, name)?;
    let spec = overlay_spec(store, &c)?;
    kernel_overlay::mount_spec(&spec)
        .map_err(|e| ContainerError::Overlay { name: name.to_string(), source: e })
}

/// The container's changes against its image (see [`crate::diff`]).
pub fn diff(store: &Store, name: &str) -> Result<Vec<crate::diff::Change>> {
    let c = get(store, name)?;
    if c.read_only {
        return Ok(Vec::new());
    }
    let spec = overlay_spec(store, &c)?;
    crate::diff::diff_upper(&paths(store, name).upper, &spec.lowers)
        .map_err(|e| ContainerError::Diff { name: name.to_string(), reason: e.to_string() })
}
