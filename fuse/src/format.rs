//! The on-disk overlay format shared with kernel overlayfs, in one place for strata-fuse:
//! whiteout = character device 0:0, opaque directory = `trusted.overlay.opaque=y` (read as
//! `user.overlay.opaque=y` too), OCI `.wh.NAME` whiteouts and the `.wh..wh..opq` opaque marker
//! (read in lower layers only), and the private xattrs (`trusted.overlay.*`, `user.overlay.*`)
//! that users never see and copy-ups never copy.
//!
//! The definitions are `kernel_overlay::format`'s, the one strata's unpack, commit and diff use
//! too; this module adds the path-based operations strata-fuse needs.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::sys::{self, Stat};

use kernel_overlay::format::{OPAQUE_MARKER, OPAQUE_VALUE, OPAQUE_XATTRS, WHITEOUT_PREFIX as OCI_WH};

/// Xattr names private to the overlay format, hidden from users.
pub fn is_private_xattr(name: &OsStr) -> bool {
    kernel_overlay::format::is_private_xattr(name.as_bytes())
}

/// Whether `st` is a whiteout (character device 0:0).
pub(crate) fn is_whiteout(st: &Stat) -> bool {
    is_whiteout_node(st.st_mode, st.st_rdev)
}

/// Whether a node of `mode` and `rdev` would be a whiteout.
pub(crate) fn is_whiteout_node(mode: u32, rdev: u64) -> bool {
    kernel_overlay::format::is_whiteout_node(mode, rdev)
}

/// Create a whiteout at `p`.
pub(crate) fn mknod_whiteout(p: &Path) -> io::Result<()> {
    sys::mknod(p, libc::S_IFCHR, 0)
}

/// Whether directory `real` is opaque (an OCI opaque marker counts in a lower layer only).
pub(crate) fn is_opaque(real: &Path, lower: bool) -> bool {
    for x in OPAQUE_XATTRS {
        if let Ok(v) = sys::get_xattr(real, OsStr::new(x)) {
            if v == OPAQUE_VALUE {
                return true;
            }
        }
    }
    lower && sys::exists(&real.join(OsStr::from_bytes(OPAQUE_MARKER)))
}

/// Mark directory `real` opaque: `trusted.overlay.opaque`, or `user.overlay.opaque` where
/// `trusted.*` is refused (in a user namespace, rootless: what kernel `userxattr` mounts read).
pub(crate) fn set_opaque(real: &Path) -> io::Result<()> {
    match sys::set_xattr(real, OsStr::new(OPAQUE_XATTRS[0]), OPAQUE_VALUE, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            sys::set_xattr(real, OsStr::new(OPAQUE_XATTRS[1]), OPAQUE_VALUE, 0)
        }
        r => r,
    }
}

/// Whether `name` is an OCI whiteout name (`.wh.` prefix): never a visible entry of a lower layer.
pub(crate) fn is_oci_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(OCI_WH)
}

/// The OCI whiteout of `name` (`.wh.NAME`).
pub(crate) fn oci_whiteout_name(name: &OsStr) -> OsString {
    let mut wh = OsString::from(OsStr::from_bytes(OCI_WH));
    wh.push(name);
    wh
}

/// What an entry of a lower layer's directory listing is in the OCI format.
pub(crate) enum OciEntry<'a> {
    /// An ordinary name.
    Plain,
    /// `.wh.NAME`: hides `NAME` of the layers below.
    Whiteout(&'a OsStr),
    /// `.wh..wh..opq`: the directory is opaque (seen by [`is_opaque`]).
    Opaque,
}

pub(crate) fn oci_entry(name: &OsStr) -> OciEntry<'_> {
    if !is_oci_name(name) {
        OciEntry::Plain
    } else if name.as_bytes() == OPAQUE_MARKER {
        OciEntry::Opaque
    } else {
        OciEntry::Whiteout(OsStr::from_bytes(&name.as_bytes()[OCI_WH.len()..]))
    }
}

/// Copy the xattrs of `src` to `dst`, except the private ones. A value that cannot be read is
/// skipped; one that cannot be set is an error when `strict` (but for `security.*`, which the
/// filesystem may refuse), else skipped.
pub(crate) fn copy_xattrs(src: &Path, dst: &Path, strict: bool) -> io::Result<()> {
    for name in sys::list_xattrs(src)? {
        if is_private_xattr(&name) {
            continue;
        }
        let v = match sys::get_xattr(src, &name) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if let Err(e) = sys::set_xattr(dst, &name, &v, 0) {
            if strict && !name.as_bytes().starts_with(b"security.") {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// A listxattr answer: the NUL-terminated names that are not private.
pub(crate) fn visible_xattr_list(names: &[OsString]) -> Vec<u8> {
    let mut buf = Vec::new();
    for n in names.iter().filter(|n| !is_private_xattr(n)) {
        buf.extend_from_slice(n.as_bytes());
        buf.push(0);
    }
    buf
}
