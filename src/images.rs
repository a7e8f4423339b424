//! Stored images as users list and inspect them: `image ls` rows with sizes and `image history`.

use serde::Serialize;
use serde_json::Value;

use crate::db::DbError;
use crate::digest::Sha256Digest;
use crate::store::{Store, StoreError};

/// Errors of listing and inspecting stored images.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("image {name:?}: config {digest}: {reason}")]
    BadConfig { name: String, digest: String, reason: String },
}

/// RFC 3339 (UTC, whole seconds) of a Unix time.
pub fn rfc3339(secs: i64) -> String {
    crate::commit::rfc3339(secs)
}

/// One row of `image ls`, the same in the table and in `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub name: String,
    /// The manifest digest.
    pub digest: Sha256Digest,
    pub config_digest: Sha256Digest,
    /// When the name was bound to the manifest, RFC 3339.
    pub created: String,
    pub layers: usize,
    /// Unpacked size of all layers, bytes.
    pub size: u64,
}

/// Every stored image, by name.
pub fn list(store: &Store) -> Result<Vec<Listed>, ImagesError> {
    let mut out = Vec::new();
    for i in store.db.images()? {
        let layers = store.db.image_layers(&i.name)?;
        out.push(Listed {
            size: layers.iter().map(|l| l.size).sum(),
            layers: layers.len(),
            name: i.name,
            digest: i.manifest_digest,
            config_digest: i.config_digest,
            created: rfc3339(i.created),
        });
    }
    Ok(out)
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
    let img = store.db.image(name)?.ok_or_else(|| ImagesError::NotFound(name.to_string()))?;
    let bad = |reason: String| ImagesError::BadConfig {
        name: name.to_string(),
        digest: img.config_digest.to_string(),
        reason,
    };
    let config: Value =
        serde_json::from_slice(&store.read_blob(&img.config_digest)?).map_err(|e| bad(e.to_string()))?;
    let mut layers = store.db.image_layers(name)?.into_iter();
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
