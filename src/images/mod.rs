//! Stored images as users list and inspect them: `image ls` rows with sizes and `image history`;
//! gc, which removes what no image (nor container, nor lease) holds; and publishing an image
//! ([`ImagePublish`], in `publish`), the last step of every path that makes one.
//!
//! Above the snapshot core (gc prunes image chains through it) and the store (typed image rows,
//! [`Store::image`]); below the pipelines.

use serde::Serialize;
use serde_json::Value;

use crate::digest::Sha256Digest;
use crate::snapshot::{SnapshotError, Snapshots};
use crate::store::{ImageLayerRow, Lock, Store, StoreError, StoredImage};

mod publish;

#[cfg(test)]
pub(crate) use publish::put_test_image;
pub use publish::{build_manifest, ImagePublish, Published, MT_OCI_CONFIG, MT_OCI_MANIFEST};

/// Errors of listing and inspecting stored images, and of gc.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("image {0:?} not found")]
    NotFound(String),
    /// A stored manifest or config (`what`, when named) that does not parse.
    #[error("image {name:?}: blob {digest}{}", what.map(|w| format!(": {w}")).unwrap_or_default())]
    BadConfig {
        name: String,
        digest: String,
        what: Option<&'static str>,
        #[source]
        source: serde_json::Error,
    },
}

/// One image name as `image ls` lists it, the same in the table and in `--json`. Field names
/// and types are those of every JSON strata prints: `id` the image ID (the config digest, as
/// docker and podman show it), `digest` the manifest digest, `created` RFC 3339, `layers` an
/// array of layer objects.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub name: String,
    /// The name without its tag or digest.
    pub repository: String,
    /// `<none>` for a name held by digest only.
    pub tag: String,
    pub id: Sha256Digest,
    pub digest: Sha256Digest,
    /// When the image was made (its config's `created`), else when it was stored; RFC 3339.
    pub created: String,
    /// `created` in Unix seconds.
    #[serde(skip)]
    pub created_secs: i64,
    /// Bottom first.
    pub layers: Vec<ImageLayerRow>,
    /// Unpacked size of all layers, bytes.
    pub size: u64,
    /// How much of each layer is local, bottom first (a lazy pull's remote layers are not).
    pub local: Vec<LayerLocal>,
}

/// How much of a layer's blob is in the store: all of it for an unpacked layer; for a remote
/// layer (`strata pull --lazy`) the bytes fetched so far.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LayerLocal {
    pub diff_id: Sha256Digest,
    pub remote: bool,
    pub bytes_local: u64,
    pub blob_size: u64,
    /// Why a remote layer is bad (it sent a chunk that does not match its TOC): nothing more
    /// is fetched for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bad: Option<String>,
}

/// `NAME` split as docker's REPOSITORY and TAG columns: `localhost:5000/app:v1` is
/// (`localhost:5000/app`, `v1`); a name held by digest only has the tag `<none>`.
pub fn repository_and_tag(name: &str) -> (String, String) {
    let name = name.split('@').next().unwrap_or(name);
    let last = name.rfind('/').map_or(0, |i| i + 1);
    match name[last..].rfind(':') {
        Some(i) => (name[..last + i].to_string(), name[last + i + 1..].to_string()),
        None => (name.to_string(), "<none>".to_string()),
    }
}

/// The image's creation time: its config's `created`, else `fallback`.
fn created_of(config: &[u8], fallback: i64) -> i64 {
    serde_json::from_slice::<Value>(config)
        .ok()
        .and_then(|c| c.get("created").and_then(Value::as_str).and_then(crate::time::parse_rfc3339))
        .unwrap_or(fallback)
}

impl ImagesError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            ImagesError::Store(e) => e.kind(),
            ImagesError::Snapshot(e) => e.kind(),
            ImagesError::NotFound(_) => crate::error::ErrorKind::NotFound,
            ImagesError::BadConfig { .. } => crate::error::ErrorKind::InvalidArgument,
        }
    }
}

/// Remove every blob and layer no image, container or lease references, and the committed
/// snapshots of layer chains no image names (nothing standing on them), under the gc lock.
/// Returns (blobs, layers) removed.
pub fn gc(store: &mut Store) -> Result<(Vec<Sha256Digest>, Vec<Sha256Digest>), ImagesError> {
    let _g = store.lock(Lock::Gc)?;
    Snapshots::new(store).prune_image_chains()?;
    let layers = store.remove_unreferenced_layers()?;
    let blobs = store.remove_unreferenced_blobs()?;
    Ok((blobs, layers))
}

/// `image tag`: a second name `new_name` for the manifest `img` names (no copy). Returns the name
/// as stored (its canonical form). Hold [`Store::gc_shared`] from finding `img` to here.
pub fn tag(store: &mut Store, img: &StoredImage, new_name: &str) -> Result<String, ImagesError> {
    Ok(ImagePublish::of_stored(new_name, img).publish(store)?.name)
}

/// The repository holding `strata build`'s cached steps, one name per step (its cache key as
/// the tag). They are intermediate images as podman and buildah keep them: out of the default
/// listing (`image ls -a` shows them), kept by `gc` (which removes only what nothing names),
/// removed by `image prune` and `system prune` as podman's prune removes dangling and
/// intermediate images ([`prune_build_cache`]).
pub const BUILD_CACHE_REPO: &str = "localhost/strata-build-cache";

/// Whether `name` is one of `strata build`'s cached steps.
pub fn is_build_cache(name: &str) -> bool {
    repository_and_tag(name).0 == BUILD_CACHE_REPO
}

/// Removes every cached build step's name (those a container stands on stay); returns the
/// names removed. The data goes with the next [`gc`].
pub fn prune_build_cache(store: &mut Store) -> Result<Vec<String>, ImagesError> {
    let mut removed = Vec::new();
    for i in store.images()? {
        if !is_build_cache(&i.name) {
            continue;
        }
        match store.remove_image(&i.name) {
            Ok(name) => removed.push(name),
            Err(StoreError::ImageInUse { .. } | StoreError::NoImage(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(removed)
}

/// Every stored image, by name.
pub fn list(store: &Store) -> Result<Vec<Listed>, ImagesError> {
    store.images()?.into_iter().map(|i| listed(store, i)).collect()
}

/// The default listing, as podman's: every image with a name of its own, and each image known
/// only by `strata build`'s cache names that no other image builds on (a build's result made
/// without `-t`) once, as `<none>:<none>` named by its id. Cached steps stay out (as podman's
/// intermediate images): their names, and images another one's history extends.
pub fn list_default(store: &Store) -> Result<Vec<Listed>, ImagesError> {
    use std::collections::{HashMap, HashSet};
    let all = list(store)?;
    let named: HashSet<Sha256Digest> =
        all.iter().filter(|i| !is_build_cache(&i.name)).map(|i| i.id.clone()).collect();
    let mut histories: HashMap<Sha256Digest, (Vec<Value>, Vec<Sha256Digest>)> = HashMap::new();
    for i in &all {
        if !histories.contains_key(&i.id) {
            let config: Value =
                serde_json::from_slice(&store.read_blob(&i.id).unwrap_or_default()).unwrap_or(Value::Null);
            let history = config["history"].as_array().cloned().unwrap_or_default();
            let layers = i.layers.iter().map(|l| l.diff_id.clone()).collect();
            histories.insert(i.id.clone(), (history, layers));
        }
    }
    let extended = |id: &Sha256Digest| {
        let Some((h, l)) = histories.get(id) else { return false };
        histories.iter().any(|(other, (oh, ol))| {
            other != id && oh.len() > h.len() && oh.starts_with(h) && ol.starts_with(l)
        })
    };
    let mut shown = HashSet::new();
    let mut out = Vec::new();
    for i in all {
        if !is_build_cache(&i.name) {
            out.push(i);
        } else if !named.contains(&i.id) && !extended(&i.id) && shown.insert(i.id.clone()) {
            let name = i.id.to_string();
            out.push(Listed { name, repository: "<none>".to_string(), tag: "<none>".to_string(), ..i });
        }
    }
    Ok(out)
}

fn listed(store: &Store, i: StoredImage) -> Result<Listed, ImagesError> {
    let layers = i.layers;
    let config = store.read_blob(&i.config_digest).unwrap_or_default();
    let created_secs = created_of(&config, i.created);
    let (repository, tag) = repository_and_tag(&i.name);
    let mut local = Vec::with_capacity(layers.len());
    for l in &layers {
        let remote = store.remote_layer(&l.diff_id)?;
        local.push(LayerLocal {
            diff_id: l.diff_id.clone(),
            remote: remote.is_some(),
            bytes_local: remote.as_ref().map_or(l.blob_size, |r| r.bytes_local.min(l.blob_size)),
            blob_size: l.blob_size,
            bad: remote.and_then(|r| r.bad),
        });
    }
    Ok(Listed {
        local,
        size: layers.iter().map(|l| l.size).sum(),
        layers,
        repository,
        tag,
        name: i.name,
        id: i.config_digest,
        digest: i.manifest_digest,
        created: crate::time::rfc3339(created_secs),
        created_secs,
    })
}

/// `image inspect`: the listing's fields plus the manifest and the config themselves.
#[derive(Debug, Clone, Serialize)]
pub struct Inspected {
    #[serde(flatten)]
    pub image: Listed,
    pub manifest: Value,
    pub config: Value,
}

/// Everything about the image `name` (found as [`Store::image`] finds names).
pub fn inspect(store: &Store, name: &str) -> Result<Inspected, ImagesError> {
    let row = store.image(name)?.ok_or_else(|| ImagesError::NotFound(name.to_string()))?;
    let bad = |what: &'static str, digest: &Sha256Digest, source| ImagesError::BadConfig {
        name: row.name.clone(),
        digest: digest.to_string(),
        what: Some(what),
        source,
    };
    let manifest = serde_json::from_slice(&store.read_blob(&row.manifest_digest)?)
        .map_err(|e| bad("manifest", &row.manifest_digest, e))?;
    let config = serde_json::from_slice(&store.read_blob(&row.config_digest)?)
        .map_err(|e| bad("config", &row.config_digest, e))?;
    Ok(Inspected { image: listed(store, row)?, manifest, config })
}

/// One step of an image's history, newest first as `docker history` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Step {
    /// The layer this step added (`None` for steps that changed only the config).
    pub diff_id: Option<Sha256Digest>,
    pub created: Option<String>,
    pub created_by: Option<String>,
    pub comment: Option<String>,
    /// Unpacked size of the layer it added, bytes (0 for config-only steps).
    pub size: u64,
}

/// The config's history, each step paired with the layer it added (in order; `empty_layer`
/// steps add none). Layers with no history entry (images built without one) are listed as steps
/// of their own.
pub fn history(store: &Store, name: &str) -> Result<Vec<Step>, ImagesError> {
    let img = store.image(name)?.ok_or_else(|| ImagesError::NotFound(name.to_string()))?;
    let bad = |source| ImagesError::BadConfig {
        name: name.to_string(),
        digest: img.config_digest.to_string(),
        what: None,
        source,
    };
    let config: Value = serde_json::from_slice(&store.read_blob(&img.config_digest)?).map_err(bad)?;
    let mut layers = img.layers.clone().into_iter();
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let mut steps = Vec::new();
    for h in config.get("history").and_then(Value::as_array).into_iter().flatten() {
        let empty = h.get("empty_layer").and_then(Value::as_bool).unwrap_or(false);
        let layer = if empty { None } else { layers.next() };
        steps.push(Step {
            size: layer.as_ref().map_or(0, |l| l.size),
            diff_id: layer.map(|l| l.diff_id),
            created: text(h, "created"),
            created_by: text(h, "created_by"),
            comment: text(h, "comment"),
        });
    }
    for l in layers {
        steps.push(Step {
            size: l.size,
            diff_id: Some(l.diff_id),
            created: None,
            created_by: None,
            comment: None,
        });
    }
    steps.reverse();
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_and_tag_columns() {
        let d = format!("sha256:{}", "a".repeat(64));
        for (name, repo, tag) in [
            ("busybox:latest", "busybox", "latest"),
            ("localhost:5000/app:v1", "localhost:5000/app", "v1"),
            ("localhost:5000/app", "localhost:5000/app", "<none>"),
            (&format!("app@{d}") as &str, "app", "<none>"),
            (&format!("app:v2@{d}"), "app", "v2"),
            ("[::1]:5000/a/b:c", "[::1]:5000/a/b", "c"),
        ] {
            assert_eq!(repository_and_tag(name), (repo.to_string(), tag.to_string()), "{name}");
        }
    }
}
