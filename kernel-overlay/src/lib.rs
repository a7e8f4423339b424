//! Mounting kernel OverlayFS for strata's container snapshots.
//!
//! # Options
//! Every mount gets `index=off`, `redirect_dir=nofollow` and `metacopy=off`, plus `volatile` and
//! `userxattr` when asked; it is read-only when there is no upper dir. Layers come from untrusted
//! images, so redirects and metacopy (both trust xattrs found in layers) stay off.
//!
//! `redirect_dir=nofollow` rather than `redirect_dir=off`: with the overlay module parameter
//! `redirect_always_follow=Y` (the default, and the case on strata's machines) `off` means
//! *follow* — redirect xattrs found in layers are still obeyed — and the kernel rejects
//! `userxattr,redirect_dir=off` as conflicting (`userxattr,redirect_dir=follow`). `nofollow` never
//! creates nor follows redirects, in both modes. Renaming a lower directory then fails with EXDEV.
//!
//! # Read-only mounts of one layer
//! Without an upper dir overlayfs needs at least two lower layers ("at least 2 lowerdir are needed
//! while upperdir nonexistent", still true on Linux 6.18), and the same directory twice is rejected
//! (ELOOP). A read-only spec with one lower must name [`OverlaySpec::empty_lower`], an empty
//! directory the caller owns (strata keeps one under its root), which is stacked below the layer.
//! This keeps overlay semantics (whiteouts and `trusted.overlay.*` xattrs in the layer stay hidden,
//! `is_mounted` sees an `overlay`), which a read-only bind mount of the layer would not.
//!
//! # Mount paths
//! [`mount`] uses the new mount API: `fsopen("overlay")`, one `fsconfig(lowerdir+)` per layer
//! (Linux 6.8+; no page-size limit on the total), `upperdir`, `workdir`, the options,
//! `FSCONFIG_CMD_CREATE`, `fsmount`, `move_mount`. When `fsopen` returns ENOSYS, or the *first*
//! `lowerdir+` returns EINVAL (kernel without that key), it falls back to legacy `mount(2)` with
//! an option string. That string is limited to one page (4096 bytes with its NUL); when absolute
//! paths overflow it, lower paths are made relative to the lowers' common parent directory and the
//! mount runs with that working directory in a helper thread that has unshared its fs_struct
//! (`unshare(CLONE_FS)`), so no other thread's working directory changes. When even relative
//! names overflow (500 layers of 64-hex digests take 32 KB), each lower is opened `O_PATH` and
//! named by its descriptor number, from `/proc/self/fd` as the working directory: a few bytes a
//! layer, so 500 layers fit. Only when that overflows too (an upper or work path of nearly a
//! page) is [`Error::OptionsTooLong`] returned.

mod error;
pub mod format;
pub mod mountinfo;
pub mod syscall;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

pub use error::{errno_display, errno_name, Error};
pub use mountinfo::MountInfo;
pub use rustix::io::Errno;
pub use syscall::{Call, RealSyscall, RecordingSyscall, Syscall};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// OverlayFS stacks at most this many lower layers (`OVL_MAX_STACK`).
pub const OVL_MAX_STACK: usize = 500;

/// Legacy `mount(2)` data is copied from one page: the option string plus its NUL must fit.
pub const LEGACY_OPTIONS_MAX: usize = 4096;

/// What to mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlaySpec {
    /// Lower layers, top-most first (overlayfs `lowerdir` order). Absolute paths.
    pub lowers: Vec<PathBuf>,
    /// Writable upper dir; `None` for a read-only view.
    pub upper: Option<PathBuf>,
    /// Work dir on the same filesystem as `upper`; required with `upper`.
    pub work: Option<PathBuf>,
    /// `volatile`: no syncs; for containers that will be thrown away. Needs `upper`.
    pub volatile: bool,
    /// `userxattr`: use `user.overlay.*` xattrs (unprivileged mounts).
    pub userxattr: bool,
    /// An empty directory stacked below a single lower of a read-only spec (see the crate docs).
    /// Ignored otherwise.
    pub empty_lower: Option<PathBuf>,
}

impl OverlaySpec {
    /// A read-only view of `lowers` (top-most first).
    pub fn read_only(lowers: Vec<PathBuf>) -> Self {
        OverlaySpec { lowers, ..Default::default() }
    }

    /// A writable stack.
    pub fn writable(lowers: Vec<PathBuf>, upper: PathBuf, work: PathBuf) -> Self {
        OverlaySpec { lowers, upper: Some(upper), work: Some(work), ..Default::default() }
    }

    pub fn is_read_only(&self) -> bool {
        self.upper.is_none()
    }

    /// Check the spec without touching the filesystem.
    pub fn validate(&self) -> Result<()> {
        if self.effective_lowers().is_empty() {
            return Err(Error::NoLowers);
        }
        error::check_depth(self.lowers.len())?;
        self.validate_shape()
    }

    /// [`validate`](Self::validate) without the kernel's stack depth limit.
    fn validate_shape(&self) -> Result<()> {
        // No lowers at all (an image of no layers, `FROM scratch`): `empty_lower` is the one lower
        // of a writable overlay; a read-only one has nothing to show.
        if self.effective_lowers().is_empty() || (self.lowers.is_empty() && self.is_read_only()) {
            return Err(Error::NoLowers);
        }
        match (&self.upper, &self.work) {
            (Some(upper), None) => return Err(Error::UpperWithoutWork { upper: upper.clone() }),
            (None, Some(work)) => return Err(Error::WorkWithoutUpper { work: work.clone() }),
            _ => {}
        }
        if self.volatile && self.upper.is_none() {
            return Err(Error::VolatileWithoutUpper);
        }
        if self.is_read_only() && self.lowers.len() == 1 && self.empty_lower.is_none() {
            return Err(Error::SingleLowerReadOnly { lower: self.lowers[0].clone() });
        }
        for p in self.lowers.iter().chain(&self.upper).chain(&self.work).chain(&self.empty_lower) {
            check_path(p)?;
        }
        Ok(())
    }

    /// The lowers as mounted: `lowers`, plus `empty_lower` below a single read-only lower, or
    /// `empty_lower` alone under an upper when there are no lowers.
    pub fn effective_lowers(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self.lowers.iter().map(PathBuf::as_path).collect();
        if self.lowers.is_empty() && !self.is_read_only() {
            if let Some(e) = &self.empty_lower {
                v.push(e);
            }
        }
        if self.is_read_only() && self.lowers.len() == 1 {
            if let Some(e) = &self.empty_lower {
                v.push(e);
            }
        }
        v
    }

    /// Options other than the layer paths, in the order they are passed.
    fn fixed_options(&self) -> Vec<(&'static str, Option<&'static str>)> {
        let mut v =
            vec![("index", Some("off")), ("redirect_dir", Some("nofollow")), ("metacopy", Some("off"))];
        if self.userxattr {
            v.push(("userxattr", None));
        }
        if self.volatile {
            v.push(("volatile", None));
        }
        v
    }
}

fn check_path(p: &Path) -> Result<()> {
    if !p.is_absolute() {
        return Err(Error::NotAbsolute { path: p.into() });
    }
    if p.as_os_str().as_bytes().contains(&0) {
        return Err(Error::NulInPath { path: p.into() });
    }
    Ok(())
}

/// Backslash-escape `\`, `:` and `,` as overlayfs option parsing expects (it splits options at
/// unescaped `,` and lowerdir at unescaped `:`, then drops the backslashes).
pub fn escape_path(p: &Path) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.as_os_str().len());
    for &b in p.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b':' | b',') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// A mount as a containerd-style caller passes it to mount(8) / mount(2) itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Filesystem type: `overlay`.
    pub fs_type: String,
    /// Source: `overlay`.
    pub source: String,
    /// `lowerdir=a:b:c`, `upperdir=`, `workdir=`, `index=off`, ... and `ro` when read-only.
    /// Paths are backslash-escaped ([`escape_path`]); joined with `,` they form a legacy option
    /// string, which may exceed the one-page limit of mount(2) for deep stacks.
    pub options: Vec<String>,
}

/// What to hand to a caller that mounts by itself. Fails on an invalid spec or non-UTF-8 paths.
pub fn mount_spec(spec: &OverlaySpec) -> Result<MountSpec> {
    spec.validate()?;
    Ok(MountSpec { fs_type: "overlay".into(), source: "overlay".into(), options: render_options(spec)? })
}

/// [`mount_spec`]'s options, in the same syntax and with the same escapes, for a userspace
/// overlay that takes the kernel's options (strata-fuse, fuse-overlayfs): it has no
/// [`OVL_MAX_STACK`] limit, so a stack too deep for the kernel is still rendered. Fails on an
/// otherwise invalid spec or non-UTF-8 paths.
pub fn userspace_options(spec: &OverlaySpec) -> Result<Vec<String>> {
    spec.validate_shape()?;
    render_options(spec)
}

/// The option list of a valid spec: paths escaped ([`escape_path`]), then the fixed options.
fn render_options(spec: &OverlaySpec) -> Result<Vec<String>> {
    let utf8 = |p: &Path| -> Result<String> {
        String::from_utf8(escape_path(p)).map_err(|_| Error::NonUtf8Path { path: p.into() })
    };
    let mut options = Vec::new();
    let lowers = spec.effective_lowers().into_iter().map(utf8).collect::<Result<Vec<_>>>()?;
    options.push(format!("lowerdir={}", lowers.join(":")));
    if let (Some(upper), Some(work)) = (&spec.upper, &spec.work) {
        options.push(format!("upperdir={}", utf8(upper)?));
        options.push(format!("workdir={}", utf8(work)?));
    }
    for (k, v) in spec.fixed_options() {
        options.push(match v {
            Some(v) => format!("{k}={v}"),
            None => k.to_string(),
        });
    }
    if spec.is_read_only() {
        options.push("ro".into());
    }
    Ok(options)
}

/// How a mount was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMethod {
    /// fsopen/fsconfig(lowerdir+)/fsmount/move_mount.
    NewApi,
    /// mount(2) with absolute paths.
    Legacy,
    /// mount(2) with lower paths relative to their common parent directory.
    LegacyRelative,
    /// mount(2) with lowers named by open descriptors, relative to `/proc/self/fd`.
    LegacyFd,
}

/// Knobs for [`mount_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// Skip the new mount API (test hook, or for kernels where it misbehaves).
    pub force_legacy: bool,
}

/// Mount `spec` on `target` (new mount API, legacy fallback).
pub fn mount(spec: &OverlaySpec, target: &Path) -> Result<MountMethod> {
    check_empty_lower(spec)?;
    mount_with(&RealSyscall, spec, target, MountOptions::default())
}

/// Mount `spec` on `target` with legacy `mount(2)` only.
pub fn mount_legacy(spec: &OverlaySpec, target: &Path) -> Result<MountMethod> {
    check_empty_lower(spec)?;
    mount_with(&RealSyscall, spec, target, MountOptions { force_legacy: true })
}

fn check_empty_lower(spec: &OverlaySpec) -> Result<()> {
    if let Some(e) = &spec.empty_lower {
        if spec.lowers.len() <= 1 {
            let empty = std::fs::read_dir(e).map(|mut d| d.next().is_none()).unwrap_or(false);
            if !empty {
                return Err(Error::EmptyLowerNotEmpty { path: e.clone() });
            }
        }
    }
    Ok(())
}

/// The mount logic, over any [`Syscall`] implementation.
pub fn mount_with<S: Syscall>(
    sys: &S,
    spec: &OverlaySpec,
    target: &Path,
    opts: MountOptions,
) -> Result<MountMethod> {
    spec.validate()?;
    // The legacy path may run with another working directory: pin the target down first.
    let target = std::path::absolute(target)
        .map_err(|e| mount_err(target, "resolving target path", Errno::from_io_error(&e)))?;
    if !opts.force_legacy {
        if let Some(method) = mount_new_api(sys, spec, &target)? {
            return Ok(method);
        }
    }
    mount_legacy_with(sys, spec, &target)
}

fn mount_err(target: &Path, op: impl Into<String>, errno: Option<Errno>) -> Error {
    Error::Mount {
        target: target.into(),
        op: op.into(),
        errno: errno.unwrap_or(Errno::INVAL),
        kernel: Vec::new(),
    }
}

/// `Ok(None)`: the kernel lacks the new API (or `lowerdir+`); use legacy mount(2).
fn mount_new_api<S: Syscall>(sys: &S, spec: &OverlaySpec, target: &Path) -> Result<Option<MountMethod>> {
    let fs = match sys.fsopen("overlay") {
        Ok(fs) => fs,
        Err(Errno::NOSYS) => {
            tracing::debug!("fsopen: ENOSYS, falling back to legacy mount(2)");
            return Ok(None);
        }
        Err(errno) => return Err(mount_err(target, "fsopen(overlay)", Some(errno))),
    };
    let fail =
        |op: String, errno: Errno| Error::Mount { target: target.into(), op, errno, kernel: sys.fs_log(&fs) };
    for (i, lower) in spec.effective_lowers().into_iter().enumerate() {
        match sys.fsconfig_set_string(&fs, "lowerdir+", lower.as_os_str()) {
            Ok(()) => {}
            Err(Errno::INVAL) if i == 0 => {
                tracing::debug!(kernel = ?sys.fs_log(&fs), "fsconfig lowerdir+: EINVAL, falling back to legacy mount(2)");
                return Ok(None);
            }
            Err(errno) => return Err(fail(format!("fsconfig(lowerdir+, {})", lower.display()), errno)),
        }
    }
    if let (Some(upper), Some(work)) = (&spec.upper, &spec.work) {
        // Unlike lowerdir+, upperdir and workdir values are unescaped by the kernel.
        for (key, path) in [("upperdir", upper), ("workdir", work)] {
            let value = escape_path(path);
            sys.fsconfig_set_string(&fs, key, OsStr::from_bytes(&value))
                .map_err(|e| fail(format!("fsconfig({key}, {})", path.display()), e))?;
        }
    }
    for (key, value) in spec.fixed_options() {
        match value {
            Some(v) => sys.fsconfig_set_string(&fs, key, OsStr::new(v)),
            None => sys.fsconfig_set_flag(&fs, key),
        }
        .map_err(|e| {
            fail(format!("fsconfig({key}{})", value.map(|v| format!(", {v}")).unwrap_or_default()), e)
        })?;
    }
    sys.fsconfig_create(&fs).map_err(|e| fail("fsconfig(FSCONFIG_CMD_CREATE)".into(), e))?;
    let mnt = sys.fsmount(&fs, spec.is_read_only()).map_err(|e| fail("fsmount".into(), e))?;
    sys.move_mount(&mnt, target).map_err(|e| mount_err(target, "move_mount", Some(e)))?;
    Ok(Some(MountMethod::NewApi))
}

fn legacy_options(spec: &OverlaySpec, lowers: &[Vec<u8>]) -> Vec<u8> {
    let mut data = b"lowerdir=".to_vec();
    data.extend(lowers.join(&b':'));
    if let (Some(upper), Some(work)) = (&spec.upper, &spec.work) {
        data.extend(b",upperdir=");
        data.extend(escape_path(upper));
        data.extend(b",workdir=");
        data.extend(escape_path(work));
    }
    for (k, v) in spec.fixed_options() {
        data.push(b',');
        data.extend(k.as_bytes());
        if let Some(v) = v {
            data.push(b'=');
            data.extend(v.as_bytes());
        }
    }
    data
}

/// Longest common ancestor directory of the parents of `paths` (all absolute).
fn common_parent(paths: &[&Path]) -> PathBuf {
    let mut common: Vec<Component> = paths[0].parent().unwrap_or(Path::new("/")).components().collect();
    for p in &paths[1..] {
        let parent: Vec<Component> = p.parent().unwrap_or(Path::new("/")).components().collect();
        let n = common.iter().zip(&parent).take_while(|(a, b)| a == b).count();
        common.truncate(n);
    }
    common.iter().collect()
}

fn mount_legacy_with<S: Syscall>(sys: &S, spec: &OverlaySpec, target: &Path) -> Result<MountMethod> {
    let lowers = spec.effective_lowers();
    let ro = spec.is_read_only();
    let absolute: Vec<Vec<u8>> = lowers.iter().map(|p| escape_path(p)).collect();
    let data = legacy_options(spec, &absolute);
    if data.len() < LEGACY_OPTIONS_MAX {
        sys.mount(target, ro, &data, None).map_err(|e| mount_err(target, "mount(2)", Some(e)))?;
        return Ok(MountMethod::Legacy);
    }
    let common = common_parent(&lowers);
    let relative: Vec<Vec<u8>> = lowers
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(&common).expect("common parent is a prefix");
            if rel.as_os_str().is_empty() {
                b".".to_vec()
            } else {
                escape_path(rel)
            }
        })
        .collect();
    let data_rel = legacy_options(spec, &relative);
    if data_rel.len() >= LEGACY_OPTIONS_MAX {
        return mount_legacy_fds(sys, spec, target, &lowers, common);
    }
    tracing::debug!(
        absolute = data.len() + 1,
        relative = data_rel.len() + 1,
        cwd = %common.display(),
        "legacy option string over one page with absolute paths; using relative lower paths"
    );
    sys.mount(target, ro, &data_rel, Some(&common))
        .map_err(|e| mount_err(target, format!("mount(2) in {}", common.display()), Some(e)))?;
    Ok(MountMethod::LegacyRelative)
}

/// Legacy mount with each lower named by an `O_PATH` descriptor number, resolved from
/// `/proc/self/fd` (the descriptors stay open until the mount has taken its own references).
fn mount_legacy_fds<S: Syscall>(
    sys: &S,
    spec: &OverlaySpec,
    target: &Path,
    lowers: &[&Path],
    common: PathBuf,
) -> Result<MountMethod> {
    let fds = lowers
        .iter()
        .map(|p| sys.open_path(p).map_err(|e| mount_err(target, format!("open {}", p.display()), Some(e))))
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<Vec<u8>> = fds.iter().map(|f| sys.fd_number(f).to_string().into_bytes()).collect();
    let data = legacy_options(spec, &names);
    if data.len() >= LEGACY_OPTIONS_MAX {
        return Err(Error::OptionsTooLong {
            target: target.into(),
            common,
            len: data.len() + 1,
            limit: LEGACY_OPTIONS_MAX,
        });
    }
    let cwd = Path::new("/proc/self/fd");
    tracing::debug!(len = data.len() + 1, "legacy option string names lowers by /proc/self/fd numbers");
    sys.mount(target, spec.is_read_only(), &data, Some(cwd))
        .map_err(|e| mount_err(target, "mount(2) in /proc/self/fd".to_string(), Some(e)))?;
    drop(fds);
    Ok(MountMethod::LegacyFd)
}

/// How to unmount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnmountMode {
    /// Fail with EBUSY while the mount is in use.
    #[default]
    Normal,
    /// `MNT_DETACH`: detach now, clean up when no longer busy (for `--force`).
    Detach,
}

/// Unmount `target` (never following a symlink at `target`).
pub fn unmount(target: &Path, mode: UnmountMode) -> Result<()> {
    unmount_with(&RealSyscall, target, mode)
}

pub fn unmount_with<S: Syscall>(sys: &S, target: &Path, mode: UnmountMode) -> Result<()> {
    sys.umount(target, mode == UnmountMode::Detach)
        .map_err(|errno| Error::Unmount { target: target.into(), errno })
}

/// Whether something is mounted on `target` (per `/proc/self/mountinfo`).
pub fn is_mounted(target: &Path) -> Result<bool> {
    Ok(find_mount(target)?.is_some())
}

/// The top-most mount on `target`, if any.
pub fn find_mount(target: &Path) -> Result<Option<MountInfo>> {
    find_mount_with(&RealSyscall, target)
}

pub fn find_mount_with<S: Syscall>(sys: &S, target: &Path) -> Result<Option<MountInfo>> {
    // mountinfo shows canonical paths; resolve symlinks when the target exists.
    let target = std::fs::canonicalize(target)
        .or_else(|_| std::path::absolute(target))
        .unwrap_or_else(|_| target.to_path_buf());
    let text = sys.mountinfo().map_err(|source| Error::Mountinfo { source })?;
    Ok(mountinfo::parse(&text).into_iter().rfind(|m| m.mount_point == target))
}

#[cfg(test)]
mod tests;
