//! strata: an overlay-filesystem snapshotter and container runtime layer.
//!
//! Module map. The core is a one-way stack, each layer using only those below it (checked by a
//! test that reads the sources, `layering.rs`): `meta` (the SQLite database and all SQL; private to
//! the crate) -> [`store`] -> [`snapshot`] -> [`images`], [`layers`] and [`container`] -> the
//! pipelines ([`import`], [`commit`], [`export`], [`registry`], [`run`]) -> the front ends.
//! - [`digest`]: validated sha256 digests (before any path join).
//! - [`error`]: the error kinds front ends map, and [`error::report`] for a chain of causes.
//! - [`store`]: the state root (blobs, layers, staging, typed locks, recovery) and typed reads of
//!   its metadata ([`store::Store::image`]).
//! - [`snapshot`]: the snapshot core (containerd's model), the only code that writes snapshot rows
//!   together with their directories.
//! - [`image`]: image sources (OCI layout, oci-archive, docker-archive); [`import`]: an image
//!   from a source into the store.
//! - [`layers`]: the layer store, the one path that streams a layer's blob, verifies it and
//!   unpacks it into its directory (for import, and for a container's missing layers).
//! - [`unpack`]: layer tar -> overlayfs-format directory, confined to the layer root; [`tar`]:
//!   the layer tar format (PAX, ustar, GNU sparse) that unpack reads and commit writes.
//! - [`container`]: writable snapshots over images, mounted by kernel overlay or strata-fuse;
//!   [`runtime`]: OCI runtime bundles ([`runtime::spec`]) run with runc ([`runtime::runc`]).
//! - [`diff`], [`commit`], [`export`]: the way back, from an upper dir to a layer, an image, a file.
//! - [`images`]: stored images as listed (`image ls`, `image history`), tagged, and gc.
//! - [`overlay_format`]: whiteouts, opaque dirs, private xattrs, as commit and diff read them;
//!   [`fdwalk`]: walking trees by directory descriptors (any depth, any path length).
//! - [`reference`]: image names, by the reference grammar docker uses, and docker's normalisation.
//! - [`rootfs`]: `container export`, a container's merged tree as one flat tar.
//! - [`run`]: `strata run` (create, mount, runc, clean up); [`lifecycle`]: start, kill, wait,
//!   pause, restart, the state `ps -a` shows, prune, version, info; [`signals`]: what a foreground
//!   run does with SIGINT, SIGTERM, SIGHUP (forwarded to the container); [`cgroup`]: the
//!   containers' cgroup directories.
//! - [`seekable`]: eStargz and zstd:chunked, the layers a lazy pull reads by ranges (footers,
//!   TOCs, chunks verified by digest); [`optimize`]: `image optimize`, a command's reads (from
//!   strata-fuse's read log) moved to the front of each layer, before the prefetch landmark.
//! - [`registry`]: a registry client (OCI distribution) as one more image source, for `pull`.
//! - [`network`]: container networking through the CNI plugins (bridge, host-local, portmap),
//!   network namespaces, published ports, and the `/etc/hosts`-like files a container gets;
//!   [`netsetup`]: a container's network options, kept with it, and what `run` and `start` do
//!   with them (attach before runc, the files bind-mounted, the spec's namespace and hostname).
//! - [`userns`]: rootless mode: the user namespace an unprivileged strata joins (a pause process
//!   per user, `newuidmap`/`newgidmap`), and where a user's state lives.

pub mod build;
pub mod cgroup;
pub mod commit;
pub mod compression;
pub mod container;
pub mod diff;
pub mod digest;
pub mod error;
pub mod export;
pub mod fdwalk;
pub mod foreground;
pub mod fsutil;
pub mod hashing;
pub mod image;
pub mod images;
pub mod import;
#[cfg(test)]
mod layering;
pub mod layers;
pub mod lifecycle;
pub(crate) mod meta;
pub mod monitor;
pub mod netsetup;
pub mod network;
pub mod optimize;
pub mod overlay_format;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod run;
pub mod runtime;
pub mod seekable;
pub mod signals;
pub mod snapshot;
pub mod store;
pub mod tar;
pub mod time;
pub mod userns;

pub mod unpack;
