//! COPY's writes into a step's mounted tree, every one confined to it: each path is resolved
//! with `openat2(RESOLVE_IN_ROOT)` against the tree's root descriptor, so a symlink in an
//! image layer (`/usr/local -> /`, `../../..`) resolves inside the tree as it would for a
//! process in the container, never on the host.
//!
//! What is copied keeps its type, mode, times, xattrs and hardlinks among the sources; owners
//! are `--chown`'s (or 0:0, as docker and buildah do for context files; a `--from` source's own); `--chmod` replaces the
//! permission bits. Directories made on the way to the destination are root's, mode 0755.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};

use crate::overlay_format::{list_xattrs, XattrsOf};

/// Who owns what a COPY writes, and its mode.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attrs {
    /// uid and gid of every entry written; the source's own when `None` (`COPY --from`).
    pub owner: Option<(u32, u32)>,
    /// `--chmod`: permission bits for every entry written.
    pub chmod: Option<u32>,
}

/// A tree (a mounted step) that COPY writes into.
pub struct Target {
    root: OwnedFd,
    /// The hardlink groups seen so far: source (dev, ino) to the path written first.
    links: HashMap<(u64, u64), PathBuf>,
    /// Sources are an unpacked layer (ADD of a tar, as buildah applies one): a whiteout (0:0
    /// character device) removes its name from the tree, an opaque directory replaces the
    /// directory of its name (its former entries gone).
    pub layer_semantics: bool,
}

fn err(path: &Path) -> impl Fn(rustix::io::Errno) -> io::Error + '_ {
    move |e| io::Error::new(io::Error::from(e).kind(), format!("{}: {e}", path.display()))
}

/// `p` relative to the tree's root, `.` and leading `/` dropped (`..` is resolved in the root by
/// the kernel).
fn rel(p: &Path) -> PathBuf {
    p.components().filter(|c| !matches!(c, Component::RootDir | Component::CurDir)).collect()
}

impl Target {
    pub fn open(root: &Path) -> io::Result<Target> {
        let fd = rustix::fs::open(root, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(err(root))?;
        Ok(Target { root: fd, links: HashMap::new(), layer_semantics: false })
    }

    fn resolve(&self, p: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let r = rel(p);
        let r = if r.as_os_str().is_empty() { PathBuf::from(".") } else { r };
        rustix::fs::openat2(
            self.root.as_fd(),
            &r,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Is `p` an existing directory (symlinks followed inside the tree)?
    pub fn is_dir(&self, p: &Path) -> bool {
        self.resolve(p, OFlags::DIRECTORY | OFlags::PATH).is_ok()
    }

    /// `mkdir -p p`: missing directories made root's, 0755 (or `attrs`' owner when given).
    pub fn mkdir_all(&self, p: &Path, attrs: Option<Attrs>) -> io::Result<OwnedFd> {
        let mut cur = PathBuf::new();
        let mut fd = self.resolve(&cur, OFlags::DIRECTORY | OFlags::RDONLY).map_err(err(p))?;
        for c in rel(p).components() {
            cur.push(c);
            fd = match self.resolve(&cur, OFlags::DIRECTORY | OFlags::RDONLY) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => {
                    let name = cur.file_name().unwrap_or_default();
                    match rustix::fs::mkdirat(fd.as_fd(), name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(err(&cur)(e)),
                    }
                    let new = self.resolve(&cur, OFlags::DIRECTORY | OFlags::RDONLY).map_err(err(&cur))?;
                    let (uid, gid) = attrs.and_then(|a| a.owner).unwrap_or((0, 0));
                    fchown(new.as_fd(), uid, gid).map_err(err(&cur))?;
                    new
                }
                Err(e) => return Err(err(&cur)(e)),
            };
        }
        Ok(fd)
    }

    /// Sets the owner, then the mode and mtime, of the entry at `p` (not followed): a tar's
    /// hardlink entry applies its own to the inode it shares, as buildah does.
    pub fn set_attrs(&self, p: &Path, (u, g): (u32, u32), mode: u32, mtime: i64) -> io::Result<()> {
        let fd = self.resolve(p, OFlags::PATH | OFlags::NOFOLLOW).map_err(err(p))?;
        let e = err(p);
        let empty = Path::new("");
        rustix::fs::chownat(&fd, empty, Some(uid(u)), Some(gid(g)), AtFlags::EMPTY_PATH).map_err(&e)?;
        let st = rustix::fs::fstat(&fd).map_err(&e)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Ok(()); // only regular files are opened (never a device or FIFO)
        }
        let real = rustix::fs::open(
            format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(&e)?;
        rustix::fs::fchmod(&real, Mode::from_raw_mode(mode & 0o7777)).map_err(&e)?;
        let at = Timespec { tv_sec: mtime, tv_nsec: 0 };
        rustix::fs::futimens(&real, &Timestamps { last_access: at, last_modification: at }).map_err(&e)
    }

    /// Copies the host entry `src` (not followed when a symlink) to `dst` in the tree, a
    /// directory's whole tree with it.
    pub fn copy(&mut self, src: &Path, dst: &Path, attrs: Attrs) -> io::Result<()> {
        let parent = dst.parent().unwrap_or(Path::new("/"));
        let name = dst.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{}: no file name", dst.display()))
        })?;
        let dir = self.mkdir_all(parent, None)?;
        self.copy_at(dir.as_fd(), name.as_ref(), src, dst, attrs)
    }

    fn copy_at(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &Path,
        src: &Path,
        dst: &Path,
        attrs: Attrs,
    ) -> io::Result<()> {
        let m = fs::symlink_metadata(src)?;
        let ft = m.file_type();
        let e = err(dst);
        let existing = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok();
        let mut existing_dir = existing.as_ref().is_some_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        });
        if self.layer_semantics && ft.is_char_device() && m.rdev() == 0 {
            // A whiteout: what the tree has of that name goes.
            if existing.is_some() {
                remove_all_at(dir, name).map_err(&e)?;
            }
            return Ok(());
        }
        let opaque = self.layer_semantics && ft.is_dir() && {
            let d = fs::File::open(src)?;
            crate::overlay_format::is_opaque(d.as_fd())?
        };
        if existing.is_some() && !(ft.is_dir() && existing_dir) {
            remove_all_at(dir, name).map_err(&e)?;
            existing_dir = false;
        }
        if opaque && existing_dir {
            // Its entries from below go; the directory stays (its attributes set below).
            let fd = open_dir_nofollow(dir, name).map_err(&e)?;
            for n in dir_names(fd.as_fd()).map_err(&e)? {
                remove_all_at(fd.as_fd(), Path::new(&n)).map_err(&e)?;
            }
        }
        let mode = attrs.chmod.unwrap_or(m.mode() & 0o7777);
        let (owner_uid, owner_gid) = attrs.owner.unwrap_or((m.uid(), m.gid()));
        if m.nlink() > 1 && !ft.is_dir() {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                let from = self
                    .resolve(first.parent().unwrap_or(Path::new("/")), OFlags::DIRECTORY | OFlags::RDONLY)
                    .map_err(&e)?;
                let fname = first.file_name().unwrap_or_default();
                return rustix::fs::linkat(from.as_fd(), fname, dir, name, AtFlags::empty()).map_err(&e);
            }
            self.links.insert((m.dev(), m.ino()), dst.to_path_buf());
        }
        if ft.is_dir() {
            if !existing_dir {
                rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).map_err(&e)?;
            }
            let fd = open_dir_nofollow(dir, name).map_err(&e)?;
            let mut names: Vec<_> =
                fs::read_dir(src)?.map(|d| d.map(|d| d.file_name())).collect::<Result<_, _>>()?;
            names.sort();
            for n in names {
                self.copy_at(fd.as_fd(), Path::new(&n), &src.join(&n), &dst.join(&n), attrs)?;
            }
            finish(fd.as_fd(), src, &m, (owner_uid, owner_gid), mode).map_err(&e)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(src)?;
            rustix::fs::symlinkat(&target, dir, name).map_err(&e)?;
            chown_nofollow(dir, name, (owner_uid, owner_gid)).map_err(&e)?;
            let ts = times(&m);
            rustix::fs::utimensat(dir, name, &ts, AtFlags::SYMLINK_NOFOLLOW).map_err(&e)?;
        } else if ft.is_file() {
            let fd = rustix::fs::openat(
                dir,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(&e)?;
            let mut out = fs::File::from(fd);
            let mut input = fs::File::open(src)?;
            io::copy(&mut input, &mut out)?;
            finish(out.as_fd(), src, &m, (owner_uid, owner_gid), mode).map_err(&e)?;
        } else {
            let kind = if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else if ft.is_block_device() {
                rustix::fs::FileType::BlockDevice
            } else if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else {
                return Ok(()); // a socket is not copied (docker skips them too)
            };
            rustix::fs::mknodat(dir, name, kind, Mode::from_raw_mode(mode), m.rdev()).map_err(&e)?;
            chown_nofollow(dir, name, (owner_uid, owner_gid)).map_err(&e)?;
        }
        Ok(())
    }
}

/// Removes `name` in `dir`, a directory with everything in it (nothing followed).
fn remove_all_at(dir: BorrowedFd<'_>, name: &Path) -> rustix::io::Result<()> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for n in dir_names(fd.as_fd())? {
        remove_all_at(fd.as_fd(), Path::new(&n))?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// The names in the directory `fd`, `.` and `..` left out.
fn dir_names(fd: BorrowedFd<'_>) -> rustix::io::Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for ent in rustix::fs::Dir::read_from(fd)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(std::ffi::OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(names)
}

fn uid(u: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(u)
}

fn gid(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g)
}

/// Opens directory `name` in `dir`, not following a symlink.
fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Gives `name` in `dir` (not following a symlink) owner `(uid, gid)`.
fn chown_nofollow(dir: BorrowedFd<'_>, name: &Path, (u, g): (u32, u32)) -> rustix::io::Result<()> {
    rustix::fs::chownat(dir, name, Some(uid(u)), Some(gid(g)), AtFlags::SYMLINK_NOFOLLOW)
}

fn fchown(fd: BorrowedFd<'_>, u: u32, g: u32) -> rustix::io::Result<()> {
    rustix::fs::fchown(fd, Some(uid(u)), Some(gid(g)))
}

fn times(m: &fs::Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: m.atime(), tv_nsec: m.atime_nsec() as _ },
        last_modification: Timespec { tv_sec: m.mtime(), tv_nsec: m.mtime_nsec() as _ },
    }
}

/// Owner, xattrs, mode (after the owner: chown clears setuid bits) and times of a copied
/// regular file or directory.
fn finish(
    fd: BorrowedFd<'_>,
    src: &Path,
    m: &fs::Metadata,
    (u, g): (u32, u32),
    mode: u32,
) -> rustix::io::Result<()> {
    fchown(fd, u, g)?;
    if let Ok(sfd) = rustix::fs::open(src, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
        if let Ok(xs) = list_xattrs(XattrsOf::OPath(sfd.as_fd())) {
            for (k, v) in xs {
                // The overlay's own markers are never copied from a context.
                if k.starts_with(b"trusted.overlay.") || k.starts_with(b"user.overlay.") {
                    continue;
                }
                let _ = rustix::fs::fsetxattr(fd, k.as_slice(), &v, rustix::fs::XattrFlags::empty());
            }
        }
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
    rustix::fs::futimens(fd, &times(m))
}
