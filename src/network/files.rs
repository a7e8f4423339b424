//! The files every container gets, as docker writes them: `/etc/hosts`, `/etc/hostname`,
//! `/etc/resolv.conf`. Pure functions produce their text; [`write_files`] puts them in a
//! per-container directory from which the runtime bind-mounts them (so a commit, which reads only
//! the upper dir, never captures them).
//!
//! resolv.conf is the host's with loopback nameservers left out (127.0.0.53 of systemd-resolved
//! is not reachable from a container's namespace); when none remain, the upstream servers
//! systemd-resolved itself uses (`/run/systemd/resolve/resolv.conf`). `--dns`, `--dns-search`,
//! `--dns-option` replace the corresponding lines. No public resolver is ever added.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// What a container's files say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFiles {
    pub hostname: String,
    /// The container's address on its network (none for `--network none`/`host`).
    pub address: Option<IpAddr>,
    /// `--add-host NAME:IP`, in order.
    pub add_hosts: Vec<(String, IpAddr)>,
    /// Other containers on the same user network, by name.
    pub peers: Vec<(String, IpAddr)>,
    pub dns: Vec<IpAddr>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
}

/// Where [`write_files`] put them, to bind-mount at `/etc/hosts`, `/etc/hostname`,
/// `/etc/resolv.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePaths {
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    pub resolv_conf: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("--add-host {0:?}: expected NAME:IP")]
pub struct AddHostError(pub String);

/// `--add-host NAME:IP` (docker's form; `NAME=IP` too). IPv6 addresses keep their colons.
pub fn parse_add_host(s: &str) -> Result<(String, IpAddr), AddHostError> {
    let bad = || AddHostError(s.to_string());
    let (name, ip) = s.split_once([':', '=']).ok_or_else(bad)?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if !valid {
        return Err(bad());
    }
    Ok((name.to_string(), ip))
}

/// `/etc/hosts`: docker's localhost lines, `--add-host` entries, peers, then the container's own
/// address and hostname (127.0.1.1 when it has no address, as Debian does).
pub fn hosts(f: &ContainerFiles) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (name, ip) in f.add_hosts.iter().chain(&f.peers) {
        let _ = writeln!(s, "{ip}\t{name}");
    }
    if !f.hostname.is_empty() {
        let own = f.address.unwrap_or(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1)));
        let _ = writeln!(s, "{own}\t{}", f.hostname);
    }
    s
}

/// `/etc/hostname`.
pub fn hostname(f: &ContainerFiles) -> String {
    format!("{}\n", f.hostname)
}

/// The resolv.conf lines strata reads: nameservers, search domains, options.
#[derive(Debug, Default, PartialEq, Eq)]
struct Resolv {
    nameservers: Vec<IpAddr>,
    search: Vec<String>,
    options: Vec<String>,
}

fn parse_resolv(text: &str) -> Resolv {
    let mut r = Resolv::default();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => {
                // `fe80::1%eth0`: the zone means nothing inside the container.
                let ip = w.next().unwrap_or_default().split('%').next().unwrap_or_default();
                r.nameservers.extend(ip.parse::<IpAddr>().ok());
            }
            // The last search or domain line wins, as in resolv.conf(5).
            Some("search") | Some("domain") => r.search = w.map(str::to_string).collect(),
            Some("options") => r.options.extend(w.map(str::to_string)),
            _ => {}
        }
    }
    r
}

/// `/etc/resolv.conf` from the host's (`host`) and, when every one of its nameservers is a
/// loopback address, systemd-resolved's upstream file (`upstream`), with `f`'s overrides.
pub fn resolv_conf(host: &str, upstream: Option<&str>, f: &ContainerFiles) -> String {
    let mut r = parse_resolv(host);
    r.nameservers.retain(|ip| !ip.is_loopback());
    if r.nameservers.is_empty() {
        if let Some(up) = upstream {
            let up = parse_resolv(up);
            r.nameservers = up.nameservers.into_iter().filter(|ip| !ip.is_loopback()).collect();
            if r.search.is_empty() {
                r.search = up.search;
            }
        }
    }
    if !f.dns.is_empty() {
        r.nameservers = f.dns.clone();
    }
    if !f.dns_search.is_empty() {
        // docker: `--dns-search .` means no search domains.
        r.search = f.dns_search.iter().filter(|d| d.as_str() != ".").cloned().collect();
    }
    if !f.dns_options.is_empty() {
        r.options = f.dns_options.clone();
    }
    let mut s = String::new();
    if !r.search.is_empty() {
        let _ = writeln!(s, "search {}", r.search.join(" "));
    }
    for ns in &r.nameservers {
        let _ = writeln!(s, "nameserver {ns}");
    }
    if !r.options.is_empty() {
        let _ = writeln!(s, "options {}", r.options.join(" "));
    }
    s
}

/// The host's `/etc/resolv.conf` and systemd-resolved's upstream one, as far as they exist.
pub fn host_resolv() -> (String, Option<String>) {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstream = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").ok();
    (host, upstream)
}

/// Write `hosts`, `hostname` and `resolv.conf` for `f` into `dir` (created, mode 0755 so that a
/// container's non-root user can read them), each atomically, mode 0644.
pub fn write_files(dir: &Path, f: &ContainerFiles) -> io::Result<FilePaths> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    let (host, upstream) = host_resolv();
    let paths = FilePaths {
        hosts: dir.join("hosts"),
        hostname: dir.join("hostname"),
        resolv_conf: dir.join("resolv.conf"),
    };
    for (path, text) in [
        (&paths.hosts, hosts(f)),
        (&paths.hostname, hostname(f)),
        (&paths.resolv_conf, resolv_conf(&host, upstream.as_deref(), f)),
    ] {
        crate::fsutil::atomic_write(path, 0o644, |w| w.write_all(text.as_bytes()))?;
        // The umask may have taken bits away: the container's users must read them.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> ContainerFiles {
        ContainerFiles {
            hostname: "web".into(),
            address: Some("10.89.0.5".parse().unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn hosts_has_localhost_extras_peers_and_self() {
        let mut f = files();
        f.add_hosts.push(parse_add_host("db:192.0.2.7").unwrap());
        f.add_hosts.push(parse_add_host("v6=[2001:db8::1]").unwrap());
        f.peers.push(("cache".into(), "10.89.0.6".parse().unwrap()));
        let h = hosts(&f);
        let lines: Vec<&str> = h.lines().collect();
        assert_eq!(lines[0], "127.0.0.1\tlocalhost");
        assert!(lines.contains(&"192.0.2.7\tdb"), "{h}");
        assert!(lines.contains(&"2001:db8::1\tv6"), "{h}");
        assert!(lines.contains(&"10.89.0.6\tcache"), "{h}");
        assert_eq!(*lines.last().unwrap(), "10.89.0.5\tweb");
        f.address = None;
        assert!(hosts(&f).ends_with("127.0.1.1\tweb\n"));
        assert_eq!(hostname(&f), "web\n");
        for bad in ["nocolon", ":1.2.3.4", "a:notanip", "a b:1.2.3.4"] {
            assert!(parse_add_host(bad).is_err(), "{bad}");
        }
    }

    const RESOLVED_STUB: &str =
        "# managed by systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
    const UPSTREAM: &str = "nameserver 192.0.2.53\nnameserver 127.0.0.1\nsearch corp.example\n";

    #[test]
    fn resolv_drops_loopback_and_falls_back_to_upstream() {
        let r = resolv_conf(RESOLVED_STUB, Some(UPSTREAM), &files());
        assert_eq!(r, "search lan\nnameserver 192.0.2.53\noptions edns0 trust-ad\n");
        // Without the upstream file: no nameserver at all rather than an unreachable one.
        let r = resolv_conf(RESOLVED_STUB, None, &files());
        assert!(!r.contains("nameserver"), "{r}");
        let plain = "nameserver 192.0.2.1\nnameserver ::1\nnameserver fe80::1%eth0\n";
        assert_eq!(
            resolv_conf(plain, Some(UPSTREAM), &files()),
            "nameserver 192.0.2.1\nnameserver fe80::1\n"
        );
    }

    #[test]
    fn resolv_overrides() {
        let mut f = files();
        f.dns = vec!["192.0.2.9".parse().unwrap()];
        f.dns_search = vec!["a.example".into(), "b.example".into()];
        f.dns_options = vec!["ndots:2".into()];
        let r = resolv_conf(RESOLVED_STUB, Some(UPSTREAM), &f);
        assert_eq!(r, "search a.example b.example\nnameserver 192.0.2.9\noptions ndots:2\n");
        f.dns_search = vec![".".into()];
        assert!(!resolv_conf(RESOLVED_STUB, None, &f).contains("search"));
    }

    #[test]
    fn write_files_puts_three_readable_files() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let p = write_files(&t.path().join("etc"), &files()).unwrap();
        assert_eq!(std::fs::read_to_string(&p.hostname).unwrap(), "web\n");
        assert!(std::fs::read_to_string(&p.hosts).unwrap().contains("10.89.0.5\tweb"));
        assert!(p.resolv_conf.is_file());
        for f in [&p.hosts, &p.hostname, &p.resolv_conf] {
            assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o644, "{}", f.display());
        }
    }
}
