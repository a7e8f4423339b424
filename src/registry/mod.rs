//! Registries (OCI distribution spec): a registry is one more [`ImageSource`]. Its manifest and
//! config are fetched and verified here; each layer blob is then streamed by the layer store's
//! one-pass verify + store + unpack path ([`crate::layers`]), exactly as a local layout's blob is.

pub mod activity;
pub mod auth;
pub mod chunks;
pub mod client;
pub mod lazy;
pub mod partial;
pub mod push;
pub mod remote_layer;

use std::io::Read;
use std::sync::Arc;

use oci_spec::image::{ImageIndex, ImageManifest, MediaType};

use crate::digest::Sha256Digest;
use crate::image::{self, Format, ImageError, ImageSource, LayerRef, Platform, Resolved};
use crate::reference::Normalized;
pub use client::{Client, ClientOptions};
pub use push::{push, PushOptions, Pushed};

/// Registry errors: each names the host or the object and says what the registry said.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{host}: unknown host (the name does not resolve)")]
    UnknownHost { host: String },
    #[error("{host}: cannot connect: {reason}")]
    Connect { host: String, reason: String },
    /// The connection failed on an I/O error (reset, unreachable, ...).
    #[error("{host}: cannot connect")]
    ConnectIo {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client's own failure of the exchange.
    #[error("{host}: cannot connect")]
    Transport {
        host: String,
        #[source]
        source: Box<ureq::Error>,
    },
    /// Reading a response's body failed.
    #[error("{host}: cannot connect: reading {what}")]
    ReadBody {
        host: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// `dirs`: where this strata looked for the registry's CA (`*.crt` files). (The reason is
    /// text, not a `source`: the hint follows it.)
    #[error("{host}: TLS: {reason} (a private CA goes in {dirs} as a *.crt file; --tls-verify=false skips verification)")]
    Tls { host: String, reason: String, dirs: String },
    #[error("{host}: unauthorized: {message}{hint}")]
    Unauthorized { host: String, message: String, hint: String },
    #[error("{host}: access denied: {message}")]
    Denied { host: String, message: String },
    #[error("{what}: not found: {message}{}", not_found_hint(code))]
    NotFound { what: String, code: String, message: String },
    #[error("{host}: HTTP {status} for {url}: {message}")]
    Status { host: String, url: String, status: u16, message: String },
    #[error("{host}: HTTP {status} after {tries} tries: {message}")]
    GaveUp { host: String, status: u16, tries: u32, message: String },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{what}")]
    BadDigest {
        what: String,
        #[source]
        source: crate::digest::DigestError,
    },
    /// A CA certificate file that cannot be read.
    #[error("{path}")]
    CertFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a PEM certificate file")]
    NotPem {
        path: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{what}: digest mismatch: expected {expected}, the registry sent {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    /// A remote layer that sent a chunk not matching its TOC: nothing more is fetched for it.
    #[error("layer {layer} is bad ({reason}): nothing more is fetched for it")]
    BadLayer { layer: String, reason: String },
    /// A lazy read that did not get its bytes within its deadline.
    #[error("{what}: the registry did not answer within {secs} s")]
    Deadline { what: String, secs: u64 },
    /// A local file a push or pull reads.
    #[error("{path}")]
    Local {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl RegistryError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            RegistryError::NotFound { .. } | RegistryError::UnknownHost { .. } => ErrorKind::NotFound,
            RegistryError::Unauthorized { .. } | RegistryError::Denied { .. } => {
                ErrorKind::FailedPrecondition
            }
            RegistryError::Invalid { .. }
            | RegistryError::BadDigest { .. }
            | RegistryError::CertFile { .. }
            | RegistryError::NotPem { .. }
            | RegistryError::DigestMismatch { .. }
            | RegistryError::BadLayer { .. } => ErrorKind::InvalidArgument,
            RegistryError::Connect { .. }
            | RegistryError::ConnectIo { .. }
            | RegistryError::Transport { .. }
            | RegistryError::ReadBody { .. }
            | RegistryError::Tls { .. }
            | RegistryError::Status { .. }
            | RegistryError::GaveUp { .. }
            | RegistryError::Deadline { .. }
            | RegistryError::Local { .. } => ErrorKind::Internal,
            RegistryError::Store(e) => e.kind(),
            RegistryError::Auth(e) => e.kind(),
            RegistryError::Image(e) => e.kind(),
        }
    }
}

fn not_found_hint(code: &str) -> &'static str {
    match code {
        "NAME_UNKNOWN" => " (no such repository on this registry)",
        "MANIFEST_UNKNOWN" => " (no such tag or digest in the repository)",
        "BLOB_UNKNOWN" => " (the registry lost a blob its manifest names)",
        _ => "",
    }
}

/// Media types asked for when fetching a manifest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// Pull options.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub platform: Option<Platform>,
    pub client: ClientOptions,
}

/// A registry repository as an image source: blobs are streamed from it.
pub struct RegistrySource {
    client: Arc<Client>,
}

impl ImageSource for RegistrySource {
    fn describe(&self) -> String {
        format!("{}/{}", self.client.host, self.client.repo)
    }

    fn open_blob(&self, layer: &LayerRef) -> Result<(Box<dyn Read + Send>, u64), ImageError> {
        let d = layer.digest.as_ref().ok_or_else(|| ImageError::Invalid {
            what: self.describe(),
            reason: "a registry layer without a digest".into(),
        })?;
        tracing::info!(layer = %d, "fetching");
        let (r, len) = self.client.blob(&d.to_string()).map_err(|e| ImageError::Remote(Box::new(e)))?;
        Ok((r, layer.size.or(len).unwrap_or(0)))
    }
}

/// The media type of a fetched manifest: the body's own `mediaType`, else Content-Type.
fn media_type_of(body: &[u8], content_type: Option<&str>) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()).filter(|m| !m.is_empty()) {
        return mt.to_string();
    }
    if v.get("manifests").is_some() {
        return image::MT_OCI_INDEX.to_string();
    }
    match content_type.map(|c| c.split(';').next().unwrap_or("").trim()) {
        Some(c) if !c.is_empty() && c != "application/json" => c.to_string(),
        _ => image::MT_OCI_MANIFEST.to_string(),
    }
}

/// Fetch a manifest or index by tag or digest; verify it against `want` (a digest) when given,
/// and against the registry's Docker-Content-Digest when that is sent.
fn fetch_manifest(
    client: &Client,
    reference: &str,
    want: Option<&Sha256Digest>,
    what: &str,
) -> Result<(Vec<u8>, Sha256Digest, String), RegistryError> {
    let (body, ct, dcd) = client.get_small(
        &format!("manifests/{reference}"),
        Some(MANIFEST_ACCEPT),
        what,
        image::METADATA_LIMIT,
    )?;
    let d = Sha256Digest::of(&body);
    let expected = want.map(|w| w.to_string()).or(dcd.filter(|h| h.starts_with("sha256:")));
    if let Some(e) = expected {
        if e != d.to_string() {
            return Err(RegistryError::DigestMismatch {
                what: format!("{what}: manifest"),
                expected: e,
                actual: d.to_string(),
            });
        }
    }
    let mt = media_type_of(&body, ct.as_deref());
    Ok((body, d, mt))
}

/// Resolve `r` on its registry: the manifest (through an index, by platform), the config,
/// every digest verified, and a source the layer blobs are streamed from.
pub fn resolve(r: &Normalized, opts: &PullOptions) -> Result<Resolved, RegistryError> {
    resolve_with(r, opts).map(|(resolved, _, _)| resolved)
}

/// [`resolve`], with the client it connected and the verified manifest (for a lazy pull, which
/// reads the layers' annotations and fetches by ranges).
pub(crate) fn resolve_with(
    r: &Normalized,
    opts: &PullOptions,
) -> Result<(Resolved, Arc<Client>, ImageManifest), RegistryError> {
    let client = Arc::new(Client::connect(&r.domain, &r.repo, &opts.client, "pull")?);
    let name = r.to_string();
    let (reference, want) = match (&r.digest, &r.tag) {
        (Some(d), _) => {
            let d = Sha256Digest::parse(d)
                .map_err(|source| RegistryError::BadDigest { what: name.clone(), source })?;
            (d.to_string(), Some(d))
        }
        (None, Some(t)) => (t.clone(), None),
        (None, None) => ("latest".to_string(), None),
    };
    let (mut body, mut digest, mut mt) = fetch_manifest(&client, &reference, want.as_ref(), &name)?;
    let host = Platform::host();
    let wanted = opts.platform.as_ref().unwrap_or(&host);
    let mut by_platform = false;
    for _ in 0..8 {
        if !image::is_index(&MediaType::from(mt.as_str())) {
            break;
        }
        let index: ImageIndex = image::parse_json(&body, &format!("{name}: index {digest}"))?;
        let (desc, matched) = image::choose_platform(&name, &index, wanted)?;
        by_platform = matched;
        let d = Sha256Digest::parse(desc.digest().as_ref())
            .map_err(|e| ImageError::Digest { what: format!("{name}: index {digest}"), source: e })?;
        let what = format!("{name}@{d}");
        let got = fetch_manifest(&client, &d.to_string(), Some(&d), &what)?;
        if got.0.len() as u64 != desc.size() {
            return Err(ImageError::SizeMismatch {
                what: format!("{what}: manifest"),
                expected: desc.size(),
                actual: got.0.len() as u64,
            }
            .into());
        }
        (body, digest, mt) = got;
    }
    if image::is_index(&MediaType::from(mt.as_str())) {
        return Err(RegistryError::Invalid { what: name, reason: "indexes nested too deeply".into() });
    }
    if mt.starts_with("application/vnd.docker.distribution.manifest.v1") {
        return Err(RegistryError::Invalid {
            what: name,
            reason: format!("{mt}: docker schema 1 manifests are not supported (push the image again with a current tool)"),
        });
    }
    let mwhat = format!("{name}: manifest {digest}");
    let manifest: ImageManifest = image::parse_json(&body, &mwhat)?;
    let cdesc = manifest.config();
    let cd = Sha256Digest::parse(cdesc.digest().as_ref())
        .map_err(|e| ImageError::Digest { what: format!("{mwhat}: config"), source: e })?;
    let cwhat = format!("{name}: config {cd}");
    if cdesc.size() > image::METADATA_LIMIT {
        return Err(RegistryError::Invalid {
            what: cwhat,
            reason: format!("{} bytes is larger than the metadata limit", cdesc.size()),
        });
    }
    let (config, _, _) = client.get_small(&format!("blobs/{cd}"), None, &cwhat, image::METADATA_LIMIT)?;
    let actual = Sha256Digest::of(&config);
    if actual != cd {
        return Err(RegistryError::DigestMismatch {
            what: cwhat,
            expected: cd.to_string(),
            actual: actual.to_string(),
        });
    }
    if config.len() as u64 != cdesc.size() {
        return Err(ImageError::SizeMismatch {
            what: cwhat,
            expected: cdesc.size(),
            actual: config.len() as u64,
        }
        .into());
    }
    let layers = image::manifest_layers(&manifest, &mwhat, &config, &cwhat)?;
    let resolved = Resolved {
        format: Format::Registry,
        source: Box::new(RegistrySource { client: client.clone() }),
        name: Some(name),
        manifest: Some((body, digest)),
        config,
        config_digest: cd,
        layers,
    };
    if let (Some(p), false) = (&opts.platform, by_platform) {
        image::check_config_platform(&resolved, p)?;
    }
    Ok((resolved, client, manifest))
}
