//! Registry credentials, read from the files docker and podman write, and `WWW-Authenticate`
//! challenges.
//!
//! Files, first match wins (as containers/image reads them):
//! - `$REGISTRY_AUTH_FILE` when set (then no other file is read);
//! - `${XDG_RUNTIME_DIR}/containers/auth.json`, `${XDG_CONFIG_HOME:-~/.config}/containers/auth.json`;
//! - `${DOCKER_CONFIG:-~/.docker}/config.json`.
//!
//! Each has `auths` (key: `host`, `host/repo`, or a URL such as `https://index.docker.io/v1/`;
//! value: `auth` = base64 `user:password`, or `username`/`password`); a docker config may also name
//! credential helpers (`credHelpers` per host, `credsStore` for all), run as
//! `docker-credential-NAME get` with the server on stdin.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::Value;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Where they came from, for messages.
    pub from: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "Credentials({:?} from {})", self.username, self.from)
    }
}

impl Credentials {
    /// The `Authorization` header value for HTTP Basic.
    pub fn basic(&self) -> String {
        let b =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.username, self.password));
        format!("Basic {b}")
    }
}

/// A credential file or helper that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Rendering the file's new contents failed.
    #[error("{path}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: creating {}", dir.display())]
    CreateDir {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("credential helper docker-credential-{helper}: {reason}")]
    Helper { helper: String, reason: String },
    #[error("credential helper docker-credential-{helper}: cannot run {prog}")]
    HelperRun {
        helper: String,
        prog: String,
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the helper or reading its answer failed.
    #[error("credential helper docker-credential-{helper}")]
    HelperIo {
        helper: String,
        #[source]
        source: std::io::Error,
    },
    #[error("credential helper docker-credential-{helper}: answer is not JSON")]
    HelperJson {
        helper: String,
        #[source]
        source: serde_json::Error,
    },
    /// Writing the file failed (the cause names the file, its directory or the temp file).
    #[error("{}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: crate::fsutil::AtomicError,
    },
}

impl AuthError {
    /// The class of failure, for a front end's own codes: a credential file or helper that
    /// cannot be used is the user's to mend.
    pub fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::InvalidArgument
    }
}

/// The credential files to read, in order.
pub fn auth_files() -> Vec<PathBuf> {
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|f| !f.is_empty()) {
        return vec![PathBuf::from(f)];
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut v = Vec::new();
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        v.push(PathBuf::from(d).join("containers/auth.json"));
    }
    match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        Some(d) => v.push(PathBuf::from(d).join("containers/auth.json")),
        None => v.extend(home.as_ref().map(|h| h.join(".config/containers/auth.json"))),
    }
    match std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        Some(d) => v.push(PathBuf::from(d).join("config.json")),
        None => v.extend(home.as_ref().map(|h| h.join(".docker/config.json"))),
    }
    v
}

/// The file `strata login` writes: `$REGISTRY_AUTH_FILE`, else
/// `${XDG_RUNTIME_DIR}/containers/auth.json` (as podman), else `~/.docker/config.json`.
pub fn login_file() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|f| !f.is_empty()) {
        return Some(PathBuf::from(f));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("containers/auth.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The `auths` key forms that mean `host` (docker.io has several historical ones).
fn host_keys(host: &str) -> Vec<String> {
    if host == crate::reference::DEFAULT_DOMAIN {
        ["docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        vec![host.to_string()]
    }
}

/// `https://host/v1/` -> `host`; `host/repo` stays.
fn normalise_key(k: &str) -> &str {
    let k = k.strip_prefix("https://").or_else(|| k.strip_prefix("http://")).unwrap_or(k);
    let k = k.trim_end_matches('/');
    k.strip_suffix("/v1").or_else(|| k.strip_suffix("/v2")).unwrap_or(k)
}

/// Credentials for `host`/`repo`, from the first file that has some.
pub fn lookup(host: &str, repo: &str) -> Result<Option<Credentials>, AuthError> {
    for f in auth_files() {
        if let Some(c) = lookup_in(&f, host, repo)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn read_config(path: &Path) -> Result<Option<Value>, AuthError> {
    let bad = |reason: String| AuthError::File { path: path.to_path_buf(), reason };
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AuthError::Read { path: path.to_path_buf(), source }),
    };
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(&data)
        .map_err(|source| AuthError::Json { path: path.to_path_buf(), source })?;
    if !v.is_object() {
        return Err(bad("not a JSON object".into()));
    }
    Ok(Some(v))
}

/// Credentials for `host`/`repo` in one file (helpers it names included).
pub fn lookup_in(path: &Path, host: &str, repo: &str) -> Result<Option<Credentials>, AuthError> {
    let Some(v) = read_config(path)? else { return Ok(None) };
    let keys = host_keys(host);
    // A helper for this host, else the default store.
    let helpers = v.get("credHelpers").and_then(Value::as_object);
    let helper = keys
        .iter()
        .find_map(|k| helpers.and_then(|h| h.get(k.as_str())).and_then(Value::as_str))
        .or_else(|| v.get("credsStore").and_then(Value::as_str))
        .filter(|h| !h.is_empty());
    if let Some(h) = helper {
        let server =
            if host == crate::reference::DEFAULT_DOMAIN { "https://index.docker.io/v1/" } else { host };
        if let Some(c) = run_helper(h, server)? {
            return Ok(Some(c));
        }
    }
    let Some(auths) = v.get("auths").and_then(Value::as_object) else { return Ok(None) };
    // The most specific key wins: host/repo/..., then host.
    let mut best: Option<(usize, &Value)> = None;
    for (k, entry) in auths {
        let nk = normalise_key(k);
        let matched = keys.iter().any(|h| {
            let h = normalise_key(h);
            nk == h || {
                let full = format!("{h}/{repo}");
                full.starts_with(nk) && full.as_bytes().get(nk.len()) == Some(&b'/') && nk.starts_with(h)
            }
        });
        if matched && best.is_none_or(|(l, _)| nk.len() > l) {
            best = Some((nk.len(), entry));
        }
    }
    let Some((_, entry)) = best else { return Ok(None) };
    let from = path.display().to_string();
    let bad = |reason: &str| AuthError::File {
        path: path.to_path_buf(),
        reason: format!("entry for {host}: {reason}"),
    };
    if let Some(a) = entry.get("auth").and_then(Value::as_str).filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .map_err(|_| bad("\"auth\" is not base64"))?;
        let s = String::from_utf8(raw).map_err(|_| bad("\"auth\" is not UTF-8"))?;
        let (u, p) = s.split_once(':').ok_or_else(|| bad("\"auth\" is not USER:PASSWORD"))?;
        return Ok(Some(Credentials { username: u.to_string(), password: p.to_string(), from }));
    }
    let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (u, p) = (field("username"), field("password"));
    if !u.is_empty() {
        return Ok(Some(Credentials { username: u, password: p, from }));
    }
    Ok(None)
}

/// `docker-credential-NAME get`, the server on stdin; `None` when it has nothing for it.
fn run_helper(name: &str, server: &str) -> Result<Option<Credentials>, AuthError> {
    let helper = || crate::image::printable(name, 64);
    let fail = |reason: String| AuthError::Helper { helper: helper(), reason };
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(fail("not a plain helper name".into()));
    }
    let prog = format!("docker-credential-{name}");
    let mut child = Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| AuthError::HelperRun { helper: helper(), prog: prog.clone(), source })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| AuthError::HelperIo { helper: helper(), source })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The protocol's answer for "nothing stored".
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let msg = if stdout.trim().is_empty() {
            String::from_utf8_lossy(&out.stderr).into_owned()
        } else {
            stdout.into_owned()
        };
        return Err(fail(format!("{}: {}", out.status, crate::image::printable(msg.trim(), 300))));
    }
    let v: Value =
        serde_json::from_str(&stdout).map_err(|source| AuthError::HelperJson { helper: helper(), source })?;
    let f = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (u, p) = (f("Username"), f("Secret"));
    if u.is_empty() && p.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials { username: u, password: p, from: prog }))
}

/// Store `creds` for `host` in `path` (an auth.json or docker config.json), creating it mode 0600;
/// every other key of the file is kept. Written through [`crate::fsutil::AtomicFile`]: a temp
/// file made exclusively next to it, renamed into place (a symlink there is replaced, never
/// followed).
pub fn store(path: &Path, host: &str, creds: Option<&Credentials>) -> Result<bool, AuthError> {
    let bad = |reason: String| AuthError::File { path: path.to_path_buf(), reason };
    let mut v = read_config(path)?.unwrap_or_else(|| serde_json::json!({}));
    let obj = v.as_object_mut().ok_or_else(|| bad("not a JSON object".into()))?;
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    let auths = auths.as_object_mut().ok_or_else(|| bad("\"auths\" is not an object".into()))?;
    let keys = host_keys(host);
    let mut changed = false;
    for k in auths.keys().cloned().collect::<Vec<_>>() {
        if keys.iter().any(|h| normalise_key(h) == normalise_key(&k)) {
            auths.remove(&k);
            changed = true;
        }
    }
    if let Some(c) = creds {
        let a = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
        auths.insert(host.to_string(), serde_json::json!({ "auth": a }));
        changed = true;
    }
    if !changed {
        return Ok(false);
    }
    let text = serde_json::to_vec_pretty(&v)
        .map_err(|source| AuthError::Encode { path: path.to_path_buf(), source })?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| AuthError::CreateDir {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        source,
    })?;
    // Never through a symlink, nor at a name someone could have planted one at.
    let write = || -> Result<(), crate::fsutil::AtomicError> {
        let name = path.file_name().and_then(|n| n.to_str());
        crate::fsutil::remove_stale_temps(dir, |n| Some(n) == name);
        let mut f = crate::fsutil::AtomicFile::create(path, 0o600)?;
        f.write_all(&text)?;
        f.write_all(b"\n")?;
        f.commit()
    };
    write().map_err(|source| AuthError::Write { path: path.to_path_buf(), source })?;
    Ok(true)
}

/// A parsed `WWW-Authenticate` challenge: scheme (lowercase) and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// Parse `Scheme k="v", k2=v2`. Only the first challenge of a header is taken.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, mut rest) = match h.find(' ') {
        Some(i) => (&h[..i], h[i + 1..].trim_start()),
        None => (h, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = HashMap::new();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = r.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = &r[end?..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        params.insert(key, value);
        rest = rest.trim_start().strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(Challenge { scheme: scheme.to_ascii_lowercase(), params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "registry.example");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="basic-realm""#).unwrap();
        assert_eq!((c.scheme.as_str(), c.params["realm"].as_str()), ("basic", "basic-realm"));
        let c = parse_challenge(r#"Bearer realm="a\"b", error=invalid_token"#).unwrap();
        assert_eq!((c.params["realm"].as_str(), c.params["error"].as_str()), ("a\"b", "invalid_token"));
        assert!(parse_challenge("").is_none());
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn reads_and_writes_auth_files() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("auth.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &f,
            serde_json::json!({
                "auths": {
                    "https://index.docker.io/v1/": {"auth": b64("hub:pw")},
                    "reg.example:5000": {"auth": b64("u:p:with:colons")},
                    "reg.example:5000/team": {"username": "team", "password": "tpw"},
                    "other.example": {"auth": "!!"},
                },
                "keep": 1,
            })
            .to_string(),
        )
        .unwrap();
        let get = |h: &str, r: &str| lookup_in(&f, h, r).unwrap().map(|c| (c.username, c.password));
        assert_eq!(get("docker.io", "library/busybox"), Some(("hub".into(), "pw".into())));
        assert_eq!(get("reg.example:5000", "app"), Some(("u".into(), "p:with:colons".into())));
        assert_eq!(get("reg.example:5000", "team/app"), Some(("team".into(), "tpw".into())));
        assert_eq!(get("reg.example:5000", "teamx/app"), Some(("u".into(), "p:with:colons".into())));
        assert_eq!(get("reg.example", "app"), None, "the port is part of the host");
        let e = lookup_in(&f, "other.example", "x").unwrap_err().to_string();
        assert!(e.contains("auth.json") && e.contains("not base64"), "{e}");
        let c = Credentials { username: "n".into(), password: "secretpw".into(), from: String::new() };
        assert!(store(&f, "new.example", Some(&c)).unwrap());
        assert_eq!(get("new.example", "x"), Some(("n".into(), "secretpw".into())));
        assert!(store(&f, "docker.io", None).unwrap(), "logout removes every docker.io spelling");
        assert_eq!(get("docker.io", "library/busybox"), None);
        assert!(!store(&f, "docker.io", None).unwrap());
        let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(v["keep"], 1, "other keys survive");
        assert!(format!("{c:?}").contains("\"n\"") && !format!("{c:?}").contains("secretpw"));
    }
}
