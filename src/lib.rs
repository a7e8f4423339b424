//! strata: an overlay-filesystem snapshotter and container runtime layer.
//!
//! Module map:
//! - [`digest`]: validated sha256 digests (before any path join).
//! - [`store`]: the state root (blobs, layers, staging, locks) and [`db`] its SQLite metadata.
//! - [`image`]: image sources (OCI layout, oci-archive, docker-archive) and import.
//! - [`unpack`]: layer tar -> overlayfs-format directory, confined to the layer root.
//! - [`tree`]: tree snapshots for entry-by-entry comparison.

pub mod commit;
pub mod db;
pub mod diff;
pub mod digest;
pub mod export;
pub mod image;
pub mod import;
pub mod store;
pub mod tree;
pub mod unpack;
