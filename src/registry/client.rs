//! A blocking OCI distribution client for one repository: ping, manifests, blobs; HTTP Basic and
//! the Bearer token flow; TLS with the system roots and per-registry CA directories; bounded
//! retries of what is transient.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ureq::http::{Response, StatusCode};
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::{Agent, Body};

use super::auth::{self, parse_challenge, Credentials};
use super::RegistryError;

/// Where per-registry CA files live by default: `DIR/HOST[:PORT]/*.crt`.
pub const CERTS_D: [&str; 2] = ["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Verify TLS certificates (default). `false` also allows plain HTTP.
    pub tls_verify: bool,
    /// Directories holding `HOST[:PORT]/*.crt` (default [`CERTS_D`]; `STRATA_CERTS_D` overrides,
    /// `:`-separated).
    pub certs_d: Vec<PathBuf>,
    /// A directory of `*.crt` files trusted for this registry (podman's `--cert-dir`).
    pub cert_dir: Option<PathBuf>,
    /// Credentials given on the command line; else looked up in the credential files.
    pub credentials: Option<Credentials>,
    /// More scopes for Bearer tokens (`repository:OTHER:pull` for a push's cross-repository
    /// mount).
    pub extra_scopes: Vec<String>,
    /// The longest one request may take, connecting and reading its body included (default:
    /// none, only the per-step timeouts). Reads of a lazily pulled layer set it, so a read
    /// never waits on a stalled registry for long.
    pub request_timeout: Option<Duration>,
    /// Attempts of a request that fails transiently (default 4); a caller with a retry policy
    /// of its own (a lazy read's deadline) asks for 1.
    pub attempts: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let certs_d = match std::env::var_os("STRATA_CERTS_D").filter(|v| !v.is_empty()) {
            Some(v) => std::env::split_paths(&v).collect(),
            None => CERTS_D.iter().map(PathBuf::from).collect(),
        };
        ClientOptions {
            tls_verify: true,
            certs_d,
            cert_dir: None,
            credentials: None,
            extra_scopes: Vec::new(),
            request_timeout: None,
            attempts: ATTEMPTS,
        }
    }
}

/// Attempts for a request that fails transiently (429, 5xx, a reset before the response).
const ATTEMPTS: u32 = 4;
/// The longest wait between attempts, whatever Retry-After asks for.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// A client for one repository of one registry.
pub struct Client {
    pub host: String,
    pub repo: String,
    base: String,
    agent: Agent,
    creds: Option<Credentials>,
    /// The Authorization header that worked last (Basic, or a Bearer token).
    authz: Mutex<Option<String>>,
    /// Scope actions asked for in token requests ("pull", or "pull,push").
    actions: String,
    extra_scopes: Vec<String>,
    /// Where a CA for the host is looked for, for TLS errors (see [`ca_dirs`]).
    ca_dirs: String,
    /// See [`ClientOptions::attempts`].
    attempts: u32,
}

fn is_loopback(host: &str) -> bool {
    let h = match host.strip_prefix('[') {
        Some(r) => r.split(']').next().unwrap_or(r),
        None => {
            host.rsplit_once(':')
                .map_or(host, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host })
        }
    };
    h == "localhost" || h == "::1" || h.parse::<std::net::Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

/// PEM certificates from a file (several per file allowed).
fn pem_certs(path: &Path, out: &mut Vec<Certificate<'static>>) -> Result<usize, RegistryError> {
    let data = std::fs::read(path)
        .map_err(|source| RegistryError::CertFile { path: path.display().to_string(), source })?;
    let mut n = 0;
    for item in ureq::tls::parse_pem(&data) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => {
                out.push(c);
                n += 1;
            }
            Ok(_) => {}
            Err(e) => {
                return Err(RegistryError::NotPem { path: path.display().to_string(), source: Box::new(e) })
            }
        }
    }
    Ok(n)
}

/// `*.crt` files of `dir`, sorted; none when it does not exist.
fn crt_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> =
        rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "crt")).collect();
    v.sort();
    v
}

/// The system's roots: `SSL_CERT_FILE`, else Debian's and Fedora's bundles; Mozilla's list when
/// none is found.
fn system_roots(out: &mut Vec<Certificate<'static>>) -> Result<(), RegistryError> {
    let candidates: Vec<PathBuf> = match std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        Some(f) => vec![PathBuf::from(f)],
        None => {
            ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]
                .iter()
                .map(PathBuf::from)
                .collect()
        }
    };
    for c in candidates {
        if c.is_file() {
            pem_certs(&c, out)?;
            return Ok(());
        }
    }
    Ok(())
}

/// The directories whose `*.crt` files are trusted for `host`: `certs.d/HOST` of each of
/// [`ClientOptions::certs_d`], then `--cert-dir`.
fn ca_dirs(host: &str, opts: &ClientOptions) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = opts.certs_d.iter().map(|d| d.join(host)).collect();
    dirs.extend(opts.cert_dir.clone());
    dirs
}

fn tls_config(host: &str, opts: &ClientOptions) -> Result<TlsConfig, RegistryError> {
    if !opts.tls_verify {
        return Ok(TlsConfig::builder().disable_verification(true).build());
    }
    let mut roots = Vec::new();
    system_roots(&mut roots)?;
    let system = roots.len();
    for d in ca_dirs(host, opts) {
        for f in crt_files(&d) {
            let n = pem_certs(&f, &mut roots)?;
            tracing::debug!(file = %f.display(), certificates = n, "registry CA");
        }
    }
    let root_certs = if roots.is_empty() {
        RootCerts::WebPki
    } else {
        tracing::debug!(system, extra = roots.len() - system, "TLS roots");
        RootCerts::Specific(Arc::new(roots))
    };
    Ok(TlsConfig::builder().root_certs(root_certs).build())
}

fn agent(tls: TlsConfig, whole: Option<Duration>) -> Agent {
    Agent::config_builder()
        .timeout_global(whole)
        .http_status_as_error(false)
        .tls_config(tls)
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        // A stalled body fails instead of hanging the pull.
        .timeout_per_read(Some(Duration::from_secs(120)))
        .build()
        .new_agent()
}

/// The registry's own message from an error body (`{"errors":[{"code","message"}]}`), else the
/// start of the body.
fn error_message(body: &[u8]) -> (Option<String>, String) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(errs) = v.get("errors").and_then(|e| e.as_array()) {
            let code = errs.first().and_then(|e| e.get("code")).and_then(|c| c.as_str()).map(str::to_string);
            let msgs: Vec<String> = errs
                .iter()
                .filter_map(|e| e.get("message").and_then(|m| m.as_str()))
                .map(|m| crate::image::printable(m, 300))
                .collect();
            if !msgs.is_empty() {
                return (code, msgs.join("; "));
            }
        }
        for k in ["message", "error", "details"] {
            if let Some(m) = v.get(k).and_then(|m| m.as_str()) {
                return (None, crate::image::printable(m, 300));
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    (None, crate::image::printable(text.trim(), 200))
}

fn read_small(resp: Response<Body>, limit: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = resp.into_body().into_reader().take(limit).read_to_end(&mut buf);
    buf
}

/// A transport error, classified: (retryable, the error to report). `dirs` names where the
/// registry's CA was looked for, for a TLS error.
fn transport_error(host: &str, dirs: &str, e: ureq::Error) -> (bool, RegistryError) {
    let tls = |reason: String| RegistryError::Tls { host: host.to_string(), reason, dirs: dirs.to_string() };
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::HostNotFound => (false, RegistryError::UnknownHost { host: host.to_string() }),
        ureq::Error::Io(io) => {
            let msg = io.to_string();
            if msg.contains("lookup address") {
                return (false, RegistryError::UnknownHost { host: host.to_string() });
            }
            if msg.contains("certificate") || msg.contains("HandshakeFailure") || msg.contains("tls") {
                return (false, tls(msg));
            }
            let retry = matches!(
                io.kind(),
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof | K::TimedOut
            );
            let host = host.to_string();
            let e = match io.kind() {
                K::ConnectionRefused => RegistryError::Connect {
                    host,
                    reason: "connection refused (is a registry listening there?)".to_string(),
                },
                _ => RegistryError::ConnectIo { host, source: io },
            };
            (retry, e)
        }
        ureq::Error::Tls(m) => (false, tls(m.to_string())),
        ureq::Error::Timeout(t) => {
            (true, RegistryError::Connect { host: host.to_string(), reason: format!("timed out ({t})") })
        }
        ureq::Error::ConnectionFailed => {
            (true, RegistryError::Connect { host: host.to_string(), reason: "connection failed".into() })
        }
        other => (false, RegistryError::Transport { host: host.to_string(), source: Box::new(other) }),
    }
}

/// Retry-After in seconds (the HTTP-date form is not honoured: the bounded backoff applies).
fn retry_after(resp: &Response<Body>) -> Option<Duration> {
    let v = resp.headers().get("retry-after")?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

pub(crate) fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The methods of [`Client::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Head,
    /// Without a body to read: an upload's status.
    Get,
    Post,
    Put,
    Patch,
}

/// What a request sends: nothing, bytes with their media type, or a file streamed with its
/// length as Content-Length. A file's [`Watch`] is told how far into the file the request has
/// read, as it reads (from the start again when a request is retried).
#[derive(Clone, Copy)]
pub enum Payload<'a> {
    None,
    Bytes(&'a [u8], &'a str),
    File(&'a Path, Option<Watch<'a>>),
    /// `len` bytes of a file from `offset`, with `Content-Range: offset-(offset+len-1)` (an upload
    /// chunk, OCI distribution spec).
    FileRange(&'a Path, u64, u64, Option<Watch<'a>>),
}

/// Told the position in the file an upload has read up to.
pub type Watch<'a> = &'a (dyn Fn(u64) + Sync);

impl std::fmt::Debug for Payload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::None => f.write_str("None"),
            Payload::Bytes(b, ct) => write!(f, "Bytes({} bytes, {ct})", b.len()),
            Payload::File(p, _) => write!(f, "File({})", p.display()),
            Payload::FileRange(p, o, l, _) => write!(f, "FileRange({}, {o}, {l})", p.display()),
        }
    }
}

/// A file being sent, its position reported to a [`Watch`].
struct Watched<'a> {
    file: std::io::Take<std::fs::File>,
    position: u64,
    watch: Option<Watch<'a>>,
}

impl std::io::Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.position += n as u64;
        if let Some(w) = self.watch {
            w(self.position);
        }
        Ok(n)
    }
}

/// A small object's bytes, Content-Type and Docker-Content-Digest.
pub type Small = (Vec<u8>, Option<String>, Option<String>);

impl Client {
    /// Find the registry at `host` (HTTPS; plain HTTP too when TLS verification is off or the
    /// host is a loopback address, as podman does) and prepare requests for `repo`.
    pub fn connect(
        host: &str,
        repo: &str,
        opts: &ClientOptions,
        actions: &str,
    ) -> Result<Client, RegistryError> {
        let creds = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => auth::lookup(host, repo)?,
        };
        tracing::debug!(host, ?creds, "credentials");
        let mut client = Client {
            host: host.to_string(),
            repo: repo.to_string(),
            base: format!("https://{host}"),
            agent: agent(tls_config(host, opts)?, opts.request_timeout),
            creds,
            authz: Mutex::new(None),
            actions: actions.to_string(),
            extra_scopes: opts.extra_scopes.clone(),
            ca_dirs: ca_dirs(host, opts)
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(" or "),
            attempts: opts.attempts.max(1),
        };
        let https = client.ping();
        match https {
            Ok(()) => Ok(client),
            Err(
                e @ (RegistryError::Tls { .. }
                | RegistryError::Connect { .. }
                | RegistryError::ConnectIo { .. }
                | RegistryError::Transport { .. }),
            ) if !opts.tls_verify || is_loopback(host) => {
                client.base = format!("http://{host}");
                match client.ping() {
                    Ok(()) => {
                        tracing::info!(host, "using plain HTTP");
                        Ok(client)
                    }
                    // An HTTPS-only server answers plain HTTP with 400: the TLS error explains more.
                    Err(_) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/`: 200, or 401 (authentication needed, handled per request).
    fn ping(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base);
        let resp = self.send_once(&url, None, false)?;
        let s = resp.status();
        if s.is_success() || s == StatusCode::UNAUTHORIZED {
            if s == StatusCode::UNAUTHORIZED {
                // Authenticate now, so the first real request carries credentials.
                let _ = self.authenticate(&resp);
            }
            return Ok(());
        }
        let (_, message) = error_message(&read_small(resp, 4096));
        Err(RegistryError::Status { host: self.host.clone(), url, status: s.as_u16(), message })
    }

    fn send_once(
        &self,
        url: &str,
        accept: Option<&str>,
        with_auth: bool,
    ) -> Result<Response<Body>, RegistryError> {
        let mut req = self.agent.get(url);
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        if with_auth {
            if let Some(h) = self.authz.lock().ok().and_then(|g| g.clone()) {
                req = req.header("Authorization", h);
            }
        }
        req.call().map_err(|e| transport_error(&self.host, &self.ca_dirs, e).1)
    }

    /// Answer a 401's challenge: Basic with the credentials, or a Bearer token from the realm.
    /// `false` when there is nothing to answer with (Basic, and no credentials).
    fn authenticate(&self, resp: &Response<Body>) -> Result<bool, RegistryError> {
        let header = header(resp, "www-authenticate").unwrap_or_default();
        let challenge = parse_challenge(&header);
        let value = match challenge {
            Some(c) if c.scheme == "basic" => match &self.creds {
                Some(cr) => cr.basic(),
                None => return Ok(false),
            },
            Some(c) if c.scheme == "bearer" => self.token(&c.params)?,
            _ => {
                return Err(self.unauthorized(format!(
                    "unsupported challenge {}",
                    crate::image::printable(&header, 100)
                )))
            }
        };
        if let Ok(mut g) = self.authz.lock() {
            *g = Some(value);
        }
        Ok(true)
    }

    fn unauthorized(&self, message: String) -> RegistryError {
        let hint = match &self.creds {
            Some(c) => format!(" (the credentials for {:?} from {} were refused)", c.username, c.from),
            None => format!(" (no credentials for {} found; strata login {})", self.host, self.host),
        };
        RegistryError::Unauthorized { host: self.host.clone(), message, hint }
    }

    /// The Bearer token flow: GET realm?service=...&scope=repository:REPO:ACTIONS.
    fn token(&self, params: &std::collections::HashMap<String, String>) -> Result<String, RegistryError> {
        let realm = params
            .get("realm")
            .filter(|r| r.starts_with("https://") || r.starts_with("http://"))
            .ok_or_else(|| self.unauthorized("the Bearer challenge names no usable token realm".into()))?;
        let mut req = self.agent.get(realm.as_str());
        if let Some(s) = params.get("service") {
            req = req.query("service", s);
        }
        if !self.repo.is_empty() {
            req = req.query("scope", format!("repository:{}:{}", self.repo, self.actions));
        }
        for s in &self.extra_scopes {
            req = req.query("scope", s);
        }
        if let Some(c) = &self.creds {
            req = req.header("Authorization", c.basic());
        }
        let resp = req.call().map_err(|e| transport_error(&self.host, &self.ca_dirs, e).1)?;
        let status = resp.status();
        let body = read_small(resp, 1 << 20);
        if !status.is_success() {
            let (_, m) = error_message(&body);
            return Err(self.unauthorized(format!(
                "token server {}: HTTP {}: {m}",
                crate::image::printable(realm, 200),
                status.as_u16()
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| self.unauthorized(format!("token server answered no JSON: {e}")))?;
        let t = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.unauthorized("token server answered no token".into()))?;
        Ok(format!("Bearer {t}"))
    }

    /// GET `/v2/REPO/{path}` with authentication and bounded retries; a 2xx response, or an
    /// error saying what the registry said. `what` names the object for a 404.
    pub fn get(&self, path: &str, accept: Option<&str>, what: &str) -> Result<Response<Body>, RegistryError> {
        self.get_url(format!("{}/v2/{}/{path}", self.base, self.repo), accept, what)
    }

    /// Check the credentials (`strata login`): `GET /v2/` authenticated.
    pub fn check_login(&self) -> Result<(), RegistryError> {
        self.get_url(format!("{}/v2/", self.base), None, &self.host).map(drop)
    }

    fn get_url(
        &self,
        url: String,
        accept: Option<&str>,
        what: &str,
    ) -> Result<Response<Body>, RegistryError> {
        self.send_retry(&url, what, |authz| {
            let mut req = self.agent.get(&url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(h) = authz {
                req = req.header("Authorization", h);
            }
            req.call().map_err(|e| transport_error(&self.host, &self.ca_dirs, e))
        })
    }

    /// `base/v2/REPO/{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repo)
    }

    /// An upload `Location`: absolute as sent, or relative to the registry.
    pub fn location_url(&self, loc: &str) -> String {
        if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_string()
        } else {
            format!("{}/{}", self.base, loc.trim_start_matches('/'))
        }
    }

    /// A HEAD, POST or PUT with authentication and bounded retries (the payload is sent again
    /// from the start on each attempt); a 2xx response, or an error saying what the registry said.
    pub fn send(
        &self,
        method: Method,
        url: &str,
        payload: Payload<'_>,
        what: &str,
    ) -> Result<Response<Body>, RegistryError> {
        self.send_retry(url, what, |authz| {
            let io_err = |e: std::io::Error, p: &Path| {
                (false, RegistryError::Local { path: p.display().to_string(), source: e })
            };
            macro_rules! with_auth {
                ($req:expr) => {{
                    let mut req = $req;
                    if let Some(h) = authz {
                        req = req.header("Authorization", h);
                    }
                    req
                }};
            }
            let r = match (method, &payload) {
                (Method::Head, _) => with_auth!(self.agent.head(url)).call(),
                (Method::Get, _) => with_auth!(self.agent.get(url)).call(),
                (m, p) => {
                    let req = match m {
                        Method::Put => self.agent.put(url),
                        Method::Patch => self.agent.patch(url),
                        _ => self.agent.post(url),
                    };
                    let req = with_auth!(req);
                    match p {
                        Payload::None => req.header("Content-Length", "0").send_empty(),
                        Payload::Bytes(b, ct) => req.header("Content-Type", *ct).send(*b),
                        Payload::File(path, watch) => {
                            use std::io::Read;
                            let f = std::fs::File::open(path).map_err(|e| io_err(e, path))?;
                            let len = f.metadata().map_err(|e| io_err(e, path))?.len();
                            let mut body = Watched { file: f.take(len), position: 0, watch: *watch };
                            req.header("Content-Type", "application/octet-stream")
                                .header("Content-Length", &len.to_string())
                                .send(ureq::SendBody::from_reader(&mut body))
                        }
                        Payload::FileRange(path, offset, len, watch) => {
                            use std::io::{Read, Seek};
                            let mut f = std::fs::File::open(path).map_err(|e| io_err(e, path))?;
                            f.seek(std::io::SeekFrom::Start(*offset)).map_err(|e| io_err(e, path))?;
                            let last = offset + len.saturating_sub(1);
                            let mut body = Watched { file: f.take(*len), position: *offset, watch: *watch };
                            req.header("Content-Type", "application/octet-stream")
                                .header("Content-Range", &format!("{offset}-{last}"))
                                .header("Content-Length", &len.to_string())
                                .send(ureq::SendBody::from_reader(&mut body))
                        }
                    }
                }
            };
            r.map_err(|e| transport_error(&self.host, &self.ca_dirs, e))
        })
    }

    fn send_retry(
        &self,
        url: &str,
        what: &str,
        mut send: impl FnMut(Option<String>) -> Result<Response<Body>, (bool, RegistryError)>,
    ) -> Result<Response<Body>, RegistryError> {
        let url = url.to_string();
        let mut authed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let wait = Duration::from_millis(100 << attempt.min(6));
            let authz = self.authz.lock().ok().and_then(|g| g.clone());
            let resp = match send(authz) {
                Ok(r) => r,
                Err((true, e)) if attempt < self.attempts => {
                    tracing::warn!(%url, error = %crate::error::report(&e), "retrying");
                    std::thread::sleep(wait);
                    continue;
                }
                Err((_, e)) => return Err(e),
            };
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if status == StatusCode::UNAUTHORIZED && !authed {
                authed = true;
                if self.authenticate(&resp)? {
                    attempt -= 1;
                    continue;
                }
            }
            let transient = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if transient && attempt < self.attempts {
                let w = retry_after(&resp).unwrap_or(wait).min(MAX_WAIT);
                tracing::warn!(%url, status = status.as_u16(), wait_ms = w.as_millis() as u64, "retrying");
                drop(read_small(resp, 4096));
                std::thread::sleep(w);
                continue;
            }
            let (code, message) = error_message(&read_small(resp, 64 << 10));
            return Err(match status {
                StatusCode::UNAUTHORIZED => self.unauthorized(message),
                StatusCode::FORBIDDEN => RegistryError::Denied { host: self.host.clone(), message },
                StatusCode::NOT_FOUND => RegistryError::NotFound {
                    what: what.to_string(),
                    code: code.unwrap_or_default(),
                    message,
                },
                StatusCode::TOO_MANY_REQUESTS => RegistryError::GaveUp {
                    host: self.host.clone(),
                    status: 429,
                    tries: attempt,
                    message: format!("rate limited: {message}"),
                },
                s if s.is_server_error() => RegistryError::GaveUp {
                    host: self.host.clone(),
                    status: s.as_u16(),
                    tries: attempt,
                    message,
                },
                s => RegistryError::Status { host: self.host.clone(), url, status: s.as_u16(), message },
            });
        }
    }

    /// A small object (manifest, config), read whole, at most `limit` bytes; also returns the
    /// response's Content-Type and Docker-Content-Digest.
    pub fn get_small(
        &self,
        path: &str,
        accept: Option<&str>,
        what: &str,
        limit: u64,
    ) -> Result<Small, RegistryError> {
        let resp = self.get(path, accept, what)?;
        let ct = header(&resp, "content-type");
        let dcd = header(&resp, "docker-content-digest");
        let mut buf = Vec::new();
        resp.into_body().into_reader().take(limit + 1).read_to_end(&mut buf).map_err(|source| {
            RegistryError::ReadBody { host: self.host.clone(), what: what.to_string(), source }
        })?;
        if buf.len() as u64 > limit {
            return Err(RegistryError::Invalid {
                what: what.to_string(),
                reason: format!("larger than the {limit}-byte limit for metadata"),
            });
        }
        Ok((buf, ct, dcd))
    }

    /// Bytes `range` of a blob, by an HTTP Range request (a lazy pull's footer, TOC and
    /// chunks). A registry that answers with anything but those bytes (a 200 with the whole
    /// blob, another range) is refused rather than read.
    pub fn blob_range(&self, digest: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, RegistryError> {
        let what = format!("{}/{}@{digest} bytes {}-{}", self.host, self.repo, range.start, range.end);
        let invalid = |reason: String| RegistryError::Invalid { what: what.clone(), reason };
        if range.is_empty() {
            return Err(invalid("an empty range".into()));
        }
        let url = self.url(&format!("blobs/{digest}"));
        let spec = format!("bytes={}-{}", range.start, range.end - 1);
        let resp = self.send_retry(&url, &what, |authz| {
            let mut req = self.agent.get(&url).header("Range", &spec);
            if let Some(h) = authz {
                req = req.header("Authorization", h);
            }
            req.call().map_err(|e| transport_error(&self.host, &self.ca_dirs, e))
        })?;
        let want = format!("bytes {}-{}/", range.start, range.end - 1);
        if resp.status() != StatusCode::PARTIAL_CONTENT
            || !header(&resp, "content-range").is_some_and(|c| c.starts_with(&want))
        {
            return Err(invalid(format!(
                "the registry answered HTTP {} without that range",
                resp.status().as_u16()
            )));
        }
        let len = range.end - range.start;
        let mut buf = Vec::with_capacity(len.min(1 << 20) as usize);
        resp.into_body().into_reader().take(len + 1).read_to_end(&mut buf).map_err(|source| {
            RegistryError::ReadBody { host: self.host.clone(), what: what.clone(), source }
        })?;
        if buf.len() as u64 != len {
            return Err(invalid(format!("{} bytes sent", buf.len())));
        }
        Ok(buf)
    }

    /// Stream a blob: the body and its length (from Content-Length, when sent).
    pub fn blob(&self, digest: &str) -> Result<(Box<dyn Read + Send>, Option<u64>), RegistryError> {
        let what = format!("{}/{}@{digest}", self.host, self.repo);
        let resp = self.get(&format!("blobs/{digest}"), None, &what)?;
        let len = header(&resp, "content-length").and_then(|l| l.parse().ok());
        Ok((Box::new(resp.into_body().into_reader()), len))
    }
}

/// A plain HTTP(S) download (`ADD URL` in a build), through the agent, TLS roots and transport
/// error mapping registries use: the body as a stream, and its `Last-Modified` in Unix seconds
/// when the server sent a date it could parse.
pub struct Download {
    pub body: Box<dyn Read + Send>,
    pub last_modified: Option<i64>,
}

/// GETs `url` (http or https), following redirects; any status but 200 is an error.
pub fn download(url: &str, opts: &ClientOptions) -> Result<Download, RegistryError> {
    let invalid = |reason: &str| RegistryError::Invalid { what: url.to_string(), reason: reason.to_string() };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid("not an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    let dirs = ca_dirs(host, opts).iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" or ");
    let agent = agent(tls_config(host, opts)?, opts.request_timeout);
    let resp = agent.get(url).call().map_err(|e| transport_error(host, &dirs, e).1)?;
    let status = resp.status();
    if status != StatusCode::OK {
        let message = error_message(&read_small(resp, 4096)).1;
        return Err(if status == StatusCode::NOT_FOUND {
            RegistryError::NotFound { what: url.to_string(), code: String::new(), message }
        } else {
            RegistryError::Status {
                host: host.to_string(),
                url: url.to_string(),
                status: status.as_u16(),
                message,
            }
        });
    }
    let last_modified = header(&resp, "last-modified").and_then(|d| crate::time::parse_http_date(&d));
    Ok(Download { body: Box::new(resp.into_body().into_reader()), last_modified })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "localhost:5000", "127.0.0.1", "127.0.0.1:5000", "127.1.2.3:1", "[::1]:5000"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["example.com", "10.0.0.1:5000", "localhost.example:5000", "[fe80::1]:5000"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn registry_messages() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(error_message(body), (Some("MANIFEST_UNKNOWN".into()), "manifest unknown".into()));
        assert_eq!(error_message(b"plain \x1b text\n").1, "plain \\u{1b} text");
    }
}
