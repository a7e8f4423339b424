//! Image names: the reference grammar docker uses (`github.com/distribution/reference`), checked
//! wherever strata creates an image name.
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path            (at most 255 characters)
//! domain     := host [ ":" port ]              host: DNS-style components or [IPv6]
//! path       := component ( "/" component )*
//! component  := [a-z0-9]+ ( separator [a-z0-9]+ )*      separator: "." | "_" | "__" | "-"+
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := "sha256:" 64 lowercase hex digits
//! ```
//!
//! As in the grammar, the first of several components is the registry host when it is not a
//! valid path component (`localhost:5000/app`, `Registry.Example/app`); everything after it is
//! lowercase. Lookups of existing names stay lenient (an image stored under an older, looser rule
//! can still be inspected and removed); creating a name goes through [`validate_image_name`].

/// The longest name (without tag and digest), as in distribution/reference.
pub const NAME_MAX: usize = 255;
/// The longest tag.
pub const TAG_MAX: usize = 128;

/// A name that does not follow the reference grammar. The name is shown quoted and escaped, and
/// cut short when long, so no input byte reaches a terminal raw.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("image name is empty")]
    Empty,
    #[error("image name {name}: {len} characters, longer than the {NAME_MAX} allowed before the tag")]
    TooLong { name: String, len: usize },
    #[error("image name {name}: {reason}")]
    Invalid { name: String, reason: String },
}

impl ReferenceError {
    /// Always [`ErrorKind::InvalidArgument`](crate::error::ErrorKind): the name is bad.
    pub fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::InvalidArgument
    }
}

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference<'a> {
    /// Registry host (and port), when the first component names one.
    pub domain: Option<&'a str>,
    /// The repository path, `/`-separated lowercase components.
    pub path: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

/// `s` quoted for a message: control characters and quotes escaped, at most 64 characters.
pub fn quote(s: &str) -> String {
    const MAX: usize = 64;
    let mut cut: String = s.chars().take(MAX).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Why `c` is not a path component, if it is not one.
fn path_component_error(c: &str) -> Option<String> {
    if c.is_empty() {
        return Some("empty path component (a leading, trailing or doubled '/')".into());
    }
    if let Some(ch) = c.chars().find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))) {
        return Some(format!("character {ch:?} is not allowed in a repository name"));
    }
    if c.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some("repository name must be lowercase".into());
    }
    let b = c.as_bytes();
    if !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return Some(format!("path component {} must start and end with a letter or digit", quote(c)));
    }
    // Separators between alphanumeric runs: ".", "_", "__", or one or more "-".
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return Some(format!(
                "path component {}: separator {} is not one of '.', '_', '__' or dashes",
                quote(c),
                quote(sep)
            ));
        }
    }
    None
}

fn is_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
}

/// `host[:port]`: DNS-style components joined by dots, or a bracketed IPv6 address.
fn is_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else { return false };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(p) => ("", Some(p)),
                None => return false,
            },
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    let host_ok = d.starts_with('[') || host.split('.').all(is_domain_component);
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

fn tag_error(t: &str) -> Option<String> {
    let b = t.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    if b.is_empty()
        || b.len() > TAG_MAX
        || !word(b[0])
        || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
    {
        return Some(format!(
            "tag {} must be 1-{TAG_MAX} characters [A-Za-z0-9_.-], not starting with '.' or '-'",
            quote(t)
        ));
    }
    None
}

fn digest_error(d: &str) -> Option<String> {
    let ok = d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    (!ok).then(|| format!("digest {} must be sha256:<64 lowercase hex digits>", quote(d)))
}

/// Parse `s` by the reference grammar.
pub fn parse(s: &str) -> Result<Reference<'_>, ReferenceError> {
    if s.is_empty() {
        return Err(ReferenceError::Empty);
    }
    let invalid = |reason: String| ReferenceError::Invalid { name: quote(s), reason };
    // Neither name nor tag holds '@': all after the first one is the digest.
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    // A tag's ':' comes after the last '/' (a port's comes before it).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if name.len() > NAME_MAX {
        return Err(ReferenceError::TooLong { name: quote(s), len: name.len() });
    }
    if name.is_empty() {
        return Err(invalid("no repository name".into()));
    }
    if let Some(d) = digest {
        if let Some(e) = digest_error(d) {
            return Err(invalid(e));
        }
    }
    if let Some(t) = tag {
        if let Some(e) = tag_error(t) {
            return Err(invalid(e));
        }
    }
    let comps: Vec<&str> = name.split('/').collect();
    let first_error = |cs: &[&str]| cs.iter().find_map(|c| path_component_error(c));
    let Some(e) = first_error(&comps) else {
        return Ok(Reference { domain: None, path: name, tag, digest });
    };
    if comps.len() > 1 && is_domain(comps[0]) {
        return match first_error(&comps[1..]) {
            None => Ok(Reference { domain: Some(comps[0]), path: &name[comps[0].len() + 1..], tag, digest }),
            Some(e) => Err(invalid(e)),
        };
    }
    Err(invalid(e))
}

/// Docker Hub, where names without a registry host live.
pub const DEFAULT_DOMAIN: &str = "docker.io";

/// A registry reference with docker's defaults applied: `busybox` is
/// `docker.io/library/busybox:latest`, `localhost:5000/app` is `localhost:5000/app:latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub domain: String,
    pub repo: String,
    /// `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl std::fmt::Display for Normalized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Normalise `s` as docker and podman do: the first `/`-separated component names the registry
/// when it holds a `.` or a `:`, or is `localhost`; otherwise the registry is docker.io, where a
/// one-component repository lives under `library/`.
pub fn normalize(s: &str) -> Result<Normalized, ReferenceError> {
    let r = parse(s)?;
    let full = match r.domain {
        Some(d) => format!("{d}/{}", r.path),
        None => r.path.to_string(),
    };
    let (domain, repo) = match full.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), full.clone()),
    };
    let domain = if domain == "index.docker.io" { DEFAULT_DOMAIN.to_string() } else { domain };
    let repo = if domain == DEFAULT_DOMAIN && !repo.contains('/') { format!("library/{repo}") } else { repo };
    if let Some(e) = repo.split('/').find_map(path_component_error) {
        return Err(ReferenceError::Invalid { name: quote(s), reason: e });
    }
    let tag = match (r.tag, r.digest) {
        (None, None) => Some("latest".to_string()),
        (t, _) => t.map(str::to_string),
    };
    Ok(Normalized { domain, repo, tag, digest: r.digest.map(str::to_string) })
}

/// Check a name an image is about to be stored under.
pub fn validate_image_name(s: &str) -> Result<(), ReferenceError> {
    parse(s).map(|_| ())
}

/// The one form an image name is stored and looked up under, as docker shows names: `:latest`
/// when neither a tag nor a digest is given, and Docker Hub's `docker.io/` and `library/`
/// prefixes dropped. `busybox`, `library/busybox` and `docker.io/library/busybox:latest` are all
/// `busybox:latest`; `localhost:5000/app` is `localhost:5000/app:latest`; `fx/app` is
/// `fx/app:latest`. `None` when `s` is not a reference (an older, looser stored name is then
/// only found as it is written).
pub fn canonical(s: &str) -> Option<String> {
    let n = normalize(s).ok()?;
    let mut out = if n.domain == DEFAULT_DOMAIN {
        match n.repo.strip_prefix("library/") {
            Some(short) if !short.contains('/') => short.to_string(),
            _ => n.repo.clone(),
        }
    } else {
        format!("{}/{}", n.domain, n.repo)
    };
    if let Some(t) = &n.tag {
        out.push(':');
        out.push_str(t);
    }
    if let Some(d) = &n.digest {
        out.push('@');
        out.push_str(d);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_normalisation() {
        let d = format!("sha256:{}", "b".repeat(64));
        for (input, want) in [
            ("busybox", "docker.io/library/busybox:latest".to_string()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".into()),
            ("docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36".into()),
            ("index.docker.io/library/busybox", "docker.io/library/busybox:latest".into()),
            ("user/app", "docker.io/user/app:latest".into()),
            ("localhost/app", "localhost/app:latest".into()),
            ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1".into()),
            ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest".into()),
            ("quay.io/org/app", "quay.io/org/app:latest".into()),
            (&format!("busybox@{d}"), format!("docker.io/library/busybox@{d}")),
            (&format!("busybox:1@{d}"), format!("docker.io/library/busybox:1@{d}")),
        ] {
            assert_eq!(normalize(input).unwrap().to_string(), want, "{input}");
        }
        for bad in ["", "UPPER/app", "a//b", "-x", "app:", "busybox@sha256:12"] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn canonical_names() {
        let d = format!("sha256:{}", "c".repeat(64));
        for (input, want) in [
            ("busybox", "busybox:latest".to_string()),
            ("busybox:1.36", "busybox:1.36".into()),
            ("library/busybox", "busybox:latest".into()),
            ("docker.io/library/busybox:latest", "busybox:latest".into()),
            ("index.docker.io/library/busybox", "busybox:latest".into()),
            ("docker.io/user/app", "user/app:latest".into()),
            ("fx/app", "fx/app:latest".into()),
            ("library/a/b", "library/a/b:latest".into()),
            ("localhost/app", "localhost/app:latest".into()),
            ("localhost:5000/app", "localhost:5000/app:latest".into()),
            ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1".into()),
            ("quay.io/org/app", "quay.io/org/app:latest".into()),
            (&format!("app@{d}"), format!("app@{d}")),
            (&format!("app:v1@{d}"), format!("app:v1@{d}")),
        ] {
            assert_eq!(canonical(input).as_deref(), Some(want.as_str()), "{input}");
            // Idempotent: the stored form finds itself.
            assert_eq!(canonical(&want).as_deref(), Some(want.as_str()), "{want}");
        }
        for bad in ["", "UPPER", "a//b", "app:", "a@b@c"] {
            assert_eq!(canonical(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn valid_names() {
        let d = format!("sha256:{}", "a".repeat(64));
        for ok in [
            "busybox",
            "busybox:latest",
            "library/busybox:1.36.1-musl",
            "docker.io/library/busybox:latest",
            "localhost/app",
            "localhost:5000/app:v1",
            "Registry.Example.COM:443/team/app",
            "[::1]:5000/app",
            "[fe80::1]/app",
            "a.b_c__d---e/f",
            "multi-upto-1",
            "x:_tag",
            "x:T.a-g_",
            &format!("app@{d}"),
            &format!("app:v1@{d}"),
            &"a".repeat(255),
            &format!("a:{}", "t".repeat(128)),
        ] {
            assert!(parse(ok).is_ok(), "{ok:?}: {:?}", parse(ok));
        }
        let r = parse("localhost:5000/team/app:v1").unwrap();
        assert_eq!(
            r,
            Reference { domain: Some("localhost:5000"), path: "team/app", tag: Some("v1"), digest: None }
        );
        let r = parse("localhost:5000").unwrap();
        assert_eq!((r.path, r.tag), ("localhost", Some("5000")));
    }

    fn reason(s: &str) -> String {
        match parse(s) {
            Err(e) => e.to_string(),
            Ok(r) => panic!("{s:?} accepted as {r:?}"),
        }
    }

    #[test]
    fn invalid_names() {
        assert_eq!(parse(""), Err(ReferenceError::Empty));
        assert!(reason("a\nb").contains("character '\\n' is not allowed"), "{}", reason("a\nb"));
        // Escapes never come out raw.
        let e = reason("evil\x1b[31mred");
        assert!(!e.contains('\x1b') && e.contains("\\u{1b}"), "{e}");
        assert!(reason("../../x").contains("must start and end with a letter or digit"));
        assert!(reason("-x").contains("must start and end with a letter or digit"));
        assert!(reason("x-").contains("must start and end"));
        assert!(reason("Busybox").contains("must be lowercase"));
        assert!(reason("docker.io/Library/busybox").contains("must be lowercase"));
        assert!(reason("a//b").contains("empty path component"));
        assert!(reason("/a").contains("empty path component"));
        assert!(reason("a/").contains("empty path component"));
        assert!(reason("a..b").contains("separator"));
        assert!(reason("a._b").contains("separator"));
        assert!(reason("a___b").contains("separator"));
        assert!(reason("a b").contains("' '"));
        assert!(reason("a:").contains("tag \"\""));
        assert!(reason("a:-x").contains("tag"));
        assert!(reason("a:.x").contains("tag"));
        assert!(reason("a:x/y").contains("must be lowercase") || reason("a:x/y").contains("character"));
        assert!(reason(&format!("a:{}", "t".repeat(129))).contains("tag"));
        assert!(reason(":tag").contains("no repository name"));
        assert!(reason("a@sha256:abc").contains("digest"));
        assert!(reason(&format!("a@sha256:{}", "A".repeat(64))).contains("digest"));
        assert!(reason("a@b@c").contains("digest"));
        assert!(reason("bad_host:x/app").contains("repository name"));
        assert!(reason("[zz]/app").contains("repository name"));
        // 10 KB: refused by length, and the message stays short.
        let long = "a".repeat(10 * 1024);
        let e = parse(&long).unwrap_err();
        assert!(matches!(e, ReferenceError::TooLong { len: 10240, .. }), "{e:?}");
        assert!(e.to_string().len() < 200, "{e}");
        assert!(matches!(parse(&"a".repeat(256)), Err(ReferenceError::TooLong { .. })));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(quote(&"x".repeat(70)), format!("\"{}…\"", "x".repeat(64)));
    }
}
