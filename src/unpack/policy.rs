//! Path and whiteout policy: which entry names are accepted, how they are normalised, and how
//! OCI whiteout names map onto the overlayfs format. Pure decisions on bytes; the filesystem side
//! of whiteouts (the 0:0 devices, the opaque xattr) is in `fs.rs`.
//!
//! # Path policy
//! Leading `/` and `./` and empty/`.` components are stripped. Any `..` component is rejected
//! ([`super::UnpackError::InvalidPath`]) rather than cleaned lexically: real image builders never emit
//! them, and a rejected layer is easier to reason about than a silently rewritten one. The same
//! applies to hardlink targets. Symlink targets are stored exactly as written (absolute targets
//! stay absolute; resolution is confined by `RESOLVE_IN_ROOT`). NUL bytes, name components longer
//! than 255 bytes and paths longer than 4095 bytes are rejected.
//!
//! # Whiteouts (OCI -> overlayfs)
//! - `DIR/.wh..wh..opq`: `trusted.overlay.opaque=y` (or `user.overlay.opaque`) on DIR, creating DIR
//!   if needed.
//! - `DIR/.wh.NAME`: a character device 0:0 named NAME. If NAME already exists in this layer it is
//!   left alone (whiteouts only hide lower layers); if it is a directory, it is marked opaque, which
//!   is what "lower NAME deleted, this layer's NAME present" means for overlayfs. A directory entry
//!   replacing a same-layer whiteout device is marked opaque for the same reason.
//! - `.wh.`, `.wh..`, `.wh...` and non-final `.wh.` components are rejected. Other `.wh..wh.*`
//!   names (AUFS metadata such as `.wh..wh.plnk`) are skipped with a warning, like moby does.
//! - Whiteout handling is by name, whatever the entry type (as containerd does).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::overlay_format::{
    OPAQUE_MARKER as WH_OPAQUE, WHITEOUT_META_PREFIX as WH_META_PREFIX, WHITEOUT_PREFIX as WH_PREFIX,
};

/// The longest name component accepted (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// The longest path accepted, in bytes (Linux `PATH_MAX` less its NUL).
pub const PATH_MAX: usize = 4095;

/// Normalise a tar path into `out` (components joined by `/`, no leading `/`, no `.`).
pub(super) fn normalize(raw: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    out.clear();
    if raw.contains(&0) {
        return Err("NUL byte in path");
    }
    for comp in raw.split(|b| *b == b'/') {
        if comp.is_empty() || comp == b"." {
            continue;
        }
        if comp == b".." {
            return Err("'..' path component (refused: could escape the layer root)");
        }
        if comp.len() > NAME_MAX {
            return Err("path component longer than 255 bytes (ENAMETOOLONG)");
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(comp);
    }
    if out.len() > PATH_MAX {
        return Err("path longer than 4095 bytes (ENAMETOOLONG)");
    }
    Ok(())
}

/// Split a normalised path into (parent, name). The root has an empty name.
pub(super) fn split(norm: &[u8]) -> (&[u8], &[u8]) {
    match norm.iter().rposition(|b| *b == b'/') {
        Some(i) => (&norm[..i], &norm[i + 1..]),
        None => (&[], norm),
    }
}

pub(super) fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

pub(super) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(super) enum Whiteout<'a> {
    None,
    Opaque,
    /// `.wh.NAME` -> NAME
    Name(&'a [u8]),
    /// AUFS metadata: skipped.
    Meta,
}

pub(super) fn classify_whiteout(norm: &[u8]) -> Result<Whiteout<'_>, &'static str> {
    let (parent, name) = split(norm);
    for comp in parent.split(|b| *b == b'/') {
        if comp.starts_with(WH_META_PREFIX) {
            return Ok(Whiteout::Meta);
        }
        if comp.starts_with(WH_PREFIX) {
            return Err("whiteout name used as a directory");
        }
    }
    if name == WH_OPAQUE {
        return Ok(Whiteout::Opaque);
    }
    if name.starts_with(WH_META_PREFIX) {
        return Ok(Whiteout::Meta);
    }
    if let Some(target) = name.strip_prefix(WH_PREFIX) {
        if target.is_empty() || target == b"." || target == b".." {
            return Err("malformed whiteout name");
        }
        return Ok(Whiteout::Name(target));
    }
    Ok(Whiteout::None)
}

/// An entry path as the tar holds it, normalised when it can be (for messages).
pub(super) fn display_path(raw: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    match normalize(raw, &mut n) {
        Ok(()) => n,
        Err(_) => raw.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
        let mut out = vec![b'?'];
        normalize(raw, &mut out).map(|()| out)
    }

    #[test]
    fn paths() {
        assert_eq!(norm(b"/./a//b/./c/"), Ok(b"a/b/c".to_vec()));
        assert_eq!(norm(b"./"), Ok(vec![]));
        assert_eq!(norm(b""), Ok(vec![]));
        assert!(norm(b"a/../b").unwrap_err().contains("'..'"));
        assert!(norm(b"..").unwrap_err().contains("'..'"));
        assert!(norm(b"a\0b").unwrap_err().contains("NUL"));
        assert_eq!(norm(&[b'n'; NAME_MAX]).map(|v| v.len()), Ok(NAME_MAX));
        assert!(norm(&[b'n'; NAME_MAX + 1]).unwrap_err().contains("255"));
        let long = [&b"d/"[..]; 2049].concat();
        assert!(norm(&long).unwrap_err().contains("4095"));
        assert_eq!(norm(&long[..PATH_MAX + 1]).map(|v| v.len()), Ok(PATH_MAX));
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(split(b""), (&b""[..], &b""[..]));
        assert_eq!(display_path(b"/a/./b"), b"a/b");
        assert_eq!(display_path(b"a/../b"), b"a/../b");
    }

    #[test]
    fn whiteouts() {
        let c = |p: &[u8]| match classify_whiteout(p) {
            Ok(Whiteout::None) => Ok("none".to_string()),
            Ok(Whiteout::Opaque) => Ok("opaque".into()),
            Ok(Whiteout::Meta) => Ok("meta".into()),
            Ok(Whiteout::Name(n)) => Ok(format!("name {}", lossy(n))),
            Err(e) => Err(e),
        };
        assert_eq!(c(b"a/b"), Ok("none".into()));
        assert_eq!(c(b"a/.wh..wh..opq"), Ok("opaque".into()));
        assert_eq!(c(b".wh..wh..opq"), Ok("opaque".into()));
        assert_eq!(c(b"a/.wh.b"), Ok("name b".into()));
        assert_eq!(c(b"a/.wh..wh.plnk"), Ok("meta".into()));
        assert_eq!(c(b".wh..wh.plnk/x"), Ok("meta".into()));
        assert_eq!(c(b"a/.wh.b/c"), Err("whiteout name used as a directory"));
        for bad in [&b"a/.wh."[..], b"a/.wh..", b".wh..."] {
            assert_eq!(c(bad), Err("malformed whiteout name"), "{}", lossy(bad));
        }
        assert_eq!(c(b"a/x.wh.b"), Ok("none".into()));
    }
}
