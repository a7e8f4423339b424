//! Walking a directory tree by directory descriptors, so depth and path length do not matter: a
//! path of 4,095 bytes or more (the kernel refuses paths of `PATH_MAX` = 4,096 bytes or longer)
//! is never spelled out, every call names one component relative to its parent's descriptor
//! (`openat`, `fstatat(AT_SYMLINK_NOFOLLOW)`), and symlinks are never followed.
//!
//! A [`DirChain`] is the walk's position: the directories from the root down to the current one.
//! Only the current directory is held open, so a deep tree costs no more descriptors than a flat
//! one; going back up opens `..` and checks that it is the directory the walk came from (device
//! and inode), so a directory moved while it is walked is an error rather than a walk of the wrong
//! place. Each level carries a value of the caller's (diff keeps the matching lower directories
//! there).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

/// Walk errors, each naming the path (shown whole, though it may be too long to open).
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: moved or replaced while it was being read")]
    Moved { path: PathBuf },
}

impl WalkError {
    /// What class of failure this is (see [`crate::error::ErrorKind`]).
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            WalkError::Io { source, .. } => crate::error::ErrorKind::of_io(source),
            WalkError::Moved { .. } => crate::error::ErrorKind::FailedPrecondition,
        }
    }
}

const DIR_FLAGS: OFlags =
    OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// `a/b` from `a` and `b` (`b` alone when `a` is empty).
pub fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut v = Vec::with_capacity(parent.len() + 1 + name.len());
    v.extend_from_slice(parent);
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

/// Open directory `name` in `dir` (never following a symlink) and check it is the inode `st`
/// described; None when it is not.
pub fn open_dir_checked(dir: BorrowedFd<'_>, name: &[u8], st: &Stat) -> rustix::io::Result<Option<OwnedFd>> {
    let fd = rustix::fs::openat(dir, OsStr::from_bytes(name), DIR_FLAGS, Mode::empty())?;
    let got = rustix::fs::fstat(&fd)?;
    Ok(((got.st_dev, got.st_ino) == (st.st_dev, st.st_ino)).then_some(fd))
}

/// Open directory `name` in `dir`, not following a symlink.
pub fn open_dir(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(dir, OsStr::from_bytes(name), DIR_FLAGS, Mode::empty())
}

/// The names in directory `dir` (without `.` and `..`), in directory order.
pub fn names(dir: BorrowedFd<'_>) -> rustix::io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for ent in rustix::fs::Dir::read_from(dir)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
        }
    }
    Ok(out)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; None when there is no such entry.
pub fn stat_at(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

struct Level<T> {
    dev: u64,
    ino: u64,
    rel: Vec<u8>,
    data: T,
}

/// The directories from the walk's root down to the current one; see the module documentation.
pub struct DirChain<T> {
    root: PathBuf,
    levels: Vec<Level<T>>,
    cur: OwnedFd,
}

impl<T> DirChain<T> {
    /// Start at the directory `root` (not following a final symlink).
    pub fn open(root: &Path, data: T) -> Result<(DirChain<T>, Stat), WalkError> {
        let io = |e: Errno| WalkError::Io { path: root.to_path_buf(), source: e.into() };
        let cur = rustix::fs::openat(CWD, root, DIR_FLAGS, Mode::empty()).map_err(io)?;
        let st = rustix::fs::fstat(&cur).map_err(io)?;
        let level = Level { dev: st.st_dev, ino: st.st_ino, rel: Vec::new(), data };
        Ok((DirChain { root: root.to_path_buf(), levels: vec![level], cur }, st))
    }

    /// The current directory.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.cur.as_fd()
    }

    /// Depth of the current directory: 0 at the root.
    pub fn depth(&self) -> usize {
        self.levels.len() - 1
    }

    /// The current directory's path relative to the root (empty at the root).
    pub fn rel(&self) -> &[u8] {
        self.levels.last().map_or(&[][..], |l| l.rel.as_slice())
    }

    /// The caller's value for the current directory.
    pub fn data(&self) -> &T {
        // `levels` is never empty: the root is never popped.
        &self.levels[self.levels.len() - 1].data
    }

    /// The whole path of `rel` (relative to the root), for messages.
    pub fn path_of(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            return self.root.clone();
        }
        self.root.join(OsStr::from_bytes(rel))
    }

    /// The whole path of `name` in the current directory, for messages.
    pub fn path_in(&self, name: &[u8]) -> PathBuf {
        self.path_of(&join_rel(self.rel(), name))
    }

    /// An I/O error about `name` in the current directory.
    pub fn err_in(&self, name: &[u8], e: impl Into<io::Error>) -> WalkError {
        WalkError::Io { path: self.path_in(name), source: e.into() }
    }

    /// Go up to the ancestor at `depth` (no-op when already there or above).
    pub fn ascend_to(&mut self, depth: usize) -> Result<(), WalkError> {
        while self.depth() > depth {
            let left = self.path_of(self.rel());
            let fd = rustix::fs::openat(&self.cur, c"..", DIR_FLAGS, Mode::empty())
                .map_err(|e| WalkError::Io { path: left.clone(), source: e.into() })?;
            let st =
                rustix::fs::fstat(&fd).map_err(|e| WalkError::Io { path: left.clone(), source: e.into() })?;
            self.levels.pop();
            let up = &self.levels[self.levels.len() - 1];
            if (st.st_dev, st.st_ino) != (up.dev, up.ino) {
                return Err(WalkError::Moved { path: left });
            }
            self.cur = fd;
        }
        Ok(())
    }

    /// Enter directory `name` of the current directory, which was listed as `st`.
    pub fn descend(&mut self, name: &[u8], st: &Stat, data: T) -> Result<(), WalkError> {
        let fd = match open_dir_checked(self.fd(), name, st) {
            Ok(Some(fd)) => fd,
            Ok(None) | Err(Errno::NOTDIR) | Err(Errno::LOOP) | Err(Errno::NOENT) => {
                return Err(WalkError::Moved { path: self.path_in(name) })
            }
            Err(e) => return Err(self.err_in(name, e)),
        };
        let rel = join_rel(self.rel(), name);
        self.levels.push(Level { dev: st.st_dev, ino: st.st_ino, rel, data });
        self.cur = fd;
        Ok(())
    }

    /// The entries of the current directory with their `lstat`, in directory order. An entry
    /// that vanishes between the listing and its stat is left out when `skip_vanished`, else an
    /// error.
    pub fn list(&self, skip_vanished: bool) -> Result<Vec<(Vec<u8>, Stat)>, WalkError> {
        let here = || self.path_of(self.rel());
        let names = names(self.fd()).map_err(|e| WalkError::Io { path: here(), source: e.into() })?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            match stat_at(self.fd(), &name) {
                Ok(Some(st)) => out.push((name, st)),
                Ok(None) if skip_vanished => {}
                Ok(None) => return Err(self.err_in(&name, Errno::NOENT)),
                Err(e) => return Err(self.err_in(&name, e)),
            }
        }
        Ok(out)
    }
}
