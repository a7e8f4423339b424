//! Publishing an image: the one step every path that makes an image ends with (import from any
//! source, pull, load, commit, import-rootfs, tag). It stores the config and manifest blobs
//! (building an OCI manifest when the source brought none) and records the image's rows and its
//! layer chain in one transaction of the snapshot core, releasing the maker's lease in it.
//!
//! Undoing what came before (a failed import's or commit's leased layers) stays with the caller:
//! publishing is its last step, and a failure here leaves the rows as they were.

use crate::digest::Sha256Digest;
use crate::snapshot::Snapshots;
use crate::store::{ImageLayerRow, NewImage, Store};

use super::ImagesError;

/// The media type of an OCI image manifest.
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of an OCI image config.
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// An image to publish under a name: see the module documentation.
#[derive(Debug, Clone)]
pub struct ImagePublish<'a> {
    name: &'a str,
    blobs: Blobs<'a>,
    layers: Vec<ImageLayerRow>,
    lease: Option<&'a str>,
}

/// Where the image's config and manifest come from.
#[derive(Debug, Clone)]
enum Blobs<'a> {
    /// Bytes to store: the config, and the manifest (verified bytes and their digest) or `None`
    /// to build one over the config and layers ([`build_manifest`]).
    New { config: &'a [u8], manifest: Option<(&'a [u8], &'a Sha256Digest)> },
    /// Blobs stored and recorded already (a second name for a stored image).
    Stored { manifest: &'a Sha256Digest, config: &'a Sha256Digest },
}

/// What [`ImagePublish::publish`] recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The name as stored (its canonical form).
    pub name: String,
    pub manifest_digest: Sha256Digest,
    pub config_digest: Sha256Digest,
}

impl<'a> ImagePublish<'a> {
    /// Image `name` of the config `config` and the layers `layers` (bottom first, their blobs
    /// and rows stored already), with a manifest built over them unless
    /// [`ImagePublish::manifest`] gives one.
    pub fn new(name: &'a str, config: &'a [u8], layers: Vec<ImageLayerRow>) -> Self {
        ImagePublish { name, blobs: Blobs::New { config, manifest: None }, layers, lease: None }
    }

    /// A second name `name` for the manifest `img` has (no blob is written or recorded again).
    pub fn of_stored(name: &'a str, img: &'a crate::store::StoredImage) -> Self {
        ImagePublish {
            name,
            blobs: Blobs::Stored { manifest: &img.manifest_digest, config: &img.config_digest },
            layers: img.layers.clone(),
            lease: None,
        }
    }

    /// The source's own manifest, `bytes` verified to have digest `digest`, instead of a built
    /// one. (No effect on [`ImagePublish::of_stored`].)
    pub fn manifest(mut self, bytes: &'a [u8], digest: &'a Sha256Digest) -> Self {
        if let Blobs::New { manifest, .. } = &mut self.blobs {
            *manifest = Some((bytes, digest));
        }
        self
    }

    /// Release the lease `token` (which kept the layers while they were made) in the same
    /// transaction that records the image.
    pub fn lease(mut self, token: &'a str) -> Self {
        self.lease = Some(token);
        self
    }

    /// Store the blobs, then record the image's rows, its blobs' rows and its layer chain in one
    /// transaction. An image of the same name is replaced (containers stand on manifests, not
    /// names).
    pub fn publish(&self, store: &mut Store) -> Result<Published, ImagesError> {
        let (manifest_digest, config_digest, blobs) = match self.blobs {
            Blobs::Stored { manifest, config } => (manifest.clone(), config.clone(), vec![]),
            Blobs::New { config, manifest } => {
                let config_digest = store.put_blob(config)?;
                let built;
                let (bytes, digest) = match manifest {
                    Some((bytes, digest)) => {
                        let stored = store.put_blob(bytes)?;
                        debug_assert_eq!(&stored, digest);
                        (bytes, digest.clone())
                    }
                    None => {
                        built = build_manifest(&config_digest, config.len() as u64, &self.layers);
                        (built.as_slice(), store.put_blob(&built)?)
                    }
                };
                let mut blobs = vec![
                    (digest.clone(), bytes.len() as u64, MT_OCI_MANIFEST.to_string()),
                    (config_digest.clone(), config.len() as u64, MT_OCI_CONFIG.to_string()),
                ];
                for l in &self.layers {
                    blobs.push((l.blob_digest.clone(), l.blob_size, l.media_type.clone()));
                }
                (digest, config_digest, blobs)
            }
        };
        let name = Snapshots::new(store).publish_image(&NewImage {
            name: self.name,
            manifest_digest: &manifest_digest,
            config_digest: &config_digest,
            blobs,
            layers: self.layers.clone(),
            lease: self.lease,
        })?;
        Ok(Published { name, manifest_digest, config_digest })
    }
}

/// An OCI manifest over a stored config and layers, for images that came without one
/// (docker-archive) and those made here (commit, import-rootfs).
pub fn build_manifest(config: &Sha256Digest, config_size: u64, layers: &[ImageLayerRow]) -> Vec<u8> {
    let v = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": { "mediaType": MT_OCI_CONFIG, "digest": config.to_string(), "size": config_size },
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type, "digest": l.blob_digest, "size": l.blob_size,
        })).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Record an image made of already-stored layer blobs (unit tests of commit and export).
#[cfg(test)]
pub(crate) fn put_test_image(
    store: &mut Store,
    name: &str,
    config: &serde_json::Value,
    rows: Vec<ImageLayerRow>,
) -> Sha256Digest {
    let config = serde_json::to_vec(config).expect("config json");
    ImagePublish::new(name, &config, rows).publish(store).expect("image rows").manifest_digest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(store: &mut Store, n: u8) -> ImageLayerRow {
        let blob = store.put_blob(&[n; 4]).unwrap();
        let diff_id = Sha256Digest::of(&[n; 8]);
        std::fs::create_dir_all(store.layer_path(&diff_id)).unwrap();
        store.insert_layer(&diff_id, 8, 1).unwrap();
        ImageLayerRow {
            diff_id,
            blob_digest: blob,
            media_type: crate::compression::MT_OCI_LAYER.into(),
            blob_size: 4,
            size: 8,
        }
    }

    #[test]
    fn publish_builds_the_manifest_tags_and_releases_the_lease() {
        let t = tempfile::tempdir().unwrap();
        let mut store = Store::open(&t.path().join("root")).unwrap();
        let rows = vec![layer(&mut store, 1), layer(&mut store, 2)];
        store.add_lease("tok", &rows[1].diff_id).unwrap();
        let config = br#"{"architecture":"amd64","os":"linux"}"#;

        let p = ImagePublish::new("app", config, rows.clone()).lease("tok").publish(&mut store).unwrap();
        assert_eq!(p.name, "app:latest");
        assert_eq!(p.config_digest, Sha256Digest::of(config));
        assert_eq!(store.read_blob(&p.config_digest).unwrap(), config);
        let manifest = store.read_blob(&p.manifest_digest).unwrap();
        assert_eq!(manifest, build_manifest(&p.config_digest, config.len() as u64, &rows));
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m["mediaType"], MT_OCI_MANIFEST);
        assert_eq!(m["config"]["digest"], p.config_digest.to_string());
        assert_eq!(m["layers"][1]["digest"], rows[1].blob_digest.to_string());
        let img = store.image("app").unwrap().unwrap();
        assert_eq!((&img.manifest_digest, &img.layers), (&p.manifest_digest, &rows));

        // A second name: the same manifest, nothing written again.
        let tagged = ImagePublish::of_stored("app:v2", &img).publish(&mut store).unwrap();
        assert_eq!(
            tagged,
            Published {
                name: "app:v2".into(),
                manifest_digest: p.manifest_digest.clone(),
                config_digest: p.config_digest.clone()
            }
        );
        assert_eq!(store.image("app:v2").unwrap().unwrap().layers, rows);

        // The lease went with the publish: once no image names the layers, gc may take them.
        store.remove_image("app").unwrap();
        assert!(super::super::gc(&mut store).unwrap().1.is_empty(), "app:v2 holds them");
        store.remove_image("app:v2").unwrap();
        let mut gone = super::super::gc(&mut store).unwrap().1;
        gone.sort();
        let mut want: Vec<_> = rows.iter().map(|r| r.diff_id.clone()).collect();
        want.sort();
        assert_eq!(gone, want);
    }

    #[test]
    fn publish_keeps_the_sources_manifest() {
        let t = tempfile::tempdir().unwrap();
        let mut store = Store::open(&t.path().join("root")).unwrap();
        let rows = vec![layer(&mut store, 3)];
        let config = b"{}";
        let manifest = br#"{"schemaVersion":2,"note":"the source's own"}"#;
        let digest = Sha256Digest::of(manifest);
        let p =
            ImagePublish::new("src:1", config, rows).manifest(manifest, &digest).publish(&mut store).unwrap();
        assert_eq!(p.manifest_digest, digest);
        assert_eq!(store.read_blob(&digest).unwrap(), manifest);
        assert_eq!(store.image("src:1").unwrap().unwrap().manifest_digest, digest);
    }
}
