//! `strata image convert NAME NEW --compression estargz|zstd:chunked` (and `push
//! --compression ...`): a stored image's layers rewritten in a seekable format, a new image over
//! them.
//!
//! Each layer's stored blob is decompressed and passed through [`seekable::write`] into
//! staging (the tar's bytes unchanged, gzip members or zstd frames cut at each file and chunk,
//! the TOC and footer added), stored as a blob, and recorded as a layer under its diff_id (new
//! for eStargz, whose TOC is a tar entry; the same for zstd:chunked, whose TOC is outside the
//! tar), leased until the image holds it, as commit records the layers it writes (the directory
//! is unpacked from the blob at first use). The config gets the diff_ids; the manifest carries
//! each layer's TOC annotations: `containerd.io/snapshot/stargz/toc.digest` and
//! `io.containers.estargz.uncompressed-size` for eStargz, the zstd:chunked manifest position
//! and checksum (both spellings) for zstd:chunked.
//!
//! [`convert_with`] also moves files to the front of each layer, before `.prefetch.landmark`
//! (`image optimize`, which says which): the layer's tar is decompressed into staging once,
//! reordered by [`seekable::order`] and written from there; its diff_id is then a new one in
//! both formats (the tar's order changed). A layer with nothing to move is converted as
//! `convert` does it.
//!
//! [`seekable::write`]: crate::seekable::write
//! [`seekable::order`]: crate::seekable::order

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read};
use std::os::unix::fs::OpenOptionsExt;

use serde_json::{json, Value};

use super::{io_at, CommitError, Result, CHUNK};
use crate::compression::Compression;
use crate::digest::Sha256Digest;
use crate::images::{ImagePublish, MT_OCI_CONFIG, MT_OCI_MANIFEST};
use crate::seekable::order::{self, Reordered};
use crate::seekable::write::{
    write_estargz, write_zstd_chunked, EstargzOptions, Landmark, ZstdChunkedOptions,
};
use crate::seekable::{ANNOTATION_TOC_DIGEST, ANNOTATION_UNCOMPRESSED_SIZE};
use crate::store::{ImageLayerRow, IoContext, Lock, Store};

/// The seekable format to convert to, and how to write it.
#[derive(Debug, Clone)]
pub enum Target {
    Estargz(EstargzOptions),
    ZstdChunked(ZstdChunkedOptions),
}

impl Target {
    /// A `--compression` value (`estargz`, `zstd:chunked`) with default options.
    pub fn parse(s: &str) -> Option<Target> {
        match crate::seekable::Format::parse(s)? {
            crate::seekable::Format::Estargz => Some(Target::Estargz(EstargzOptions::default())),
            crate::seekable::Format::ZstdChunked => Some(Target::ZstdChunked(ZstdChunkedOptions::default())),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Target::Estargz(_) => "eStargz",
            Target::ZstdChunked(_) => "zstd:chunked",
        }
    }
}

/// What [`convert`] made.
#[derive(Debug, Clone)]
pub struct Converted {
    pub name: String,
    pub manifest_digest: Sha256Digest,
    pub config_digest: Sha256Digest,
    /// Per layer, bottom first: the new blob's digest and its TOC digest (of the JSON for
    /// eStargz, of the compressed TOC for zstd:chunked: what each format's annotation names).
    pub layers: Vec<(Sha256Digest, Sha256Digest)>,
    /// Per layer, bottom first: how many entries precede `.prefetch.landmark` (0: none does,
    /// the layer has no such landmark; see [`convert_with`]).
    pub prefetch: Vec<usize>,
}

/// The stored image `name` with every layer as eStargz, published as `new_name`.
pub fn convert_to_estargz(
    store: &mut Store,
    name: &str,
    new_name: &str,
    opts: &EstargzOptions,
) -> Result<Converted> {
    convert(store, name, new_name, &Target::Estargz(opts.clone()))
}

/// The stored image `name` with every layer in `target`'s format, published as `new_name`.
pub fn convert(store: &mut Store, name: &str, new_name: &str, target: &Target) -> Result<Converted> {
    convert_with(store, name, new_name, target, &[])
}

/// [`convert`], and in each layer `first[i]` names (layer `i`, bottom first; paths in the
/// layer, in the order wanted) move to the front, followed by `.prefetch.landmark`: the files
/// a lazy mount fetches first, in one request. A layer with none of them (or beyond `first`)
/// is converted as [`convert`] does it.
pub fn convert_with(
    store: &mut Store,
    name: &str,
    new_name: &str,
    target: &Target,
    first: &[Vec<String>],
) -> Result<Converted> {
    crate::reference::validate_image_name(new_name)?;
    let img = store.image(name)?.ok_or_else(|| CommitError::NoImage(name.to_string()))?;
    let _gc = store.gc_shared()?;
    let staging = store.staging()?;
    let res = convert_staged(store, &staging, &img, new_name, target, first);
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
    target: &Target,
    first: &[Vec<String>],
) -> Result<Converted> {
    let bad = |reason: String| CommitError::BadImage { image: img.name.clone(), reason };
    let mut rows = Vec::new();
    let mut descriptors = Vec::new();
    let mut converted = Vec::new();
    let mut prefetch = Vec::new();
    for (i, layer) in img.layers.iter().enumerate() {
        let compression = Compression::of_media_type(&layer.media_type).ok_or_else(|| {
            bad(format!("layer {} has media type {:?}", layer.blob_digest, layer.media_type))
        })?;
        let src_path = store.blob_path(&layer.blob_digest);
        let src = File::open(&src_path).map_err(io_at(&src_path))?;
        let mut tar = compression.decoder(src).map_err(io_at(&src_path))?;
        let seekable = |e| CommitError::Seekable { layer: layer.blob_digest.to_string(), source: e };
        // The files to move first: the tar then comes from a plain copy in staging, reordered.
        let (tar, front): (Box<dyn Read>, usize) = match first.get(i).filter(|f| !f.is_empty()) {
            None => (Box::new(BufReader::new(tar)), 0),
            Some(names) => {
                let plain = staging.dir.join(format!("layer{i}.tar"));
                let mut f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&plain)
                    .at(&plain)?;
                std::io::copy(&mut tar, &mut f).map_err(io_at(&src_path))?;
                let mut f = BufReader::with_capacity(CHUNK, f);
                let plan = order::plan(&mut f, names).map_err(seekable)?;
                if !plan.missing.is_empty() {
                    tracing::warn!(layer = %layer.blob_digest, missing = ?plan.missing, "files to move first that the layer does not hold");
                }
                // The copy goes with the staging directory; its name can go now.
                std::fs::remove_file(&plain).at(&plain)?;
                let front = plan.front;
                (Box::new(Reordered::new(f, &plan)), front)
            }
        };
        prefetch.push(front);
        let tmp = staging.dir.join(format!("layer{i}.blob"));
        let out = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).at(&tmp)?;
        let (out, w) = match target {
            Target::Estargz(opts) => {
                let mut opts = opts.clone();
                if front > 0 {
                    opts.landmark = Landmark::PrefetchAfter(front);
                }
                let (i, out) =
                    write_estargz(tar, BufWriter::with_capacity(CHUNK, out), &opts).map_err(seekable)?;
                let annotations = serde_json::Map::from_iter([
                    (ANNOTATION_TOC_DIGEST.to_string(), json!(i.toc_digest.to_string())),
                    (ANNOTATION_UNCOMPRESSED_SIZE.to_string(), json!(i.uncompressed_size.to_string())),
                ]);
                let w = Written {
                    digest: i.digest,
                    size: i.size,
                    diff_id: i.diff_id,
                    uncompressed_size: i.uncompressed_size,
                    entries: i.entries,
                    toc: i.toc_digest,
                    media_type: crate::compression::MT_OCI_LAYER_GZIP,
                    annotations,
                };
                (out, w)
            }
            Target::ZstdChunked(opts) => {
                let mut opts = opts.clone();
                if front > 0 {
                    opts.landmark = Landmark::PrefetchAfter(front);
                }
                let (i, out) =
                    write_zstd_chunked(tar, BufWriter::with_capacity(CHUNK, out), &opts).map_err(seekable)?;
                let annotations =
                    i.annotations().into_iter().map(|(k, v)| (k.to_string(), Value::String(v))).collect();
                let w = Written {
                    digest: i.digest,
                    size: i.size,
                    diff_id: i.diff_id,
                    uncompressed_size: i.uncompressed_size,
                    entries: i.entries,
                    toc: i.toc_checksum,
                    media_type: crate::compression::MT_OCI_LAYER_ZSTD,
                    annotations,
                };
                (out, w)
            }
        };
        let out =
            out.into_inner().map_err(|e| CommitError::Io { path: tmp.clone(), source: e.into_error() })?;
        out.sync_all().at(&tmp)?;
        drop(out);
        tracing::info!(layer = %layer.blob_digest, format = target.name(), blob = %w.digest, toc = %w.toc, "layer converted");

        store.add_lease(&staging.token, &w.diff_id)?;
        {
            let _lock = store.lock(Lock::Layer(&w.diff_id))?;
            if !store.has_layer(&w.diff_id)? {
                // Until its directory is unpacked, the layer's size is its tar's.
                store.insert_layer(&w.diff_id, w.uncompressed_size, w.entries as u64)?;
            }
        }
        if !store.has_blob(&w.digest) {
            store.commit_blob_file(&tmp, &w.digest)?;
        }
        let row = ImageLayerRow {
            diff_id: w.diff_id.clone(),
            blob_digest: w.digest.clone(),
            media_type: w.media_type.to_string(),
            blob_size: w.size,
            size: w.uncompressed_size,
        };
        descriptors.push(json!({
            "mediaType": row.media_type, "digest": row.blob_digest, "size": row.blob_size,
            "annotations": w.annotations,
        }));
        converted.push((w.digest, w.toc));
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
        prefetch,
    })
}

/// One converted layer, whatever its format.
struct Written {
    digest: Sha256Digest,
    size: u64,
    diff_id: Sha256Digest,
    uncompressed_size: u64,
    entries: usize,
    toc: Sha256Digest,
    media_type: &'static str,
    annotations: serde_json::Map<String, Value>,
}
