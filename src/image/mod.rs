//! Image formats: resolving an OCI image layout, an oci-archive or a docker-archive to a manifest,
//! a config and an ordered list of layer blobs, with every metadata blob verified.

pub mod reference;
pub mod source;

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde_json::Value;

use crate::digest::{DigestError, Sha256Digest};
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

/// Image format errors. Each names the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a readable archive: {reason}")]
    Archive { path: PathBuf, reason: String },
    /// `what` says what the file is instead (gzip data, an empty file, a tar without image
    /// metadata); `hint` may add what to do.
    #[error("{}: {what}; expected an OCI image layout directory, an oci-archive tar or a docker-archive tar{hint}", path.display())]
    NotAnImage { path: PathBuf, what: String, hint: &'static str },
    #[error("{source_name}: missing file {file}")]
    MissingFile { source_name: String, file: String },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
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
            | ImageError::NotAnImage { .. }
            | ImageError::Invalid { .. }
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
            ImageError::NotAnImage { path, what, hint } => {
                ImageError::NotAnImage { path: p(path), what, hint }
            }
            ImageError::MissingFile { source_name, file } => {
                ImageError::MissingFile { source_name: s(source_name), file }
            }
            ImageError::Invalid { what, reason } => ImageError::Invalid { what: s(what), reason: s(reason) },
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

/// A platform `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this host, in GOOS/GOARCH terms.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "arm" => "arm",
            other => other,
        };
        Platform { os: "linux".into(), arch: arch.into(), variant: None }
    }

    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => {
                Ok(Platform { os: os.to_string(), arch: arch.to_string(), variant: None })
            }
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => {
                Ok(Platform { os: os.to_string(), arch: arch.to_string(), variant: Some(v.to_string()) })
            }
            _ => Err(format!("bad platform {s:?}: expected OS/ARCH[/VARIANT]")),
        }
    }

    fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        p.os().to_string() == self.os
            && p.architecture().to_string() == self.arch
            && match (&self.variant, p.variant()) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                (None, _) => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
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

/// Whether `block` is a tar header (its checksum adds up) or the zero block ending an archive.
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    let block = &block[..512];
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let field = &block[148..156];
    let digits: String =
        field.iter().map(|&b| b as char).skip_while(|c| *c == ' ').take_while(|c| c.is_digit(8)).collect();
    let Ok(stated) = i64::from_str_radix(&digits, 8) else { return false };
    let spaces = 8 * i64::from(b' ');
    let outside = |i: &usize| !(148..156).contains(i);
    let unsigned: i64 =
        block.iter().enumerate().filter(|(i, _)| outside(i)).map(|(_, &b)| i64::from(b)).sum::<i64>()
            + spaces;
    let signed: i64 =
        block.iter().enumerate().filter(|(i, _)| outside(i)).map(|(_, &b)| i64::from(b as i8)).sum::<i64>()
            + spaces;
    stated == unsigned || stated == signed
}

/// What a file that is not a tar is, by its first bytes; and what to do about it.
fn not_a_tar(head: &[u8], len: u64) -> Option<(String, &'static str)> {
    const DECOMPRESS: &str = " (decompress it first)";
    let found = |what: &str, hint| Some((what.to_string(), hint));
    if len == 0 {
        return found("an empty file", "");
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return found("gzip-compressed data", DECOMPRESS);
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return found("zstd-compressed data", DECOMPRESS);
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return found("xz-compressed data", DECOMPRESS);
    }
    if head.starts_with(b"BZh") {
        return found("bzip2-compressed data", DECOMPRESS);
    }
    if head.starts_with(b"PK\x03\x04") {
        return found("a zip archive", "");
    }
    if is_tar_header(head) {
        return None;
    }
    if head.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b == b'{' || *b == b'[') {
        return found("a JSON file", " (for an OCI layout, give the directory that holds index.json)");
    }
    Some((format!("not a tar archive ({len} bytes of other data)"), ""))
}

/// Detect the format of `path`: by its kind, its first bytes, then the files it holds.
pub fn detect(path: &Path) -> Result<(Format, Files), ImageError> {
    let md = std::fs::metadata(path).map_err(|e| ImageError::Open { path: path.to_path_buf(), source: e })?;
    let not_an_image = |what: String, hint| ImageError::NotAnImage { path: path.to_path_buf(), what, hint };
    if md.is_dir() {
        let files = Files::Dir(path.to_path_buf());
        if files.exists("oci-layout") || files.exists("index.json") {
            return Ok((Format::OciLayout, files));
        }
        if files.exists("manifest.json") {
            return Ok((Format::DockerArchive, files));
        }
        return Err(not_an_image("a directory without oci-layout, index.json or manifest.json".into(), ""));
    }
    if !md.is_file() {
        return Err(not_an_image("not a regular file or directory".into(), ""));
    }
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(|e| ImageError::Open { path: path.to_path_buf(), source: e })?;
    if let Some((what, hint)) = not_a_tar(&head, md.len()) {
        return Err(not_an_image(what, hint));
    }
    let files = Files::tar(path)?;
    if files.exists("oci-layout") || files.exists("index.json") {
        Ok((Format::OciArchive, files))
    } else if files.exists("manifest.json") {
        Ok((Format::DockerArchive, files))
    } else {
        Err(not_an_image("a tar archive without oci-layout, index.json or manifest.json".into(), ""))
    }
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

/// Whether the config of `r` states platform `p`; else the same error as an index without it.
pub fn check_config_platform(r: &Resolved, p: &Platform) -> Result<(), ImageError> {
    let v: Value = serde_json::from_slice(&r.config).unwrap_or(Value::Null);
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).filter(|x| !x.is_empty());
    let (os, arch, variant) = (field("os"), field("architecture"), field("variant"));
    let matches = os == Some(p.os.as_str())
        && arch == Some(p.arch.as_str())
        && p.variant.as_deref().is_none_or(|want| variant == Some(want));
    if matches {
        return Ok(());
    }
    let stated = match (os, arch, variant) {
        (Some(os), Some(arch), Some(var)) => vec![format!("{os}/{arch}/{var}")],
        (Some(os), Some(arch), None) => vec![format!("{os}/{arch}")],
        _ => vec![],
    };
    Err(ImageError::NoPlatform {
        source_name: r.source.describe(),
        platform: p.to_string(),
        available: list_for_message(&stated, "none stated"),
    })
}

/// Read a blob named by a descriptor, bounded, and verify its size and digest.
fn read_verified(
    files: &Files,
    desc: &Descriptor,
    what: &str,
) -> Result<(Vec<u8>, Sha256Digest), ImageError> {
    let what = format!("{}: {what} {}", files.describe(), desc.digest());
    let d = Sha256Digest::parse(desc.digest().as_ref())
        .map_err(|e| ImageError::Digest { what: what.clone(), source: e })?;
    if desc.size() > METADATA_LIMIT {
        return Err(ImageError::Invalid {
            what,
            reason: format!("{} bytes is larger than the {METADATA_LIMIT}-byte metadata limit", desc.size()),
        });
    }
    let data = files.read(&format!("blobs/sha256/{}", d.hex()), METADATA_LIMIT)?;
    if data.len() as u64 != desc.size() {
        return Err(ImageError::SizeMismatch { what, expected: desc.size(), actual: data.len() as u64 });
    }
    let actual = Sha256Digest::of(&data);
    if actual != d {
        return Err(ImageError::DigestMismatch { what, expected: d.to_string(), actual: actual.to_string() });
    }
    Ok((data, d))
}

pub fn is_index(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageIndex) || mt.to_string() == MT_DOCKER_LIST
}

fn tags_of(index: &ImageIndex) -> Vec<String> {
    index
        .manifests()
        .iter()
        .filter_map(|d| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned())
        .collect()
}

fn platforms_of(index: &ImageIndex) -> String {
    let v: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| match p.variant() {
            Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
            None => format!("{}/{}", p.os(), p.architecture()),
        })
        .collect();
    list_for_message(&v, "none stated")
}

pub fn parse_json<T: serde::de::DeserializeOwned>(data: &[u8], what: &str) -> Result<T, ImageError> {
    serde_json::from_slice(data)
        .map_err(|e| ImageError::Invalid { what: what.to_string(), reason: printable(&e.to_string(), 200) })
}

/// From an index, choose the descriptor for `platform` (or the only one).
/// Returns the descriptor and whether it was chosen by its stated platform.
pub fn choose_platform<'a>(
    source_name: &str,
    index: &'a ImageIndex,
    platform: &Platform,
) -> Result<(&'a Descriptor, bool), ImageError> {
    let ms = index.manifests();
    if let Some(d) = ms.iter().find(|d| d.platform().as_ref().is_some_and(|p| platform.matches(p))) {
        return Ok((d, true));
    }
    if ms.len() == 1 && ms[0].platform().is_none() {
        return Ok((&ms[0], false));
    }
    Err(ImageError::NoPlatform {
        source_name: source_name.to_string(),
        platform: platform.to_string(),
        available: platforms_of(index),
    })
}

/// Also returns whether the manifest was chosen by a platform an index states for it.
fn resolve_oci(
    format: Format,
    files: Files,
    tag: Option<String>,
    platform: &Platform,
) -> Result<(Resolved, bool), ImageError> {
    let mut by_platform = false;
    let what = format!("{}: index.json", files.describe());
    let index: ImageIndex = parse_json(&files.read("index.json", METADATA_LIMIT)?, &what)?;
    let tags = tags_of(&index);
    // Pick the top-level descriptor: by tag, the only one, or a platform among untagged ones.
    let (desc, name) = match &tag {
        Some(t) => {
            let d = index
                .manifests()
                .iter()
                .find(|d| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)) == Some(t))
                .ok_or_else(|| ImageError::NoSuchTag {
                    source_name: files.describe(),
                    tag: printable(t, 80),
                    available: list_for_message(&tags, "no tags"),
                })?;
            (d.clone(), Some(t.clone()))
        }
        None => {
            let ms = index.manifests();
            if ms.is_empty() {
                return Err(ImageError::Invalid { what, reason: "the index lists no manifests".into() });
            }
            let mut distinct: Vec<&Descriptor> = Vec::new();
            for d in ms {
                if !distinct.iter().any(|x| x.digest() == d.digest()) {
                    distinct.push(d);
                }
            }
            let mut named = tags.clone();
            named.sort();
            named.dedup();
            if distinct.len() == 1 {
                let name = distinct[0].annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned();
                (distinct[0].clone(), name)
            } else if named.len() > 1 {
                // Several images by name (strata save, skopeo into one layout), not the platforms
                // of one image: the caller names one, or loads them all.
                return Err(ImageError::Ambiguous {
                    source_name: files.describe(),
                    available: list_for_message(&tags, "untagged"),
                });
            } else if ms.iter().all(|d| d.platform().is_some()) {
                let (d, matched) = choose_platform(&files.describe(), &index, platform)?;
                by_platform = matched;
                (d.clone(), None)
            } else {
                return Err(ImageError::Ambiguous {
                    source_name: files.describe(),
                    available: list_for_message(&tags, "untagged"),
                });
            }
        }
    };
    // Follow nested indexes down to a manifest (bounded depth: a hostile layout may loop).
    let mut desc = desc;
    for _ in 0..8 {
        if !is_index(desc.media_type()) {
            break;
        }
        let (data, _) = read_verified(&files, &desc, "index")?;
        let nested: ImageIndex =
            parse_json(&data, &format!("{}: index {}", files.describe(), desc.digest()))?;
        let (d, matched) = choose_platform(&files.describe(), &nested, platform)?;
        by_platform = matched;
        desc = d.clone();
    }
    if is_index(desc.media_type()) {
        return Err(ImageError::Invalid {
            what: files.describe(),
            reason: "indexes nested too deeply".into(),
        });
    }
    let (mdata, mdigest) = read_verified(&files, &desc, "manifest")?;
    let mwhat = format!("{}: manifest {}", files.describe(), mdigest);
    let manifest: ImageManifest = parse_json(&mdata, &mwhat)?;
    let (config, config_digest) = read_verified(&files, manifest.config(), "config")?;
    let cwhat = format!("{}: config {}", files.describe(), config_digest);
    let layers = manifest_layers(&manifest, &mwhat, &config, &cwhat)?;
    Ok((
        Resolved {
            format,
            source: Box::new(files),
            name,
            manifest: Some((mdata, mdigest)),
            config,
            config_digest,
            layers,
        },
        by_platform,
    ))
}

/// The layers of a verified manifest, each paired with its diff_id from the verified config
/// (`mwhat` and `cwhat` name the two in messages). Each layer's `file` is
/// `blobs/sha256/<hex>`, where a layout holds it.
pub fn manifest_layers(
    manifest: &ImageManifest,
    mwhat: &str,
    config: &[u8],
    cwhat: &str,
) -> Result<Vec<LayerRef>, ImageError> {
    let diff_ids = diff_ids(config, cwhat)?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(ImageError::Invalid {
            what: mwhat.to_string(),
            reason: format!(
                "{} layers but the config lists {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (l, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let d = Sha256Digest::parse(l.digest().as_ref())
            .map_err(|e| ImageError::Digest { what: format!("{mwhat}: layer"), source: e })?;
        let mt = l.media_type().to_string();
        layer_compression(&mt)?;
        layers.push(LayerRef {
            file: format!("blobs/sha256/{}", d.hex()),
            digest: Some(d),
            size: Some(l.size()),
            media_type: Some(mt),
            diff_id,
        });
    }
    Ok(layers)
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

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The hex a docker-archive file name carries: `<hex>.json`, `blobs/sha256/<hex>`, `<hex>/layer.tar`.
fn hex_in_name(name: &str) -> Option<Sha256Digest> {
    let n = name.trim_start_matches("./");
    let cand = match n.strip_prefix("blobs/sha256/") {
        Some(rest) => rest,
        None => n.strip_suffix(".json")?,
    };
    Sha256Digest::from_hex(cand).ok()
}

fn resolve_docker(files: Files, tag: Option<String>) -> Result<Resolved, ImageError> {
    let what = format!("{}: manifest.json", files.describe());
    let entries: Vec<DockerManifestEntry> = parse_json(&files.read("manifest.json", METADATA_LIMIT)?, &what)?;
    let all_tags: Vec<String> =
        entries.iter().flat_map(|e| e.repo_tags.clone().unwrap_or_default()).collect();
    let entry = match &tag {
        Some(t) => entries
            .iter()
            .find(|e| {
                e.repo_tags.as_ref().is_some_and(|tags| {
                    tags.iter().any(|x| x == t || x.rsplit_once(':').is_some_and(|(_, tt)| tt == t))
                })
            })
            .ok_or_else(|| ImageError::NoSuchTag {
                source_name: files.describe(),
                tag: printable(t, 80),
                available: list_for_message(&all_tags, "no tags"),
            })?,
        None => match entries.as_slice() {
            [] => return Err(ImageError::Invalid { what, reason: "no images listed".into() }),
            [one] => one,
            _ => {
                return Err(ImageError::Ambiguous {
                    source_name: files.describe(),
                    available: list_for_message(&all_tags, "no tags"),
                })
            }
        },
    };
    let config = files.read(&entry.config, METADATA_LIMIT)?;
    let config_digest = Sha256Digest::of(&config);
    let cwhat = format!("{}: {}", files.describe(), entry.config);
    if let Some(named) = hex_in_name(&entry.config) {
        if named != config_digest {
            return Err(ImageError::DigestMismatch {
                what: cwhat,
                expected: named.to_string(),
                actual: config_digest.to_string(),
            });
        }
    }
    let ids = diff_ids(&config, &cwhat)?;
    if ids.len() != entry.layers.len() {
        return Err(ImageError::Invalid {
            what,
            reason: format!("{} layers but the config lists {} diff_ids", entry.layers.len(), ids.len()),
        });
    }
    let layers = entry
        .layers
        .iter()
        .zip(ids)
        .map(|(file, diff_id)| LayerRef {
            file: file.clone(),
            digest: file.strip_prefix("blobs/sha256/").and_then(|h| Sha256Digest::from_hex(h).ok()),
            size: None,
            media_type: None,
            diff_id,
        })
        .collect();
    let name = tag.or_else(|| entry.repo_tags.as_ref().and_then(|t| t.first().cloned()));
    Ok(Resolved {
        format: Format::DockerArchive,
        source: Box::new(files),
        name,
        manifest: None,
        config,
        config_digest,
        layers,
    })
}

/// Read a few bytes from the start of a reader without losing them.
pub fn peek(mut r: Box<dyn Read + Send>, n: usize) -> std::io::Result<(Vec<u8>, Box<dyn Read + Send>)> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let k = r.read(&mut head[got..])?;
        if k == 0 {
            break;
        }
        got += k;
    }
    head.truncate(got);
    let rest: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(head.clone()).chain(r));
    Ok((head, rest))
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
    fn sniffs_what_a_file_is() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_cksum();
        tar.append_data(&mut h, "a", &b"x"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        assert!(is_tar_header(&tar[..512]));
        assert_eq!(not_a_tar(&tar[..512], tar.len() as u64), None);
        assert_eq!(not_a_tar(&[0; 512], 1024), None, "an empty archive is a tar");
        let mut bad = tar[..512].to_vec();
        bad[0] ^= 1;
        assert!(!is_tar_header(&bad));
        let what = |head: &[u8]| not_a_tar(head, head.len() as u64).map(|(w, _)| w);
        assert_eq!(what(b""), Some("an empty file".into()));
        assert_eq!(what(&[0x1f, 0x8b, 8, 0]), Some("gzip-compressed data".into()));
        assert_eq!(what(&[0x28, 0xb5, 0x2f, 0xfd]), Some("zstd-compressed data".into()));
        assert_eq!(what(b"\xfd7zXZ\0"), Some("xz-compressed data".into()));
        assert_eq!(what(b"BZh91AY"), Some("bzip2-compressed data".into()));
        assert_eq!(what(b" {\"manifests\": []}"), Some("a JSON file".into()));
        assert_eq!(what(&[0x41; 100]), Some("not a tar archive (100 bytes of other data)".into()));
        assert_eq!(not_a_tar(&[0x1f, 0x8b], 2).map(|(_, h)| h), Some(" (decompress it first)"));
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

    #[test]
    fn platform_parse() {
        assert_eq!(
            Platform::parse("linux/arm64/v8"),
            Ok(Platform { os: "linux".into(), arch: "arm64".into(), variant: Some("v8".into()) })
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/").is_err());
    }
}
