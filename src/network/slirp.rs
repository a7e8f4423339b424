//! Rootless mode's user-mode network: slirp4netns, podman's rootless default (with its
//! `--port-handler slirp4netns`). A container gets a namespace of its own pinned at
//! [`netns_path`] (made in strata's user namespace, which owns it), a `tap0` there that
//! slirp4netns (in the host's network namespace, as the user) serves with its user-mode TCP/IP
//! stack: `10.0.2.100/24`, gateway `10.0.2.2`, DNS `10.0.2.3`, MTU 65520, the host's loopback
//! out of reach (`--disable-host-loopback`, as podman). `-p` ports are forwarded through its API
//! socket (`add_hostfwd`): slirp4netns listens on the host port and connects to the container.
//!
//! slirp4netns outlives the command that starts it (a detached container's network): its pid is
//! recorded in `<root>/net/slirp/NAME.json`, and [`release`] (the container's teardown) or
//! [`release_leaked`] (after a kill -9) stops it and removes the namespace.

use std::fs;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ports::{self, PortMapping, Proto};
use super::{io_at, netns, netns_path, read_record, NetworkError};
use crate::store::Store;

/// The program.
pub const BINARY: &str = "slirp4netns";
/// The container's address on slirp4netns's network (its `--configure` default).
pub const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// slirp4netns's DNS forwarder.
pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The interface in the container.
const TAP: &str = "tap0";
/// podman's default MTU for slirp4netns (throughput: fewer, larger segments through the stack).
const MTU: &str = "65520";
/// How long slirp4netns has to configure the namespace.
const READY: Duration = Duration::from_secs(10);

/// What a running slirp4netns is recorded as.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlirpRecord {
    pub container: String,
    pub pid: i32,
    pub ports: Vec<PortMapping>,
}

fn dir(store: &Store) -> PathBuf {
    store.root().join("net/slirp")
}

fn record_path(store: &Store, container: &str) -> PathBuf {
    dir(store).join(format!("{container}.json"))
}

/// The API socket's name in [`dir`] (relative: a store's path may be longer than a socket
/// address takes).
fn socket_name(container: &str) -> String {
    format!("{container}.sock")
}

fn failed(container: &str, reason: impl Into<String>) -> NetworkError {
    NetworkError::Slirp { container: container.to_string(), reason: reason.into() }
}

/// Why slirp4netns cannot serve a container here, if it cannot: not installed, or
/// `/dev/net/tun` not open to this user.
pub fn unavailable() -> Option<String> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(BINARY).is_file()))
        .unwrap_or(false);
    if !on_path {
        return Some(format!("{BINARY} is not installed (Debian: apt-get install slirp4netns)"));
    }
    match fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun") {
        Ok(_) => None,
        Err(e) => Some(format!(
            "/dev/net/tun cannot be opened by this user ({e}): {BINARY} needs it; a system \
             without udev leaves it root's (mode 0600): as root, chmod 0666 /dev/net/tun (udev's \
             default)"
        )),
    }
}

/// The record of container `container`'s slirp4netns, if it has one.
pub fn record(store: &Store, container: &str) -> Result<Option<SlirpRecord>, NetworkError> {
    read_record(record_path(store, container))
}

fn save(store: &Store, r: &SlirpRecord) -> Result<(), NetworkError> {
    let path = record_path(store, &r.container);
    let body = serde_json::to_vec_pretty(r)
        .map_err(|source| NetworkError::BadRecord { path: path.clone(), source })?;
    crate::fsutil::atomic_write(&path, 0o600, |w| w.write_all(&body).map_err(io_at(&path)))
}

/// Give container `container` a namespace served by slirp4netns, with `ports` forwarded (host
/// port 0: any free one); returns the namespace's path and the ports as published. What an
/// earlier run left is released first; on failure nothing is left.
pub fn start(
    store: &Store,
    container: &str,
    ports: &[PortMapping],
) -> Result<(PathBuf, Vec<PortMapping>), NetworkError> {
    if let Some(why) = unavailable() {
        return Err(failed(container, why));
    }
    release(store, container)?;
    let unprivileged = fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|t| t.trim().parse::<u16>().ok())
        .unwrap_or(1024);
    if let Some(p) = ports.iter().find(|p| p.host_port != 0 && p.host_port < unprivileged) {
        return Err(failed(
            container,
            format!(
                "publishing {p}: host port {} is below net.ipv4.ip_unprivileged_port_start \
                 ({unprivileged}), which a user cannot bind (as root: sysctl \
                 net.ipv4.ip_unprivileged_port_start={}, as podman advises; or a higher host port)",
                p.host_port, p.host_port
            ),
        ));
    }
    let mut ports = ports.to_vec();
    ports::assign_host_ports(&mut ports)?;
    ports::check_free(&ports, &[])?;
    let slirp_dir = dir(store);
    fs::create_dir_all(&slirp_dir).map_err(io_at(&slirp_dir))?;
    let ns = netns_path(store, container);
    if let Some(parent) = ns.parent() {
        fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    netns::remove(&ns).map_err(|source| NetworkError::Netns { path: ns.clone(), source })?;
    netns::create(&ns).map_err(|source| NetworkError::Netns { path: ns.clone(), source })?;
    let started = spawn(&slirp_dir, container, &ns).and_then(|pid| {
        // On record first: a failure from here on (or a crash) is released like any other.
        save(store, &SlirpRecord { container: container.to_string(), pid, ports: ports.clone() })?;
        for p in &ports {
            add_hostfwd(&slirp_dir, container, p)?;
        }
        Ok(pid)
    });
    match started {
        Ok(pid) => {
            tracing::info!(container, pid, ports = ?ports, "slirp4netns network up");
            Ok((ns, ports))
        }
        Err(e) => {
            if let Err(undo) = release(store, container) {
                tracing::warn!(container, error = %crate::error::report(&undo), "undoing a failed slirp4netns start");
            }
            let _ = netns::remove(&ns);
            Err(e)
        }
    }
}

/// Start slirp4netns for namespace `ns`, in its own process group (a terminal's Ctrl-C is for
/// the container), its output in `NAME.log`; wait until it says the namespace is configured.
fn spawn(slirp_dir: &Path, container: &str, ns: &Path) -> Result<i32, NetworkError> {
    use std::os::unix::process::CommandExt;
    let log_path = slirp_dir.join(format!("{container}.log"));
    let log = fs::File::create(&log_path).map_err(io_at(&log_path))?;
    let log2 = log.try_clone().map_err(io_at(&log_path))?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(failed(container, format!("pipe: {}", io::Error::last_os_error())));
    }
    // SAFETY: both descriptors were just made and are owned here alone.
    let (ready_r, ready_w) = unsafe { (fs::File::from_raw_fd(fds[0]), fs::File::from_raw_fd(fds[1])) };
    let w = ready_w.as_raw_fd();
    let mut cmd = Command::new(BINARY);
    cmd.args(["--configure", "--mtu", MTU, "--disable-host-loopback", "--ready-fd", "3"])
        .arg("--api-socket")
        .arg(socket_name(container))
        .args(["--netns-type", "path"])
        .arg(ns)
        .arg(TAP)
        .current_dir(slirp_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    // SAFETY: dup2 and fcntl are async-signal-safe; descriptor 3 is left without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            // Already 3: dup2 would leave its close-on-exec flag; clear it instead.
            let r = if w == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(w, 3) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
    }
    let mut child = cmd.spawn().map_err(|e| failed(container, format!("cannot run {BINARY}: {e}")))?;
    drop(ready_w);
    let pid = child.id() as i32;
    let ready = wait_ready(ready_r);
    if let Err(why) = ready {
        let _ = child.kill();
        let _ = child.wait();
        let said = fs::read_to_string(&log_path).unwrap_or_default();
        let said = said.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>();
        return Err(failed(container, format!("{why}: {}", said.join("; "))));
    }
    Ok(pid)
}

/// Wait (at most [`READY`]) for slirp4netns to write `1` on its ready descriptor.
fn wait_ready(fd: fs::File) -> Result<(), String> {
    let until = Instant::now() + READY;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{BINARY} did not configure the namespace within {} s", READY.as_secs()));
        }
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: one pollfd of a descriptor this function owns.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("waiting for {BINARY}: {e}"));
        }
        if n == 0 {
            continue;
        }
        let mut b = [0u8; 1];
        return match (&fd).read(&mut b) {
            Ok(1) if b[0] == b'1' => Ok(()),
            Ok(_) => Err(format!("{BINARY} exited before the namespace was configured")),
            Err(e) => Err(format!("waiting for {BINARY}: {e}")),
        };
    }
}

/// One request to slirp4netns's API socket; its error, if it answers one.
fn api(
    slirp_dir: &Path,
    container: &str,
    request: &serde_json::Value,
) -> Result<serde_json::Value, NetworkError> {
    // Through the directory's descriptor: the socket's full path may not fit a socket address.
    let d = fs::File::open(slirp_dir).map_err(io_at(slirp_dir))?;
    let path = format!("/proc/self/fd/{}/{}", d.as_raw_fd(), socket_name(container));
    let talk = || -> io::Result<Vec<u8>> {
        let mut s = std::os::unix::net::UnixStream::connect(&path)?;
        s.set_read_timeout(Some(READY))?;
        s.write_all(request.to_string().as_bytes())?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    };
    let out = talk().map_err(|e| failed(container, format!("{BINARY}'s API socket: {e}")))?;
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
        failed(container, format!("{BINARY}'s API answered {:?}: {e}", String::from_utf8_lossy(&out)))
    })?;
    if let Some(err) = v.get("error") {
        let desc = err.get("desc").and_then(|d| d.as_str()).unwrap_or("an error");
        return Err(failed(container, format!("{BINARY}: {desc}")));
    }
    Ok(v)
}

/// Forward host port `p` to the container (`add_hostfwd`).
fn add_hostfwd(slirp_dir: &Path, container: &str, p: &PortMapping) -> Result<(), NetworkError> {
    let proto = match p.protocol {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    let host = p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let request = serde_json::json!({"execute": "add_hostfwd", "arguments": {
        "proto": proto, "host_addr": host.to_string(), "host_port": p.host_port,
        "guest_addr": GUEST.to_string(), "guest_port": p.container_port}});
    api(slirp_dir, container, &request).map(drop).map_err(|e| match e {
        NetworkError::Slirp { container, reason } => {
            NetworkError::Slirp { container, reason: format!("publishing {p}: {reason}") }
        }
        e => e,
    })
}

/// Whether process `pid` is the slirp4netns serving container `container` (not a reused pid).
fn is_ours(pid: i32, container: &str) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let mut args = cmdline.split(|b| *b == 0);
    let prog_ok = args.next().is_some_and(|a| a.ends_with(BINARY.as_bytes()));
    prog_ok && cmdline.split(|b| *b == 0).any(|a| a == socket_name(container).as_bytes())
}

/// Whether `pid` is gone (or a zombie nobody here will reap).
fn gone(pid: i32) -> bool {
    // Our own child (the command that started it still runs): reap it.
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG);
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Stop container `container`'s slirp4netns (SIGTERM, SIGKILL after 2 s), remove its
/// namespace, socket, log and record. `Ok(false)` when it had none.
pub fn release(store: &Store, container: &str) -> Result<bool, NetworkError> {
    let Some(r) = record(store, container)? else { return Ok(false) };
    if is_ours(r.pid, container) {
        if let Some(p) = rustix::process::Pid::from_raw(r.pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
            let until = Instant::now() + Duration::from_secs(2);
            while !gone(r.pid) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !gone(r.pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
    let ns = netns_path(store, container);
    netns::remove(&ns).map_err(|source| NetworkError::Netns { path: ns, source })?;
    let slirp_dir = dir(store);
    for f in [socket_name(container), format!("{container}.log"), format!("{container}.json")] {
        let path = slirp_dir.join(f);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&path)(e)),
            _ => {}
        }
    }
    tracing::info!(container, pid = r.pid, "slirp4netns network released");
    Ok(true)
}

/// Release the slirp4netns networks of containers that are gone or stopped (what a kill -9 of
/// strata left). `claim(name)`, as for [`super::release_leaked`]: `None` for a live container,
/// else a guard held across the release so that a start cannot begin in between. Returns the
/// containers released; a failure is logged.
pub fn release_leaked<G>(
    store: &Store,
    claim: impl Fn(&str) -> Option<G>,
) -> Result<Vec<String>, NetworkError> {
    let d = dir(store);
    let entries = match fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at(&d)(e)),
    };
    let mut released = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(container) = name.strip_suffix(".json") else { continue };
        // `None`: live; otherwise the guard keeps it from starting until it is released.
        let Some(_claimed) = claim(container) else { continue };
        match release(store, container) {
            Ok(_) => released.push(container.to_string()),
            Err(e) => {
                tracing::warn!(container, error = %crate::error::report(&e), "leaked slirp4netns stays")
            }
        }
    }
    Ok(released)
}
