//! Thin, path-based syscall helpers used by the overlay logic.

use std::borrow::Cow;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

pub(crate) type Stat = libc::stat;

/// Longest path handed to the kernel as it is (PATH_MAX is 4096 bytes with the NUL).
const SHORT: usize = 4000;

/// A path the kernel accepts for `p`: `p` itself, or when `p` is PATH_MAX or longer (a merged path
/// near PATH_MAX under a layer root), `/proc/self/fd/N/REST` where N is an `O_PATH` descriptor of
/// a leading part (held here) and REST is short. Kernel overlayfs has no such limit on its layers.
pub(crate) struct Short<'a> {
    path: Cow<'a, Path>,
    _dir: Option<OwnedFd>,
}

impl std::ops::Deref for Short<'_> {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

pub(crate) fn short(p: &Path) -> io::Result<Short<'_>> {
    let mut rest = p.as_os_str().as_bytes();
    if rest.len() < SHORT {
        return Ok(Short { path: Cow::Borrowed(p), _dir: None });
    }
    let mut dir: Option<OwnedFd> = None;
    // Room for the "/proc/self/fd/N/" prefix.
    while rest.len() >= SHORT - 64 {
        let cut =
            rest[..SHORT - 64].iter().rposition(|b| *b == b'/').ok_or_else(|| err(libc::ENAMETOOLONG))?;
        let head = if cut == 0 { &b"/"[..] } else { &rest[..cut] };
        let c = CString::new(head).map_err(|_| err(libc::EINVAL))?;
        let at = dir.as_ref().map(|d| d.as_raw_fd()).unwrap_or(libc::AT_FDCWD);
        // SAFETY: valid C string; the new descriptor is owned below.
        let fd =
            cvt(unsafe { libc::openat(at, c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
        // SAFETY: fd is a fresh descriptor nobody else owns.
        dir = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        rest = &rest[cut + 1..];
    }
    let mut path = PathBuf::from("/proc/self/fd");
    if let Some(d) = &dir {
        path.push(d.as_raw_fd().to_string());
    }
    path.push(OsStr::from_bytes(rest));
    Ok(Short { path: Cow::Owned(path), _dir: dir })
}

/// Run a path-based call with the path shortened by [`short`].
pub(crate) fn at<T>(p: &Path, f: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    f(&short(p)?)
}

/// A C path for a syscall (shortened by [`short`]; keeps its directory descriptor open).
pub(crate) struct CPath {
    c: CString,
    _dir: Option<OwnedFd>,
}

impl CPath {
    pub(crate) fn as_ptr(&self) -> *const libc::c_char {
        self.c.as_ptr()
    }
}

pub(crate) fn cstr(p: &Path) -> io::Result<CPath> {
    let s = short(p)?;
    let c = CString::new(s.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(CPath { c, _dir: s._dir })
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(crate) fn lstat(p: &Path) -> io::Result<Stat> {
    let c = cstr(p)?;
    let mut st = std::mem::MaybeUninit::<Stat>::zeroed();
    // SAFETY: valid C string and out pointer.
    cvt(unsafe { libc::lstat(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: lstat succeeded and filled the struct.
    Ok(unsafe { st.assume_init() })
}

/// open(2) of an existing file.
pub(crate) fn open(p: &Path, flags: i32) -> io::Result<File> {
    let c = cstr(p)?;
    // SAFETY: valid C string; no O_CREAT, so no mode argument is read.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), flags & !libc::O_CREAT) })?;
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

pub(crate) fn fstat(f: &File) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<Stat>::zeroed();
    // SAFETY: valid fd and out pointer.
    cvt(unsafe { libc::fstat(f.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded.
    Ok(unsafe { st.assume_init() })
}

pub(crate) fn exists(p: &Path) -> bool {
    lstat(p).is_ok()
}

pub(crate) fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(crate) fn mknod(p: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::mknod(c.as_ptr(), mode, rdev) }).map(drop)
}

pub(crate) fn mkdir(p: &Path, mode: u32) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::mkdir(c.as_ptr(), mode) }).map(drop)
}

pub(crate) fn symlink(target: &Path, p: &Path) -> io::Result<()> {
    at(p, |p| std::os::unix::fs::symlink(target, p))
}

pub(crate) fn lchown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::lchown(c.as_ptr(), uid, gid) }).map(drop)
}

pub(crate) fn chmod(p: &Path, mode: u32) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid C string; fchmodat without AT_SYMLINK_NOFOLLOW on a non-symlink.
    cvt(unsafe { libc::fchmodat(libc::AT_FDCWD, c.as_ptr(), mode & 0o7777, 0) }).map(drop)
}

pub(crate) fn truncate(p: &Path, size: u64) -> io::Result<()> {
    let c = cstr(p)?;
    let size = i64::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::truncate(c.as_ptr(), size) }).map(drop)
}

/// Set atime/mtime without following a final symlink. `None` leaves a time unchanged.
pub(crate) fn utimes(
    p: &Path,
    atime: Option<libc::timespec>,
    mtime: Option<libc::timespec>,
) -> io::Result<()> {
    let c = cstr(p)?;
    let omit = libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT };
    let ts = [atime.unwrap_or(omit), mtime.unwrap_or(omit)];
    // SAFETY: valid C string and a two-element array.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    let from = short(from)?;
    std::fs::rename(&*from, &*short(to)?)
}

pub(crate) fn rename_exchange(a: &Path, b: &Path) -> io::Result<()> {
    let ca = cstr(a)?;
    let cb = cstr(b)?;
    // SAFETY: valid C strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub(crate) fn link(from: &Path, to: &Path) -> io::Result<()> {
    let from = short(from)?;
    std::fs::hard_link(&*from, &*short(to)?)
}

pub(crate) fn readlink(p: &Path) -> io::Result<OsString> {
    at(p, |p| std::fs::read_link(p)).map(|p| p.into_os_string())
}

pub(crate) fn list_xattrs(p: &Path) -> io::Result<Vec<OsString>> {
    let p = &*short(p)?;
    let mut buf = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(p, &mut buf) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need: usize = rustix::fs::llistxattr(p, &mut [0u8; 0])?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        }
    };
    Ok(buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsString::from_vec(s.to_vec()))
        .collect())
}

pub(crate) fn get_xattr(p: &Path, name: &OsStr) -> io::Result<Vec<u8>> {
    let p = &*short(p)?;
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(p, name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => {
                let need: usize = rustix::fs::lgetxattr(p, name, &mut [0u8; 0])?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) fn set_xattr(p: &Path, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
    let fl = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
    rustix::fs::lsetxattr(&*short(p)?, name, value, fl).map_err(Into::into)
}

pub(crate) fn remove_xattr(p: &Path, name: &OsStr) -> io::Result<()> {
    rustix::fs::lremovexattr(&*short(p)?, name).map_err(Into::into)
}

/// Copy the data of `src` to `dst`: reflink first, then copy_file_range, then read/write.
/// `durable`: the data is on disk when this returns (as kernel overlayfs fsyncs a copy-up before
/// it becomes visible, unless mounted `volatile`). Write-back of each copied chunk is started at
/// once, so the final fdatasync waits for little more than the last chunk.
pub(crate) fn copy_data(src: &File, dst: &File, len: u64, durable: bool) -> io::Result<()> {
    // FICLONE = _IOW(0x94, 9, int)
    const FICLONE: libc::c_ulong = 0x4004_9409;
    const CHUNK: u64 = 8 << 20;
    let start_writeback = |from: u64, n: u64| {
        if durable {
            // SAFETY: valid fd; a hint, whose failure the final fdatasync reports anyway.
            unsafe {
                libc::sync_file_range(dst.as_raw_fd(), from as i64, n as i64, libc::SYNC_FILE_RANGE_WRITE)
            };
        }
    };
    // SAFETY: both fds are valid for the duration of the call.
    let cloned = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) } == 0;
    if cloned && dst.metadata()?.len() != len {
        dst.set_len(len)?;
    }
    let mut off: u64 = 0;
    let mut cfr_ok = !cloned;
    while off < len && cfr_ok {
        let chunk = (len - off).min(CHUNK) as usize;
        let mut off_in = off as i64;
        let mut off_out = off as i64;
        // SAFETY: valid fds and offset pointers.
        let n = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut off_in, dst.as_raw_fd(), &mut off_out, chunk, 0)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EXDEV) | Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
                    cfr_ok = false
                }
                Some(libc::EINTR) => {}
                _ => return Err(e),
            }
        } else if n == 0 {
            // The source shrank under us: what is there is copied.
            off = len;
        } else {
            start_writeback(off, n as u64);
            off += n as u64;
        }
    }
    if !cloned && off < len {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src.read_at(&mut buf, off)?;
            if n == 0 {
                break;
            }
            dst.write_all_at(&buf[..n], off)?;
            start_writeback(off, n as u64);
            off += n as u64;
        }
    }
    if durable {
        dst.sync_data()?;
    }
    Ok(())
}

/// The permission bits of a file of `mode` once set-user-ID, and set-group-ID when the group
/// may execute, are dropped (as the kernel does on write, truncate and chown), or `None` when
/// there is nothing to drop. Set-group-ID without group execute marks mandatory locking and
/// stays.
pub(crate) fn without_suidgid(mode: u32) -> Option<u32> {
    let mut m = mode & 0o7777;
    m &= !libc::S_ISUID;
    if m & libc::S_IXGRP != 0 {
        m &= !libc::S_ISGID;
    }
    (m != mode & 0o7777).then_some(m)
}

pub(crate) fn timespec(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec { tv_sec: sec as libc::time_t, tv_nsec: nsec as _ }
}

pub(crate) fn statvfs(p: &Path) -> io::Result<libc::statvfs> {
    let c = cstr(p)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: valid C string and out pointer.
    cvt(unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statvfs succeeded.
    Ok(unsafe { st.assume_init() })
}

pub(crate) fn fs_magic(p: &Path) -> io::Result<i64> {
    let c = cstr(p)?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: valid C string and out pointer.
    cvt(unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statfs succeeded.
    Ok(unsafe { st.assume_init() }.f_type)
}

pub(crate) fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

pub(crate) fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Sizes around the 8 MiB chunk, durable or not, and a source longer than asked for: the
    /// copy has exactly the first `len` bytes.
    #[test]
    fn without_suidgid_keeps_sgid_without_group_execute() {
        assert_eq!(without_suidgid(libc::S_IFREG | 0o6755), Some(0o755));
        assert_eq!(without_suidgid(0o4644), Some(0o644));
        assert_eq!(without_suidgid(0o2644), None);
        assert_eq!(without_suidgid(0o6644), Some(0o2644));
        assert_eq!(without_suidgid(0o755), None);
    }

    #[test]
    fn copy_data_copies_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; (8 << 20) * 2 + 12_345];
        let mut x: u32 = 1;
        for b in data.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *b = (x >> 24) as u8;
        }
        let src_path = dir.path().join("src");
        File::create(&src_path).unwrap().write_all(&data).unwrap();
        for (i, len) in
            [0usize, 1, 8 << 20, (8 << 20) + 1, data.len() - 1, data.len()].into_iter().enumerate()
        {
            for durable in [false, true] {
                let dst_path = dir.path().join(format!("dst{i}{durable}"));
                let src = File::open(&src_path).unwrap();
                let dst = File::create(&dst_path).unwrap();
                copy_data(&src, &dst, len as u64, durable).unwrap();
                let got = std::fs::read(&dst_path).unwrap();
                assert_eq!(got.len(), len, "len {len} durable {durable}");
                assert!(got == data[..len], "content differs: len {len} durable {durable}");
            }
        }
    }
}
