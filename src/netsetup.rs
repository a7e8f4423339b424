//! A container's network as `run`, `start` and `container create` give it: the options the user
//! chose (`--network`, `-p`, `-P`, `--hostname`, `--dns*`, `--add-host`), kept with the container
//! (`containers/<name>/network.json`) so that `start` joins it again as it was; the attachment
//! ([`crate::network::attach`]) made before runc starts; the files every container gets
//! (`containers/<name>/etc/`, bind-mounted at `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`);
//! and the runtime spec's network namespace and hostname.
//!
//! The mount points a bind mount needs are created by strata when the image lacks them (empty
//! files, recorded as placeholders with [`crate::container::add_placeholders`]) so that a commit
//! leaves them out, as docker's init layer does: the files never land in an image.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};
use serde::{Deserialize, Serialize};

use crate::container;
use crate::network::files::{self, ContainerFiles, FilePaths};
use crate::network::ports::{PortMapping, Proto};
use crate::network::{self, NetworkError, DEFAULT_NETWORK};
use crate::store::Store;

/// What can fail while giving a container its network.
#[derive(Debug, thiserror::Error)]
pub enum NetSetupError {
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("--network {value:?}: {reason}")]
    BadMode { value: String, reason: String },
    #[error("--network container:{name}: the container is not running")]
    PeerNotRunning { name: String },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading {}", path.display())]
    BadOptions {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("container {name}")]
    Container {
        name: String,
        #[source]
        source: Box<container::ContainerError>,
    },
}

impl NetSetupError {
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            NetSetupError::Network(e) => e.kind(),
            NetSetupError::BadMode { .. } => ErrorKind::InvalidArgument,
            NetSetupError::PeerNotRunning { .. } => ErrorKind::FailedPrecondition,
            NetSetupError::Io { source, .. } => ErrorKind::of_io(source),
            NetSetupError::BadOptions { .. } => ErrorKind::Internal,
            NetSetupError::Container { source, .. } => source.kind(),
        }
    }
}

pub type Result<T, E = NetSetupError> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> NetSetupError + '_ {
    move |source| NetSetupError::Io { path: path.to_path_buf(), source }
}

/// The network options of a container, as given to `run` or `container create`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetOptions {
    /// `--network`: `bridge` (the default), `none`, `host`, `container:NAME`, or a network's name.
    #[serde(default)]
    pub network: Option<String>,
    /// `-p`, parsed; host port 0 takes a free one at each start.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// `-P`: also publish every port the image EXPOSEs, each on a free host port.
    #[serde(default)]
    pub publish_all: bool,
    /// `--hostname` (default: the container's name, at most 63 characters).
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    #[serde(default)]
    pub dns_search: Vec<String>,
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// `--add-host NAME:IP`.
    #[serde(default)]
    pub add_hosts: Vec<(String, IpAddr)>,
}

/// How a container is networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Its own namespace on a network (the default one, `bridge`, or a user network).
    Network(String),
    /// Its own namespace with only `lo`.
    None,
    /// The host's namespace.
    Host,
    /// Another running container's namespace.
    Container(String),
    /// Its own namespace served by slirp4netns (rootless mode: `--network slirp4netns`, its
    /// default where slirp4netns works).
    Slirp,
}

impl Mode {
    /// `--network VALUE`, as docker takes it.
    pub fn parse(value: &str) -> Result<Mode> {
        let bad = |reason: &str| NetSetupError::BadMode { value: value.to_string(), reason: reason.into() };
        Ok(match value {
            "" => return Err(bad("empty")),
            "none" => Mode::None,
            "host" => Mode::Host,
            // Rootless mode's user-mode network (podman's name); as root, a network's name.
            network::slirp::BINARY if crate::userns::is_rootless() => Mode::Slirp,
            v => match v.strip_prefix("container:") {
                Some("") => return Err(bad("container: needs a container's name")),
                Some(c) => Mode::Container(c.to_string()),
                None if network::config::valid_name(v) => Mode::Network(v.to_string()),
                None => return Err(bad("neither bridge, none, host, container:NAME nor a network's name")),
            },
        })
    }
}

impl NetOptions {
    /// The mode asked for; by default the default network, or in rootless mode (which has no
    /// bridge: the CNI plugins need root) slirp4netns, as podman, or `none` where slirp4netns
    /// cannot work (with a warning that says why).
    pub fn mode(&self) -> Result<Mode> {
        // Lazily: the rootless default's probe (and its warning) only when no mode was given.
        let default = || if crate::userns::is_rootless() { rootless_default() } else { DEFAULT_NETWORK };
        Mode::parse(self.network.as_deref().unwrap_or_else(default))
    }

    /// Reject what cannot work before anything is created: a bad mode, ports or DNS settings
    /// on a network mode that has no use for them (as docker does).
    pub fn check(&self) -> Result<()> {
        let mode = self.mode()?;
        let value = self.network.clone().unwrap_or_default();
        let publishing = !self.ports.is_empty() || self.publish_all;
        match mode {
            Mode::Network(_) if crate::userns::is_rootless() => Err(NetSetupError::BadMode {
                value,
                reason: "rootless mode has no bridge or user networks (the CNI plugins need root): \
                         use --network slirp4netns (its default), none or host"
                    .into(),
            }),
            Mode::Network(_) => Ok(()),
            Mode::Slirp => match network::slirp::unavailable() {
                None => Ok(()),
                Some(why) => {
                    Err(NetSetupError::BadMode { value: network::slirp::BINARY.into(), reason: why })
                }
            },
            Mode::None | Mode::Host if publishing && crate::userns::is_rootless() => {
                let why = network::slirp::unavailable().map(|w| format!(" ({w})")).unwrap_or_default();
                Err(NetSetupError::BadMode {
                    value: if value.is_empty() { "none".into() } else { value },
                    reason: format!(
                        "publishing ports needs a network (rootless: --network slirp4netns){why}"
                    ),
                })
            }
            Mode::None | Mode::Host if publishing => Err(NetSetupError::BadMode {
                value,
                reason: "publishing ports needs a network (--network bridge or a user network)".into(),
            }),
            Mode::Container(_) if publishing || self.hostname.is_some() || !self.dns.is_empty() => {
                Err(NetSetupError::BadMode {
                    value,
                    reason: "a container sharing another's network takes its ports, hostname and DNS".into(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Rootless mode's default network: slirp4netns when it can work here, else `none` (warned
/// about once).
fn rootless_default() -> &'static str {
    static DEFAULT: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(|| match network::slirp::unavailable() {
        None => network::slirp::BINARY,
        Some(why) => {
            tracing::warn!("no user-mode network, so containers get loopback only (--network none): {why}");
            "none"
        }
    })
}

fn options_path(store: &Store, name: &str) -> PathBuf {
    container::dir(store, name).join("network.json")
}

/// Keep container `name`'s network options (with the container, for `start`).
pub fn save(store: &Store, name: &str, opts: &NetOptions) -> Result<()> {
    let path = options_path(store, name);
    let body = serde_json::to_vec_pretty(opts)
        .map_err(|source| NetSetupError::BadOptions { path: path.clone(), source })?;
    crate::fsutil::atomic_write(&path, 0o600, |w| w.write_all(&body)).map_err(io_at(&path))
}

/// Container `name`'s network options; the defaults (docker's) when none were kept.
pub fn load(store: &Store, name: &str) -> Result<NetOptions> {
    let path = options_path(store, name);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|source| NetSetupError::BadOptions { path, source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(NetOptions::default()),
        Err(e) => Err(io_at(&path)(e)),
    }
}

/// What [`prepare`] made, for [`apply`].
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The network namespace entry of the spec: `Some(None)` a new one, `Some(Some(path))` that
    /// one, `None` the host's.
    pub netns: Option<Option<PathBuf>>,
    pub files: FilePaths,
    pub hostname: String,
    /// Whether a [`network::attach`] was made (to undo on failure).
    pub attached: bool,
}

/// The host's hostname.
fn host_hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// The ports the image config EXPOSEs (`"80/tcp"`, `"53/udp"`, `"8080"`), each to be published on
/// a free host port.
pub fn exposed_ports(image_config: &serde_json::Value) -> Vec<PortMapping> {
    let Some(map) = image_config.pointer("/config/ExposedPorts").and_then(|v| v.as_object()) else {
        return Vec::new();
    };
    let mut out: Vec<PortMapping> = map
        .keys()
        .filter_map(|k| {
            let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
            let protocol = match proto {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                _ => return None,
            };
            let container_port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
            Some(PortMapping { host_ip: None, host_port: 0, container_port, protocol })
        })
        .collect();
    out.sort_by_key(|m| (m.container_port, m.protocol == Proto::Udp));
    out
}

/// The namespace of running container `name`: its pinned netns file, or its process's.
fn peer_netns(store: &Store, name: &str) -> Result<PathBuf> {
    let cerr = |source| NetSetupError::Container { name: name.to_string(), source: Box::new(source) };
    container::get(store, name).map_err(cerr)?;
    let (state, id) = container::runc_ids(store, name);
    let pid = crate::runtime::runc::runc_pid(&state, &id)
        .filter(|_| crate::runtime::runc::runc_status(&state, &id).is_some_and(|s| s != "stopped"));
    let Some(pid) = pid else { return Err(NetSetupError::PeerNotRunning { name: name.to_string() }) };
    let pinned = network::netns_path(store, name);
    if network::attachment(store, name)?.is_some() && network::netns::is_netns(&pinned) {
        return Ok(pinned);
    }
    Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
}

/// Give container `name` its network before runc starts it (with its run lock held): attached
/// to its network as `opts` says (what an earlier run left attached is released first), its
/// files written, placeholders for their mount points made in `rootfs` where the image has none.
/// On failure nothing stays attached.
pub fn prepare(
    store: &Store,
    name: &str,
    opts: &NetOptions,
    image_config: &serde_json::Value,
    rootfs: &Path,
) -> Result<Prepared> {
    let mode = opts.mode()?;
    // Not running (its run lock is ours): whatever it still holds is from an earlier run.
    network::slirp::release(store, name)?;
    network::detach(store, name)?;
    let default_hostname: String = name.chars().take(63).collect();
    let etc = container::dir(store, name).join("etc");
    let mut f = ContainerFiles {
        hostname: opts.hostname.clone().unwrap_or(default_hostname),
        address: None,
        add_hosts: opts.add_hosts.clone(),
        peers: Vec::new(),
        dns: opts.dns.clone(),
        dns_search: opts.dns_search.clone(),
        dns_options: opts.dns_options.clone(),
    };
    let mut attached = false;
    let netns = match &mode {
        Mode::None => Some(None),
        Mode::Host => {
            if opts.hostname.is_none() {
                f.hostname = host_hostname();
            }
            None
        }
        Mode::Container(peer) => {
            let path = peer_netns(store, peer)?;
            // Its files are the other container's, as docker shares them.
            let theirs = container::dir(store, peer).join("etc");
            let files = FilePaths {
                hosts: theirs.join("hosts"),
                hostname: theirs.join("hostname"),
                resolv_conf: theirs.join("resolv.conf"),
            };
            let hostname = std::fs::read_to_string(&files.hostname)
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| peer.chars().take(63).collect());
            placeholders(store, name, rootfs)?;
            return Ok(Prepared { netns: Some(Some(path)), files, hostname, attached: false });
        }
        Mode::Slirp => {
            let (ns, _) = network::slirp::start(store, name, &published(opts, image_config))?;
            attached = true;
            f.address = Some(IpAddr::V4(network::slirp::GUEST));
            if f.dns.is_empty() {
                f.dns = vec![IpAddr::V4(network::slirp::DNS)];
            }
            Some(Some(ns))
        }
        Mode::Network(net) => {
            let ports = published(opts, image_config);
            let a = network::attach(store, name, net, &ports)?;
            attached = true;
            f.address = a.address().map(IpAddr::V4);
            Some(Some(a.netns.clone()))
        }
    };
    let written = (|| -> Result<FilePaths> {
        if let Mode::Network(net) = &mode {
            // Peers by name on user networks; the default network has none, as in docker.
            if net != DEFAULT_NETWORK {
                f.peers = network::peers(store, net, name)?;
            }
        }
        let paths = files::write_files(&etc, &f).map_err(io_at(&etc))?;
        if mode == Mode::Host {
            host_mode_files(&paths, &f)?;
        }
        placeholders(store, name, rootfs)?;
        Ok(paths)
    })();
    match written {
        Ok(files) => Ok(Prepared { netns, files, hostname: f.hostname, attached }),
        Err(e) => {
            if attached {
                teardown(store, name);
            }
            Err(e)
        }
    }
}

/// The ports to publish: `-p`, and with `-P` every port the image EXPOSEs not given already.
fn published(opts: &NetOptions, image_config: &serde_json::Value) -> Vec<PortMapping> {
    let mut ports = opts.ports.clone();
    if opts.publish_all {
        for p in exposed_ports(image_config) {
            if !ports.iter().any(|q| q.container_port == p.container_port && q.protocol == p.protocol) {
                ports.push(p);
            }
        }
    }
    ports
}

/// With the host's network, the host's `/etc/hosts` (and `--add-host` lines) and its
/// resolv.conf as it is (its loopback resolvers are reachable), unless `--dns*` say otherwise.
fn host_mode_files(paths: &FilePaths, f: &ContainerFiles) -> Result<()> {
    let write = |path: &Path, text: &str| {
        crate::fsutil::atomic_write(path, 0o644, |w| w.write_all(text.as_bytes())).map_err(io_at(path))?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(io_at(path))
    };
    let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| files::hosts(f));
    if !hosts.ends_with('\n') && !hosts.is_empty() {
        hosts.push('\n');
    }
    for (name, ip) in &f.add_hosts {
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    write(&paths.hosts, &hosts)?;
    if f.dns.is_empty() && f.dns_search.is_empty() && f.dns_options.is_empty() {
        if let Ok(text) = std::fs::read_to_string("/etc/resolv.conf") {
            write(&paths.resolv_conf, &text)?;
        }
    }
    Ok(())
}

/// The files bind-mounted into a container, relative to its root.
pub const MOUNTED_FILES: [&str; 3] = ["etc/hosts", "etc/hostname", "etc/resolv.conf"];

/// Create, as empty files, the mount points of [`MOUNTED_FILES`] that `rootfs` lacks, and record
/// them with the container (a commit leaves them out). Only in a real `/etc` directory: runc
/// makes the mount points itself where the image has something else there (a symlink).
fn placeholders(store: &Store, name: &str, rootfs: &Path) -> Result<()> {
    use rustix::fs::{Mode as FsMode, OFlags};
    let etc_path = rootfs.join("etc");
    let etc = match rustix::fs::open(
        &etc_path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        FsMode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(container = name, error = %e, "no /etc directory for the network files' mount points");
            return Ok(());
        }
    };
    let mut made = Vec::new();
    for rel in MOUNTED_FILES {
        let file = rel.trim_start_matches("etc/");
        match rustix::fs::openat(
            &etc,
            file,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            FsMode::from_raw_mode(0o644),
        ) {
            Ok(_) => made.push(PathBuf::from(rel)),
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(io_at(&etc_path.join(file))(e.into())),
        }
    }
    if !made.is_empty() {
        container::add_placeholders(store, name, &made).map_err(|source| NetSetupError::Container {
            name: name.to_string(),
            source: Box::new(source),
        })?;
    }
    Ok(())
}

/// Put `p` into `spec`: the network namespace (new, joined or the host's), the hostname, and
/// `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` bind-mounted read-write (as docker).
pub fn apply(spec: &mut Spec, p: &Prepared) {
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
    if let Some(path) = &p.netns {
        let mut ns = oci_spec::runtime::LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::Network);
        ns.set_path(path.clone());
        namespaces.push(ns);
    }
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
    spec.set_hostname(Some(p.hostname.clone()));
    let targets = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| !targets.iter().any(|t| m.destination() == Path::new(t)));
    for (dest, src) in targets.iter().zip([&p.files.hosts, &p.files.hostname, &p.files.resolv_conf]) {
        let mut m = Mount::default();
        m.set_destination(PathBuf::from(dest));
        m.set_typ(Some("bind".into()));
        m.set_source(Some(src.clone()));
        m.set_options(Some(vec!["rbind".into(), "rprivate".into(), "rw".into()]));
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
}

/// Once container `name`'s process has ended: release its network (idempotent; a failure is
/// logged, and the attachment left for [`release_leaked`] to give back later) and, while it is
/// still mounted, remove the mount points strata made for its files, so that its tree is again
/// what its image and its own changes make it.
pub fn teardown(store: &Store, name: &str) {
    if let Err(e) = network::slirp::release(store, name) {
        tracing::warn!(container = name, error = %crate::error::report(&e), "slirp4netns not stopped yet");
    }
    if let Err(e) = network::detach(store, name) {
        tracing::warn!(container = name, error = %crate::error::report(&e), "network not released yet");
    }
    if let Ok(Some(at)) = container::mounted_at(store, name) {
        container::clear_placeholders(store, name, &at);
    }
}

/// The container's lock when it neither runs nor is being started (`None` otherwise): held while
/// its leftovers are released, so a `start` (which takes it before its run lock) waits.
fn claim_stopped(store: &Store, name: &str) -> Option<crate::store::LockGuard> {
    let guard = container::lock(store, name).ok()?;
    match container::row(store, name) {
        Ok(Some(_)) => matches!(container::running(store, name), Ok(None)).then_some(guard),
        Ok(None) => Some(guard),
        // Unsure: keep it.
        Err(_) => None,
    }
}

/// Give back what containers that no longer run still hold (after a kill -9 of strata or a
/// reboot); failures are logged.
pub fn release_leaked(store: &Store) {
    match network::release_leaked(store, |n| claim_stopped(store, n)) {
        Ok(r) if r.is_empty() => {}
        Ok(r) => tracing::info!(containers = ?r, "released leaked networks"),
        Err(e) => tracing::warn!(error = %crate::error::report(&e), "releasing leaked networks"),
    }
    match network::slirp::release_leaked(store, |n| claim_stopped(store, n)) {
        Ok(r) if r.is_empty() => {}
        Ok(r) => tracing::info!(containers = ?r, "released leaked slirp4netns networks"),
        Err(e) => tracing::warn!(error = %crate::error::report(&e), "releasing leaked slirp4netns networks"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_as_docker_takes_them() {
        assert_eq!(Mode::parse("bridge").unwrap(), Mode::Network("bridge".into()));
        assert_eq!(Mode::parse("none").unwrap(), Mode::None);
        assert_eq!(Mode::parse("host").unwrap(), Mode::Host);
        assert_eq!(Mode::parse("container:web").unwrap(), Mode::Container("web".into()));
        assert_eq!(Mode::parse("backend").unwrap(), Mode::Network("backend".into()));
        for bad in ["", "container:", "a/b", "-x"] {
            assert!(Mode::parse(bad).is_err(), "{bad}");
        }
        let o = NetOptions { network: Some("none".into()), publish_all: true, ..Default::default() };
        assert!(o.check().is_err());
        assert!(NetOptions { publish_all: true, ..Default::default() }.check().is_ok());
    }

    #[test]
    fn exposed_ports_of_a_config() {
        let c = serde_json::json!({"config": {"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8080": {}, "x/tcp": {}}}});
        let got: Vec<String> =
            exposed_ports(&c).iter().map(|m| format!("{}/{}", m.container_port, m.protocol)).collect();
        assert_eq!(got, ["53/udp", "80/tcp", "8080/tcp"]);
        assert!(exposed_ports(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn apply_sets_namespace_hostname_and_mounts() {
        let files = FilePaths {
            hosts: "/x/hosts".into(),
            hostname: "/x/hostname".into(),
            resolv_conf: "/x/r".into(),
        };
        let p = Prepared { netns: Some(Some("/ns/a".into())), files, hostname: "h".into(), attached: true };
        let mut spec = Spec::default();
        apply(&mut spec, &p);
        apply(&mut spec, &p);
        let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        let net: Vec<_> = ns.iter().filter(|n| n.typ() == LinuxNamespaceType::Network).collect();
        assert_eq!(net.len(), 1);
        assert_eq!(net[0].path().as_deref(), Some(Path::new("/ns/a")));
        assert_eq!(spec.hostname().as_deref(), Some("h"));
        let m = spec.mounts().clone().unwrap();
        assert_eq!(m.iter().filter(|m| m.destination() == Path::new("/etc/hosts")).count(), 1);
        let host = Prepared { netns: None, ..p };
        apply(&mut spec, &host);
        let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
    }
}
