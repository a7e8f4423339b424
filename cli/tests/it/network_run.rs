//! `run`, `start`, `ps`, `port`, `rm` with networks, end to end through the built binary and the
//! real CNI plugins: a published port answers on 127.0.0.1, containers on one user network reach
//! each other by name, a published port is reached from another network through the host,
//! `--network none`/`host`, the files every container gets (absent from a commit), and nothing
//! left after 50 `run --rm` or a kill -9 of strata mid-start. Traffic goes only to 127.0.0.1 and
//! to addresses of the networks and containers made here.

use crate::common;

use std::fs;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use strata::network;
use strata::store::Store;

/// Removes every container (stopping them) and network of the root, releases what is left and
/// deletes the bridges, even when the test fails. Declared after the [`Root`] so it runs first.
struct Cleanup {
    root: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let strata = |args: &[&str]| {
            Command::new(STRATA).arg("--root").arg(&self.root).args(args).output().map(|o| o.stdout)
        };
        if let Ok(out) = strata(&["ps", "-a", "--format", "{{.Names}}"]) {
            for name in String::from_utf8_lossy(&out).split_whitespace() {
                let _ = strata(&["rm", "-f", name]);
            }
        }
        let Ok(store) = Store::open(&self.root) else { return };
        let _ = network::release_leaked(&store, |_| Some(()));
        for n in network::config::list(&store).unwrap_or_default() {
            network::config::delete_bridge(&n.bridge);
        }
    }
}

fn setup() -> (Root, Cleanup) {
    let root = Root::new();
    let fx = fixtures();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display()), "--name", "busybox"]);
    let c = Cleanup { root: root.path().to_path_buf() };
    (root, c)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// An HTTP GET of `/` from the host to 127.0.0.1:`port`, retried for 10 s while the server
/// comes up; the response's body.
fn http_get(port: u16) -> String {
    let got = common::read_localhost(port, b"GET / HTTP/1.0\r\n\r\n", |got| got.contains("\r\n\r\n"));
    got.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()).unwrap_or_default()
}

/// `strata exec NAME -- CMD...` retried for 10 s until its stdout is not empty.
fn exec_until(root: &Root, args: &[&str]) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let out = root.cmd(args);
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !got.is_empty() || Instant::now() > until {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every trace of this root's containers on the host, counted: attachment records, pinned
/// namespaces, interfaces enslaved to its bridges (veths), iptables lines naming its CNI ids,
/// host-local allocations naming them, and its bridges (deleted once no container uses them).
#[derive(Debug, Default, PartialEq)]
struct Traces {
    bridges: Vec<String>,
    records: Vec<String>,
    netns: Vec<String>,
    veths: Vec<String>,
    iptables: usize,
    allocations: Vec<String>,
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn traces(root: &Root) -> Traces {
    let store = Store::open(root.path()).expect("open store");
    let ids = format!("strata-{}-", network::config::root_tag(&store));
    let mut t = Traces {
        records: names_in(&root.path().join("net/attach")),
        netns: names_in(&root.path().join("net/netns")),
        ..Default::default()
    };
    for n in network::config::list(&store).unwrap_or_default() {
        if Path::new("/sys/class/net").join(&n.bridge).exists() {
            t.bridges.push(n.bridge.clone());
        }
        t.veths.extend(names_in(&Path::new("/sys/class/net").join(&n.bridge).join("brif")));
        let ipam = network::config::ipam_dir(&store).join(&n.name);
        for f in names_in(&ipam) {
            if fs::read_to_string(ipam.join(&f)).is_ok_and(|s| s.contains(&ids)) {
                t.allocations.push(format!("{}/{f}", n.name));
            }
        }
    }
    let save = Command::new("iptables-save").output().expect("iptables-save");
    t.iptables = String::from_utf8_lossy(&save.stdout).lines().filter(|l| l.contains(&ids)).count();
    t
}

#[test]
fn published_port_answers_on_localhost() {
    if !privileged("published_port_answers_on_localhost") {
        return;
    }
    let (root, _c) = setup();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    let _g = RuncGuard::new(&root, "web");
    let script = "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www";
    root.ok(&["run", "-d", "--name", "web", "-p", &publish, "busybox", "--", "sh", "-c", script]);
    assert_eq!(http_get(port), "hello-from-web");
    assert_eq!(root.ok(&["port", "web"]).trim(), format!("80/tcp -> 127.0.0.1:{port}"));
    assert_eq!(root.ok(&["port", "web", "80"]).trim(), format!("127.0.0.1:{port}"));
    let ps = root.ok(&["ps"]);
    assert!(ps.lines().next().unwrap_or_default().contains("PORTS"), "{ps}");
    assert!(ps.contains(&format!("127.0.0.1:{port}->80/tcp")), "{ps}");
    let json: serde_json::Value = serde_json::from_str(&root.ok(&["ps", "--json"])).expect("ps --json");
    assert_eq!(json[0]["ports"][0]["hostPort"], port);
    assert_eq!(json[0]["ports"][0]["containerPort"], 80);
    assert_eq!(json[0]["network"], "bridge");
    assert!(json[0]["ip_address"].as_str().is_some_and(|ip| ip.starts_with("10.")), "{json}");
    assert_ne!(traces(&root), Traces::default(), "attached while it runs");

    // Stopped: released; started again: the same port, answering again.
    root.ok(&["stop", "-t", "1", "web"]);
    let until = Instant::now() + Duration::from_secs(10);
    while traces(&root) != Traces::default() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(traces(&root), Traces::default(), "released once it stopped");
    root.ok(&["start", "web"]);
    assert_eq!(http_get(port), "hello-from-web");
    root.ok(&["rm", "-f", "web"]);
    assert_eq!(traces(&root), Traces::default());
    assert!(http_get_once_fails(port), "port {port} still answers after rm -f");
}

fn http_get_once_fails(port: u16) -> bool {
    TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1)).is_err()
}

#[test]
fn user_network_peers_by_name_and_masquerade_across_networks() {
    if !privileged("user_network_peers_by_name_and_masquerade_across_networks") {
        return;
    }
    let (root, _c) = setup();
    root.ok(&["network", "create", "front"]);
    root.ok(&["network", "create", "back"]);
    let port = free_port();
    let publish = format!("{port}:7000");
    let (_ga, _gb) = (RuncGuard::new(&root, "a"), RuncGuard::new(&root, "b"));
    root.ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "front",
        "-p",
        &publish,
        "busybox",
        "--",
        "nc",
        "-ll",
        "-p",
        "7000",
        "-e",
        "echo",
        "hi-from-a",
    ]);
    root.ok(&["run", "-d", "--name", "b", "--network", "front", "busybox", "--", "sleep", "60"]);
    // b's /etc/hosts names a (created before it), so b reaches it by name.
    let hosts = root.ok(&["exec", "b", "--", "cat", "/etc/hosts"]);
    assert!(hosts.lines().any(|l| l.ends_with("\ta")), "{hosts}");
    assert_eq!(exec_until(&root, &["exec", "b", "--", "nc", "-w", "2", "a", "7000"]), "hi-from-a");
    // From the other network, a's published port through the host (back's gateway).
    let inspect: serde_json::Value =
        serde_json::from_str(&root.ok(&["network", "inspect", "back", "--json"])).expect("inspect");
    let gw = inspect["Gateway"].as_str().expect("gateway").to_string();
    let out = root.ok(&[
        "run",
        "--rm",
        "--network",
        "back",
        "busybox",
        "--",
        "nc",
        "-w",
        "2",
        &gw,
        &port.to_string(),
    ]);
    assert_eq!(out.trim(), "hi-from-a");
    // Not by name across networks.
    let other = root.cmd(&["run", "--rm", "--network", "back", "busybox", "--", "cat", "/etc/hosts"]);
    assert!(!String::from_utf8_lossy(&other.stdout).lines().any(|l| l.ends_with("\ta")));
    root.ok(&["rm", "-f", "a", "b"]);
    assert_eq!(traces(&root), Traces::default());
}

#[test]
fn none_has_only_lo_and_host_sees_the_hosts_interfaces() {
    if !privileged("none_has_only_lo_and_host_sees_the_hosts_interfaces") {
        return;
    }
    let (root, _c) = setup();
    let ifaces = |out: &str| -> Vec<String> {
        out.lines().skip(2).filter_map(|l| l.split(':').next()).map(|s| s.trim().to_string()).collect()
    };
    let none = root.ok(&["run", "--rm", "--network", "none", "busybox", "--", "cat", "/proc/net/dev"]);
    assert_eq!(ifaces(&none), ["lo"]);
    // The host's default-route interface is one only the host's namespace has.
    let route = fs::read_to_string("/proc/net/route").expect("/proc/net/route");
    let default_if = route
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&"00000000"))
        .map(|f| f[0].to_string())
        .expect("a default route");
    let host = root.ok(&["run", "--rm", "--network", "host", "busybox", "--", "cat", "/proc/net/dev"]);
    assert!(ifaces(&host).contains(&default_if), "{default_if} not in {host}");
    let bridge = root.ok(&["run", "--rm", "busybox", "--", "cat", "/proc/net/dev"]);
    let mut b = ifaces(&bridge);
    b.sort();
    assert_eq!(b, ["eth0", "lo"]);
    // Ports need a network of their own.
    let e = root.fails(&["run", "--rm", "--network", "none", "-p", "80", "busybox", "--", "true"]);
    assert!(e.contains("publishing ports"), "{e}");
    assert_eq!(traces(&root), Traces::default());
}

#[test]
fn files_as_specified_and_absent_from_a_commit() {
    if !privileged("files_as_specified_and_absent_from_a_commit") {
        return;
    }
    let (root, _c) = setup();
    let script = "cat /etc/hosts; echo --; cat /etc/hostname; echo --; cat /etc/resolv.conf; echo --; hostname; echo changed > /tmp/f";
    let out = root.ok(&[
        "run",
        "--name",
        "f",
        "--hostname",
        "myhost",
        "--add-host",
        "db:192.0.2.7",
        "--dns",
        "192.0.2.53",
        "--dns-search",
        "example.test",
        "--dns-option",
        "ndots:2",
        "busybox",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let parts: Vec<&str> = out.split("--\n").collect();
    assert_eq!(parts.len(), 4, "{out}");
    let hosts: Vec<&str> = parts[0].lines().collect();
    assert_eq!(hosts[0], "127.0.0.1\tlocalhost");
    assert!(hosts.contains(&"192.0.2.7\tdb"), "{out}");
    let own = hosts.last().copied().unwrap_or_default();
    assert!(own.starts_with("10.") && own.ends_with("\tmyhost"), "{out}");
    assert_eq!(parts[1], "myhost\n");
    assert_eq!(parts[2], "search example.test\nnameserver 192.0.2.53\noptions ndots:2\n");
    assert_eq!(parts[3].trim(), "myhost");
    // The default hostname is the container's name.
    let h = root.ok(&["run", "--rm", "--name", "named", "busybox", "--", "cat", "/etc/hostname"]);
    assert_eq!(h, "named\n");

    // Committed: the change is in the new layer, the files are not; also while it runs (the
    // mount points strata made are in its upper dir then).
    let entries = top_layer_entries(&root, "f", "f-img");
    assert!(entries.iter().any(|l| l == "tmp/f"), "{entries:?}");
    let _g = RuncGuard::new(&root, "live");
    root.ok(&["run", "-d", "--name", "live", "busybox", "--", "sh", "-c", "echo x > /tmp/g; exec sleep 60"]);
    assert_eq!(exec_until(&root, &["exec", "live", "--", "cat", "/tmp/g"]), "x");
    let live = top_layer_entries(&root, "live", "live-img");
    assert!(live.iter().any(|l| l == "tmp/g"), "{live:?}");
    for f in ["etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        assert!(!entries.iter().any(|l| l == f), "{f} in the committed layer: {entries:?}");
        assert!(!live.iter().any(|l| l == f), "{f} in the running container's commit: {live:?}");
    }
    root.ok(&["rm", "-f", "live"]);
    assert_eq!(traces(&root), Traces::default());
}

/// Commit container `name` as `image`; the entries of the new (top) layer, read with tar.
fn top_layer_entries(root: &Root, name: &str, image: &str) -> Vec<String> {
    root.ok(&["container", "commit", name, image]);
    let t = tempfile::tempdir().expect("tempdir");
    let archive = t.path().join("img.tar");
    let (a, dir) = (archive.to_str().expect("utf-8"), t.path().to_str().expect("utf-8"));
    root.ok(&["save", image, "-o", a]);
    let tar = |args: &[&str]| {
        let out = Command::new("tar").args(args).stdin(Stdio::null()).output().expect("tar");
        assert!(out.status.success(), "tar {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let manifest: serde_json::Value =
        serde_json::from_str(&tar(&["-xOf", a, "manifest.json"])).expect("manifest");
    let top =
        manifest[0]["Layers"].as_array().and_then(|l| l.last()).and_then(|l| l.as_str()).expect("layers");
    tar(&["-xf", a, "-C", dir, top]);
    tar(&["-tf", t.path().join(top).to_str().expect("utf-8")]).lines().map(str::to_string).collect()
}

#[test]
fn nothing_leaks_after_run_rm_cycles_or_a_kill_mid_start() {
    if !privileged("nothing_leaks_after_run_rm_cycles_or_a_kill_mid_start") {
        return;
    }
    let (root, _c) = setup();
    for i in 0..50 {
        let out = root.cmd(&["run", "--rm", "-p", "80", "busybox", "--", "true"]);
        assert!(out.status.success(), "cycle {i}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(traces(&root), Traces::default(), "after 50 run --rm");
    assert_eq!(root.ok(&["ps", "-a", "--format", "{{.Names}}"]).trim(), "");

    // kill -9 of strata once the container is attached, its container gone with it (as after a
    // reboot): the next strata command gives everything back.
    let _g = RuncGuard::new(&root, "k");
    let mut child = Command::new(STRATA)
        .arg("--root")
        .arg(root.path())
        .args(["run", "--name", "k", "-p", "80", "busybox", "--", "sleep", "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn strata run");
    let record = root.path().join("net/attach/k.json");
    let until = Instant::now() + Duration::from_secs(20);
    while !record.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(record.exists(), "never attached");
    child.kill().expect("kill -9");
    let _ = child.wait();
    // A runc that strata had started goes on creating the container: let it, then delete it.
    std::thread::sleep(Duration::from_millis(500));
    drop(_g);
    assert_ne!(traces(&root), Traces::default(), "the killed run left its network");
    root.ok(&["ps"]);
    assert_eq!(traces(&root), Traces::default(), "after kill -9 and ps");
    // The container is still there, and runs again.
    root.ok(&["rm", "-f", "k"]);
}
