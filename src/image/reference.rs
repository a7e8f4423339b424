//! Image source references, as skopeo and podman spell them, and the plain forms strata has taken
//! since its first version:
//!
//! | reference | source |
//! |---|---|
//! | `oci:DIR[:TAG]` | an OCI image layout directory |
//! | `oci-archive:FILE[:TAG]` | a tar of an OCI image layout |
//! | `docker-archive:FILE[:REPO:TAG]` | a `docker save` tar |
//! | `docker://NAME` | a registry, NAME normalised as docker does (`busybox` = `docker.io/library/busybox:latest`) |
//! | `PATH[:TAG]` | whichever of the three local formats PATH holds (detected) |
//!
//! A path that exists is taken whole, so a path holding a `:` still works; otherwise the text after
//! the last `:` (with no `/` in it) is the tag.

use std::path::{Path, PathBuf};

use super::{split_reference, Format, ImageError};
use crate::reference::{normalize, Normalized};

/// Where an image is to be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// A local file or directory; `format` is `None` for the plain form (detected from the
    /// contents), else what the transport prefix demands.
    Local { path: PathBuf, tag: Option<String>, format: Option<Format> },
    /// A registry (`docker://`).
    Registry(Normalized),
}

impl SourceRef {
    /// Parse a reference; see the module documentation.
    pub fn parse(s: &str) -> Result<SourceRef, ImageError> {
        let bad = |reason: String| ImageError::Invalid { what: super::printable(s, 200), reason };
        if let Some(name) = s.strip_prefix("docker://") {
            return normalize(name)
                .map(SourceRef::Registry)
                .map_err(|source| ImageError::Reference { what: super::printable(s, 200), source });
        }
        for (prefix, format) in [
            ("oci:", Format::OciLayout),
            ("oci-archive:", Format::OciArchive),
            ("docker-archive:", Format::DockerArchive),
        ] {
            if let Some(rest) = s.strip_prefix(prefix) {
                if rest.is_empty() {
                    return Err(bad(format!("no path after {prefix}")));
                }
                let (path, tag) = split_local(rest, format);
                return Ok(SourceRef::Local { path, tag, format: Some(format) });
            }
        }
        if s.is_empty() {
            return Err(bad("empty reference".into()));
        }
        let (path, tag) = split_reference(s);
        Ok(SourceRef::Local { path, tag, format: None })
    }
}

/// `PATH[:TAG]` of a transport-qualified local reference. The tag may hold `:` itself (a
/// docker-archive's is a docker reference, `busybox:1.36`; an OCI ref name may be
/// `localhost/app:v2`), so it starts at the first `:` after an existing path, as skopeo splits.
fn split_local(rest: &str, _format: Format) -> (PathBuf, Option<String>) {
    if !Path::new(rest).exists() {
        let mut at = 0;
        while let Some(i) = rest[at..].find(':') {
            let (p, t) = rest.split_at(at + i);
            if Path::new(p).exists() && t.len() > 1 {
                return (PathBuf::from(p), Some(t[1..].to_string()));
            }
            at += i + 1;
        }
    }
    split_reference(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transports() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a:b");
        std::fs::create_dir(&dir).unwrap();
        let d = dir.display().to_string();
        let local = |path: &str, tag: Option<&str>, format| SourceRef::Local {
            path: PathBuf::from(path),
            tag: tag.map(str::to_string),
            format,
        };
        assert_eq!(SourceRef::parse("/x/layout:v1").unwrap(), local("/x/layout", Some("v1"), None));
        assert_eq!(SourceRef::parse(&d).unwrap(), local(&d, None, None), "an existing path is whole");
        assert_eq!(
            SourceRef::parse(&format!("oci:{d}:v2")).unwrap(),
            local(&d, Some("v2"), Some(Format::OciLayout))
        );
        assert_eq!(
            SourceRef::parse("oci-archive:/x/img.tar").unwrap(),
            local("/x/img.tar", None, Some(Format::OciArchive))
        );
        assert_eq!(
            SourceRef::parse(&format!("docker-archive:{d}:busybox:1.36")).unwrap(),
            local(&d, Some("busybox:1.36"), Some(Format::DockerArchive))
        );
        assert_eq!(
            SourceRef::parse(&format!("oci-archive:{d}:localhost/app:v2")).unwrap(),
            local(&d, Some("localhost/app:v2"), Some(Format::OciArchive))
        );
        let SourceRef::Registry(n) = SourceRef::parse("docker://busybox").unwrap() else { panic!() };
        assert_eq!(n.to_string(), "docker.io/library/busybox:latest");
        let SourceRef::Registry(n) = SourceRef::parse("docker://localhost:5000/app:v1").unwrap() else {
            panic!()
        };
        assert_eq!(
            (n.domain.as_str(), n.repo.as_str(), n.tag.as_deref()),
            ("localhost:5000", "app", Some("v1"))
        );
        for bad in ["", "oci:", "docker://", "docker://UPPER", "docker://a\nb"] {
            assert!(SourceRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}
