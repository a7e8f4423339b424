//! Mounting a container: its snapshot's overlay, by the kernel's OverlayFS or by strata-fuse
//! (launched with fuse-overlayfs's command line), at its default mount point or at a target the
//! user gives ([`checked_target`]); unmounting; where and by which backend it is mounted now,
//! read from the kernel's mount table.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kernel_overlay::{OverlaySpec, UnmountMode};

use super::{
    dir, get, lock, materialize, paths, remote_layers, running, snapshot_key, Backend, ContainerError, Result,
};
use crate::store::{remove_tree, ContainerRow, IoContext, RemoteLayerRow, Store};

/// The overlay a container mounts: its snapshot's parent chain (top first) named by the short
/// `snapshots/<id>/fs` paths, so even a legacy mount(2) of 500 layers fits its page; upper and
/// work.
pub fn mount_spec(store: &Store, c: &ContainerRow) -> Result<OverlaySpec> {
    let mut spec = crate::snapshot::overlay_spec(store, &snapshot_key(&c.name))
        .map_err(|e| ContainerError::Snapshot { name: c.name.clone(), source: Box::new(e) })?;
    let p = paths(store, c);
    spec.volatile = c.volatile && !c.read_only;
    spec.empty_lower = Some(p.empty);
    Ok(spec)
}

/// [`mount_spec`] with each lower the directory itself (a layer's): what reads the trees
/// themselves (diff, commit, export, strata-fuse) walks, never through a symlink. A remote
/// layer's lower is its skeleton tree (`remote/<diff_id>/tree`): its metadata is the layer's,
/// its files hold no data (strata-fuse reads them from the registry; an export completes the
/// layers first).
pub fn overlay_spec(store: &Store, c: &ContainerRow) -> Result<OverlaySpec> {
    let mut spec = crate::snapshot::overlay_spec_real(store, &snapshot_key(&c.name))
        .map_err(|e| ContainerError::Snapshot { name: c.name.clone(), source: Box::new(e) })?;
    for r in remote_layers(store, c)? {
        let layer = store.layer_path(&r.diff_id);
        for l in spec.lowers.iter_mut().filter(|l| **l == layer) {
            *l = store.remote_tree(&r.diff_id);
        }
    }
    spec.volatile = c.volatile && !c.read_only;
    spec.empty_lower = Some(paths(store, c).empty);
    Ok(spec)
}

/// Where a container is mounted now, if anywhere (from the kernel's mount table).
pub fn mounted_at(store: &Store, name: &str) -> Result<Option<PathBuf>> {
    let Some(c) = store.container_row(name)? else { return Ok(None) };
    let p = paths(store, &c);
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

/// Mount a container; returns the mount point. Under the container's lock: of two concurrent
/// mounts one mounts and the other finds it mounted.
pub fn mount(store: &mut Store, name: &str, target: Option<&Path>, backend: Backend) -> Result<PathBuf> {
    mount_with(store, name, target, backend, None)
}

/// [`mount`], and with `read_log` the regular files of the layers that the container opens for
/// reading are logged to that file (strata-fuse's `-o readlog=`: per lower, top first, each file
/// once in the order of its first open; `optimize::readlog` reads it). A read log mounts through
/// strata-fuse whatever `backend` says: the kernel's overlay cannot tell.
pub fn mount_with(
    store: &mut Store,
    name: &str,
    target: Option<&Path>,
    backend: Backend,
    read_log: Option<&Path>,
) -> Result<PathBuf> {
    let backend = if read_log.is_some() { Backend::Fuse } else { backend };
    let _g = lock(store, name)?;
    let c = get(store, name)?;
    let remote = materialize(store, &c)?;
    if let Some(at) = mounted_at(store, name)? {
        return Err(ContainerError::AlreadyMounted {
            name: name.to_string(),
            target: at.display().to_string(),
        });
    }
    let p = paths(store, &c);
    let target = match target {
        Some(t) => checked_target(store, name, t)?,
        None => p.rootfs.clone(),
    };
    fs::create_dir_all(&target).at(&target)?;
    let short = mount_spec(store, &c)?;
    if !c.read_only {
        // A work dir left by an earlier mount may hold debris the kernel refuses.
        let _ = remove_tree(&p.work.join("work"));
    }
    if !remote.is_empty() {
        // Kernel overlay cannot read the layers' files: strata-fuse serves them.
        if backend == Backend::Kernel {
            return Err(ContainerError::RemoteLayers { name: name.to_string(), layers: remote.len() });
        }
        return fuse_mount(store, name, &overlay_spec(store, &c)?, &target, &remote, read_log)
            .map(|()| target);
    }
    match backend {
        Backend::Kernel => kernel_overlay::mount(&short, &target)
            .map(|_| ())
            .map_err(|e| ContainerError::Overlay { name: name.to_string(), source: e })?,
        Backend::Fuse => fuse_mount(store, name, &overlay_spec(store, &c)?, &target, &[], read_log)?,
        Backend::Auto if !kernel_overlay_usable(store) => {
            fuse_mount(store, name, &overlay_spec(store, &c)?, &target, &[], None)?
        }
        Backend::Auto => {
            if let Err(k) = kernel_overlay::mount(&short, &target) {
                tracing::warn!(container = name, error = %k, "kernel overlay mount failed; trying strata-fuse");
                let spec = overlay_spec(store, &c)?;
                fuse_mount(store, name, &spec, &target, &[], None).map_err(|f| {
                    ContainerError::AutoFailed {
                        name: name.to_string(),
                        kernel: k.to_string(),
                        fuse: f.to_string(),
                    }
                })?;
            }
        }
    }
    Ok(target)
}

/// Which backend the mount at `at` is (the top one there): kernel overlay, or strata-fuse.
pub fn backend_at(at: &Path) -> Option<Backend> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let m = kernel_overlay::mountinfo::parse(&text).into_iter().rev().find(|m| m.mount_point == at)?;
    Some(if m.fs_type == "overlay" { Backend::Kernel } else { Backend::Fuse })
}

/// A mount target given by the user: an existing directory (or one to create under an existing
/// parent) reached without following a symlink (a link would redirect the mount, over `/etc` say),
/// and not inside the state root (later imports would fail with EXDEV) or inside any container's
/// mounted rootfs. Returns its absolute path.
fn checked_target(store: &Store, name: &str, target: &Path) -> Result<PathBuf> {
    let bad = |reason: String| ContainerError::BadTarget {
        name: name.to_string(),
        target: target.to_path_buf(),
        reason,
    };
    let io =
        |source| ContainerError::TargetIo { name: name.to_string(), target: target.to_path_buf(), source };
    let abs = std::path::absolute(target).map_err(io)?;
    // The deepest existing ancestor must resolve to itself: no symlink on the way (".." too).
    let mut existing = abs.clone();
    while fs::symlink_metadata(&existing).is_err() {
        if !existing.pop() {
            return Err(bad("no existing ancestor".into()));
        }
    }
    let real = fs::canonicalize(&existing).map_err(io)?;
    if real != existing || abs.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(bad(format!(
            "{} is reached through a symlink (resolves to {})",
            existing.display(),
            real.display()
        )));
    }
    if !fs::symlink_metadata(&existing).map(|m| m.is_dir()).unwrap_or(false) {
        return Err(bad(format!("{} is not a directory", existing.display())));
    }
    let root = fs::canonicalize(store.root()).map_err(io)?;
    if abs.starts_with(&root) {
        return Err(bad(format!("it is inside the state root {}", root.display())));
    }
    for other in store.container_rows()? {
        if let Some(at) = mounted_at(store, &other.name)? {
            if abs.starts_with(&at) {
                return Err(bad(format!(
                    "it is inside container {:?}, mounted at {}",
                    other.name,
                    at.display()
                )));
            }
        }
    }
    Ok(abs)
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

/// Options of the kernel's overlay mount that strata-fuse's semantics always have (no index, no
/// redirects, no metacopy; both marker forms read, `user.` written where `trusted.` is refused):
/// not passed, or it would warn that it ignores them.
const KERNEL_ONLY: [&str; 4] = ["index", "redirect_dir", "metacopy", "userxattr"];

/// The file in the runtime directory that remembers whether kernel overlay mounts work in this
/// user's namespace (`kernel`) or not (`fuse: WHY`).
const PROBE_FILE: &str = "overlay-probe";

/// Whether `--backend auto` should try the kernel's overlay.
fn kernel_overlay_usable(store: &Store) -> bool {
    kernel_overlay_refused(store).is_none()
}

/// Why the kernel's overlay cannot be mounted here, or `None` when it can. Always `None` in
/// root mode. Rootless: a trial `userxattr` mount in the store's staging directory, once; the
/// answer is kept in the runtime directory (which a reboot empties, as it does the namespace)
/// for every later command and daemon of the user.
pub fn kernel_overlay_refused(store: &Store) -> Option<String> {
    let run = crate::userns::runtime_dir()?;
    let file = run.join(PROBE_FILE);
    if let Ok(text) = fs::read_to_string(&file) {
        let text = text.trim();
        return (text != "kernel").then(|| text.strip_prefix("fuse: ").unwrap_or(text).to_string());
    }
    let (answer, refused) = match probe_overlay(store) {
        Ok(()) => ("kernel".to_string(), None),
        Err(e) => {
            tracing::info!(error = %e, "kernel overlay cannot be mounted in the user namespace");
            (format!("fuse: {e}"), Some(e))
        }
    };
    if let Err(e) = fs::write(&file, format!("{answer}\n")) {
        tracing::debug!(error = %e, file = %file.display(), "the overlay probe's answer is not kept");
    }
    refused
}

/// A trial writable `userxattr` overlay mount of empty directories, unmounted at once.
fn probe_overlay(store: &Store) -> std::result::Result<(), String> {
    let dir = store.staging().map_err(|e| e.to_string())?;
    let d = |n: &str| dir.dir.join(n);
    for n in ["lower", "upper", "work", "merged"] {
        fs::create_dir(d(n)).map_err(|e| format!("{}: {e}", d(n).display()))?;
    }
    let mut spec = OverlaySpec::writable(vec![d("lower")], d("upper"), d("work"));
    spec.userxattr = true;
    kernel_overlay::mount(&spec, &d("merged")).map_err(|e| e.to_string())?;
    kernel_overlay::unmount(&d("merged"), UnmountMode::Detach).map_err(|e| e.to_string())
}

/// In rootless mode strata-fuse needs `/dev/fuse`, which a system without udev leaves root's
/// (0600): say so before strata-fuse fails on it.
fn check_dev_fuse(name: &str) -> Result<()> {
    if !crate::userns::is_rootless() {
        return Ok(());
    }
    match fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(_) => Ok(()),
        Err(e) => Err(ContainerError::Fuse {
            name: name.to_string(),
            reason: format!(
                "/dev/fuse cannot be opened by this user ({e}): rootless strata-fuse needs it \
                 readable and writable by everyone, as udev makes it (as root: chmod 0666 \
                 /dev/fuse), or use --backend kernel"
            ),
        }),
    }
}

/// strata-fuse's `-o` for `spec`: [`kernel_overlay::mount_spec`]'s options, paths escaped as
/// overlayfs takes them (`\,` `\:` `\\`), which strata-fuse reads alike; without the kernel's
/// stack depth limit ([`kernel_overlay::userspace_options`]), which strata-fuse does not have.
fn fuse_options(spec: &OverlaySpec) -> std::result::Result<Vec<String>, kernel_overlay::Error> {
    let options = kernel_overlay::userspace_options(spec)?;
    Ok(options
        .into_iter()
        .filter(|o| !KERNEL_ONLY.contains(&o.split_once('=').map_or(o.as_str(), |(k, _)| k)))
        .collect())
}

/// strata-fuse's options for `spec` in the store at `root` (absolute), the lowers of `remote`
/// (their skeleton trees) read from the registry (`remote=<diff_id>@<root>`); rootless, without
/// passthrough. What strata-fuse is started with, by [`mount`] or by a caller that mounts by
/// itself (containerd runs `mount.fuse3`, which hands these to strata-fuse).
pub fn fuse_mount_options(
    root: &Path,
    spec: &OverlaySpec,
    remote: &[RemoteLayerRow],
) -> std::result::Result<Vec<String>, kernel_overlay::Error> {
    let mut opts = fuse_options(spec)?;
    if crate::userns::is_rootless() {
        // Passthrough needs CAP_SYS_ADMIN in the initial user namespace.
        opts.push("passthrough=off".into());
    }
    let root = String::from_utf8_lossy(&kernel_overlay::escape_path(root)).into_owned();
    for r in remote {
        opts.push(format!("remote={}@{root}", r.diff_id));
    }
    if !remote.is_empty() {
        // Background completion: on unless `STRATA_LAZY_BACKGROUND` (`strata --lazy-background`)
        // says otherwise; strata-fuse checks the value.
        if let Some(v) = std::env::var(LAZY_BACKGROUND_ENV).ok().filter(|v| !v.trim().is_empty()) {
            let v = String::from_utf8_lossy(&kernel_overlay::escape_path(Path::new(v.trim()))).into_owned();
            opts.push(format!("lazy_background={v}"));
        }
    }
    Ok(opts)
}

/// Background completion of remote layers in the strata-fuse a mount starts: `off`, `on` or a
/// share in percent (`registry::remote_layer::Background`).
pub const LAZY_BACKGROUND_ENV: &str = "STRATA_LAZY_BACKGROUND";

/// The file a strata-fuse serving remote layers logs to (its stderr is closed once it serves).
pub const FUSE_LOG: &str = "fuse.log";

/// Mount `spec` with strata-fuse at `target`; the lowers of `remote` (their skeleton trees)
/// read their files from the registry (`-o remote=<diff_id>@<root>`), and the daemon then logs
/// to the container's [`FUSE_LOG`]; with `read_log`, the lower files opened for reading are
/// logged there (`-o readlog=`, see [`mount_with`]).
fn fuse_mount(
    store: &Store,
    name: &str,
    spec: &OverlaySpec,
    target: &Path,
    remote: &[RemoteLayerRow],
    read_log: Option<&Path>,
) -> Result<()> {
    let err = |reason: String| ContainerError::Fuse { name: name.to_string(), reason };
    check_dev_fuse(name)?;
    let root = std::path::absolute(store.root()).at(store.root())?;
    let mut opts = fuse_mount_options(&root, spec, remote)
        .map_err(|e| ContainerError::Overlay { name: name.to_string(), source: e })?;
    if let Some(log) = read_log {
        let log = std::path::absolute(log).at(log)?;
        opts.push(format!("readlog={}", String::from_utf8_lossy(&kernel_overlay::escape_path(&log))));
    }
    let opts = opts.join(",");
    let bin = fuse_binary();
    // The source mountinfo shows (see mounted_at), escaped as the paths are.
    let escaped = String::from_utf8_lossy(&kernel_overlay::escape_path(&dir(store, name))).into_owned();
    let source = format!("strata:{escaped}");
    let mut cmd = Command::new(&bin);
    if !remote.is_empty() {
        cmd.arg("--log").arg(dir(store, name).join(FUSE_LOG));
    }
    let out = cmd
        .arg("-o")
        .arg(&opts)
        .arg("-o")
        .arg(format!("fsname={source}"))
        .arg(target)
        .output()
        .map_err(|source| ContainerError::FuseRun { name: name.to_string(), bin: bin.clone(), source })?;
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

/// Unmount a container; refuses while it runs (its process would lose its root).
pub fn umount(store: &Store, name: &str, force: bool) -> Result<()> {
    let _g = lock(store, name)?;
    get(store, name)?;
    if let Some(how) = running(store, name)? {
        return Err(ContainerError::Running {
            name: name.to_string(),
            how,
            hint: "its processes would lose their root; stop it first (strata container rm --force)",
        });
    }
    let at = mounted_at(store, name)?.ok_or_else(|| ContainerError::NotMounted(name.to_string()))?;
    let mode = if force { UnmountMode::Detach } else { UnmountMode::Normal };
    kernel_overlay::unmount(&at, mode)
        .map_err(|e| ContainerError::Overlay { name: name.to_string(), source: e })
}

/// The mount a caller would perform itself (containerd style).
pub fn mounts(store: &Store, name: &str) -> Result<kernel_overlay::MountSpec> {
    let c = get(store, name)?;
    let spec = mount_spec(store, &c)?;
    kernel_overlay::mount_spec(&spec)
        .map_err(|e| ContainerError::Overlay { name: name.to_string(), source: e })
}
