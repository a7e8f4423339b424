//! The layer tar format, in both directions: what [`crate::unpack`] accepts when it reads a layer
//! and what [`crate::commit`] writes, defined once (as umoci's `tar_extract.go` and
//! `tar_generate.go` share one policy).
//!
//! - [`pax`]: PAX extended header records (`"<len> <key>=<value>\n"`): the keys strata reads and
//!   writes, parsing them by length (values may hold newlines and any byte), encoding them, and
//!   finding an entry's extension headers in the bytes read before it.
//! - [`ustar`]: the ustar header fields: checksums, the name/prefix split, the largest ids and
//!   sizes the octal fields hold (beyond them a PAX record carries the value).
//! - [`sparse`]: GNU sparse files (old GNU `S` entries, PAX 0.0, 0.1 and 1.0): maps parsed and
//!   checked when reading, the 1.0 map and records written by commit.
//! - `write`: encoding one layer entry (commit's writer; crate-private).
//! - [`keeps_xattr`]: which xattrs a layer tar carries, reading or writing.

pub mod pax;
pub mod sparse;
pub mod ustar;
pub(crate) mod write;

use crate::overlay_format;

/// True when the xattr `name` belongs in a layer: every xattr but the overlay's private ones
/// (`trusted.overlay.*`, `user.overlay.*`), which unpack drops from an image (a crafted layer
/// must not smuggle redirects or metacopy markers into the stack) and commit never writes
/// (`security.capability` and the rest are kept both ways).
pub fn keeps_xattr(name: &[u8]) -> bool {
    !overlay_format::is_private_xattr(name)
}
