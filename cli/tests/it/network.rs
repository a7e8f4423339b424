//! Networking through the real CNI plugins (Debian's containernetworking-plugins): namespaces
//! attached to bridges, TCP between them, a published port on 127.0.0.1, and nothing left after
//! detach or after release_leaked (no veth, namespace, host-local allocation or iptables rule
//! naming the container). Traffic goes only to 127.0.0.1 and to the namespaces made here.

use crate::common;

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use strata::network::ports::{PortMapping, Proto};
use strata::network::{self, Attachment};
use strata::store::Store;

/// Kills the listeners a test started, releases every attachment of the root and deletes its
/// networks' bridges, even when the test fails. Declared after the [`Root`] so it runs first.
struct NetCleanup {
    root: PathBuf,
    children: Vec<Child>,
}

impl Drop for NetCleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let Ok(store) = Store::open(&self.root) else { return };
        let _ = network::release_leaked(&store, |_| Some(()));
        for n in network::config::list(&store).unwrap_or_default() {
            network::config::delete_bridge(&n.bridge);
        }
    }
}

fn setup(root: &Root) -> (Store, NetCleanup) {
    let store = Store::open(root.path()).expect("open store");
    (store, NetCleanup { root: root.path().to_path_buf(), children: Vec::new() })
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// A persistent server in `netns` answering `word` on `port`.
fn listen(netns: &Path, port: u16, word: &str) -> Child {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["busybox", "nc", "-ll", "-p", &port.to_string(), "-e", "echo", word])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("nsenter busybox nc")
}

/// What `nc` from `netns` to `ip:port` reads, retried until it reads something (the listener
/// may not be up yet) or 10 s pass.
fn connect_from(netns: &Path, ip: Ipv4Addr, port: u16) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["busybox", "nc", "-w", "2", &ip.to_string(), &port.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("nsenter busybox nc");
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !got.is_empty() || Instant::now() > until {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a TCP connection from the host to 127.0.0.1:`port` reads, retried as [`connect_from`].
fn connect_host(port: u16) -> String {
    common::read_localhost(port, b"", |got| !got.trim().is_empty()).trim().to_string()
}

/// Host-side interfaces of an attachment (the veth; not the bridge, not the container's).
fn host_veths(a: &Attachment, bridge: &str) -> Vec<String> {
    a.cni_result()
        .interfaces
        .into_iter()
        .filter(|i| i.sandbox.is_none() && i.name != bridge)
        .map(|i| i.name)
        .collect()
}

/// Lines of `iptables-save` naming `id`.
fn iptables_lines(id: &str) -> usize {
    sh(&mut Command::new("iptables-save")).lines().filter(|l| l.contains(id)).count()
}

/// host-local's allocation files under `dir` that name `id`.
fn allocations(dir: &Path, id: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| fs::read_to_string(p).is_ok_and(|t| t.contains(id)))
        .collect()
}

/// Everything one attachment holds on the host is gone.
fn assert_released(store: &Store, a: &Attachment, bridge: &str, veths: &[String]) {
    assert!(!a.netns.exists(), "netns file {} left", a.netns.display());
    for v in veths {
        assert!(!Path::new("/sys/class/net").join(v).exists(), "veth {v} left");
    }
    let ipam = network::config::ipam_dir(store).join(&a.network);
    assert_eq!(allocations(&ipam, &a.cni_id), Vec::<PathBuf>::new(), "host-local allocations left");
    assert_eq!(iptables_lines(&a.cni_id), 0, "iptables rules naming {} left", a.cni_id);
    assert!(network::attachment(store, &a.container).unwrap().is_none(), "record left");
    // The bridge stays while a container of its network is attached, and goes with the last.
    let in_use = network::attachments(store).unwrap().iter().any(|o| o.network == a.network);
    assert_eq!(
        Path::new("/sys/class/net").join(bridge).exists(),
        in_use,
        "bridge {bridge} (in use: {in_use})"
    );
}

#[test]
fn attach_connect_publish_detach() {
    if !privileged("attach_connect_publish_detach") {
        return;
    }
    let root = Root::new();
    let (store, mut clean) = setup(&root);
    let net = network::create(&store, "t1", None).expect("create");
    let hport = free_port();
    let publish = [PortMapping {
        host_ip: Some(Ipv4Addr::LOCALHOST),
        host_port: hport,
        container_port: 8080,
        protocol: Proto::Tcp,
    }];
    let a = network::attach(&store, "c1", "t1", &publish).expect("attach c1");
    let b = network::attach(&store, "c2", "t1", &[]).expect("attach c2");
    let (ipa, ipb) = (a.address().expect("c1 address"), b.address().expect("c2 address"));
    assert!(
        net.subnet.contains(ipa) && net.subnet.contains(ipb) && ipa != ipb,
        "{ipa} {ipb} in {}",
        net.subnet
    );

    // The bridge, each veth on it, the address inside the namespace.
    assert!(Path::new("/sys/class/net").join(&net.bridge).exists(), "bridge {}", net.bridge);
    let (va, vb) = (host_veths(&a, &net.bridge), host_veths(&b, &net.bridge));
    assert_eq!((va.len(), vb.len()), (1, 1), "{:?} {:?}", a.cni_result(), b.cni_result());
    let master = fs::read_link(format!("/sys/class/net/{}/master", va[0])).expect("veth master");
    assert_eq!(master.file_name().unwrap().to_str().unwrap(), net.bridge);
    let addr = sh(Command::new("nsenter")
        .arg(format!("--net={}", a.netns.display()))
        .args(["ip", "-4", "-o", "addr", "show", "eth0"]));
    assert!(addr.contains(&format!("{ipa}/24")), "{addr}");
    let lo = sh(Command::new("nsenter")
        .arg(format!("--net={}", a.netns.display()))
        .args(["ip", "-o", "link", "show", "lo"]));
    assert!(lo.contains("UP"), "lo is down: {lo}");

    // TCP from one namespace to the other across the bridge; the published port from the host.
    clean.children.push(listen(&a.netns, 8080, "pong"));
    assert_eq!(connect_from(&b.netns, ipa, 8080), "pong");
    assert_eq!(connect_host(hport), "pong", "127.0.0.1:{hport} -> {ipa}:8080");
    assert!(
        iptables_lines(&a.cni_id) > 0,
        "no rule names {}: the leak check below would prove nothing",
        a.cni_id
    );
    assert!(!allocations(&network::config::ipam_dir(&store).join("t1"), &a.cni_id).is_empty());
    // CHECK (Debian's portmap 1.1.1 fails CHECK of a published port looking for an IPv6 chain it
    // never made, so the container without ports is checked).
    network::check(&store, "c2").expect("CNI CHECK");

    for c in clean.children.drain(..).collect::<Vec<_>>() {
        let mut c = c;
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(network::detach(&store, "c1").expect("detach c1"));
    assert!(network::detach(&store, "c2").expect("detach c2"));
    assert_released(&store, &a, &net.bridge, &va);
    assert_released(&store, &b, &net.bridge, &vb);
    // Idempotent: detaching again is fine and says there was nothing.
    assert!(!network::detach(&store, "c1").expect("detach again"));
}

/// kill -9 of strata mid-run, then a reboot: release_leaked gives back what the dead containers
/// held, from the records alone.
#[test]
fn release_leaked_after_crash_and_reboot() {
    if !privileged("release_leaked_after_crash_and_reboot") {
        return;
    }
    let root = Root::new();
    let (store, _clean) = setup(&root);
    let bridge = network::get(&store, network::DEFAULT_NETWORK).expect("default network").bridge;
    let live = network::attach(&store, "live", "bridge", &[]).expect("attach live");
    let crashed = network::attach(&store, "crashed", "bridge", &[]).expect("attach crashed");
    let rebooted = network::attach(&store, "rebooted", "bridge", &[]).expect("attach rebooted");
    let veths = (host_veths(&crashed, &bridge), host_veths(&rebooted, &bridge));
    // The namespace unmounted under strata (its veth goes with it; the file and the masquerade
    // rules stay): the bridge plugin's DEL needs the interface to find those rules.
    rustix::mount::unmount(&rebooted.netns, rustix::mount::UnmountFlags::DETACH).expect("umount netns");
    assert!(rebooted.netns.is_file() && !network::netns::is_netns(&rebooted.netns));
    // A namespace file no record explains (a crash between the two).
    let stray = network::netns_path(&store, "stray");
    network::netns::create(&stray).expect("stray netns");

    let mut released =
        network::release_leaked(&store, |name| (name != "live").then_some(())).expect("release");
    released.sort();
    assert_eq!(released, vec!["crashed", "rebooted"]);
    assert_released(&store, &crashed, &bridge, &veths.0);
    assert_released(&store, &rebooted, &bridge, &veths.1);
    assert!(!stray.exists(), "stray netns left");
    assert!(
        live.netns.exists() && network::attachment(&store, "live").unwrap().is_some(),
        "a live one was released"
    );
    assert!(network::detach(&store, "live").unwrap());
    assert_released(&store, &live, &bridge, &host_veths(&live, &bridge));
}

/// A busy host port: the error names the port and its holder (a process, or a container of the
/// root), and the failed attach leaves nothing behind.
#[test]
fn busy_port_is_named_with_its_holder() {
    if !privileged("busy_port_is_named_with_its_holder") {
        return;
    }
    let root = Root::new();
    let (store, _clean) = setup(&root);
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().unwrap().port();
    let p = |host_port| [PortMapping { host_ip: None, host_port, container_port: 80, protocol: Proto::Tcp }];
    let e = network::attach(&store, "c1", "bridge", &p(port)).unwrap_err();
    let msg = strata::error::report(&e);
    assert!(
        msg.contains(&format!(":{port}/tcp is already in use by process {}", std::process::id())),
        "{msg}"
    );
    assert_eq!(e.kind(), strata::error::ErrorKind::FailedPrecondition);
    assert!(
        network::attachment(&store, "c1").unwrap().is_none() && !network::netns_path(&store, "c1").exists()
    );

    let free = free_port();
    let a = network::attach(&store, "web", "bridge", &p(free)).expect("attach web");
    let e = network::attach(&store, "c2", "bridge", &p(free)).unwrap_err();
    let msg = strata::error::report(&e);
    assert!(msg.contains(&format!("0.0.0.0:{free}/tcp is already in use by container web")), "{msg}");
    assert!(network::detach(&store, "web").unwrap());
    assert!(!a.netns.exists());
}

#[test]
fn network_commands() {
    if !privileged("network_commands") {
        return;
    }
    let root = Root::new();
    let (store, _clean) = setup(&root);
    let ls = root.ok(&["network", "ls"]);
    let mut lines = ls.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "DRIVER", "SUBNET", "GATEWAY", "BRIDGE"]
    );
    let row: Vec<&str> = lines.next().expect("the default network").split_whitespace().collect();
    assert_eq!(&row[..2], ["bridge", "bridge"]);
    assert!(row[2].starts_with("10.89.") && row[4].starts_with("strata") && row[4].len() == 14, "{ls}");

    assert_eq!(root.ok(&["network", "create", "--subnet", "10.231.7.0/24", "lab"]), "lab\n");
    let err = root.fails(&["network", "create", "--subnet", "10.231.7.128/25", "lab2"]);
    assert!(err.contains("overlaps network lab's subnet 10.231.7.0/24"), "{err}");
    let route = network::config::host_routes().into_iter().next().expect("the host has a route");
    let err = root.fails(&["network", "create", "--subnet", &route.dst.to_string(), "lab3"]);
    assert!(err.contains(&format!("overlaps the host's route {route}")), "{err}");
    assert!(root.fails(&["network", "create", "lab"]).contains("already exists"));

    network::attach(&store, "member", "lab", &[]).expect("attach");
    let v: serde_json::Value =
        serde_json::from_str(&root.ok(&["network", "inspect", "lab", "--json"])).unwrap();
    assert_eq!(v["Subnet"], "10.231.7.0/24");
    assert_eq!(v["Gateway"], "10.231.7.1");
    let ip = v["Containers"]["member"]["IPv4Address"].as_str().expect("member's address");
    assert!(ip.starts_with("10.231.7.") && ip.ends_with("/24"), "{v}");
    assert!(root.ok(&["network", "inspect", "lab"]).contains("member"));
    let ls: serde_json::Value = serde_json::from_str(&root.ok(&["network", "ls", "--json"])).unwrap();
    assert_eq!(
        ls.as_array().unwrap().iter().map(|n| n["Name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["bridge", "lab"]
    );

    let err = root.fails(&["network", "rm", "lab"]);
    assert!(err.contains("in use by container(s) member"), "{err}");
    network::detach(&store, "member").unwrap();
    let bridge = v["Bridge"].as_str().unwrap().to_string();
    assert!(
        !Path::new("/sys/class/net").join(&bridge).exists(),
        "idle bridge {bridge} left after the last detach"
    );
    assert_eq!(root.ok(&["network", "rm", "lab"]), "lab\n");
    assert!(!Path::new("/sys/class/net").join(&bridge).exists(), "bridge {bridge} left after rm");
    assert!(root.fails(&["network", "inspect", "lab"]).contains("no network \"lab\""));
}
