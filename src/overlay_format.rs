//! The on-disk overlay format, as unpack writes it into layer directories and commit and diff
//! read it from upper dirs and layers. The definitions (whiteouts, opaque directories, the
//! overlay's private xattrs, the OCI names for them) are [`kernel_overlay::format`]'s, shared with
//! strata-fuse; this module adds reading them through descriptors.
//!
//! - Whiteout of NAME: a character device 0:0 named NAME.
//! - Opaque directory: `trusted.overlay.opaque` (or `user.overlay.opaque`, for `userxattr`
//!   mounts) = `y`.
//! - `trusted.overlay.*` and `user.overlay.*` are the overlay's private xattrs: never part of a
//!   layer's content.
//!
//! Xattrs are read through a descriptor of the object itself, never through a path, so they work
//! at any depth (paths longer than `PATH_MAX`) and cannot be redirected by a symlink.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::fs::Stat;
use rustix::io::Errno;

pub use kernel_overlay::format::{
    is_private_xattr, OPAQUE_MARKER, OPAQUE_VALUE, OPAQUE_XATTRS, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX,
};

/// True for an overlayfs whiteout: a character device 0:0.
pub fn is_whiteout(st: &Stat) -> bool {
    kernel_overlay::format::is_whiteout_node(st.st_mode, st.st_rdev)
}

/// True when `xattrs` (as [`list_xattrs`] returns them) mark a directory opaque.
pub fn has_opaque(xattrs: &[(Vec<u8>, Vec<u8>)]) -> bool {
    xattrs
        .iter()
        .any(|(k, v)| OPAQUE_XATTRS.iter().any(|o| k == o.as_bytes()) && v.as_slice() == OPAQUE_VALUE)
}

/// True when the directory open as `dir` (a real fd, not `O_PATH`) is opaque.
pub fn is_opaque(dir: BorrowedFd<'_>) -> io::Result<bool> {
    for name in OPAQUE_XATTRS {
        let mut v = [0u8; 4];
        match rustix::fs::fgetxattr(dir, name, &mut v[..]) {
            Ok(n) if n == 1 && v[0] == b'y' => return Ok(true),
            Ok(_) | Err(Errno::NODATA) | Err(Errno::NOTSUP) | Err(Errno::RANGE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

/// Where [`list_xattrs`] reads from.
#[derive(Clone, Copy)]
pub enum XattrsOf<'a> {
    /// A real descriptor of a regular file or directory: `flistxattr`/`fgetxattr`.
    Fd(BorrowedFd<'a>),
    /// An `O_PATH|O_NOFOLLOW` descriptor of anything else (symlink, device, FIFO), which cannot
    /// be opened for real (a device would be opened, a FIFO would block) and on which the `f*xattr`
    /// calls fail with `EBADF`. Read through `/proc/self/fd/N` with the *following* calls: the
    /// procfs magic link jumps to exactly the inode the descriptor holds (the symlink itself, not
    /// its target), so no name is looked up again and nothing can be swapped in between.
    OPath(BorrowedFd<'a>),
}

/// Every xattr of the object, sorted by name. A filesystem without xattrs gives none; an xattr
/// removed while it is listed is left out.
pub fn list_xattrs(of: XattrsOf<'_>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let proc_path = match of {
        XattrsOf::OPath(fd) => Some(format!("/proc/self/fd/{}", fd.as_raw_fd())),
        XattrsOf::Fd(_) => None,
    };
    let list = |buf: &mut [u8]| match (of, &proc_path) {
        (XattrsOf::Fd(fd), _) => rustix::fs::flistxattr(fd, buf),
        (XattrsOf::OPath(_), Some(p)) => rustix::fs::listxattr(p.as_str(), buf),
        (XattrsOf::OPath(_), None) => Err(Errno::INVAL),
    };
    let get = |name: &[u8], buf: &mut [u8]| match (of, &proc_path) {
        (XattrsOf::Fd(fd), _) => rustix::fs::fgetxattr(fd, name, buf),
        (XattrsOf::OPath(_), Some(p)) => rustix::fs::getxattr(p.as_str(), name, buf),
        (XattrsOf::OPath(_), None) => Err(Errno::INVAL),
    };
    let mut names = vec![0u8; 1024];
    let n = loop {
        match list(&mut names) {
            Ok(n) => break n,
            Err(Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(Errno::NOTSUP) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let mut val = vec![0u8; 256];
        loop {
            match get(name, &mut val) {
                Ok(len) => {
                    val.truncate(len);
                    out.push((name.to_vec(), val));
                    break;
                }
                Err(Errno::RANGE) => val.resize(val.len() * 4, 0),
                // Removed meanwhile.
                Err(Errno::NODATA) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    out.sort();
    Ok(out)
}
