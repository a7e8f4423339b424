//! Image formats: resolving an OCI image layout, an oci-archive or a docker-archive to a manifest,
//! a config and an ordered list of layer blobs, with every metadata blob verified.
//!
//! Files: here the errors, the resolved image and the entry points ([`resolve`],
//! [`archive_images`]); `detect.rs` what a path holds; `oci.rs` OCI layouts and archives (index,
//! manifest, config); `docker.rs` docker-archives; `platform.rs` platforms and choosing one;
//! [`reference`] the references users write; [`source`] reading files from a directory or tar.

mod detect;
mod docker;
mod oci;
mod platform;
pub mod reference;
pub mod source;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::digest::{DigestError, Sha256Digest};
pub use detect::detect;
use docker::{resolve_docker, DockerManifestEntry};
pub use oci::{is_index, manifest_layers};
use oci::{resolve_oci, tags_of};
pub use platform::{check_config_platform, choose_platform, Platform};
pub use reference::SourceRef;
pub use source::{Files, ImageSource};

/// Largest index, manifest or config we read.
pub const METADATA_LIMIT: u64 = 16 << 20;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Layer media types are [`crate::compression`]'s, which maps them to compressions.
pub use crate::compression::{MT_DOCKER_LAYER_GZIP, MT_OCI_LAYER, MT_OCI_LAYER_GZIP, MT_OCI_LAYER_ZSTD};
/// The manifest and config media types are those [`crate::images`] publishes with.
pub use crate::images::{MT_OCI_CONFIG, MT_OCI_MANIFEST};
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What to add to an image source that cannot be opened: in rootless mode a file the user
/// cannot read (its namespace's root has no rights over the host's other users' files).
fn denied_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied && crate::userns::is_rootless() {
        ": this user cannot read it (rootless strata reads image sources with the user's own \
         rights: make it readable by the user, or copy it)"
    } else {
        ""
    }
}

/// Image format errors. Each names the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}{}", denied_hint(source))]
    Open { path: PathBuf, source: std::io::Error },
    /// (A reason, not a `source`: the tar reader's messages may quote header bytes, so they are
    /// shown made printable and short.)
    #[error("{path}: not a readable archive: {reason}")]
    Archive { path: PathBuf, reason: String },
    /// Reading a member of an archive failed.
    #[error("{path}: not a readable archive")]
    ArchiveRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `what` says what the file is instead (gzip data, an empty file, a tar without image
    /// metadata); `hint` may add what to do.
    #[error("{}: {what}; expected an OCI image layout directory, an oci-archive tar or a docker-archive tar{hint}", path.display())]
    NotAnImage { path: PathBuf, what: String, hint: &'static str },
    #[error("{source_name}: missing file {file}")]
    MissingFile { source_name: String, file: String },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    /// A registry reference (`docker://NAME`) that is not a valid image name.
    #[error("{what}")]
    Reference {
        what: String,
        #[source]
        source: crate::reference::ReferenceError,
    },
    #[error("{what}")]
    Digest { what: String, source: DigestError },
    #[error("{what}: digest mismatch: descriptor says {expected}, content is {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    #[error("{what}: size mismatch: descriptor says {expected} bytes, content is {actual} bytes")]
    SizeMismatch { what: String, expected: u64, actual: u64 },
    #[error("{source_name}: no image tagged {tag:?}; available: {available}")]
    NoSuchTag { source_name: String, tag: String, available: String },
    #[error("{source_name}: holds several images ({available}); name one as SOURCE:TAG")]
    Ambiguous { source_name: String, available: String },
    #[error("{source_name}: no manifest for platform {platform}; available: {available}")]
    NoPlatform { source_name: String, platform: String, available: String },
    #[error("unsupported layer media type {0:?}")]
    MediaType(String),
    /// A remote source's own error (a registry's), kept whole.
    #[error(transparent)]
    Remote(Box<dyn std::error::Error + Send + Sync>),
}

impl ImageError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            ImageError::Open { source, .. } => ErrorKind::of_io(source),
            ImageError::NoSuchTag { .. } | ImageError::NoPlatform { .. } | ImageError::MissingFile { .. } => {
                ErrorKind::NotFound
            }
            ImageError::Ambiguous { .. } => ErrorKind::FailedPrecondition,
            ImageError::Archive { .. }
            | ImageError::ArchiveRead { .. }
            | ImageError::NotAnImage { .. }
            | ImageError::Invalid { .. }
            | ImageError::Reference { .. }
            | ImageError::Digest { .. }
            | ImageError::DigestMismatch { .. }
            | ImageError::SizeMismatch { .. }
            | ImageError::MediaType(_) => ErrorKind::InvalidArgument,
            ImageError::Remote(_) => ErrorKind::Internal,
        }
    }

    /// The same error with the file `from` called `to` wherever it names it: an archive read
    /// from standard input is spooled to a file first, and its errors name "standard input".
    pub fn relabel(self, from: &str, to: &str) -> ImageError {
        let s = |v: String| v.replace(from, to);
        let p = |v: PathBuf| if v.as_os_str() == from { PathBuf::from(to) } else { v };
        match self {
            ImageError::Open { path, source } => ImageError::Open { path: p(path), source },
            ImageError::Archive { path, reason } => ImageError::Archive { path: p(path), reason: s(reason) },
            ImageError::ArchiveRead { path, source } => ImageError::ArchiveRead { path: p(path), source },
            ImageError::NotAnImage { path, what, hint } => {
                ImageError::NotAnImage { path: p(path), what, hint }
            }
            ImageError::MissingFile { source_name, file } => {
                ImageError::MissingFile { source_name: s(source_name), file }
            }
            ImageError::Invalid { what, reason } => ImageError::Invalid { what: s(what), reason: s(reason) },
            ImageError::Reference { what, source } => ImageError::Reference { what: s(what), source },
            ImageError::Digest { what, source } => ImageError::Digest { what: s(what), source },
            ImageError::DigestMismatch { what, expected, actual } => {
                ImageError::DigestMismatch { what: s(what), expected, actual }
            }
            ImageError::SizeMismatch { what, expected, actual } => {
                ImageError::SizeMismatch { what: s(what), expected, actual }
            }
            ImageError::NoSuchTag { source_name, tag, available } => {
                ImageError::NoSuchTag { source_name: s(source_name), tag, available }
            }
            ImageError::Ambiguous { source_name, available } => {
                ImageError::Ambiguous { source_name: s(source_name), available }
            }
            ImageError::NoPlatform { source_name, platform, available } => {
                ImageError::NoPlatform { source_name: s(source_name), platform, available }
            }
            e @ (ImageError::MediaType(_) | ImageError::Remote(_)) => e,
        }
    }
}

/// The format of an image source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OciLayout,
    OciArchive,
    DockerArchive,
    /// A registry (`strata pull`).
    Registry,
}

impl Format {
    /// For messages: "an OCI image layout", ...
    pub fn describe(self) -> &'static str {
        match self {
            Format::OciLayout => "an OCI image layout",
            Format::OciArchive => "an oci-archive",
            Format::DockerArchive => "a docker-archive",
            Format::Registry => "a registry",
        }
    }
}

/// One layer to import, bottom first.
#[derive(Debug, Clone)]
pub struct LayerRef {
    /// File inside the source holding the blob.
    pub file: String,
    /// The blob's digest and size, when the source states them (always for OCI).
    pub digest: Option<Sha256Digest>,
    pub size: Option<u64>,
    /// Media type as the manifest states it (None for docker-archive: sniffed).
    pub media_type: Option<String>,
    /// The uncompressed tar's digest, from the config.
    pub diff_id: Sha256Digest,
}

/// A resolved image: verified metadata and the layers still to stream.
pub struct Resolved {
    pub format: Format,
    /// Where the layer blobs are streamed from.
    pub source: Box<dyn ImageSource>,
    /// Name from the source (ref name annotation or RepoTag), if any.
    pub name: Option<String>,
    /// The verified manifest (None for docker-archive: built after the layers are hashed).
    pub manifest: Option<(Vec<u8>, Sha256Digest)>,
    pub config: Vec<u8>,
    pub config_digest: Sha256Digest,
    pub layers: Vec<LayerRef>,
}

/// Split `PATH[:TAG]`: the whole string when it exists as a path, else at the last colon.
pub fn split_reference(s: &str) -> (PathBuf, Option<String>) {
    if Path::new(s).exists() {
        return (PathBuf::from(s), None);
    }
    match s.rsplit_once(':') {
        Some((p, t)) if !p.is_empty() && !t.is_empty() && !t.contains('/') => {
            (PathBuf::from(p), Some(t.to_string()))
        }
        _ => (PathBuf::from(s), None),
    }
}

/// `s` safe to print: control characters (C0, DEL, C1) and bidirectional overrides escaped, at
/// most `max` characters. For text that came from an image (names inside archives, tags,
/// platform strings, parser messages quoting them).
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A list from an image for a message: each item printable, at most a dozen shown.
fn list_for_message(items: &[String], empty: &str) -> String {
    const SHOWN: usize = 12;
    if items.is_empty() {
        return empty.to_string();
    }
    let mut out: Vec<String> = items.iter().take(SHOWN).map(|t| printable(t, 80)).collect();
    if items.len() > SHOWN {
        out.push(format!("and {} more", items.len() - SHOWN));
    }
    out.join(", ")
}

/// The images an archive or layout at `reference` holds by name, for loading them all (as
/// `podman load` does): the transport that names them, the path, and the names (docker-archive
/// `RepoTags`, OCI `org.opencontainers.image.ref.name` annotations), each once, in order.
pub fn archive_images(reference: &str) -> Result<(&'static str, PathBuf, Vec<String>), ImageError> {
    let path = match SourceRef::parse(reference)? {
        SourceRef::Local { path, .. } => path,
        SourceRef::Registry(n) => {
            return Err(ImageError::Invalid { what: n.to_string(), reason: "not a local archive".into() })
        }
    };
    let (format, files) = detect(&path)?;
    let mut names: Vec<String> = match format {
        Format::OciLayout | Format::OciArchive => {
            let what = format!("{}: index.json", files.describe());
            tags_of(&parse_json(&files.read("index.json", METADATA_LIMIT)?, &what)?)
        }
        Format::DockerArchive => {
            let what = format!("{}: manifest.json", files.describe());
            let entries: Vec<DockerManifestEntry> =
                parse_json(&files.read("manifest.json", METADATA_LIMIT)?, &what)?;
            entries.iter().flat_map(|e| e.repo_tags.clone().unwrap_or_default()).collect()
        }
        Format::Registry => Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    let transport = match format {
        Format::OciLayout => "oci",
        Format::OciArchive => "oci-archive",
        _ => "docker-archive",
    };
    Ok((transport, path, names))
}

/// Open and resolve a local image reference (see [`SourceRef`]).
pub fn resolve(reference: &str, platform: Option<&Platform>) -> Result<Resolved, ImageError> {
    let (path, tag, want) = match SourceRef::parse(reference)? {
        SourceRef::Local { path, tag, format } => (path, tag, format),
        SourceRef::Registry(n) => {
            return Err(ImageError::Invalid {
                what: n.to_string(),
                reason: "a registry image is pulled, not imported (strata pull)".into(),
            })
        }
    };
    let (format, files) = detect(&path)?;
    if let Some(want) = want.filter(|w| *w != format) {
        return Err(ImageError::Invalid {
            what: path.display().to_string(),
            reason: format!("holds {}, not {}", format.describe(), want.describe()),
        });
    }
    let host = Platform::host();
    let wanted = platform.unwrap_or(&host);
    let (resolved, chosen_by_platform) = match format {
        Format::OciLayout | Format::OciArchive => resolve_oci(format, files, tag, wanted)?,
        Format::DockerArchive => (resolve_docker(files, tag)?, false),
        Format::Registry => {
            return Err(ImageError::Invalid {
                what: path.display().to_string(),
                reason: "a registry image is pulled, not imported (strata pull)".into(),
            })
        }
    };
    // An explicit --platform must match, whether or not an index offered a choice: a
    // single-manifest image's platform is the one its config states.
    if let (Some(p), false) = (platform, chosen_by_platform) {
        check_config_platform(&resolved, p)?;
    }
    Ok(resolved)
}

pub fn parse_json<T: serde::de::DeserializeOwned>(data: &[u8], what: &str) -> Result<T, ImageError> {
    serde_json::from_slice(data)
        .map_err(|e| ImageError::Invalid { what: what.to_string(), reason: printable(&e.to_string(), 200) })
}

pub use crate::compression::Compression;

/// The compression a layer media type declares; errors for non-layer types.
pub fn layer_compression(mt: &str) -> Result<Compression, ImageError> {
    Compression::of_media_type(mt).ok_or_else(|| ImageError::MediaType(mt.to_string()))
}

/// Compression by magic bytes (for docker-archive layers, which have no media type).
pub fn sniff_compression(head: &[u8]) -> Compression {
    Compression::sniff(head)
}

/// The config's `rootfs.diff_ids`, validated.
pub fn diff_ids(config: &[u8], what: &str) -> Result<Vec<Sha256Digest>, ImageError> {
    let v: Value = parse_json(config, what)?;
    let ids =
        v.get("rootfs").and_then(|r| r.get("diff_ids")).and_then(|d| d.as_array()).ok_or_else(|| {
            ImageError::Invalid { what: what.to_string(), reason: "no rootfs.diff_ids".into() }
        })?;
    ids.iter()
        .map(|id| {
            let s = id.as_str().ok_or_else(|| ImageError::Invalid {
                what: what.to_string(),
                reason: "a diff_id is not a string".into(),
            })?;
            Sha256Digest::parse(s)
                .map_err(|e| ImageError::Digest { what: format!("{what}: diff_id"), source: e })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_references() {
        assert_eq!(
            split_reference("/nonexistent/dir:tag"),
            (PathBuf::from("/nonexistent/dir"), Some("tag".into()))
        );
        assert_eq!(split_reference("/nonexistent/dir"), (PathBuf::from("/nonexistent/dir"), None));
        assert_eq!(split_reference("/tmp"), (PathBuf::from("/tmp"), None));
    }

    #[test]
    fn media_types() {
        assert_eq!(layer_compression(MT_OCI_LAYER_GZIP).ok(), Some(Compression::Gzip));
        assert_eq!(layer_compression(MT_DOCKER_LAYER_GZIP).ok(), Some(Compression::Gzip));
        assert_eq!(layer_compression(MT_OCI_LAYER_ZSTD).ok(), Some(Compression::Zstd));
        assert_eq!(layer_compression(MT_OCI_LAYER).ok(), Some(Compression::None));
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip").ok(),
            Some(Compression::Gzip)
        );
        assert!(matches!(layer_compression("text/plain"), Err(ImageError::MediaType(_))));
    }

    #[test]
    fn printable_escapes_controls() {
        assert_eq!(printable("a\x1b[31mb\n\u{202e}c", 100), "a\\u{1b}[31mb\\n\\u{202e}c");
        assert_eq!(printable("héllo", 100), "héllo");
        assert_eq!(printable("abcdef", 3), "abc…");
        let many: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        let l = list_for_message(&many, "none");
        assert!(l.ends_with("t11, and 8 more"), "{l}");
        assert_eq!(list_for_message(&[], "none"), "none");
    }
}
