//! A real registry for tests: Debian's `docker-registry` (distribution 2.8) on a free 127.0.0.1
//! port, with a private config and storage directory, plain HTTP or TLS (a CA made here with
//! openssl) and optionally htpasswd Basic auth; stopped when dropped. Plus a loopback proxy that
//! stalls a connection mid-body, for interrupted pulls.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to start a registry.
#[derive(Default, Clone)]
pub struct RegistryOpts {
    pub tls: bool,
    /// htpasswd Basic auth with this user and password.
    pub basic: Option<(String, String)>,
    /// Token auth: a [`TokenServer`] on loopback is the realm, its signing certificate the
    /// registry's `rootcertbundle`.
    pub token: bool,
}

/// A running registry; killed and removed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub opts: RegistryOpts,
    /// The token server, with token auth.
    pub tokens: Option<TokenServer>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certs(dir: &Path) {
    let ossl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    ossl(
        &[
            &["req", "-x509"],
            &ec[..],
            &["-days", "2", "-subj", "/CN=strata test CA", "-keyout", "ca.key", "-out", "ca.crt"],
        ]
        .concat(),
    );
    ossl(
        &[&["req"], &ec[..], &["-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"]]
            .concat(),
    );
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext.cnf");
    ossl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "server.crt",
        "-extfile",
        "ext.cnf",
    ]);
}

impl Registry {
    pub fn start(opts: RegistryOpts) -> Registry {
        let base = super::repo().join("target/test-roots");
        fs::create_dir_all(&base).expect("test roots");
        let dir = tempfile::Builder::new().prefix("registry-").tempdir_in(base).expect("tempdir");
        let d = dir.path();
        fs::create_dir(d.join("storage")).expect("storage");
        let mut extra = String::new();
        if opts.tls {
            make_certs(d);
            extra.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display()
            ));
        }
        let mut auth = String::new();
        if let Some((u, p)) = &opts.basic {
            let out =
                Command::new("htpasswd").args(["-Bbn", u, p]).output().expect("htpasswd (apache2-utils)");
            assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
            fs::write(d.join("htpasswd"), &out.stdout).expect("htpasswd file");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                d.join("htpasswd").display()
            );
        }
        let tokens = opts.token.then(|| TokenServer::start(d));
        if let Some(t) = &tokens {
            auth = format!(
                "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    \
                 issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                t.addr,
                d.join("token.crt").display()
            );
        }
        let mut tokens = tokens;
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n{extra}{auth}",
                d.join("storage").display()
            );
            fs::write(d.join("config.yml"), config).expect("config");
            let log = fs::File::create(d.join("registry.log")).expect("log");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(d.join("config.yml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("docker-registry (Debian package docker-registry; scripts/setup.sh)");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken, most likely: try another
                }
                if TcpStream::connect(&addr).is_ok() {
                    return Registry { child, addr, dir, opts, tokens: tokens.take() };
                }
                assert!(
                    Instant::now() < deadline,
                    "registry did not start:\n{}",
                    read(&d.join("registry.log"))
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("registry did not start:\n{}", read(&d.join("registry.log")));
    }

    /// A certs.d-style directory holding `127.0.0.1:PORT/ca.crt`.
    pub fn certs_d(&self) -> PathBuf {
        let root = self.dir.path().join("certs.d");
        let host = root.join(&self.addr);
        fs::create_dir_all(&host).expect("certs.d");
        fs::copy(self.dir.path().join("ca.crt"), host.join("ca.crt")).expect("ca.crt");
        root
    }

    /// `skopeo copy SRC docker://ADDR/DEST` (`--all` copies every image of an index).
    pub fn push(&self, src: &str, dest: &str, all: bool) {
        let mut c = Command::new("skopeo");
        c.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if all {
            c.arg("--all");
        }
        if let Some((u, p)) = &self.opts.basic {
            c.arg(format!("--dest-creds={u}:{p}"));
        }
        c.arg(src).arg(format!("docker://{}/{dest}", self.addr));
        run(&mut c);
    }

    /// The file the registry keeps a blob's bytes in.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join("storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// The registry's log (access log included).
    pub fn log(&self) -> String {
        read(&self.dir.path().join("registry.log"))
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy on 127.0.0.1 to `upstream` that forwards each connection's responses until
/// `stall_after` bytes, then stops forwarding (holding the connection open) until dropped.
pub struct StallProxy {
    pub addr: String,
    /// Set once some connection has stalled.
    pub stalled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl StallProxy {
    pub fn start(upstream: &str, stall_after: u64) -> StallProxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr").to_string();
        let stalled = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, up) = (stalled.clone(), stop.clone(), upstream.to_string());
        std::thread::spawn(move || {
            // Bounded: a test that forgets the proxy still ends it.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !sp.load(Ordering::SeqCst) && Instant::now() < deadline {
                match l.accept() {
                    Ok((c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let Ok(u) = TcpStream::connect(&up) else { continue };
                        pipe(c, u, stall_after, st.clone(), sp.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        StallProxy { addr, stalled, stop }
    }
}

fn pipe(
    client: TcpStream,
    upstream: TcpStream,
    stall_after: u64,
    stalled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let (mut c_r, mut u_w) = (client.try_clone().expect("clone"), upstream.try_clone().expect("clone"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        while let Ok(n) = c_r.read(&mut buf) {
            if n == 0 || u_w.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let (mut u_r, mut c_w) = (upstream, client);
    std::thread::spawn(move || {
        let sent = AtomicU64::new(0);
        let mut buf = [0u8; 16 << 10];
        while let Ok(n) = u_r.read(&mut buf) {
            if n == 0 {
                break;
            }
            let before = sent.fetch_add(n as u64, Ordering::SeqCst);
            if before + n as u64 > stall_after {
                let keep = stall_after.saturating_sub(before) as usize;
                let _ = c_w.write_all(&buf[..keep]);
                stalled.store(true, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                break;
            }
            if c_w.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = c_w.shutdown(std::net::Shutdown::Both);
    });
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What the fault registry does with one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer normally.
    Pass,
    /// Answer with this status (and Retry-After seconds, if given) and a registry error body.
    Status(u16, Option<u64>),
    /// Close the connection without answering.
    Reset,
    /// Send the headers and half the body, then close.
    Truncate,
}

/// A minimal registry serving an OCI layout read-only (`GET` of `/v2/`, manifests by tag or
/// digest, blobs), one request per connection; the first requests after the ping get the
/// faults given, in order. Counts the requests it answered.
pub struct FaultRegistry {
    pub addr: String,
    pub requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl FaultRegistry {
    pub fn start(layout: &Path, faults: Vec<Fault>) -> FaultRegistry {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let (sp, rq, layout) = (stop.clone(), requests.clone(), layout.to_path_buf());
        let mut faults = std::collections::VecDeque::from(faults);
        accept_each(l, sp, Duration::from_secs(120), Duration::from_secs(5), move |mut c| {
            let Some(path) = read_request(&mut c) else { return };
            rq.fetch_add(1, Ordering::SeqCst);
            let fault = if path == "/v2/" { None } else { faults.pop_front() };
            serve(&mut c, &layout, &path, fault);
        });
        FaultRegistry { addr, requests, stop }
    }
}

impl Drop for FaultRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Serve each connection to `l` (non-blocking) with `each`, in a thread of its own, until `stop`
/// or `lifetime` has passed; each connection blocks with `read_timeout`.
fn accept_each(
    l: TcpListener,
    stop: Arc<AtomicBool>,
    lifetime: Duration,
    read_timeout: Duration,
    mut each: impl FnMut(TcpStream) + Send + 'static,
) {
    std::thread::spawn(move || {
        let deadline = Instant::now() + lifetime;
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            let Ok((c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let _ = c.set_nonblocking(false);
            let _ = c.set_read_timeout(Some(read_timeout));
            each(c);
        }
    });
}

/// The path of a GET; `None` for anything that is not plain HTTP (a TLS hello, say).
fn read_request(c: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if c.read(&mut b).ok()? == 0 || buf.len() > 64 << 10 {
            return None;
        }
        if buf.is_empty() && !b[0].is_ascii_uppercase() {
            return None;
        }
        buf.push(b[0]);
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next()?;
    let mut parts = line.split(' ');
    (parts.next()? == "GET").then(|| parts.next().map(str::to_string))?
}

fn respond(c: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8], truncate: bool) {
    let mut h = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    let _ = c.write_all(h.as_bytes());
    let body = if truncate { &body[..body.len() / 2] } else { body };
    let _ = c.write_all(body);
    let _ = c.flush();
}

fn serve(c: &mut TcpStream, layout: &Path, path: &str, fault: Option<Fault>) {
    let err = |code: &str, msg: &str| {
        format!(r#"{{"errors":[{{"code":"{code}","message":"{msg}"}}]}}"#).into_bytes()
    };
    match fault {
        Some(Fault::Reset) => return,
        Some(Fault::Status(s, after)) => {
            let h: Vec<(&str, String)> = after.map(|a| ("Retry-After", a.to_string())).into_iter().collect();
            respond(c, s, &h, &err("TOOMANYREQUESTS", &format!("fault {s}")), false);
            return;
        }
        _ => {}
    }
    let truncate = matches!(fault, Some(Fault::Truncate));
    if path == "/v2/" {
        return respond(c, 200, &[], b"{}", false);
    }
    let rest = path.strip_prefix("/v2/").unwrap_or("");
    let found = if let Some((_, r)) = rest.rsplit_once("/manifests/") {
        let index = super::json(&layout.join("index.json"));
        let desc = index["manifests"].as_array().and_then(|ms| {
            ms.iter()
                .find(|m| m["digest"] == r || m["annotations"]["org.opencontainers.image.ref.name"] == r)
                .cloned()
        });
        desc.map(|d| {
            let digest = d["digest"].as_str().unwrap_or("").to_string();
            let body = fs::read(super::blob(layout, &digest)).unwrap_or_default();
            let mt = d["mediaType"].as_str().unwrap_or("").to_string();
            (body, vec![("Content-Type", mt), ("Docker-Content-Digest", digest)])
        })
    } else if let Some((_, d)) = rest.rsplit_once("/blobs/") {
        fs::read(super::blob(layout, d)).ok().map(|b| (b, vec![]))
    } else {
        None
    };
    match found {
        Some((body, h)) => respond(c, 200, &h, &body, truncate),
        None => respond(c, 404, &[], &err("MANIFEST_UNKNOWN", "manifest unknown"), false),
    }
}

const TOKEN_SERVICE: &str = "strata-test-registry";
const TOKEN_ISSUER: &str = "strata-test-issuer";

/// A token server for the Bearer flow: grants every scope asked for in a JWT signed RS256 (by
/// `openssl dgst -sign`) with a key whose self-signed certificate, sent in the `x5c` header, is
/// the registry's root bundle. Records the scopes asked for.
pub struct TokenServer {
    pub addr: String,
    pub scopes: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenServer {
    fn start(dir: &Path) -> TokenServer {
        run(Command::new("openssl").current_dir(dir).args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=strata token signer",
            "-keyout",
            "token.key",
            "-out",
            "token.crt",
        ]));
        run(Command::new("openssl").current_dir(dir).args([
            "x509",
            "-in",
            "token.crt",
            "-outform",
            "DER",
            "-out",
            "token.der",
        ]));
        let der = fs::read(dir.join("token.der")).expect("token.der");
        let l = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let scopes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (sp, sc, key) = (stop.clone(), scopes.clone(), dir.join("token.key"));
        accept_each(l, sp, Duration::from_secs(300), Duration::from_secs(5), move |mut c| {
            let Some(path) = read_request(&mut c) else { return };
            let query = path.split_once('?').map_or("", |(_, q)| q);
            let mut access = Vec::new();
            for kv in query.split('&') {
                let Some(("scope", v)) = kv.split_once('=') else { continue };
                let v = percent_decode(v);
                sc.lock().expect("scopes").push(v.clone());
                for one in v.split(' ') {
                    let Some((ty, rest)) = one.split_once(':') else { continue };
                    let Some((name, actions)) = rest.rsplit_once(':') else { continue };
                    let actions: Vec<&str> = actions.split(',').collect();
                    access.push(serde_json::json!({"type": ty, "name": name, "actions": actions}));
                }
            }
            let token = jwt(&key, &der, access);
            let body = serde_json::json!({"token": token, "expires_in": 600}).to_string();
            respond(&mut c, 200, &[("Content-Type", "application/json".into())], body.as_bytes(), false);
        });
        TokenServer { addr, scopes, stop }
    }
}

/// Tokens issued, so that each has its own `jti` (two asked for in the same second differ, as a
/// refreshed token differs from the one it replaces).
static TOKENS: AtomicU64 = AtomicU64::new(0);

/// A JWT for the registry, RS256 over `header.claims`.
fn jwt(key: &Path, der: &[u8], access: Vec<serde_json::Value>) -> String {
    use base64::Engine as _;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let header = serde_json::json!({
        "alg": "RS256", "typ": "JWT",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(der)],
    });
    let jti = format!("{now}-{}", TOKENS.fetch_add(1, Ordering::SeqCst));
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": "tester", "aud": TOKEN_SERVICE,
        "exp": now + 600, "nbf": now - 10, "iat": now - 10, "jti": jti,
        "access": access,
    });
    let input = format!("{}.{}", b64url(claims_bytes(&header).as_slice()), b64url(&claims_bytes(&claims)));
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl dgst");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("sign input");
    let out = child.wait_with_output().expect("openssl dgst");
    assert!(out.status.success(), "openssl dgst -sign failed");
    format!("{input}.{}", b64url(&out.stdout))
}

fn claims_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A fault of [`FaultProxy`]: `(METHOD, path part, status, Retry-After)`.
type ProxyFault = (String, String, u16, Option<u64>);

/// A proxy to a real registry, one request per connection (it asks for `Connection: close`):
/// each fault `(METHOD, path part, status, Retry-After)` answers the first request it matches
/// instead of the registry, once; status 0 instead forwards the head and half the body, then
/// cuts both connections (a request the registry saw part of); [`CORRUPT`] forwards the request
/// and answers the registry's response with one byte of its body changed. Counts the requests it
/// saw. Faults can be added while it runs ([`FaultProxy::arm`]).
pub struct FaultProxy {
    pub addr: String,
    pub seen: Arc<std::sync::Mutex<Vec<String>>>,
    faults: Arc<std::sync::Mutex<Vec<ProxyFault>>>,
    stop: Arc<AtomicBool>,
}

/// The fault status that corrupts a response's body (see [`FaultProxy`]).
pub const CORRUPT: u16 = 1;

impl FaultProxy {
    pub fn start(upstream: &str, faults: Vec<(&str, &str, u16, Option<u64>)>) -> FaultProxy {
        Self::start_at("127.0.0.1:0", upstream, faults)
    }

    /// [`FaultProxy::start`] listening on `addr` (a proxy that was dropped, back at its
    /// address: a registry that returns), tried for up to 10 s while the address is taken.
    pub fn start_at(addr: &str, upstream: &str, faults: Vec<(&str, &str, u16, Option<u64>)>) -> FaultProxy {
        let until = Instant::now() + Duration::from_secs(10);
        let l = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < until, "bind proxy at {addr}: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let faults: Vec<ProxyFault> =
            faults.into_iter().map(|(m, p, s, r)| (m.to_string(), p.to_string(), s, r)).collect();
        let faults = Arc::new(std::sync::Mutex::new(faults));
        let (sp, sn, up, fs) = (stop.clone(), seen.clone(), upstream.to_string(), faults.clone());
        accept_each(l, sp, Duration::from_secs(120), Duration::from_secs(10), move |mut c| {
            let Some(head) = read_head(&mut c) else { return };
            let line = head.lines().next().unwrap_or("").to_string();
            let mut parts = line.split(' ');
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            sn.lock().expect("seen").push(format!("{method} {path}"));
            let fault = {
                let mut faults = fs.lock().expect("faults");
                let i = faults.iter().position(|(m, p, _, _)| m == method && path.contains(p.as_str()));
                i.map(|i| faults.remove(i))
            };
            if let Some((_, _, status, after)) = fault {
                if status == 0 {
                    forward_part(c, &up, &head);
                    return;
                }
                if status == CORRUPT {
                    forward_corrupted(c, &up, &head);
                    return;
                }
                let h: Vec<(&str, String)> =
                    after.map(|a| ("Retry-After", a.to_string())).into_iter().collect();
                let body = format!(r#"{{"errors":[{{"code":"UNKNOWN","message":"fault {status}"}}]}}"#);
                // The request body is not read: the client sees the answer and a close.
                respond(&mut c, status, &h, body.as_bytes(), false);
                return;
            }
            forward(c, &up, &head);
        });
        FaultProxy { addr, seen, faults, stop }
    }

    /// Add a fault (see [`FaultProxy`]).
    pub fn arm(&self, method: &str, path: &str, status: u16) {
        self.faults.lock().expect("faults").push((method.to_string(), path.to_string(), status, None));
    }
}

/// One request forwarded; its response read whole, a byte in the middle of its body changed,
/// and sent on.
fn forward_corrupted(mut c: TcpStream, upstream: &str, head: &str) {
    let Ok(mut u) = TcpStream::connect(upstream) else { return };
    if u.write_all(close_head(head, false).as_bytes()).is_err() {
        return;
    }
    let mut resp = Vec::new();
    if u.read_to_end(&mut resp).is_err() {
        return;
    }
    if let Some(at) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
        let body = at + 4;
        if resp.len() > body {
            let mid = body + (resp.len() - body) / 2;
            resp[mid] ^= 0x5a;
        }
    }
    let _ = c.write_all(&resp);
    let _ = c.shutdown(std::net::Shutdown::Both);
}

/// A request's head, through the blank line; `None` for anything that is not plain HTTP.
pub(super) fn read_head(c: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if c.read(&mut b).ok()? == 0 || buf.len() > 64 << 10 {
            return None;
        }
        if buf.is_empty() && !b[0].is_ascii_uppercase() {
            return None; // a TLS hello, say: closed at once
        }
        buf.push(b[0]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Half of a request's body to `upstream`, then both connections closed with no answer.
fn forward_part(mut c: TcpStream, upstream: &str, head: &str) {
    let Ok(mut u) = TcpStream::connect(upstream) else { return };
    let len = content_length(head);
    if u.write_all(head.as_bytes()).is_err() {
        return;
    }
    let _ = std::io::copy(&mut (&mut c).take(len / 2), &mut u);
    let _ = u.flush();
    std::thread::sleep(Duration::from_millis(200));
    let _ = u.shutdown(std::net::Shutdown::Both);
    let _ = c.shutdown(std::net::Shutdown::Both);
}

/// A request's head as sent on to the registry: its `Connection` header (and with
/// `drop_auth` its `Authorization`) left out, `Connection: close` added, so the registry ends
/// the response by closing.
pub(super) fn close_head(head: &str, drop_auth: bool) -> String {
    let mut out = String::new();
    for l in head.trim_end().split("\r\n") {
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("connection:") || (drop_auth && lower.starts_with("authorization:")) {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

/// The Content-Length a request's head gives (0 without one).
pub(super) fn content_length(head: &str) -> u64 {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// One request to `upstream` with `Connection: close`, its body (Content-Length bytes) copied
/// after the head; the response copied back until the registry closes.
fn forward(mut c: TcpStream, upstream: &str, head: &str) {
    let Ok(mut u) = TcpStream::connect(upstream) else { return };
    if u.write_all(close_head(head, false).as_bytes()).is_err() {
        return;
    }
    let mut body = (&mut c).take(content_length(head));
    if std::io::copy(&mut body, &mut u).is_err() {
        return;
    }
    let _ = std::io::copy(&mut u, &mut c);
    let _ = c.shutdown(std::net::Shutdown::Both);
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
