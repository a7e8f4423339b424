//! Rootless networking: slirp4netns (podman's rootless default) with `-p` forwarded through its
//! API socket, and what happens where it cannot work (no access to `/dev/net/tun`).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::common::privileged;
use crate::common::user::TestUser;

/// `/dev/net/tun` with a mode of the test's choosing while held (this machine has no udev, which
/// would make it 0666); the tests that set it take turns.
struct Tun {
    mode: u32,
    _turn: MutexGuard<'static, ()>,
}

impl Tun {
    fn set(mode: u32) -> Tun {
        static TURN: Mutex<()> = Mutex::new(());
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::fs::metadata("/dev/net/tun").expect("/dev/net/tun").permissions().mode() & 0o7777;
        std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(mode)).expect("chmod tun");
        Tun { mode: old, _turn: turn }
    }
}

impl Drop for Tun {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(self.mode));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `GET /` on 127.0.0.1:`port`, retried for 10 s (the server in the container starts a moment
/// after `run -d` returns).
fn http_get(port: u16) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let got = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match got {
            Ok(body) if body.contains("200 OK") => return body,
            other if Instant::now() >= until => panic!("GET 127.0.0.1:{port}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The default network rootless is slirp4netns: the container's `tap0` is 10.0.2.100, DNS
/// through 10.0.2.3; `-p` publishes (a given host port and a free one), `port` lists them; a
/// host port in use or below the unprivileged range is refused with the reason; stopping the
/// container stops slirp4netns and removes its namespace.
#[test]
fn slirp4netns_by_default_with_published_ports() {
    if !privileged("slirp4netns_by_default_with_published_ports") {
        return;
    }
    let _tun = Tun::set(0o666);
    let user = TestUser::new(true);
    user.import_busybox();
    let script = "ip -4 -o addr show tap0; ip route; cat /etc/resolv.conf";
    let out = user.ok(&["run", "--rm", "busybox", "--", "sh", "-c", script]);
    assert!(out.contains("inet 10.0.2.100/24"), "{out}");
    assert!(out.contains("default via 10.0.2.2 dev tap0"), "{out}");
    assert!(out.contains("nameserver 10.0.2.3"), "{out}");
    let port = free_port();
    let serve =
        "mkdir /www && echo hello-slirp > /www/index.html && httpd -p 81 -h /www && httpd -f -p 80 -h /www";
    let fixed = format!("127.0.0.1:{port}:80");
    user.ok(&["run", "-d", "--name", "web", "-p", &fixed, "-p", "81", "busybox", "--", "sh", "-c", serve]);
    let ports = user.ok(&["port", "web"]);
    assert!(ports.contains(&format!("80/tcp -> 127.0.0.1:{port}")), "{ports}");
    let other: u16 = user
        .ok(&["port", "web", "81"])
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("81's port");
    assert!(http_get(port).contains("hello-slirp"));
    assert!(http_get(other).contains("hello-slirp"));
    let err = user.fails(&["run", "--rm", "-p", &fixed, "busybox", "--", "true"]);
    assert!(err.contains(&port.to_string()) && err.contains("in use"), "{err}");
    let err = user.fails(&["run", "--rm", "-p", "80:80", "busybox", "--", "true"]);
    assert!(err.contains("net.ipv4.ip_unprivileged_port_start"), "{err}");
    let pause = user.pause_pid().expect("pause");
    let slirps = || {
        user.processes()
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"slirp4netns"))
            })
            .count()
    };
    assert_eq!(slirps(), 1, "one slirp4netns, web's");
    user.ok(&["stop", "--time", "1", "web"]);
    assert!(user.others_settle(&[pause]).is_empty(), "{:?}", user.others_settle(&[pause]));
    let net = user.home.join(".local/share/strata/net");
    let left = |d: &str| std::fs::read_dir(net.join(d)).map(|r| r.count()).unwrap_or(0);
    assert_eq!((left("slirp"), left("netns")), (0, 0), "slirp4netns's record and namespace removed");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the port is closed");
    user.ok(&["rm", "web"]);
}

/// Where `/dev/net/tun` is closed to the user, the default is `--network none` with a warning
/// that says why; asking for slirp4netns, or to publish a port, fails with the same reason.
#[test]
fn without_tun_rootless_networking_says_why() {
    if !privileged("without_tun_rootless_networking_says_why") {
        return;
    }
    let _tun = Tun::set(0o600);
    let user = TestUser::new(true);
    user.import_busybox();
    let out = user.cmd(&["run", "--rm", "busybox", "--", "cat", "/proc/net/dev"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.lines().skip(2).all(|l| l.trim_start().starts_with("lo:")), "only lo: {stdout}");
    assert!(
        stderr.contains("--network none") && stderr.contains("/dev/net/tun cannot be opened"),
        "{stderr}"
    );
    let out = user.cmd(&["run", "--rm", "--network", "none", "busybox", "--", "true"]);
    assert!(out.status.success() && out.stderr.is_empty(), "none asked for: no warning: {out:?}");
    let err = user.fails(&["run", "--rm", "--network", "slirp4netns", "busybox", "--", "true"]);
    assert!(
        err.contains("/dev/net/tun cannot be opened") && err.contains("chmod 0666 /dev/net/tun"),
        "{err}"
    );
    let err = user.fails(&["run", "--rm", "-p", "8080:80", "busybox", "--", "true"]);
    assert!(err.contains("publishing ports needs a network") && err.contains("/dev/net/tun"), "{err}");
}
