//! A container's network namespace joined to a network and released again.
//!
//! [`attach`] records first, then acts: the record (`<root>/net/attach/NAME.json`: network,
//! configuration list, namespace, published ports) is written before the namespace is made and
//! before CNI ADD, and again with ADD's result after. Whatever a crash interrupts is thus on
//! record, and [`detach`] or [`release_leaked`] gives it back through CNI DEL of the recorded
//! list (host-local's allocation, the veth, portmap's and the masquerade's rules) and removes the
//! namespace. DEL is idempotent: what is already gone is fine.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::cni::{Cni, CniResult, ConfList, Invocation};
use super::ports::{self, PortMapping};
use super::{config, io_at, lock, netns, read_record, NetworkError};
use crate::store::Store;

/// The interface the container sees.
pub const IFNAME: &str = "eth0";

/// A container's attachment, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub container: String,
    pub network: String,
    /// `CNI_CONTAINERID`: `strata-<root tag>-NAME`, unique per root (as the runc id).
    pub cni_id: String,
    /// The namespace file, for the runtime spec's `linux.namespaces` `network` `path`.
    pub netns: PathBuf,
    pub ifname: String,
    pub ports: Vec<PortMapping>,
    pub conflist: ConfList,
    /// CNI ADD's final result, raw (handed back to DEL and CHECK); none until ADD succeeded.
    #[serde(default)]
    pub result: Option<Value>,
}

impl Attachment {
    /// ADD's result, parsed (empty until ADD succeeded).
    pub fn cni_result(&self) -> CniResult {
        self.result.as_ref().and_then(|r| serde_json::from_value(r.clone()).ok()).unwrap_or_default()
    }

    /// The container's IPv4 address on the network.
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.cni_result().container_ipv4()
    }

    /// The CNI invocation for this attachment in namespace `netns`, with capability arguments
    /// `runtime_config` (from [`Self::runtime_config`]).
    fn invocation<'a>(
        &'a self,
        netns: Option<&'a Path>,
        runtime_config: &'a Map<String, Value>,
    ) -> Invocation<'a> {
        Invocation { container_id: &self.cni_id, netns, ifname: &self.ifname, args: "", runtime_config }
    }

    fn runtime_config(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if !self.ports.is_empty() {
            m.insert("portMappings".into(), serde_json::to_value(&self.ports).unwrap_or_default());
        }
        m
    }
}

fn attach_dir(store: &Store) -> PathBuf {
    store.root().join("net/attach")
}

fn record_path(store: &Store, container: &str) -> PathBuf {
    attach_dir(store).join(format!("{container}.json"))
}

fn netns_dir(store: &Store) -> PathBuf {
    store.root().join("net/netns")
}

/// Where container `name`'s namespace is pinned.
pub fn netns_path(store: &Store, container: &str) -> PathBuf {
    netns_dir(store).join(container)
}

fn save(store: &Store, a: &Attachment) -> Result<(), NetworkError> {
    let dir = attach_dir(store);
    fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let path = record_path(store, &a.container);
    let body = serde_json::to_vec_pretty(a)
        .map_err(|source| NetworkError::BadRecord { path: path.clone(), source })?;
    crate::fsutil::atomic_write(&path, 0o600, |w| w.write_all(&body).map_err(io_at(&path)))
}

fn unrecord(store: &Store, container: &str) -> Result<(), NetworkError> {
    let path = record_path(store, container);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(&path)(e)),
        _ => Ok(()),
    }
}

/// Container `name`'s attachment, if it has one.
pub fn attachment(store: &Store, container: &str) -> Result<Option<Attachment>, NetworkError> {
    check_container_name(container)?;
    read_record(record_path(store, container))
}

/// Every recorded attachment, by container name.
pub fn attachments(store: &Store) -> Result<Vec<Attachment>, NetworkError> {
    let dir = attach_dir(store);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at(&dir)(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(io_at(&dir))?;
        let file = e.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".json")) else { continue };
        if check_container_name(name).is_err() {
            continue;
        }
        match attachment(store, name) {
            Ok(Some(a)) => out.push(a),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %crate::error::report(&e), "skipping an unreadable attachment record")
            }
        }
    }
    out.sort_by(|a, b| a.container.cmp(&b.container));
    Ok(out)
}

/// The ports containers of this root publish, by container (for [`ports::check_free`]).
pub fn published_ports(store: &Store) -> Result<Vec<(String, Vec<PortMapping>)>, NetworkError> {
    Ok(attachments(store)?
        .into_iter()
        .filter(|a| !a.ports.is_empty())
        .map(|a| (a.container, a.ports))
        .collect())
}

/// The other containers on `network` and their addresses (for `/etc/hosts`: peers on one user
/// network reach each other by name).
pub fn peers(store: &Store, network: &str, except: &str) -> Result<Vec<(String, IpAddr)>, NetworkError> {
    Ok(attachments(store)?
        .into_iter()
        .filter(|a| a.network == network && a.container != except)
        .filter_map(|a| Some((a.container.clone(), IpAddr::V4(a.address()?))))
        .collect())
}

fn check_container_name(name: &str) -> Result<(), NetworkError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(NetworkError::BadName { name: name.to_string() })
    }
}

fn cni_err(a: &Attachment) -> impl FnOnce(super::cni::CniError) -> NetworkError + '_ {
    move |source| NetworkError::Cni {
        container: a.container.clone(),
        network: a.network.clone(),
        source: Box::new(source),
    }
}

/// Join container `container` (a new namespace, pinned at [`netns_path`]) to `network` (the
/// default one is created at first use), publishing `ports` (host port 0: any free one). The
/// container must not be attached already. On failure everything done so far is undone.
pub fn attach(
    store: &Store,
    container: &str,
    network: &str,
    ports: &[PortMapping],
) -> Result<Attachment, NetworkError> {
    check_container_name(container)?;
    let cni = Cni::from_env();
    // Held to the end: a detach deleting an idle bridge must not run between the bridge plugin
    // making (or finding) the bridge and plugging this container's veth into it.
    let _g = lock(store)?;
    let mut a = {
        if let Some(old) = attachment(store, container)? {
            return Err(NetworkError::AlreadyAttached { container: container.into(), network: old.network });
        }
        let net = config::get_or_default_locked(store, network)?;
        let mut ports = ports.to_vec();
        ports::assign_host_ports(&mut ports)?;
        ports::check_free(&ports, &published_ports(store)?)?;
        let publishes = !ports.is_empty();
        let a = Attachment {
            container: container.to_string(),
            network: net.name.clone(),
            cni_id: format!("strata-{}-{container}", config::root_tag(store)),
            netns: netns_path(store, container),
            ifname: IFNAME.to_string(),
            ports,
            conflist: config::conflist(store, &net, config::forwarding_filtered(), publishes),
            result: None,
        };
        // On record before anything exists, so that a crash from here on leaks nothing.
        save(store, &a)?;
        a
    };
    let made = (|| {
        let dir = netns_dir(store);
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        // The namespace comes with `lo` up (the bridge plugin leaves it down).
        netns::create(&a.netns).map_err(|source| NetworkError::Netns { path: a.netns.clone(), source })?;
        let rc = a.runtime_config();
        let inv = a.invocation(Some(&a.netns), &rc);
        let (raw, _) = cni.add(&a.conflist, &inv).map_err(cni_err(&a))?;
        Ok::<_, NetworkError>(raw)
    })();
    match made {
        Ok(raw) => {
            a.result = Some(raw);
            save(store, &a)?;
            tracing::info!(container, network = %a.network, address = ?a.address(), "attached");
            Ok(a)
        }
        Err(e) => {
            if let Err(undo) = release(&cni, store, &a) {
                tracing::warn!(container, error = %crate::error::report(&undo), "undoing a failed attach");
            }
            drop_idle_bridge(&a);
            Err(e)
        }
    }
}

/// CHECK container `container`'s attachment with the plugins (the interface, address and rules
/// are still as ADD made them).
pub fn check(store: &Store, container: &str) -> Result<(), NetworkError> {
    let a = attachment(store, container)?
        .ok_or_else(|| NetworkError::NotFound { name: format!("attachment of {container}") })?;
    let Some(result) = &a.result else {
        return Err(NetworkError::NotFound {
            name: format!("attachment of {container} (ADD did not finish)"),
        });
    };
    let rc = a.runtime_config();
    let inv = a.invocation(Some(&a.netns), &rc);
    Cni::from_env().check(&a.conflist, &inv, result).map_err(cni_err(&a))
}

/// DEL from every plugin of the recorded list, then remove the namespace and the record.
fn release(cni: &Cni, store: &Store, a: &Attachment) -> Result<(), NetworkError> {
    // A namespace file that is no mount any more names nothing. The bridge plugin finds the
    // addresses whose masquerade rules it removes on the container's interface, so a stand-in
    // namespace gets that interface back with the recorded addresses; failing that, DEL without
    // a namespace still releases the IPAM allocation and portmap's rules.
    let ns = if netns::is_netns(&a.netns) {
        Some(a.netns.as_path())
    } else {
        match stand_in(a) {
            Ok(true) => Some(a.netns.as_path()),
            Ok(false) => None,
            Err(e) => {
                tracing::warn!(container = %a.container, error = %e, "no stand-in namespace for DEL");
                None
            }
        }
    };
    let rc = a.runtime_config();
    let inv = a.invocation(ns, &rc);
    cni.del(&a.conflist, &inv, a.result.as_ref()).map_err(cni_err(a))?;
    netns::remove(&a.netns).map_err(|source| NetworkError::Netns { path: a.netns.clone(), source })?;
    unrecord(store, &a.container)
}

/// Recreate a gone namespace at `a.netns` holding an interface `a.ifname` with the addresses ADD gave
/// the container; false when there are none to give back (ADD never finished).
fn stand_in(a: &Attachment) -> io::Result<bool> {
    let r = a.cni_result();
    let addrs: Vec<&str> = r
        .ips
        .iter()
        .filter(|i| i.interface.and_then(|n| r.interfaces.get(n)).is_none_or(|itf| itf.sandbox.is_some()))
        .map(|i| i.address.as_str())
        .collect();
    if addrs.is_empty() {
        return Ok(false);
    }
    netns::remove(&a.netns)?;
    netns::create(&a.netns)?;
    let ip = |args: &[&str]| -> io::Result<()> {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", a.netns.display()))
            .arg("ip")
            .args(args)
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    };
    // A veth pair inside the namespace: the `dummy` driver is not in every kernel, veth is
    // (the bridge plugin needs it); deleting one end deletes both.
    ip(&["link", "add", &a.ifname, "type", "veth", "peer", "name", "strata-standin"])?;
    for addr in addrs {
        ip(&["addr", "add", addr, "dev", &a.ifname])?;
    }
    Ok(true)
}

/// Release container `container`'s network: CNI DEL of the recorded list (reverse order), the
/// namespace unmounted and removed, the record removed. `Ok(false)` when it had none (a stray
/// namespace file is removed all the same). A failed DEL keeps the record for a later attempt.
pub fn detach(store: &Store, container: &str) -> Result<bool, NetworkError> {
    let Some(a) = attachment(store, container)? else {
        let ns = netns_path(store, container);
        netns::remove(&ns).map_err(|source| NetworkError::Netns { path: ns, source })?;
        return Ok(false);
    };
    release(&Cni::from_env(), store, &a)?;
    tracing::info!(container, network = %a.network, "detached");
    let _g = lock(store)?;
    drop_idle_bridge(&a);
    Ok(true)
}

/// Delete the attachment's bridge once no container is plugged into it any more, as netavark
/// does: the bridge plugin never deletes one, so every state root (each has bridges of its own)
/// would otherwise leave its bridges and their routes behind for good. The next attach makes it
/// again. Call with the networks' lock held.
fn drop_idle_bridge(a: &Attachment) {
    let Some(bridge) = a.conflist.plugins.first().and_then(|p| p.get("bridge")).and_then(|b| b.as_str())
    else {
        return;
    };
    let ports = std::path::Path::new("/sys/class/net").join(bridge).join("brif");
    if fs::read_dir(&ports).is_ok_and(|mut entries| entries.next().is_none()) {
        config::delete_bridge(bridge);
    }
}

/// Detach every container that is gone or stopped, and remove namespace files no record
/// explains: what a kill -9 of strata or a reboot left. `claim(name)` decides: `None` for a
/// live container (running, or being started: its attachment may be half made), or a guard
/// that keeps it from starting until its leftovers are released (the guard is held across the
/// release, so a start cannot attach in between and lose its fresh attachment). Returns the
/// containers released; a failure is logged and the rest still released.
pub fn release_leaked<G>(
    store: &Store,
    claim: impl Fn(&str) -> Option<G>,
) -> Result<Vec<String>, NetworkError> {
    let mut released = Vec::new();
    for a in attachments(store)? {
        let Some(_claimed) = claim(&a.container) else { continue };
        // Read again under the claim: a start may have replaced it before the claim was made.
        let a = match attachment(store, &a.container) {
            Ok(Some(a)) => a,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(container = %a.container, error = %crate::error::report(&e), "leaked attachment stays");
                continue;
            }
        };
        match release(&Cni::from_env(), store, &a) {
            Ok(()) => {
                tracing::info!(container = %a.container, network = %a.network, "released a leaked attachment");
                if let Ok(_g) = lock(store) {
                    drop_idle_bridge(&a);
                }
                released.push(a.container);
            }
            Err(e) => {
                tracing::warn!(container = %a.container, error = %crate::error::report(&e), "leaked attachment stays")
            }
        }
    }
    let dir = netns_dir(store);
    for ns in netns::list(&dir).map_err(io_at(&dir))? {
        let Some(name) = ns.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        let Some(_claimed) = claim(&name) else { continue };
        if record_path(store, &name).exists() {
            continue;
        }
        if let Err(e) = netns::remove(&ns) {
            tracing::warn!(path = %ns.display(), error = %e, "stray network namespace stays");
        }
    }
    Ok(released)
}
