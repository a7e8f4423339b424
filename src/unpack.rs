//! Layer unpacking: an (uncompressed) layer tar stream into an overlayfs-format directory.
//! (Implementation in progress.)

use std::io::Read;
use std::path::Path;

/// Where opaque-directory markers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrNamespace {
    /// `trusted.overlay.opaque` (needs CAP_SYS_ADMIN; the kernel's default).
    #[default]
    Trusted,
    /// `user.overlay.opaque` (kernel `userxattr` mounts, unprivileged).
    User,
}

/// Options for [`unpack_layer`].
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    pub opaque_xattr: XattrNamespace,
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
}

/// Unpack errors.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("tar stream: {0}")]
    Tar(#[source] std::io::Error),
    #[error("entry {path:?}: {reason}")]
    Entry { path: String, reason: String },
    #[error("entry {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Unpack the tar stream `tar` into the existing, empty directory `dest`.
pub fn unpack_layer<R: Read>(
    _tar: R,
    _dest: &Path,
    _opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    Err(UnpackError::Entry { path: String::new(), reason: "not implemented".into() })
}
