//! strata's integration tests, one binary: each module is a former test binary, `common` what
//! they share (the strata binary, fixtures, privileged-test gating, a real registry). They run
//! the built `strata` as a user types it, against the real tools (umoci, skopeo, runc, podman,
//! containerd, docker-registry). Privileged tests skip only when not root and `CI` is unset.

mod common;

mod archives;
mod bad_input;
mod build;
mod build_parity;
mod commit;
mod container;
mod containerd_ctr;
mod containerd_suite;
mod front_door;
mod fuse_backend;
mod hardening;
mod hostile;
mod hostile_import;
mod hostile_sparse;
mod import;
mod integrity;
mod lazy;
mod lazy_complete;
mod lazy_faults;
mod lazy_interop;
mod lazy_optimize;
mod lazy_run;
mod lifecycle;
mod lifecycle_signals;
mod listing;
mod long_paths;
mod network;
mod network_run;
mod podman;
mod races;
mod registry;
mod remote_snapshotter;
mod rootless;
mod rootless_containerd;
mod rootless_hostile;
mod rootless_images;
mod rootless_interop;
mod rootless_lazy;
mod rootless_lifecycle;
mod rootless_network;
mod run_io;
mod snapshots;
mod sparse;
mod sparse_commit;
mod unpack;
