//! `strata image convert NAME NEW --compression estargz` (and `push --compression estargz`):
//! a stored image's layers rewritten as eStargz, a new image over them.
//!
//! Each layer's stored blob is decompressed and passed through [`seekable::write`] into
//! staging (the tar's bytes unchanged, gzip members cut at each file and chunk, the TOC and
//! footer added), stored as a blob, and recorded as a layer under its new diff_id, leased until
//! the image holds it, as commit records the layers it writes (the directory is unpacked from
//! the blob at first use). The config gets the new diff_ids; the manifest carries each layer's
//! `containerd.io/snapshot/stargz/toc.digest` and `io.containers.estargz.uncompressed-size`.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::OpenOptionsExt;

use serde_json::{json, Value};

use super::{io_at, CommitError, Result, CHUNK};
use crate::compression::Compression;
use crate::digest::Sha256Digest;
use crate::images::{ImagePublish, MT_OCI_CONFIG, MT_OCI_MANIFEST};
use crate::seekable::write::{write_estargz, EstargzOptions};
use crate::seekable::{ANNOTATION_TOC_DIGEST, ANNOTATION_UNCOMPRESSED_SIZE};
use crate::store::{ImageLayerRow, IoContext, Lock, Store};

/// What [`convert_to_estargz`] made.
#[derive(Debug, Clone)]
pub struct Converted {
    pub name: String,
    pub manifest_digest: Sha256Digest,
    pub config_digest: Sha256Digest,
    /// Per layer, bottom first: the new blob's digest and its TOC digest.
    pub layers: Vec<(Sha256Digest, Sha256Digest)>,
}

/// The stored image `name` with every layer as eStargz, published as `new_name`.
pub fn convert_to_estargz(
    store: &mut Store,
    name: &str,
    new_name: &str,
    opts: &EstargzOptions,
) -> Result<Converted> {
    crate::reference::validate_image_name(new_name)?;
    let img = store.image(name)?.ok_or_else(|| CommitError::NoImage(name.to_string()))?;
    let _gc = store.gc_shared()?;
    let staging = store.staging()?;
    let res = convert_staged(store, &staging, &img, new_name, opts);
    if res.is_err() {
        store.drop_leases(&staging.token)?;
        store.remove_unreferenced_layers()?;
    }
    res
}

fn convert_staged(
    store: &mut Store,
    staging: &crate::store::Staging,
    img: &crate::store::StoredImage,
    new_name: &str,
    opts: &EstargzOptions,
) -> Result<Converted> {
    let bad = |reason: String| CommitError::BadImage { image: img.name.clone(), reason };
    let mut rows = Vec::new();
    let mut descriptors = Vec::new();
    let mut converted = Vec::new();
    for (i, layer) in img.layers.iter().enumerate() {
        let compression = Compression::of_media_type(&layer.media_type).ok_or_else(|| {
            bad(format!("layer {} has media type {:?}", layer.blob_digest, layer.media_type))
        })?;
        let src_path = store.blob_path(&layer.blob_digest);
        let src = File::open(&src_path).map_err(io_at(&src_path))?;
        let tar = compression.decoder(src).map_err(io_at(&src_path))?;
        let tmp = staging.dir.join(format!("layer{i}.blob"));
        let out = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).at(&tmp)?;
        let (info, out) = write_estargz(BufReader::new(tar), BufWriter::with_capacity(CHUNK, out), opts)
            .map_err(|e| CommitError::Seekable { layer: layer.blob_digest.to_string(), source: e })?;
        let out =
            out.into_inner().map_err(|e| CommitError::Io { path: tmp.clone(), source: e.into_error() })?;
        out.sync_all().at(&tmp)?;
        drop(out);
        tracing::info!(layer = %layer.blob_digest, estargz = %info.digest, toc = %info.toc_digest, "layer converted");

        store.add_lease(&staging.token, &info.diff_id)?;
        {
            let _lock = store.lock(Lock::Layer(&info.diff_id))?;
            if !store.has_layer(&info.diff_id)? {
                // Until its directory is unpacked, the layer's size is its tar's.
                store.insert_layer(&info.diff_id, info.uncompressed_size, info.entries as u64)?;
            }
        }
        if !store.has_blob(&info.digest) {
            store.commit_blob_file(&tmp, &info.digest)?;
        }
        let row = ImageLayerRow {
            diff_id: info.diff_id.clone(),
            blob_digest: info.digest.clone(),
            media_type: crate::compression::MT_OCI_LAYER_GZIP.to_string(),
            blob_size: info.size,
            size: info.uncompressed_size,
        };
        descriptors.push(json!({
            "mediaType": row.media_type, "digest": row.blob_digest, "size": row.blob_size,
            "annotations": {
                ANNOTATION_TOC_DIGEST: info.toc_digest.to_string(),
                ANNOTATION_UNCOMPRESSED_SIZE: info.uncompressed_size.to_string(),
            },
        }));
        converted.push((info.digest, info.toc_digest));
        rows.push(row);
    }

    let cfg_bytes = store.read_blob(&img.config_digest)?;
    let mut cfg: Value = serde_json::from_slice(&cfg_bytes)
        .map_err(|source| CommitError::Config { image: img.name.clone(), source })?;
    let diff_ids: Vec<String> = rows.iter().map(|r| r.diff_id.to_string()).collect();
    match cfg.get_mut("rootfs") {
        Some(Value::Object(rootfs)) => {
            rootfs.insert("diff_ids".into(), json!(diff_ids));
        }
        _ => return Err(bad("config has no rootfs".into())),
    }
    let cfg_bytes =
        serde_json::to_vec(&cfg).map_err(|source| CommitError::Config { image: img.name.clone(), source })?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {
            "mediaType": MT_OCI_CONFIG,
            "digest": Sha256Digest::of(&cfg_bytes).to_string(),
            "size": cfg_bytes.len(),
        },
        "layers": descriptors,
    });
    let manifest = serde_json::to_vec(&manifest)
        .map_err(|source| CommitError::Config { image: img.name.clone(), source })?;
    let md = Sha256Digest::of(&manifest);
    let published = ImagePublish::new(new_name, &cfg_bytes, rows)
        .manifest(&manifest, &md)
        .lease(&staging.token)
        .publish(store)?;
    Ok(Converted {
        name: published.name,
        manifest_digest: published.manifest_digest,
        config_digest: published.config_digest,
        layers: converted,
    })
}
