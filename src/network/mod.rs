//! Container networking on the CNI plugins the ecosystem uses (Debian's
//! `containernetworking-plugins`: `bridge`, `host-local`, `portmap`, `loopback`, `firewall`), run
//! through the CNI protocol ([`cni`]), never through hand-written iptables rules.
//!
//! - [`config`]: networks (name, bridge, subnet, gateway) stored as `<root>/networks/NAME.json`,
//!   and the configuration list each one generates.
//! - [`netns`]: persistent network namespaces (a bind mount under `<root>/net/netns/`).
//! - [`attach`] / [`detach`] (`attach.rs`): a container's namespace joined to a network (CNI ADD,
//!   the result recorded as `<root>/net/attach/NAME.json` before and after), and released again
//!   (CNI DEL from the recorded list, the namespace removed); [`release_leaked`] releases what
//!   containers that no longer run still hold (after kill -9 or a reboot).
//! - [`ports`]: `-p` parsing and the check that a host port is free.
//! - [`files`]: `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` for a container.
//! - [`slirp`]: rootless mode's user-mode network (slirp4netns, `-p` through its API socket).
//!
//! Everything lives under the state root (networks, IPAM allocations, namespaces, records), and
//! bridge names carry the root's hash: two roots never share a bridge or an address range.

pub mod cni;
pub mod config;
pub mod files;
pub mod netns;
pub mod ports;
pub mod slirp;

mod attach;

use std::io;
use std::path::PathBuf;

pub use attach::{
    attach, attachment, attachments, check, detach, netns_path, peers, published_ports, release_leaked,
    Attachment,
};
pub use config::{Ipv4Net, Network, DEFAULT_NETWORK};

use crate::error::ErrorKind;
use crate::fsutil::AtomicError;
use crate::store::{Lock, LockGuard, Store, StoreError};

fn io_at(path: &std::path::Path) -> impl FnOnce(io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Io { path: path.to_path_buf(), source }
}

/// The JSON record at `path`, or `None` when there is none.
fn read_record<T: serde::de::DeserializeOwned>(path: PathBuf) -> Result<Option<T>, NetworkError> {
    match std::fs::read(&path) {
        Ok(b) => {
            serde_json::from_slice(&b).map(Some).map_err(|source| NetworkError::BadRecord { path, source })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(&path)(e)),
    }
}

/// What networking can fail with; the cause is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("saving network state")]
    Write(#[from] AtomicError),
    #[error("reading {}", path.display())]
    BadRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("network file {}: {reason}", path.display())]
    BadNetworkFile { path: PathBuf, reason: String },
    #[error(
        "invalid name {name:?}: letters, digits, '_', '.', '-', starting with a letter or digit, at most 64"
    )]
    BadName { name: String },
    #[error("no network {name:?} (strata network ls lists them)")]
    NotFound { name: String },
    #[error("network {name} already exists")]
    Exists { name: String },
    #[error("subnet {subnet} overlaps {with}")]
    SubnetClash { subnet: String, with: String },
    #[error("subnet {subnet} {reason}")]
    BadSubnet { subnet: String, reason: String },
    #[error(
        "no free subnet: every 10.89.N.0/24 overlaps a route of the host or a network of this root \
         (choose one with strata network create --subnet CIDR)"
    )]
    NoFreeSubnet,
    #[error("network {name} is in use by container(s) {containers}")]
    InUse { name: String, containers: String },
    #[error("container {container} is already attached to network {network}")]
    AlreadyAttached { container: String, network: String },
    #[error("network namespace {}", path.display())]
    Netns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("network {network}, container {container}")]
    Cni {
        container: String,
        network: String,
        #[source]
        source: Box<cni::CniError>,
    },
    #[error("publishing ports")]
    Port(#[from] ports::PortError),
    #[error("container {container}: slirp4netns network: {reason}")]
    Slirp { container: String, reason: String },
    #[error("locking the networks")]
    Store(#[from] StoreError),
}

impl NetworkError {
    pub fn kind(&self) -> ErrorKind {
        use NetworkError::*;
        match self {
            Io { source, .. } | Netns { source, .. } => ErrorKind::of_io(source),
            Write(_) | Store(_) => ErrorKind::Internal,
            BadRecord { .. } | BadNetworkFile { .. } => ErrorKind::Internal,
            BadName { .. } | BadSubnet { .. } | SubnetClash { .. } => ErrorKind::InvalidArgument,
            NotFound { .. } => ErrorKind::NotFound,
            Exists { .. } | AlreadyAttached { .. } => ErrorKind::AlreadyExists,
            NoFreeSubnet | InUse { .. } | Slirp { .. } => ErrorKind::FailedPrecondition,
            Cni { source, .. } => source.kind(),
            Port(p) => p.kind(),
        }
    }
}

/// The networks lock: creating, removing and choosing subnets, and publishing ports.
pub fn lock(store: &Store) -> Result<LockGuard, NetworkError> {
    Ok(store.lock(Lock::Networks)?)
}

/// `network create`: a new network on `subnet` or a free one.
pub fn create(store: &Store, name: &str, subnet: Option<Ipv4Net>) -> Result<Network, NetworkError> {
    let _g = lock(store)?;
    config::create_locked(store, name, subnet)
}

/// The network `name` (the default one is created at first use).
pub fn get(store: &Store, name: &str) -> Result<Network, NetworkError> {
    let _g = lock(store)?;
    config::get_or_default_locked(store, name)
}

/// Every network of this root, the default one included (created if it was not yet).
pub fn list(store: &Store) -> Result<Vec<Network>, NetworkError> {
    let _g = lock(store)?;
    config::get_or_default_locked(store, DEFAULT_NETWORK)?;
    config::list(store)
}

/// `network rm`: refused while a container is attached; removes the file, the IPAM data and the
/// bridge.
pub fn remove(store: &Store, name: &str) -> Result<Network, NetworkError> {
    let _g = lock(store)?;
    let users: Vec<String> =
        attachments(store)?.into_iter().filter(|a| a.network == name).map(|a| a.container).collect();
    if !users.is_empty() {
        return Err(NetworkError::InUse { name: name.to_string(), containers: users.join(", ") });
    }
    config::remove_locked(store, name)
}
