//! Networks: a name, a bridge, a subnet and its gateway, stored as `<root>/networks/NAME.json`
//! (edit the file or `network create --subnet` to change a subnet), and the CNI configuration
//! list generated from one.
//!
//! Two state roots never share a bridge or an address range: bridge names carry a hash of the
//! root's canonical path (`strata` + 8 hex digits, within IFNAMSIZ), the IPAM store lives under
//! the root, and a subnet is chosen at first use among 10.89.N.0/24 so that it overlaps no route
//! of the host (`/proc/net/route`: the bridges of other roots and of other tools in use are
//! there) and no other network of this root. The candidates are tried from a point that depends
//! on the root, so that two roots choosing at the same moment rarely pick the same one.

use std::fmt;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::cni::{ConfList, CNI_VERSION};
use super::NetworkError;
use crate::store::Store;

/// The network a container joins when none is named, as docker shows it.
pub const DEFAULT_NETWORK: &str = "bridge";

/// An IPv4 network in CIDR notation, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Net> {
        let net = Ipv4Net { addr, prefix };
        (prefix <= 32 && u32::from(addr) & !net.mask() == 0).then_some(net)
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The `n`th address of the network (1 is the first host).
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.addr) + n))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Ipv4Net, String> {
        let (a, p) = s.split_once('/').ok_or("not in CIDR notation (A.B.C.D/N)")?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 =
            p.parse().ok().filter(|p| *p <= 32).ok_or(format!("{p:?} is not a prefix length 0-32"))?;
        Ipv4Net::new(addr, prefix).ok_or_else(|| {
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            format!("host bits are set (the network is {}/{prefix})", Ipv4Addr::from(u32::from(addr) & m))
        })
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = String;
    fn try_from(s: String) -> Result<Ipv4Net, String> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

/// One network as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    /// The Linux bridge the containers' veths join.
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// A route of the host, as `/proc/net/route` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    pub iface: String,
    pub dst: Ipv4Net,
}

impl fmt::Display for HostRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dev {}", self.dst, self.iface)
    }
}

/// The routes of `/proc/net/route` text (addresses in hex, in the kernel's byte order), default
/// routes left out (they overlap everything and forbid nothing).
pub fn parse_routes(text: &str) -> Vec<HostRoute> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(|v| Ipv4Addr::from(v.to_ne_bytes()));
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (iface, dst, mask) = (f.first()?, hex(f.get(1)?)?, hex(f.get(7)?)?);
            let prefix = u32::from(mask).leading_ones() as u8;
            let dst = Ipv4Net::new(dst, prefix)?;
            (prefix > 0).then(|| HostRoute { iface: iface.to_string(), dst })
        })
        .collect()
}

/// The host's routes now (none if `/proc/net/route` cannot be read).
pub fn host_routes() -> Vec<HostRoute> {
    fs::read_to_string("/proc/net/route").map(|t| parse_routes(&t)).unwrap_or_default()
}

/// What a candidate subnet must not overlap: the host's routes and this root's other networks.
#[derive(Debug, Clone, Default)]
pub struct Taken {
    pub routes: Vec<HostRoute>,
    pub networks: Vec<Network>,
}

impl Taken {
    /// What `subnet` overlaps, said for a person (`route 10.89.0.0/16 dev eth0`).
    pub fn clash(&self, subnet: &Ipv4Net) -> Option<String> {
        if let Some(r) = self.routes.iter().find(|r| r.dst.overlaps(subnet)) {
            return Some(format!("the host's route {r}"));
        }
        let n = self.networks.iter().find(|n| n.subnet.overlaps(subnet))?;
        Some(format!("network {}'s subnet {}", n.name, n.subnet))
    }
}

/// The first 10.89.N.0/24 from `start` on (wrapping) that overlaps nothing in `taken`.
pub fn choose_subnet(taken: &Taken, start: u8) -> Option<Ipv4Net> {
    (0..=255u8).map(|i| start.wrapping_add(i)).find_map(|n| {
        let c = Ipv4Net::new(Ipv4Addr::new(10, 89, n, 0), 24)?;
        taken.clash(&c).is_none().then_some(c)
    })
}

/// 8 hex digits of the SHA-256 of `bytes`.
fn hash8(bytes: &[u8]) -> String {
    let d = <sha2::Sha256 as sha2::Digest>::digest(bytes);
    hex::encode(&d[..4])
}

/// The canonical path of the root, as bytes.
fn root_bytes(store: &Store) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let root = fs::canonicalize(store.root()).unwrap_or_else(|_| store.root().to_path_buf());
    root.as_os_str().as_bytes().to_vec()
}

/// What tells this root's names from another root's: 8 hex digits of the SHA-256 of its
/// canonical path (the same tag as the runc ids').
pub fn root_tag(store: &Store) -> String {
    hash8(&root_bytes(store))
}

/// The bridge of network `name` in this root: `strata<root tag>` for the default network,
/// `strata<8 hex of root and name>` for the others; 14 characters, within IFNAMSIZ.
pub fn bridge_name(store: &Store, name: &str) -> String {
    if name == DEFAULT_NETWORK {
        return format!("strata{}", root_tag(store));
    }
    let mut b = root_bytes(store);
    b.push(0);
    b.extend_from_slice(name.as_bytes());
    format!("strata{}", hash8(&b))
}

/// Network names as docker takes them: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64 characters.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

pub fn networks_dir(store: &Store) -> PathBuf {
    store.root().join("networks")
}

fn network_file(store: &Store, name: &str) -> PathBuf {
    networks_dir(store).join(format!("{name}.json"))
}

/// host-local's data directory: allocations per network under this root.
pub fn ipam_dir(store: &Store) -> PathBuf {
    store.root().join("net/ipam")
}

fn check_name(name: &str) -> Result<(), NetworkError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(NetworkError::BadName { name: name.to_string() })
    }
}

/// The stored network `name`, if there is one.
pub fn load(store: &Store, name: &str) -> Result<Option<Network>, NetworkError> {
    check_name(name)?;
    let path = network_file(store, name);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(NetworkError::Io { path, source }),
    };
    let net: Network = serde_json::from_slice(&text)
        .map_err(|source| NetworkError::BadRecord { path: path.clone(), source })?;
    if net.name != name || !net.subnet.contains(net.gateway) || net.bridge.is_empty() || net.bridge.len() > 15
    {
        return Err(NetworkError::BadNetworkFile {
            path,
            reason: "name, bridge (1-15 characters) or gateway (inside the subnet) is wrong".into(),
        });
    }
    Ok(Some(net))
}

/// Every stored network, by name.
pub fn list(store: &Store) -> Result<Vec<Network>, NetworkError> {
    let dir = networks_dir(store);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(NetworkError::Io { path: dir, source }),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|source| NetworkError::Io { path: dir.clone(), source })?;
        let file = e.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".json")) else { continue };
        if !valid_name(name) {
            continue;
        }
        if let Some(n) = load(store, name)? {
            out.push(n);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn ensure_dir(path: &Path) -> Result<(), NetworkError> {
    fs::create_dir_all(path).map_err(|source| NetworkError::Io { path: path.to_path_buf(), source })
}

fn save(store: &Store, net: &Network) -> Result<(), NetworkError> {
    ensure_dir(&networks_dir(store))?;
    let body = serde_json::to_vec_pretty(net)
        .map_err(|source| NetworkError::BadRecord { path: network_file(store, &net.name), source })?;
    crate::fsutil::atomic_write(&network_file(store, &net.name), 0o600, |w| {
        w.write_all(&body)
            .map_err(|source| NetworkError::Io { path: network_file(store, &net.name), source })?;
        w.write_all(b"\n").map_err(|source| NetworkError::Io { path: network_file(store, &net.name), source })
    })
}

/// Create network `name` on `subnet`, or on a free 10.89.N.0/24. Call with the networks lock
/// held ([`super::lock`]). A subnet that overlaps a route of the host or another network of
/// this root is refused, naming it.
pub fn create_locked(store: &Store, name: &str, subnet: Option<Ipv4Net>) -> Result<Network, NetworkError> {
    check_name(name)?;
    if load(store, name)?.is_some() {
        return Err(NetworkError::Exists { name: name.to_string() });
    }
    let taken = Taken { routes: host_routes(), networks: list(store)? };
    let subnet = match subnet {
        Some(s) => {
            if s.prefix() > 30 {
                return Err(NetworkError::BadSubnet {
                    subnet: s.to_string(),
                    reason: "has no room for hosts (/30 at most)".into(),
                });
            }
            if let Some(c) = taken.clash(&s) {
                return Err(NetworkError::SubnetClash { subnet: s.to_string(), with: c });
            }
            s
        }
        None => {
            let start = u8::from_str_radix(&root_tag(store)[..2], 16).unwrap_or(0);
            choose_subnet(&taken, start).ok_or(NetworkError::NoFreeSubnet)?
        }
    };
    let gateway = subnet
        .nth(1)
        .ok_or_else(|| NetworkError::BadSubnet { subnet: subnet.to_string(), reason: "too small".into() })?;
    let net = Network { name: name.to_string(), bridge: bridge_name(store, name), subnet, gateway };
    save(store, &net)?;
    tracing::info!(network = name, subnet = %net.subnet, bridge = %net.bridge, "network created");
    Ok(net)
}

/// The network `name`; the default network is created at its first use.
pub fn get_or_default_locked(store: &Store, name: &str) -> Result<Network, NetworkError> {
    match load(store, name)? {
        Some(n) => Ok(n),
        None if name == DEFAULT_NETWORK => create_locked(store, name, None),
        None => Err(NetworkError::NotFound { name: name.to_string() }),
    }
}

/// Remove network `name`'s file, its IPAM directory and its bridge. Call with the networks lock
/// held, after checking that no container is attached.
pub fn remove_locked(store: &Store, name: &str) -> Result<Network, NetworkError> {
    let net = load(store, name)?.ok_or_else(|| NetworkError::NotFound { name: name.to_string() })?;
    let path = network_file(store, name);
    fs::remove_file(&path).map_err(|source| NetworkError::Io { path, source })?;
    let ipam = ipam_dir(store).join(name);
    if let Err(e) = crate::fsutil::remove_tree(&ipam) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %ipam.display(), error = %e, "network's IPAM directory stays");
        }
    }
    delete_bridge(&net.bridge);
    Ok(net)
}

/// Delete a bridge the bridge plugin made (CNI never deletes it); best effort.
pub fn delete_bridge(bridge: &str) {
    if !Path::new("/sys/class/net").join(bridge).exists() {
        return;
    }
    match std::process::Command::new("ip").args(["link", "del", bridge]).output() {
        Ok(o) if o.status.success() => tracing::info!(bridge, "bridge deleted"),
        Ok(o) => tracing::warn!(bridge, stderr = %String::from_utf8_lossy(&o.stderr).trim(), "bridge stays"),
        Err(e) => tracing::warn!(bridge, error = %e, "bridge stays: cannot run ip"),
    }
}

/// Whether forwarded traffic needs the `firewall` plugin's accept rules: the FORWARD chain's
/// policy drops, or it has a DROP or REJECT rule (docker installs both). `iptables` missing or
/// failing: assume yes, the plugin says what is wrong.
pub fn forwarding_filtered() -> bool {
    let out = std::process::Command::new("iptables")
        .args(["-w", "-S", "FORWARD"])
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output();
    match out {
        Ok(o) if o.status.success() => forward_rules_filter(&String::from_utf8_lossy(&o.stdout)),
        _ => true,
    }
}

/// [`forwarding_filtered`] on `iptables -S FORWARD` output.
pub fn forward_rules_filter(rules: &str) -> bool {
    rules.lines().any(|l| {
        let l = l.trim();
        (l.starts_with("-P FORWARD") && !l.ends_with("ACCEPT"))
            || l.ends_with("-j DROP")
            || l.ends_with("-j REJECT")
    })
}

/// The configuration list for `net`: `bridge` (gateway, masquerade, hairpin) with `host-local`
/// IPAM under this root, `portmap` when the container publishes ports (without any, its ADD and
/// DEL would only cost time: they run iptables for chains it never fills), and `firewall` when
/// `firewall` is set. Each attachment records its own list, so DEL runs what ADD ran.
pub fn conflist(store: &Store, net: &Network, firewall: bool, ports: bool) -> ConfList {
    let mut plugins = vec![json!({
        "type": "bridge",
        "bridge": net.bridge,
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": net.subnet.to_string(), "gateway": net.gateway.to_string()}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": ipam_dir(store).to_string_lossy(),
        }
    })];
    if ports {
        plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
    }
    if firewall {
        plugins.push(json!({"type": "firewall", "backend": "iptables"}));
    }
    ConfList { cni_version: CNI_VERSION.to_string(), name: net.name.clone(), plugins }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        let n: Ipv4Net = "10.89.3.0/24".parse().unwrap();
        assert_eq!(n.to_string(), "10.89.3.0/24");
        assert!(n.contains("10.89.3.200".parse().unwrap()));
        assert!(!n.contains("10.89.4.1".parse().unwrap()));
        assert_eq!(n.nth(1), Some("10.89.3.1".parse().unwrap()));
        assert_eq!(n.nth(256), None);
        let e = "10.89.3.1/24".parse::<Ipv4Net>().unwrap_err();
        assert!(e.contains("10.89.3.0/24"), "{e}");
        for bad in ["10.0.0.0", "10.0.0/8", "10.0.0.0/33", "x/8"] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
        let wide: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        assert!(wide.overlaps(&n) && n.overlaps(&wide));
        assert!(!n.overlaps(&"10.89.4.0/24".parse().unwrap()));
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, "\"10.89.3.0/24\"");
        assert_eq!(serde_json::from_str::<Ipv4Net>(&json).unwrap(), n);
        assert!(serde_json::from_str::<Ipv4Net>("\"10.89.3.1/24\"").is_err());
    }

    const ROUTES: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
br9\t0000590A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";

    #[test]
    fn routes_parse_and_skip_the_default() {
        let r = parse_routes(ROUTES);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].dst.to_string(), "192.0.2.0/24");
        assert_eq!(r[1].to_string(), "10.89.0.0/16 dev br9");
    }

    #[test]
    fn subnet_choice_avoids_routes_and_networks() {
        let mut taken = Taken { routes: parse_routes(ROUTES), networks: vec![] };
        // 10.89.0.0/16 is routed: nothing in 10.89.N.0/24 is free.
        assert_eq!(choose_subnet(&taken, 0), None);
        taken.routes.pop();
        assert_eq!(choose_subnet(&taken, 7).unwrap().to_string(), "10.89.7.0/24");
        taken.networks.push(Network {
            name: "a".into(),
            bridge: "b".into(),
            subnet: "10.89.7.0/24".parse().unwrap(),
            gateway: "10.89.7.1".parse().unwrap(),
        });
        assert_eq!(choose_subnet(&taken, 7).unwrap().to_string(), "10.89.8.0/24");
        assert_eq!(choose_subnet(&taken, 255).unwrap().to_string(), "10.89.255.0/24");
        let clash = taken.clash(&"10.89.7.128/25".parse().unwrap()).unwrap();
        assert_eq!(clash, "network a's subnet 10.89.7.0/24");
        taken.routes = parse_routes(ROUTES);
        let clash = taken.clash(&"10.0.0.0/8".parse().unwrap()).unwrap();
        assert_eq!(clash, "the host's route 10.89.0.0/16 dev br9");
    }

    #[test]
    fn names_and_forward_rules() {
        assert!(valid_name("bridge") && valid_name("my-net.1_x"));
        assert!(!valid_name("") && !valid_name("-x") && !valid_name("a/b") && !valid_name("../x"));
        assert!(!forward_rules_filter("-P FORWARD ACCEPT\n"));
        assert!(forward_rules_filter("-P FORWARD DROP\n"));
        assert!(forward_rules_filter("-P FORWARD ACCEPT\n-A FORWARD -i x -j DROP\n"));
    }
}
