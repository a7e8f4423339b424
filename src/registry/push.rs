//! `strata push`: a stored image's blobs, config and manifest to a registry repository (OCI
//! distribution spec). Each blob is asked for first (HEAD); one the registry lacks is mounted
//! from another repository of the same registry when strata knows one that should hold it (the
//! repository the image's own name points into), else uploaded in one monolithic PUT streamed
//! from the store. The manifest goes last, with its exact stored bytes, so its digest is the same
//! on the registry as in the store.

use oci_spec::image::ImageManifest;

use super::client::{header, Method, Payload};
use super::{Client, ClientOptions, RegistryError};
use crate::digest::Sha256Digest;
use crate::image::{self, ImageError};
use crate::reference::{self, Normalized};
use crate::store::{Store, StoreError};

/// Push options.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub client: ClientOptions,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// The manifest digest, as the registry stores it.
    pub digest: String,
    /// Blobs the registry already had.
    pub present: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Blobs uploaded.
    pub uploaded: usize,
}

/// How a blob reached the registry.
enum Sent {
    Present,
    Mounted,
    Uploaded,
}

/// Push the stored image `name` to `dest`.
pub fn push(
    store: &Store,
    name: &str,
    dest: &Normalized,
    opts: &PushOptions,
) -> Result<Pushed, RegistryError> {
    let row =
        store.db.image(name).map_err(StoreError::from)?.ok_or_else(|| StoreError::NoImage(name.into()))?;
    // Blobs are read while nothing may collect them.
    let _gc = store.gc_shared()?;
    let md = parse_digest(&row.manifest_digest, &format!("{name}: manifest"))?;
    let body = store.read_blob(&md)?;
    let mwhat = format!("{name}: manifest {md}");
    let manifest: ImageManifest = image::parse_json(&body, &mwhat)?;
    let media_type = manifest_media_type(&body);

    let mut blobs = Vec::new();
    for l in manifest.layers() {
        blobs.push((parse_digest(l.digest().as_ref(), &format!("{mwhat}: layer"))?, l.size(), "layer"));
    }
    let c = manifest.config();
    blobs.push((parse_digest(c.digest().as_ref(), &format!("{mwhat}: config"))?, c.size(), "config"));
    for (d, size, kind) in &blobs {
        let p = store.blob_path(d);
        let len = std::fs::metadata(&p)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    StoreError::MissingBlob { digest: d.to_string() }
                } else {
                    StoreError::Io { path: p.clone(), source: e }
                }
            })?
            .len();
        if len != *size {
            return Err(ImageError::SizeMismatch {
                what: format!("{mwhat}: {kind} {d}"),
                expected: *size,
                actual: len,
            }
            .into());
        }
    }

    // The repository the image's own name points into, on the same registry: its blobs can be
    // mounted rather than sent again (a token must allow pulling from it too).
    let mount_from = reference::normalize(name)
        .ok()
        .filter(|n| n.domain == dest.domain && n.repo != dest.repo)
        .map(|n| n.repo);
    let mut copts = opts.client.clone();
    copts.extra_scopes.extend(mount_from.iter().map(|r| format!("repository:{r}:pull")));
    let client = Client::connect(&dest.domain, &dest.repo, &copts, "pull,push")?;

    let mut pushed = Pushed::default();
    for (d, size, kind) in &blobs {
        let what = format!("{}/{}: {kind} {d}", dest.domain, dest.repo);
        match push_blob(&client, store, d, mount_from.as_deref(), &what)? {
            Sent::Present => pushed.present += 1,
            Sent::Mounted => pushed.mounted += 1,
            Sent::Uploaded => pushed.uploaded += 1,
        }
        tracing::info!(blob = %d, size, kind, "pushed");
    }

    let reference = match (&dest.digest, &dest.tag) {
        (Some(want), _) => {
            if *want != md.to_string() {
                return Err(RegistryError::Invalid {
                    what: dest.to_string(),
                    reason: format!("the image's manifest is {md}, not the digest named"),
                });
            }
            want.clone()
        }
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_string(),
    };
    let url = client.url(&format!("manifests/{reference}"));
    let resp = client.send(Method::Put, &url, Payload::Bytes(&body, &media_type), &format!("{dest}"))?;
    if let Some(got) = header(&resp, "docker-content-digest").filter(|h| h.starts_with("sha256:")) {
        if got != md.to_string() {
            return Err(RegistryError::DigestMismatch {
                what: format!("{dest}: manifest"),
                expected: md.to_string(),
                actual: got,
            });
        }
    }
    pushed.digest = md.to_string();
    Ok(pushed)
}

fn parse_digest(s: &str, what: &str) -> Result<Sha256Digest, RegistryError> {
    Sha256Digest::parse(s).map_err(|e| ImageError::Digest { what: what.to_string(), source: e }.into())
}

/// The manifest's own `mediaType` (which registries check the Content-Type against); OCI's when
/// it names none.
fn manifest_media_type(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| image::MT_OCI_MANIFEST.to_string())
}

/// One blob: HEAD, then a mount, then an upload.
fn push_blob(
    client: &Client,
    store: &Store,
    d: &Sha256Digest,
    mount_from: Option<&str>,
    what: &str,
) -> Result<Sent, RegistryError> {
    match client.send(Method::Head, &client.url(&format!("blobs/{d}")), Payload::None, what) {
        Ok(_) => return Ok(Sent::Present),
        Err(RegistryError::NotFound { .. }) => {}
        // A HEAD answer has no body: the POST below reports the registry's own message.
        Err(RegistryError::Unauthorized { .. } | RegistryError::Denied { .. }) => {}
        Err(e) => return Err(e),
    }
    let start = match mount_from {
        Some(from) => client.url(&format!("blobs/uploads/?mount={d}&from={from}")),
        None => client.url("blobs/uploads/"),
    };
    let resp = client.send(Method::Post, &start, Payload::None, what)?;
    if mount_from.is_some() && resp.status().as_u16() == 201 {
        return Ok(Sent::Mounted);
    }
    let loc = header(&resp, "location").ok_or_else(|| RegistryError::Invalid {
        what: what.to_string(),
        reason: "the registry started an upload without a Location".into(),
    })?;
    drop(resp);
    let mut url = client.location_url(&loc);
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!("digest={d}"));
    client.send(Method::Put, &url, Payload::File(&store.blob_path(d)), what)?;
    Ok(Sent::Uploaded)
}
