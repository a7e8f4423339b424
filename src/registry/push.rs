//! `strata push`: a stored image's blobs, config and manifest to a registry repository (OCI
//! distribution spec). Each blob is asked for first (HEAD); one the registry lacks is mounted
//! from another repository of the same registry when strata knows one that should hold it (the
//! repository the image's own name points into), else uploaded from the store: in one PUT when
//! it is at most [`PushOptions::chunk_size`], otherwise in PATCH chunks of that size, so a failed
//! request is sent again alone (a chunk the registry took part of resumes from the offset the
//! registry reports). The manifest goes last, with its exact stored bytes, so its digest is the same
//! on the registry as in the store.

use oci_spec::image::ImageManifest;

use super::client::{header, Method, Payload, Watch};
use super::{Client, ClientOptions, RegistryError};
use crate::digest::Sha256Digest;
use crate::image::{self, ImageError};
use crate::import::{ImportEvent, Progress};
use crate::reference::{self, Normalized};
use crate::store::{Store, StoreError};

/// Push options.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub client: ClientOptions,
    /// Blobs larger than this go up in chunks of this many bytes; 0: [`DEFAULT_CHUNK`].
    pub chunk_size: u64,
    /// Told what the push does, blob by blob (layers first, then the config), as an import
    /// tells it: [`ImportEvent::Start`], `LayerStarted`, `LayerPosition` while a blob uploads,
    /// `LayerSent`.
    pub progress: Option<Progress>,
}

/// The chunk size of uploads when none is set: 64 MiB.
pub const DEFAULT_CHUNK: u64 = 64 << 20;

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
    let row = store.image(name)?.ok_or_else(|| StoreError::NoImage(name.into()))?;
    // Blobs are read while nothing may collect them.
    let _gc = store.gc_shared()?;
    let md = row.manifest_digest.clone();
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
    let emit = |e: ImportEvent| {
        if let Some(p) = &opts.progress {
            p.emit(&e);
        }
    };
    emit(ImportEvent::Start { layers: blobs.len(), bytes: blobs.iter().map(|b| b.1).sum() });
    for (index, (d, size, kind)) in blobs.iter().enumerate() {
        let what = format!("{}/{}: {kind} {d}", dest.domain, dest.repo);
        let chunk = if opts.chunk_size == 0 { DEFAULT_CHUNK } else { opts.chunk_size };
        emit(ImportEvent::LayerStarted { index, layer: d.to_string(), size: Some(*size) });
        let watch = |position| emit(ImportEvent::LayerPosition { index, position });
        let how = match push_blob(&client, store, d, mount_from.as_deref(), chunk, &what, &watch)? {
            Sent::Present => {
                pushed.present += 1;
                "already present"
            }
            Sent::Mounted => {
                pushed.mounted += 1;
                "mounted"
            }
            Sent::Uploaded => {
                pushed.uploaded += 1;
                "pushed"
            }
        };
        emit(ImportEvent::LayerSent { index, how });
        tracing::info!(blob = %d, size, kind, how, "pushed");
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
    chunk: u64,
    what: &str,
    watch: Watch<'_>,
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
    let path = store.blob_path(d);
    let size = std::fs::metadata(&path)
        .map_err(|source| RegistryError::Local { path: path.display().to_string(), source })?
        .len();
    let finish = |loc: &str, payload| {
        let mut url = client.location_url(loc);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={d}"));
        client.send(Method::Put, &url, payload, what).map(drop)
    };
    if size <= chunk {
        finish(&loc, Payload::File(&path, Some(watch)))?;
        return Ok(Sent::Uploaded);
    }
    let mut loc = loc;
    let mut offset = 0;
    let mut resumed = 0;
    let start_url = client.url("blobs/uploads/");
    while offset < size {
        let len = chunk.min(size - offset);
        let url = client.location_url(&loc);
        match client.send(Method::Patch, &url, Payload::FileRange(&path, offset, len, Some(watch)), what) {
            Ok(resp) => {
                loc = header(&resp, "location").unwrap_or(loc);
                offset = match header(&resp, "range").as_deref().and_then(range_end) {
                    Some(end) => end + 1,
                    None => offset + len,
                };
            }
            // The registry took part of a chunk whose answer was lost and refuses it again (or
            // dropped the upload): go on from where it stands, or start the blob over.
            Err(e) if upload_state_lost(&e) && resumed < 4 => {
                resumed += 1;
                match client.send(Method::Get, &url, Payload::None, what) {
                    Ok(resp) => {
                        loc = header(&resp, "location").unwrap_or(loc);
                        // `0-0` is what distribution answers for an empty upload as for one byte.
                        offset = header(&resp, "range")
                            .as_deref()
                            .and_then(range_end)
                            .filter(|e| *e > 0)
                            .map_or(0, |e| e + 1);
                        tracing::info!(blob = %d, offset, error = %e, "resuming the upload where the registry has it");
                    }
                    Err(_) => {
                        let resp = client.send(Method::Post, &start_url, Payload::None, what)?;
                        loc = header(&resp, "location").ok_or_else(|| RegistryError::Invalid {
                            what: what.to_string(),
                            reason: "the registry started an upload without a Location".into(),
                        })?;
                        offset = 0;
                        tracing::info!(blob = %d, error = %e, "the registry dropped the upload; starting it over");
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    finish(&loc, Payload::None)?;
    Ok(Sent::Uploaded)
}

/// An error saying the registry's idea of an upload no longer matches ours: a range it refuses
/// (416), or an upload it calls invalid or unknown.
fn upload_state_lost(e: &RegistryError) -> bool {
    match e {
        RegistryError::Status { status: 416, .. } => true,
        RegistryError::NotFound { code, .. } => {
            code == "BLOB_UPLOAD_INVALID" || code == "BLOB_UPLOAD_UNKNOWN"
        }
        _ => false,
    }
}

/// The last byte of an upload's `Range: 0-N` answer.
fn range_end(h: &str) -> Option<u64> {
    let (start, end) = h.trim().trim_start_matches("bytes=").split_once('-')?;
    let (start, end): (u64, u64) = (start.parse().ok()?, end.parse().ok()?);
    (start == 0 && end >= start).then_some(end)
}
