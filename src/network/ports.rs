//! Published ports: docker's `-p [IP:][HOST:]CTR[/tcp|udp]` (each port may be a range `A-B`),
//! as the `portMappings` the portmap plugin takes, and the check that a host port is free,
//! whose error names who holds it (a container of this root by its recorded ports, or a process
//! found through `/proc/net/{tcp,udp}[6]` and the `/proc/PID/fd` links to its socket).

use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One published port, in the shape of CNI's `portMappings` capability. `host_port` 0 means any
/// free port (chosen by [`assign_host_ports`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    pub protocol: Proto,
}

impl fmt::Display for PortMapping {
    /// As `docker port` prints it: `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        write!(f, "{}/{} -> {}:{}", self.container_port, self.protocol, ip, self.host_port)
    }
}

impl PortMapping {
    /// Whether the two would take the same host port.
    pub fn clashes(&self, other: &PortMapping) -> bool {
        let ips = match (self.host_ip, other.host_ip) {
            (Some(a), Some(b)) => a == b || a.is_unspecified() || b.is_unspecified(),
            _ => true,
        };
        ips && self.protocol == other.protocol && self.host_port == other.host_port && self.host_port != 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("-p {spec:?}: {reason} (the form is [IP:][HOST:]CONTAINER[/tcp|udp], ports or ranges A-B)")]
    Invalid { spec: String, reason: String },
    #[error("port {}:{port}/{proto} is already in use{}", host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), holder.as_ref().map(|h| format!(" by {h}")).unwrap_or_default())]
    InUse { host_ip: Option<Ipv4Addr>, port: u16, proto: Proto, holder: Option<String> },
    #[error("finding a free host port")]
    NoFreePort(#[source] std::io::Error),
}

impl PortError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PortError::Invalid { .. } => ErrorKind::InvalidArgument,
            PortError::InUse { .. } => ErrorKind::FailedPrecondition,
            PortError::NoFreePort(_) => ErrorKind::Internal,
        }
    }
}

fn invalid(spec: &str, reason: impl Into<String>) -> PortError {
    PortError::Invalid { spec: spec.to_string(), reason: reason.into() }
}

/// `A` or `A-B` (inclusive, A <= B); ports 1-65535.
fn parse_range(spec: &str, s: &str) -> Result<(u16, u16), PortError> {
    let port = |p: &str| -> Result<u16, PortError> {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid(spec, format!("{p:?} is not a port (1-65535)")))
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(invalid(spec, format!("range {s} ends before it starts")));
            }
            Ok((a, b))
        }
        None => port(s).map(|p| (p, p)),
    }
}

/// Parse one `-p` value into its mappings (one per port of a range).
pub fn parse_publish(spec: &str) -> Result<Vec<PortMapping>, PortError> {
    let (ports, protocol) = match spec.rsplit_once('/') {
        Some((p, "tcp")) => (p, Proto::Tcp),
        Some((p, "udp")) => (p, Proto::Udp),
        Some((_, other)) => return Err(invalid(spec, format!("protocol {other:?} is neither tcp nor udp"))),
        None => (spec, Proto::Tcp),
    };
    if ports.starts_with('[') {
        return Err(invalid(spec, "IPv6 host addresses are not supported"));
    }
    let parts: Vec<&str> = ports.split(':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [ctr] => (None, None, *ctr),
        [host, ctr] => (None, Some(*host), *ctr),
        [ip, host, ctr] => (Some(*ip), Some(*host).filter(|h| !h.is_empty()), *ctr),
        _ => return Err(invalid(spec, "too many ':'")),
    };
    let host_ip = match ip {
        Some(ip) => Some(
            ip.parse::<Ipv4Addr>().map_err(|_| invalid(spec, format!("{ip:?} is not an IPv4 address")))?,
        ),
        None => None,
    };
    let (c0, c1) = parse_range(spec, ctr)?;
    let host = host.map(|h| parse_range(spec, h)).transpose()?;
    if let Some((h0, h1)) = host {
        if h1 - h0 != c1 - c0 {
            return Err(invalid(spec, "the host and container ranges differ in length"));
        }
    }
    Ok((c0..=c1)
        .enumerate()
        .map(|(i, container_port)| PortMapping {
            host_ip,
            host_port: host.map_or(0, |(h0, _)| h0 + i as u16),
            container_port,
            protocol,
        })
        .collect())
}

/// Give every mapping without a host port (`-p CTR`, `-P`) a free one, as docker does (the
/// kernel's choice of an ephemeral port).
pub fn assign_host_ports(mappings: &mut [PortMapping]) -> Result<(), PortError> {
    for m in mappings.iter_mut().filter(|m| m.host_port == 0) {
        let addr = SocketAddrV4::new(m.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), 0);
        let port = match m.protocol {
            Proto::Tcp => TcpListener::bind(addr).and_then(|l| l.local_addr()),
            Proto::Udp => UdpSocket::bind(addr).and_then(|l| l.local_addr()),
        };
        m.host_port = port.map_err(PortError::NoFreePort)?.port();
    }
    Ok(())
}

/// Check that every mapping's host port is free: not published by a container of this root
/// (`published`: container name and its mappings) and not bound by anyone (tried by binding
/// it). The error names the port and, when it can be found, its holder.
pub fn check_free(
    mappings: &[PortMapping],
    published: &[(String, Vec<PortMapping>)],
) -> Result<(), PortError> {
    for m in mappings {
        let in_use =
            |holder| PortError::InUse { host_ip: m.host_ip, port: m.host_port, proto: m.protocol, holder };
        if let Some((name, _)) = published.iter().find(|(_, ps)| ps.iter().any(|p| p.clashes(m))) {
            return Err(in_use(Some(format!("container {name}"))));
        }
        let addr = SocketAddrV4::new(m.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), m.host_port);
        let bound = match m.protocol {
            Proto::Tcp => TcpListener::bind(addr).map(drop),
            Proto::Udp => UdpSocket::bind(addr).map(drop),
        };
        match bound {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(in_use(holder_process(m.host_port, m.protocol)))
            }
            // Another failure (an address not on this host): portmap will say what it is.
            Err(e) => tracing::debug!(port = m.host_port, error = %e, "port check inconclusive"),
        }
    }
    Ok(())
}

/// The inode of a socket bound to local `port` in `/proc/net/{tcp,udp}[6]` text (listening, for
/// TCP).
pub fn socket_inode(table: &str, port: u16, proto: Proto) -> Option<u64> {
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
        let state = *f.get(3)?;
        let listening = match proto {
            Proto::Tcp => state == "0A",
            Proto::Udp => true,
        };
        (local_port == port && listening).then(|| f.get(9)?.parse().ok()).flatten().filter(|i| *i != 0)
    })
}

/// `process PID (COMM)` holding local `port`, if `/proc` shows one.
pub fn holder_process(port: u16, proto: Proto) -> Option<String> {
    let tables = match proto {
        Proto::Tcp => ["/proc/net/tcp", "/proc/net/tcp6"],
        Proto::Udp => ["/proc/net/udp", "/proc/net/udp6"],
    };
    let inode = tables.iter().find_map(|t| socket_inode(&fs::read_to_string(t).ok()?, port, proto))?;
    let want = format!("socket:[{inode}]");
    for p in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else { continue };
        let holds =
            fds.flatten().any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()));
        if holds {
            let comm = fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            return Some(format!("process {pid} ({})", comm.trim()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ip: Option<&str>, host: u16, ctr: u16, protocol: Proto) -> PortMapping {
        PortMapping {
            host_ip: ip.map(|i| i.parse().unwrap()),
            host_port: host,
            container_port: ctr,
            protocol,
        }
    }

    #[test]
    fn publish_forms() {
        assert_eq!(parse_publish("80").unwrap(), vec![m(None, 0, 80, Proto::Tcp)]);
        assert_eq!(parse_publish("8080:80").unwrap(), vec![m(None, 8080, 80, Proto::Tcp)]);
        assert_eq!(parse_publish("8080:80/udp").unwrap(), vec![m(None, 8080, 80, Proto::Udp)]);
        assert_eq!(
            parse_publish("127.0.0.1:8080:80/tcp").unwrap(),
            vec![m(Some("127.0.0.1"), 8080, 80, Proto::Tcp)]
        );
        assert_eq!(parse_publish("127.0.0.1::80").unwrap(), vec![m(Some("127.0.0.1"), 0, 80, Proto::Tcp)]);
        assert_eq!(
            parse_publish("9000-9001:80-81").unwrap(),
            vec![m(None, 9000, 80, Proto::Tcp), m(None, 9001, 81, Proto::Tcp)]
        );
        assert_eq!(parse_publish("53-54/udp").unwrap().len(), 2);
        assert_eq!(m(None, 8080, 80, Proto::Tcp).to_string(), "80/tcp -> 0.0.0.0:8080");
    }

    #[test]
    fn publish_errors_say_why() {
        for (bad, why) in [
            ("", "not a port"),
            ("0", "not a port"),
            ("70000:80", "not a port"),
            ("80/sctp", "protocol"),
            ("9000-9002:80-81", "differ in length"),
            ("81-80", "ends before"),
            ("a.b:1:2", "IPv4"),
            ("1:2:3:4", "too many"),
            ("[::1]:80:80", "IPv6"),
        ] {
            let e = parse_publish(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn clashes() {
        let a = m(None, 8080, 80, Proto::Tcp);
        assert!(a.clashes(&m(Some("127.0.0.1"), 8080, 81, Proto::Tcp)));
        assert!(!a.clashes(&m(None, 8080, 80, Proto::Udp)));
        assert!(!m(Some("127.0.0.1"), 8080, 80, Proto::Tcp).clashes(&m(
            Some("127.0.0.2"),
            8080,
            80,
            Proto::Tcp
        )));
    }

    #[test]
    fn socket_inode_reads_proc_net_tcp() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0\n\
   1: 0100007F:1F91 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0\n";
        assert_eq!(socket_inode(t, 8080, Proto::Tcp), Some(12345));
        assert_eq!(socket_inode(t, 8081, Proto::Tcp), None, "established, not listening");
        assert_eq!(socket_inode(t, 8081, Proto::Udp), Some(777));
    }

    /// A port this test holds: the error names it and this process.
    #[test]
    fn busy_port_names_port_and_holder() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let e = check_free(&[m(Some("127.0.0.1"), port, 80, Proto::Tcp)], &[]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("127.0.0.1:{port}/tcp")), "{msg}");
        assert!(msg.contains(&format!("process {}", std::process::id())), "{msg}");
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        let published = vec![("web".to_string(), vec![m(None, 18080, 80, Proto::Tcp)])];
        let e = check_free(&[m(None, 18080, 81, Proto::Tcp)], &published).unwrap_err();
        assert!(e.to_string().contains("0.0.0.0:18080/tcp is already in use by container web"), "{e}");
        drop(l);
        check_free(&[m(Some("127.0.0.1"), port, 80, Proto::Tcp)], &[]).unwrap();
        let mut any = vec![m(Some("127.0.0.1"), 0, 80, Proto::Tcp)];
        assign_host_ports(&mut any).unwrap();
        assert_ne!(any[0].host_port, 0);
    }
}
