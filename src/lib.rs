//! strata: an overlay-filesystem snapshotter and container runtime layer.
//!
//! Module map:
//! - [`digest`]: validated sha256 digests (before any path join).
//! - [`store`]: the state root (blobs, layers, staging, locks) and [`db`] its SQLite metadata.
//! - [`image`]: image sources (OCI layout, oci-archive, docker-archive) and import.
//! - [`unpack`]: layer tar -> overlayfs-format directory, confined to the layer root.
//! - [`container`]: writable snapshots over images, mounted by kernel overlay or strata-fuse;
//!   [`bundle`]: OCI runtime bundles run with runc.
//! - [`diff`], [`commit`], [`export`]: the way back, from an upper dir to a layer, an image, a file.
//! - [`tree`]: tree snapshots for entry-by-entry comparison.
//! - [`reference`]: image names, by the reference grammar docker uses.
//! - [`registry`]: a registry client (OCI distribution) as one more image source, for `pull`.

pub mod bundle;
pub mod commit;
pub mod container;
pub mod db;
pub mod diff;
pub mod digest;
pub mod export;
pub mod image;
pub mod import;
pub mod reference;
pub mod registry;
pub mod store;
pub mod tree;
pub mod unpack;
