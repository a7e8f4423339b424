//! A stored image as export needs it: the manifest (typed, as oci-spec reads it) and config
//! bytes with their digests, and each layer's blob digest, media type and diff_id, checked
//! against each other.

use oci_spec::image::{Descriptor, ImageManifest};

use super::{ExportError, Result};
use crate::digest::Sha256Digest;
use crate::image;
use crate::store::Store;

/// A stored image's metadata, read and checked.
pub(super) struct Parts {
    pub manifest: Vec<u8>,
    pub manifest_digest: Sha256Digest,
    pub manifest_media_type: String,
    pub config: Vec<u8>,
    pub config_digest: Sha256Digest,
    /// (blob digest, media type, diff_id), bottom first.
    pub layers: Vec<(Sha256Digest, String, Sha256Digest)>,
}

/// Read the image `name` from `store`.
pub(super) fn load(store: &Store, name: &str) -> Result<Parts> {
    let row = store.image(name)?.ok_or_else(|| ExportError::NoImage(name.to_string()))?;
    let bad = |reason: String| ExportError::BadImage { image: name.to_string(), reason };
    let manifest_digest = row.manifest_digest.clone();
    let manifest = store.read_blob(&manifest_digest)?;
    let m: ImageManifest = serde_json::from_slice(&manifest)
        .map_err(|source| ExportError::BadManifest { image: name.to_string(), source })?;
    let digest_of = |d: &Descriptor, what: &str| -> Result<Sha256Digest> {
        Sha256Digest::try_from(d.digest()).map_err(|source| ExportError::BadDigest {
            image: name.to_string(),
            what: what.to_string(),
            source,
        })
    };
    let config_digest = digest_of(m.config(), "manifest config")?;
    let config = store.read_blob(&config_digest)?;
    let diff_ids = image::diff_ids(&config, &format!("image {name:?} config"))?;
    let descs = m.layers();
    if descs.len() != diff_ids.len() {
        return Err(bad(format!("{} layers but {} diff_ids", descs.len(), diff_ids.len())));
    }
    let mut layers = Vec::new();
    for (d, id) in descs.iter().zip(diff_ids) {
        layers.push((digest_of(d, "manifest layer")?, d.media_type().to_string(), id));
    }
    let manifest_media_type =
        m.media_type().as_ref().map_or_else(|| image::MT_OCI_MANIFEST.to_string(), |t| t.to_string());
    Ok(Parts { manifest, manifest_digest, manifest_media_type, config, config_digest, layers })
}
