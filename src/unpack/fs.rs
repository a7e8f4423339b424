//! Confined filesystem operations: every create, link, chmod, chown, xattr and whiteout of an
//! unpack, relative to the layer root.
//!
//! # Safety model
//! The layer root is opened once (`O_PATH|O_DIRECTORY`). Every entry's parent directory is resolved
//! with `openat2(root, parent, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so symlinks created by
//! earlier entries (absolute, `../..`, chained) are resolved as if `root` were `/` and can never lead
//! outside it. The final component is then created or changed with `*at` syscalls relative to that
//! parent fd, never following a final symlink (`O_NOFOLLOW|O_EXCL`, `AT_SYMLINK_NOFOLLOW`, `O_PATH`
//! fds with `AT_EMPTY_PATH`). Metadata of regular files and directories is applied through an fd
//! of the object itself.
//!
//! Tar semantics for an existing path (later entry wins): a non-directory replaces anything
//! (directories are removed recursively, inside the root); a directory over a directory keeps it and
//! updates its metadata; a directory over a non-directory replaces it. Directory mtimes are applied
//! last.

use std::ffi::{CStr, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::policy::{lossy, normalize, os, split};
use super::{io_err, FileData, Meta, UnpackError, Unpacker};
use crate::overlay_format;
use crate::tar::sparse;

pub(super) const O_PATH_DIR: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

pub(super) fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// `fchmodat2(fd, "", mode, AT_EMPTY_PATH)`: chmod through an O_PATH fd (never follows).
pub(super) fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall with a valid fd, a static NUL-terminated empty string and flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode as libc::c_uint,
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOSYS) {
        // Kernels before 6.6: chmod through the procfs magic link of the O_PATH fd, which
        // designates exactly this inode.
        let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
        rustix::fs::chmod(p.as_str(), Mode::from_raw_mode(mode))?;
        return Ok(());
    }
    Err(e)
}

impl<'o> Unpacker<'o> {
    /// Resolve (creating if missing) the directory `parent` inside the root; returns an O_PATH fd.
    pub(super) fn parent_fd(&mut self, parent: &[u8], path: &[u8]) -> Result<BorrowedFd<'_>, UnpackError> {
        let hit = matches!(&self.cache, Some((p, _)) if p.as_slice() == parent);
        if !hit {
            let fd = if parent.is_empty() {
                rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(|e| io_err(path, "dup root", e))?
            } else {
                match rustix::fs::openat2(&self.root, os(parent), O_PATH_DIR, Mode::empty(), resolve_flags())
                {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => self.make_parents(parent, path)?,
                    Err(Errno::AGAIN) | Err(Errno::INTR) => {
                        // openat2 may ask for a retry when the tree changes concurrently.
                        rustix::fs::openat2(
                            &self.root,
                            os(parent),
                            O_PATH_DIR,
                            Mode::empty(),
                            resolve_flags(),
                        )
                        .map_err(|e| io_err(path, "resolve parent directory", e))?
                    }
                    Err(e) => return Err(io_err(path, "resolve parent directory", e)),
                }
            };
            self.cache = Some((parent.to_vec(), fd));
        }
        match &self.cache {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(io_err(path, "resolve parent directory", Errno::NOENT)),
        }
    }

    /// Create the missing directories of `parent` (0755, owned by the unpacking user), walking
    /// one component at a time without following symlinks; a symlink component is resolved
    /// inside the root.
    pub(super) fn make_parents(&mut self, parent: &[u8], path: &[u8]) -> Result<OwnedFd, UnpackError> {
        let mut fd =
            rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(|e| io_err(path, "dup root", e))?;
        let mut end = 0;
        for comp in parent.split(|b| *b == b'/') {
            end += comp.len();
            let prefix = &parent[..end];
            end += 1;
            let flags = O_PATH_DIR | OFlags::NOFOLLOW;
            fd = match rustix::fs::openat(&fd, os(comp), flags, Mode::empty()) {
                Ok(f) => f,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&fd, os(comp), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_err(path, "create parent directory", e)),
                    }
                    let f = rustix::fs::openat(&fd, os(comp), flags, Mode::empty())
                        .map_err(|e| io_err(path, "create parent directory", e))?;
                    chmod_fd(f.as_fd(), 0o755).map_err(|e| io_err(path, "chmod parent directory", e))?;
                    f
                }
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    // A symlink (or a non-directory): resolve the prefix inside the root.
                    rustix::fs::openat2(&self.root, os(prefix), O_PATH_DIR, Mode::empty(), resolve_flags())
                        .map_err(|e| io_err(path, "resolve parent directory (through symlink)", e))?
                }
                Err(e) => return Err(io_err(path, "resolve parent directory", e)),
            };
        }
        // Directories were created: nothing cached can be stale, but be conservative.
        self.cache = None;
        Ok(fd)
    }

    pub(super) fn invalidate(&mut self) {
        self.cache = None;
    }

    /// Remove `name` in `dir` (recursively if it is a directory). Never follows symlinks.
    pub(super) fn remove(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &[u8],
    ) -> Result<(), UnpackError> {
        remove_all_at(dir, name, 0).map_err(|e| io_err(path, "remove existing entry", e))
    }

    pub(super) fn times(mtime: Timespec) -> Timestamps {
        Timestamps { last_access: mtime, last_modification: mtime }
    }

    /// chown, chmod, xattrs (and for non-directories, times) through a real fd of the object.
    pub(super) fn apply_fd_meta(
        &self,
        fd: BorrowedFd<'_>,
        m: &Meta,
        path: &[u8],
        is_dir: bool,
    ) -> Result<(), UnpackError> {
        if !self.opts.no_same_owner {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(m.uid)),
                Some(rustix::fs::Gid::from_raw(m.gid)),
            )
            .map_err(|e| chown_err(path, m, e))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(m.mode)).map_err(|e| io_err(path, "chmod", e))?;
        for (name, value) in &m.xattrs {
            match rustix::fs::fsetxattr(fd, name.as_c_str(), value, rustix::fs::XattrFlags::empty()) {
                Ok(()) => {}
                Err(e) => xattr_failed(path, name, e)?,
            }
        }
        if !is_dir {
            rustix::fs::futimens(fd, &Self::times(m.mtime)).map_err(|e| io_err(path, "set times", e))?;
        }
        Ok(())
    }

    /// Metadata for symlinks, devices and FIFOs, through an O_PATH|O_NOFOLLOW fd.
    pub(super) fn apply_path_meta(
        &mut self,
        parent: &[u8],
        name: &OsStr,
        m: &Meta,
        path: &[u8],
        chmod: bool,
    ) -> Result<(), UnpackError> {
        let opts = self.opts;
        let pfd = self.parent_fd(parent, path)?;
        let fd =
            rustix::fs::openat(pfd, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| io_err(path, "open created entry", e))?;
        if !opts.no_same_owner {
            rustix::fs::chownat(
                &fd,
                c"",
                Some(rustix::fs::Uid::from_raw(m.uid)),
                Some(rustix::fs::Gid::from_raw(m.gid)),
                AtFlags::EMPTY_PATH,
            )
            .map_err(|e| chown_err(path, m, e))?;
        }
        if chmod {
            chmod_fd(fd.as_fd(), m.mode).map_err(|e| io_err(path, "chmod", e))?;
        }
        if !m.xattrs.is_empty() {
            // No fd-based xattr call works on O_PATH fds: use the parent's procfs magic link plus
            // the final name with the non-following l*xattr call.
            let mut p = format!("/proc/self/fd/{}/", pfd.as_raw_fd()).into_bytes();
            p.extend_from_slice(name.as_bytes());
            for (xname, value) in &m.xattrs {
                match rustix::fs::lsetxattr(os(&p), xname.as_c_str(), value, rustix::fs::XattrFlags::empty())
                {
                    Ok(()) => {}
                    Err(e) => xattr_failed(path, xname, e)?,
                }
            }
        }
        rustix::fs::utimensat(&fd, c"", &Self::times(m.mtime), AtFlags::EMPTY_PATH)
            .map_err(|e| io_err(path, "set times", e))?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        direct: &mut dyn Read,
        parent: &[u8],
        name: &OsStr,
        meta: &Meta,
        path: &[u8],
        data: FileData,
    ) -> Result<(), UnpackError> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(0o600);
        let fd = {
            let pfd = self.parent_fd(parent, path)?;
            match rustix::fs::openat(pfd, name, flags, mode) {
                Ok(fd) => fd,
                Err(Errno::EXIST) => {
                    let pfd = rustix::io::fcntl_dupfd_cloexec(pfd, 0).map_err(|e| io_err(path, "dup", e))?;
                    self.remove(pfd.as_fd(), name, path)?;
                    self.invalidate();
                    rustix::fs::openat(&pfd, name, flags, mode).map_err(|e| io_err(path, "create file", e))?
                }
                Err(e) => return Err(io_err(path, "create file", e)),
            }
        };
        let mut file = std::fs::File::from(fd);
        let copy_err = |e: sparse::CopyError| match e {
            sparse::CopyError::Read(source) => UnpackError::Corrupt { after: lossy(path), source },
            sparse::CopyError::Write(source) => io_err(path, "write file", source),
        };
        let size = match data {
            FileData::Plain => {
                let size = entry.size();
                let written = copy_data(entry, &mut file, &mut self.buf).map_err(copy_err)?;
                if written != size {
                    return Err(UnpackError::Corrupt {
                        after: lossy(path),
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("entry data truncated: {written} of {size} bytes"),
                        ),
                    });
                }
                size
            }
            FileData::Gnu(map) => {
                sparse::write_extents(direct, &file, &map, &mut self.buf).map_err(copy_err)?;
                map.realsize
            }
            FileData::Pax(map) => {
                sparse::write_extents(entry, &file, &map, &mut self.buf).map_err(copy_err)?;
                map.realsize
            }
        };
        self.stats.bytes = self.stats.bytes.saturating_add(size);
        self.apply_fd_meta(file.as_fd(), meta, path, false)
    }

    pub(super) fn dir(
        &mut self,
        parent: &[u8],
        name: &OsStr,
        meta: &Meta,
        path: &[u8],
    ) -> Result<(), UnpackError> {
        let pfd = self.parent_fd(parent, path)?;
        let pfd = rustix::io::fcntl_dupfd_cloexec(pfd, 0).map_err(|e| io_err(path, "dup", e))?;
        let mut make_opaque = false;
        match rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let st = rustix::fs::statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err(path, "stat existing entry", e))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    // A same-layer whiteout replaced by a directory: the lower directory must
                    // stay hidden.
                    make_opaque =
                        FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0;
                    self.remove(pfd.as_fd(), name, path)?;
                    self.invalidate();
                    rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| io_err(path, "mkdir", e))?;
                }
            }
            Err(e) => return Err(io_err(path, "mkdir", e)),
        }
        let fd = rustix::fs::openat(
            &pfd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(path, "open directory", e))?;
        self.apply_fd_meta(fd.as_fd(), meta, path, true)?;
        if make_opaque {
            self.set_opaque(fd.as_fd(), path)?;
        }
        self.dir_times.push((path.to_vec(), meta.mtime));
        Ok(())
    }

    pub(super) fn symlink(
        &mut self,
        parent: &[u8],
        name: &OsStr,
        target: &[u8],
        meta: &Meta,
        path: &[u8],
    ) -> Result<(), UnpackError> {
        let pfd = self.parent_fd(parent, path)?;
        let pfd = rustix::io::fcntl_dupfd_cloexec(pfd, 0).map_err(|e| io_err(path, "dup", e))?;
        // Any symlink may change how later paths resolve.
        self.invalidate();
        match rustix::fs::symlinkat(os(target), &pfd, name) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                self.remove(pfd.as_fd(), name, path)?;
                rustix::fs::symlinkat(os(target), &pfd, name).map_err(|e| io_err(path, "symlink", e))?;
            }
            Err(e) => return Err(io_err(path, "symlink", e)),
        }
        self.apply_path_meta(parent, name, meta, path, false)
    }

    pub(super) fn node(
        &mut self,
        parent: &[u8],
        name: &OsStr,
        ft: FileType,
        dev: u64,
        meta: &Meta,
        path: &[u8],
    ) -> Result<(), UnpackError> {
        let pfd = self.parent_fd(parent, path)?;
        let mode = Mode::from_raw_mode(0o600);
        match rustix::fs::mknodat(pfd, name, ft, mode, dev) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let pfd = rustix::io::fcntl_dupfd_cloexec(pfd, 0).map_err(|e| io_err(path, "dup", e))?;
                self.remove(pfd.as_fd(), name, path)?;
                self.invalidate();
                rustix::fs::mknodat(&pfd, name, ft, mode, dev).map_err(|e| io_err(path, "mknod", e))?;
            }
            Err(e) => return Err(io_err(path, "mknod", e)),
        }
        self.apply_path_meta(parent, name, meta, path, true)
    }

    pub(super) fn hardlink(
        &mut self,
        parent: &[u8],
        name: &OsStr,
        raw_target: &[u8],
        path: &[u8],
    ) -> Result<(), UnpackError> {
        let herr = |reason: String| UnpackError::Hardlink {
            path: lossy(path),
            target: lossy(raw_target),
            reason,
            source: None,
        };
        let herr_io = |reason: &str, e: Errno| UnpackError::Hardlink {
            path: lossy(path),
            target: lossy(raw_target),
            reason: reason.into(),
            source: Some(e.into()),
        };
        let mut tnorm = Vec::with_capacity(raw_target.len());
        normalize(raw_target, &mut tnorm).map_err(|r| herr(format!("invalid target: {r}")))?;
        let (tparent, tname) = split(&tnorm);
        if tname.is_empty() {
            return Err(herr("target is the layer root (a directory)".into()));
        }
        let tpfd = if tparent.is_empty() {
            rustix::io::fcntl_dupfd_cloexec(&self.root, 0)
        } else {
            rustix::fs::openat2(&self.root, os(tparent), O_PATH_DIR, Mode::empty(), resolve_flags())
        };
        let tpfd = match tpfd {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => {
                return Err(herr("target does not exist (hardlinks must refer to an earlier entry)".into()))
            }
            Err(e) => return Err(herr_io("resolve target directory", e)),
        };
        let tst = match rustix::fs::statat(&tpfd, os(tname), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => {
                return Err(herr("target does not exist (hardlinks must refer to an earlier entry)".into()))
            }
            Err(e) => return Err(herr_io("stat target", e)),
        };
        if FileType::from_raw_mode(tst.st_mode) == FileType::Directory {
            return Err(herr("target is a directory".into()));
        }
        let pfd = self.parent_fd(parent, path)?;
        let pfd = rustix::io::fcntl_dupfd_cloexec(pfd, 0).map_err(|e| io_err(path, "dup", e))?;
        match rustix::fs::linkat(&tpfd, os(tname), &pfd, name, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => {
                let st = rustix::fs::statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err(path, "stat existing entry", e))?;
                if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino {
                    return Ok(()); // already that inode
                }
                self.remove(pfd.as_fd(), name, path)?;
                self.invalidate();
                rustix::fs::linkat(&tpfd, os(tname), &pfd, name, AtFlags::empty())
                    .map_err(|e| io_err(path, "link", e))
            }
            Err(e) => Err(io_err(path, "link", e)),
        }
    }

    pub(super) fn set_opaque(&self, dirfd: BorrowedFd<'_>, path: &[u8]) -> Result<(), UnpackError> {
        rustix::fs::fsetxattr(
            dirfd,
            self.opts.opaque_xattr.opaque_xattr(),
            overlay_format::OPAQUE_VALUE,
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| io_err(path, "set opaque xattr", e))
    }

    /// `DIR/.wh..wh..opq`: mark DIR opaque (creating it if needed).
    pub(super) fn opaque(&mut self, dir: &[u8], path: &[u8]) -> Result<(), UnpackError> {
        let pfd = match self.parent_fd(dir, path) {
            Err(e) if e.errno() == Some(libc::ENOTDIR) => {
                tracing::debug!(path = %lossy(path), "opaque marker below a non-directory ignored");
                return Ok(());
            }
            r => r?,
        };
        let fd = rustix::fs::openat(
            pfd,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(path, "open directory", e))?;
        self.set_opaque(fd.as_fd(), path)
    }

    /// `DIR/.wh.NAME`: a 0:0 character device NAME, unless NAME exists in this layer.
    pub(super) fn whiteout(&mut self, dir: &[u8], name: &[u8], path: &[u8]) -> Result<(), UnpackError> {
        let pfd = match self.parent_fd(dir, path) {
            // A whiteout below a non-directory of this layer (umoci writes `f/.wh.x` after turning
            // directory f into a file): the non-directory already hides everything below it.
            Err(e) if e.errno() == Some(libc::ENOTDIR) => {
                tracing::debug!(path = %lossy(path), "whiteout below a non-directory ignored");
                return Ok(());
            }
            r => r?,
        };
        match rustix::fs::mknodat(pfd, os(name), FileType::CharacterDevice, Mode::empty(), 0) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => {
                // Same-layer entries are not hidden by a whiteout; a same-layer directory
                // replaces the lower one entirely, so it becomes opaque.
                let st = rustix::fs::statat(pfd, os(name), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err(path, "stat whiteout target", e))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    let fd = rustix::fs::openat(
                        pfd,
                        os(name),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| io_err(path, "open directory", e))?;
                    self.set_opaque(fd.as_fd(), path)?;
                }
                tracing::debug!(path = %lossy(path), "whiteout of a same-layer entry left alone");
                Ok(())
            }
            Err(e) => Err(io_err(path, "mknod whiteout", e)),
        }
    }

    /// Apply the deferred directory mtimes.
    pub(super) fn finish(&mut self) -> Result<(), UnpackError> {
        let dir_times = std::mem::take(&mut self.dir_times);
        for (path, mtime) in &dir_times {
            let fd = if path.is_empty() {
                rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(|e| io_err(path, "dup root", e))?
            } else {
                match rustix::fs::openat2(
                    &self.root,
                    os(path),
                    O_PATH_DIR | OFlags::NOFOLLOW,
                    Mode::empty(),
                    resolve_flags(),
                ) {
                    Ok(fd) => fd,
                    // Replaced by a later non-directory entry, or removed.
                    Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                    Err(e) => return Err(io_err(path, "open directory for times", e)),
                }
            };
            rustix::fs::utimensat(&fd, c"", &Self::times(*mtime), AtFlags::EMPTY_PATH)
                .map_err(|e| io_err(path, "set directory times", e))?;
        }
        Ok(())
    }
}

/// A failed chown: `EINVAL` is an owner the user namespace does not map (rootless mode).
fn chown_err(path: &[u8], m: &Meta, e: Errno) -> UnpackError {
    if e == Errno::INVAL {
        return UnpackError::UnmappedOwner { path: super::shown(path), uid: m.uid, gid: m.gid };
    }
    io_err(path, "chown", e)
}

pub(super) fn xattr_failed(path: &[u8], name: &CStr, e: Errno) -> Result<(), UnpackError> {
    match e {
        // As containerd: xattrs the filesystem or our privileges do not allow are skipped.
        Errno::NOTSUP | Errno::PERM => {
            tracing::warn!(path = %lossy(path), xattr = ?name, error = %e, "xattr not applied");
            Ok(())
        }
        e => Err(io_err(path, "set xattr", e)),
    }
}

/// Copy an entry's data into `file`.
pub(super) fn copy_data<R: Read>(
    r: &mut R,
    file: &mut std::fs::File,
    buf: &mut [u8],
) -> Result<u64, sparse::CopyError> {
    use std::io::Write;
    let mut total = 0u64;
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(sparse::CopyError::Read(e)),
        };
        file.write_all(&buf[..n]).map_err(sparse::CopyError::Write)?;
        total += n as u64;
    }
}

/// Remove `name` in `dir`; directories recursively. Symlinks are removed, never followed.
pub(super) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr, depth: usize) -> rustix::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    if depth > 4096 {
        return Err(Errno::LOOP);
    }
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for ent in rustix::fs::Dir::read_from(&fd)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    for n in names {
        remove_all_at(fd.as_fd(), os(&n), depth + 1)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}
