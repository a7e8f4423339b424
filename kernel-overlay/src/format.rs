//! OverlayFS's on-disk format, as the kernel reads and writes it, and the OCI names that stand
//! for it in layer tars: the one definition strata's unpack, commit and diff and strata-fuse
//! all use (each adds the file operations it needs on top).
//!
//! - Whiteout of NAME: a character device 0:0 named NAME.
//! - Opaque directory: the xattr `trusted.overlay.opaque` = `y` (`user.overlay.opaque` on
//!   `userxattr` mounts); both are read, the first is written by default.
//! - `trusted.overlay.*` and `user.overlay.*` are the overlay's private xattrs: never a layer's
//!   content, never shown to users, never taken from an image.
//! - In OCI layer tars: `.wh.NAME` deletes NAME below, `DIR/.wh..wh..opq` makes DIR opaque, and
//!   other `.wh..wh.` names are AUFS metadata.

/// The OCI whiteout prefix (`.wh.NAME` deletes NAME).
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The OCI opaque marker (`DIR/.wh..wh..opq`).
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// AUFS metadata names (`.wh..wh.plnk`, ...): never content.
pub const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// The opaque xattr names, the kernel's default (`trusted.`) first.
pub const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];
/// The value of an opaque xattr that marks a directory opaque.
pub const OPAQUE_VALUE: &[u8] = b"y";

/// True for the overlay's private xattrs (`trusted.overlay.*`, `user.overlay.*`).
pub fn is_private_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// True for a node of `mode` (`st_mode`) and `rdev` that is a whiteout: a character device 0:0.
pub fn is_whiteout_node(mode: u32, rdev: u64) -> bool {
    mode & 0o170000 == 0o020000 && rdev == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_and_private_xattrs() {
        assert!(is_whiteout_node(0o020000 | 0o644, 0));
        assert!(!is_whiteout_node(0o020000 | 0o644, 1 << 8), "a real char device");
        assert!(!is_whiteout_node(0o060000, 0), "a block device 0:0 is not a whiteout");
        assert!(!is_whiteout_node(0o100644, 0));
        assert!(is_private_xattr(b"trusted.overlay.redirect") && is_private_xattr(b"user.overlay.opaque"));
        assert!(!is_private_xattr(b"trusted.overlayx") && !is_private_xattr(b"user.other"));
        assert!(
            OPAQUE_MARKER.starts_with(WHITEOUT_META_PREFIX)
                && WHITEOUT_META_PREFIX.starts_with(WHITEOUT_PREFIX)
        );
    }
}
