//! A seekable layer's TOC from a registry, by ranges (the first step of `pull --lazy`): the
//! descriptor tells whether the layer is seekable ([`seekable::locate`]); eStargz's tail is read
//! in one request that usually holds the footer and the whole TOC (a second one fetches the
//! rest of a bigger TOC); zstd:chunked's TOC range comes from its annotation. The TOC is
//! verified against the descriptor before anything in it is used.

use std::collections::HashMap;

use super::chunks::{RangeSource, RegistryBlob};
use super::partial::PartialBlob;
use super::{Client, ClientOptions, RegistryError};
use crate::digest::Sha256Digest;
use crate::image::LayerRef;
use crate::import::{ImportError, LazyLayers};
use crate::seekable::footer::{estargz_toc_range, parse_estargz_footer, ESTARGZ_FOOTER_SIZE};
use crate::seekable::{self, toc, Locator, Toc};
use crate::store::{ImageLayerRow, RemoteLayerRow, Store};

/// Bytes read from the end of an eStargz blob in the first request: the footer and, for most
/// layers, the whole TOC.
pub const TAIL_GUESS: u64 = 256 << 10;

/// A verified TOC and what fetching it cost.
#[derive(Debug)]
pub struct RemoteToc {
    pub locator: Locator,
    pub toc: Toc,
    /// Bytes of the blob fetched (footer and TOC).
    pub fetched: u64,
    /// The TOC's JSON, as verified (what the store keeps).
    pub json: Vec<u8>,
    /// The blob's bytes fetched, by offset (kept in the layer's partial blob).
    pub ranges: Vec<(u64, Vec<u8>)>,
}

/// The TOC of blob `digest` (`size` bytes, of `media_type`, with the descriptor's
/// `annotations`), fetched by ranges and verified; `None` when the layer is not seekable.
pub fn fetch_toc(
    client: &Client,
    digest: &str,
    size: u64,
    media_type: &str,
    annotations: &HashMap<String, String>,
) -> Result<Option<RemoteToc>, RegistryError> {
    let what = format!("layer {digest}");
    let bad = |e: seekable::SeekableError| RegistryError::Invalid {
        what: what.clone(),
        reason: crate::error::report(&e),
    };
    let Some(locator) = seekable::locate(media_type, annotations, size).map_err(bad)? else {
        return Ok(None);
    };
    let mut ranges = Vec::new();
    let (toc, fetched, json) = match &locator {
        Locator::Estargz { toc_digest } => {
            let tail_start = size.saturating_sub(TAIL_GUESS.max(ESTARGZ_FOOTER_SIZE));
            let tail = client.blob_range(digest, tail_start..size)?;
            let footer = &tail[tail.len() - ESTARGZ_FOOTER_SIZE as usize..];
            let toc_offset = parse_estargz_footer(footer).map_err(bad)?;
            let range = estargz_toc_range(size, toc_offset).map_err(bad)?;
            let mut fetched = tail.len() as u64;
            let member = if range.start >= tail_start {
                tail[(range.start - tail_start) as usize..(range.end - tail_start) as usize].to_vec()
            } else {
                // A TOC bigger than the first read: its head, then what was read already.
                let mut head = client.blob_range(digest, range.start..tail_start)?;
                fetched += head.len() as u64;
                head.extend_from_slice(&tail[..(range.end - tail_start) as usize]);
                head
            };
            let toc = Toc::from_estargz(&member, toc_offset, toc_digest).map_err(bad)?;
            // Verified above: the same member gives the same JSON.
            let json = toc::estargz_toc_json(&member).map_err(bad)?;
            if range.start < tail_start {
                ranges.push((range.start, member[..(tail_start - range.start) as usize].to_vec()));
            }
            ranges.push((tail_start, tail));
            (toc, fetched, json)
        }
        Locator::ZstdChunked { offset, length, uncompressed, .. } => {
            let frame = client.blob_range(digest, *offset..offset + length)?;
            let toc = Toc::from_zstd_chunked(&frame, &locator).map_err(bad)?;
            let json = toc::zstd_toc_json(&frame, *uncompressed).map_err(bad)?;
            let n = frame.len() as u64;
            ranges.push((*offset, frame));
            (toc, n, json)
        }
    };
    tracing::info!(
        layer = digest,
        format = locator.format().as_str(),
        entries = toc.entries.len(),
        fetched,
        "TOC verified"
    );
    Ok(Some(RemoteToc { locator, toc, fetched, json, ranges }))
}

/// `pull --lazy`: [`super::resolve`], and the import's hook that records each seekable layer as
/// a *remote layer* (its TOC fetched by ranges, verified and stored as a blob) instead of
/// fetching its blob. Layers that are not seekable are fetched as usual.
pub fn resolve_lazy(
    r: &crate::reference::Normalized,
    opts: &super::PullOptions,
) -> Result<(crate::image::Resolved, LazyLayers), RegistryError> {
    let (resolved, client, manifest) = super::resolve_with(r, opts)?;
    let mut annotations: HashMap<Sha256Digest, HashMap<String, String>> = HashMap::new();
    for l in manifest.layers() {
        if let (Ok(d), Some(a)) = (Sha256Digest::parse(l.digest().as_ref()), l.annotations()) {
            annotations.insert(d, a.clone());
        }
    }
    let tls_verify = opts.client.tls_verify;
    let hook = LazyLayers::new(move |store: &mut Store, l: &LayerRef| {
        let (Some(d), Some(size), Some(mt)) = (&l.digest, l.size, &l.media_type) else {
            return Ok(None);
        };
        let remote_err = |e: RegistryError| ImportError::OpenBlob {
            layer: d.to_string(),
            source: crate::image::ImageError::Remote(Box::new(e)),
        };
        let row = |size_unpacked: u64| ImageLayerRow {
            diff_id: l.diff_id.clone(),
            blob_digest: d.clone(),
            media_type: mt.clone(),
            blob_size: size,
            size: size_unpacked,
        };
        if store.remote_layer(&l.diff_id)?.is_some() {
            // Remote already (an earlier lazy pull): its TOC is stored.
            return Ok(Some(row(store.layer_size(&l.diff_id)?.unwrap_or(0))));
        }
        let empty = HashMap::new();
        let a = annotations.get(d).unwrap_or(&empty);
        let Some(got) = fetch_toc(&client, &d.to_string(), size, mt, a).map_err(remote_err)? else {
            return Ok(None);
        };
        let toc_digest = store.put_blob(&got.json)?;
        let unpacked: u64 = got.toc.entries.iter().map(|e| e.size).sum();
        let remote = RemoteLayerRow {
            diff_id: l.diff_id.clone(),
            blob_digest: d.clone(),
            media_type: mt.clone(),
            toc_digest,
            blob_size: size,
            bytes_local: got.fetched,
            source: format!("{}/{}", client.host, client.repo),
            tls_verify,
            data_end: got.toc.data_end,
            bad: None,
        };
        if !store.insert_remote_layer(&remote, unpacked, got.toc.entries.len() as u64)? {
            // The layer has its row (a directory lost with its blob): fetch it whole.
            return Ok(None);
        }
        // The bytes fetched are the partial blob's first (completion does not fetch them again).
        let dir = store.remote_dir(&l.diff_id);
        let kept = PartialBlob::open(&dir, size).and_then(|p| {
            for (at, bytes) in &got.ranges {
                p.write(*at, bytes)?;
            }
            Ok(())
        });
        if let Err(e) = kept {
            tracing::warn!(layer = %d, error = %e, "the TOC's bytes not kept in the partial blob");
        }
        tracing::info!(layer = %d, toc = %remote.toc_digest, "recorded as a remote layer");
        Ok(Some(row(unpacked)))
    });
    Ok((resolved, hook))
}

/// A remote snapshotter's layer (containerd's Prepare carrying the labels of
/// `pkg/snapshotters.AppendInfoHandlerWrapper`, which CRI sets): what names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteLayerRequest {
    /// The image reference (`cri.image-ref`).
    pub image: String,
    /// Its manifest's digest (`cri.manifest-digest`).
    pub manifest: String,
    /// The layer blob's digest (`cri.layer-digest`).
    pub layer: String,
}

/// Why a remote snapshotter's layer could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RemoteLayerError {
    #[error("image reference {0:?}")]
    Reference(String, #[source] crate::reference::ReferenceError),
    #[error("manifest digest {0:?}")]
    Digest(String, #[source] crate::digest::DigestError),
    #[error("layer {layer} is not in manifest {manifest}")]
    NotInManifest { layer: String, manifest: String },
    #[error("resolving {0}")]
    Registry(String, #[source] Box<RegistryError>),
    #[error("layer {0}")]
    Record(String, #[source] Box<ImportError>),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Record the layer `req` names as a remote layer of `store`, as `pull --lazy` does for each
/// layer: the manifest (by its digest) and config are fetched and verified, which give the
/// layer's diff_id and its descriptor (the verified annotations, not the caller's labels, say
/// where its TOC is); a seekable layer's TOC is fetched by ranges, verified and stored. Returns
/// the diff_id when the layer is remote or local now, `None` when it is not seekable (it is to
/// be fetched and unpacked as usual). Credentials are the pull's (docker's and podman's files).
pub fn record_remote_layer(
    store: &mut Store,
    req: &RemoteLayerRequest,
    opts: &super::PullOptions,
) -> Result<Option<Sha256Digest>, RemoteLayerError> {
    let manifest =
        Sha256Digest::parse(&req.manifest).map_err(|e| RemoteLayerError::Digest(req.manifest.clone(), e))?;
    let mut r = crate::reference::normalize(&req.image)
        .map_err(|e| RemoteLayerError::Reference(req.image.clone(), e))?;
    r.tag = None;
    r.digest = Some(manifest.to_string());
    let (resolved, hook) =
        resolve_lazy(&r, opts).map_err(|e| RemoteLayerError::Registry(r.to_string(), Box::new(e)))?;
    let Some(l) =
        resolved.layers.iter().find(|l| l.digest.as_ref().is_some_and(|d| d.to_string() == req.layer))
    else {
        return Err(RemoteLayerError::NotInManifest {
            layer: req.layer.clone(),
            manifest: req.manifest.clone(),
        });
    };
    let _gc = store.gc_shared()?;
    let _lock = store.lock(crate::store::Lock::Layer(&l.diff_id))?;
    if store.layer_size(&l.diff_id)?.is_some() {
        // Held already (remote or unpacked): nothing to fetch.
        return Ok(Some(l.diff_id.clone()));
    }
    let recorded =
        hook.record(store, l).map_err(|e| RemoteLayerError::Record(req.layer.clone(), Box::new(e)))?;
    Ok(recorded.map(|_| l.diff_id.clone()))
}

/// Complete the remote layers among `layers` (a lazily pulled image's, before a container is
/// created over it): each blob is assembled whole, its digest and size verified as it is
/// stored, then unpacked by the layer store's verified path
/// ([`crate::layers::materialize_layer`], which checks the diff_id), and the layer is remote no
/// more. The blob comes from the layer's partial blob when that holds at least half of it (what
/// strata-fuse's reads, prefetch and background completion fetched; the rest fetched by
/// ranges), else whole from the registry it was pulled from. Returns how many layers it
/// completed.
pub fn complete_layers(store: &mut Store, layers: &[ImageLayerRow]) -> Result<usize, RegistryError> {
    let _gc = store.gc_shared()?;
    let mut done = 0;
    let mut clients = Clients::default();
    for l in layers {
        let Some(remote) = store.remote_layer(&l.diff_id)? else { continue };
        if !store.has_blob(&remote.blob_digest) {
            assemble_blob(store, &mut clients, &remote)?;
        }
        let row = ImageLayerRow {
            diff_id: remote.diff_id.clone(),
            blob_digest: remote.blob_digest.clone(),
            media_type: remote.media_type.clone(),
            blob_size: remote.blob_size,
            size: l.size,
        };
        crate::layers::materialize_layer(store, &row).map_err(|e| RegistryError::Invalid {
            what: format!("remote layer {}", remote.diff_id),
            reason: crate::error::report(&e),
        })?;
        store.remove_remote_layer(&remote.diff_id)?;
        tracing::info!(layer = %remote.diff_id, "remote layer completed");
        done += 1;
    }
    Ok(done)
}

/// Complete remote layer `diff_id` of the store at `root` ([`complete_layers`]), as strata-fuse
/// does once its background completion has the whole blob. `false` when the layer is not
/// remote (complete already).
pub fn complete_remote(root: &std::path::Path, diff_id: &Sha256Digest) -> Result<bool, RegistryError> {
    let mut store = Store::open(root)?;
    if store.remote_layer(diff_id)?.is_none() {
        return Ok(false);
    }
    let size = store.layer_size(diff_id)?.unwrap_or(0);
    let row = ImageLayerRow {
        diff_id: diff_id.clone(),
        blob_digest: diff_id.clone(),
        media_type: String::new(),
        blob_size: 0,
        size,
    };
    // Only diff_id and size are read of the row: the rest comes from the remote row.
    Ok(complete_layers(&mut store, &[row])? > 0)
}

/// Registry clients by source and TLS verification, connected at first use.
#[derive(Default)]
struct Clients(HashMap<(String, bool), Client>);

impl Clients {
    fn get(&mut self, remote: &RemoteLayerRow) -> Result<&Client, RegistryError> {
        let key = (remote.source.clone(), remote.tls_verify);
        if !self.0.contains_key(&key) {
            let (host, repo) = remote.source.split_once('/').ok_or_else(|| RegistryError::Invalid {
                what: format!("remote layer {}", remote.diff_id),
                reason: format!("source {:?} is not HOST/REPO", remote.source),
            })?;
            let opts = ClientOptions { tls_verify: remote.tls_verify, ..Default::default() };
            let c = Client::connect(host, repo, &opts, "pull")?;
            self.0.insert(key.clone(), c);
        }
        self.0.get(&key).ok_or_else(|| RegistryError::Invalid {
            what: format!("remote layer {}", remote.diff_id),
            reason: "no client".into(),
        })
    }
}

/// The most bytes one request of [`assemble_blob`] asks for when it fills a partial blob.
const FILL_REQUEST: u64 = 8 << 20;

/// `remote`'s whole blob into the blob store, verified: from its partial blob when that holds
/// at least half of it (the gaps fetched by ranges); if not, or if the assembled bytes do not
/// verify (the partial blob is then removed), fetched whole.
fn assemble_blob(store: &Store, clients: &mut Clients, remote: &RemoteLayerRow) -> Result<(), RegistryError> {
    let dir = store.remote_dir(&remote.diff_id);
    let partial = if PartialBlob::exists(&dir) {
        PartialBlob::open(&dir, remote.blob_size).map_err(|source| local(&dir, source))?
    } else {
        return fetch_blob(store, clients.get(remote)?, remote);
    };
    if partial.have() * 2 < remote.blob_size {
        return fetch_blob(store, clients.get(remote)?, remote);
    }
    while let Some(gap) = partial.first_gap() {
        let range = gap.start..gap.end.min(gap.start + FILL_REQUEST);
        let source = RegistryBlob { client: clients.get(remote)?, digest: remote.blob_digest.to_string() };
        let bytes = source.range(range.clone())?;
        partial.write(range.start, &bytes).map_err(|source| local(partial.path(), source))?;
    }
    let file = std::fs::File::open(partial.path()).map_err(|source| local(partial.path(), source))?;
    let what = format!("layer {} (assembled from its partial blob)", remote.blob_digest);
    match store_verified(store, file, remote, &what, "local") {
        Ok(()) => {
            PartialBlob::remove(&dir).map_err(|source| local(&dir, source))?;
            tracing::info!(layer = %remote.diff_id, "blob assembled from its partial blob and verified");
            Ok(())
        }
        Err(RegistryError::DigestMismatch { expected, actual, .. }) => {
            tracing::warn!(layer = %remote.diff_id, %expected, %actual, "the partial blob does not verify: removed, fetching the blob whole");
            PartialBlob::remove(&dir).map_err(|source| local(&dir, source))?;
            fetch_blob(store, clients.get(remote)?, remote)
        }
        Err(e) => Err(e),
    }
}

fn local(path: &std::path::Path, source: std::io::Error) -> RegistryError {
    RegistryError::Local { path: path.display().to_string(), source }
}

/// Fetch `remote`'s whole blob into the blob store ([`store_verified`]).
fn fetch_blob(store: &Store, client: &Client, remote: &RemoteLayerRow) -> Result<(), RegistryError> {
    let what = format!("layer {}", remote.blob_digest);
    let (body, _) = client.blob(&remote.blob_digest.to_string())?;
    store_verified(store, body, remote, &what, &client.host)
}

/// Stream `body` to staging while it is hashed and counted; stored only when its digest and size
/// are the descriptor's. `host` names where a read failed.
fn store_verified(
    store: &Store,
    body: impl std::io::Read,
    remote: &RemoteLayerRow,
    what: &str,
    host: &str,
) -> Result<(), RegistryError> {
    use sha2::Digest as _;
    use std::io::{Read, Write};
    let staging = store.staging()?;
    let tmp = staging.dir.join("blob");
    let local = |source| RegistryError::Local { path: tmp.display().to_string(), source };
    // An explicit mode: strata-fuse (umask 0) completes layers too.
    let mut out = std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new().write(true).create_new(true),
        0o600,
    )
    .open(&tmp)
    .map_err(local)?;
    let mut hasher = sha2::Sha256::new();
    let mut limited = body.take(remote.blob_size + 1);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = limited.read(&mut buf).map_err(|source| RegistryError::ReadBody {
            host: host.to_string(),
            what: what.to_string(),
            source,
        })?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        out.write_all(&buf[..k]).map_err(local)?;
        n += k as u64;
    }
    out.sync_all().map_err(local)?;
    let actual = Sha256Digest::from_bytes(&hasher.finalize());
    if n != remote.blob_size || actual != remote.blob_digest {
        return Err(RegistryError::DigestMismatch {
            what: what.to_string(),
            expected: format!("{} ({} bytes)", remote.blob_digest, remote.blob_size),
            actual: format!("{actual} ({n} bytes)"),
        });
    }
    store.commit_blob_file(&tmp, &actual)?;
    Ok(())
}
