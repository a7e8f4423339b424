//! The layer store: a layer's blob turned into its unpacked directory, by one path that streams,
//! verifies and unpacks, whoever asks.
//!
//! A layer's blob is read once: hashed and counted (and copied to the blob store when it comes
//! from a source), decompressed and hashed again on a thread of its own, and unpacked
//! ([`crate::unpack`]) from a channel; what was streamed is then checked against the digest, size
//! and diff_id the manifest and config state. Import ([`crate::import`]) streams each layer of a
//! source this way; [`materialize_layer`] unpacks a layer from its stored blob when its directory
//! is missing (a committed layer at its first use, a directory lost to a killed import), for
//! container create and mount, `container export` and commit. Both hold the layer's lock
//! ([`Lock::Layer`]) while they write its directory, build it in staging and rename it into place
//! only once every digest matched.
//!
//! Here the errors, the progress events and [`materialize_layer`]; `stream.rs` the streaming of
//! one blob; [`remote`] the local side of a remote layer (`pull --lazy`): its stored TOC and the
//! skeleton tree strata-fuse serves it from. Below `container` and the pipelines; uses the store
//! and unpack.

use std::fs::{self, File};
use std::io;
use std::sync::Arc;

use crate::compression::Compression;
use crate::store::{ImageLayerRow, IoContext, Lock, Store, StoreError};
use crate::unpack::UnpackError;
pub(crate) use stream::{stream_layer, Tap, CHUNK};

pub mod remote;
mod stream;

/// Errors of streaming, verifying and unpacking a layer. They name the layer (its blob digest,
/// or for a docker-archive its file).
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading, decompressing or spooling the layer's blob failed.
    #[error("layer {layer}: reading its blob")]
    Read {
        layer: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}")]
    Unpack { layer: String, source: UnpackError },
    #[error("layer {layer}: digest mismatch: expected {expected}, blob is {actual}")]
    DigestMismatch { layer: String, expected: String, actual: String },
    #[error("layer {layer}: size mismatch: descriptor says {expected} bytes, blob is {actual} bytes")]
    SizeMismatch { layer: String, expected: u64, actual: u64 },
    #[error("layer {layer}: diff_id mismatch: config says {expected}, uncompressed tar is {actual}")]
    DiffIdMismatch { layer: String, expected: String, actual: String },
    /// A remote layer's stored TOC does not parse or check.
    #[error("layer {layer}: its TOC")]
    Toc {
        layer: String,
        #[source]
        source: crate::seekable::SeekableError,
    },
    #[error("unsupported layer media type {0:?}")]
    MediaType(String),
    /// A lazy pull's layer whose blob is still in the registry (`registry::lazy::complete_layers`
    /// fetches it).
    #[error("layer {layer}: remote (pulled with --lazy): its blob {blob} is not in the store yet")]
    Remote { layer: String, blob: String },
}

impl LayerError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            LayerError::Store(e) => e.kind(),
            LayerError::Remote { .. } => crate::error::ErrorKind::FailedPrecondition,
            _ => crate::error::ErrorKind::InvalidArgument,
        }
    }
}

pub type Result<T, E = LayerError> = std::result::Result<T, E>;

/// What an import (or a push, blob by blob) reports while it runs, to its [`Progress`]. Layers
/// are numbered bottom first, as the manifest lists them; with several jobs the events of
/// different layers interleave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportEvent {
    /// The import starts: `layers` layers, `bytes` bytes of layer blobs as the manifest states
    /// them (layers of a docker-archive, which states no size, count 0).
    Start { layers: usize, bytes: u64 },
    /// Layer `index` starts: `layer` names it (its blob digest), `size` is its blob's size when
    /// known.
    LayerStarted { index: usize, layer: String, size: Option<u64> },
    /// `bytes` more bytes of layer `index`'s blob were read (fetched, for a registry).
    LayerBytes { index: usize, bytes: u64 },
    /// Layer `index` is complete in the store; `unpacked` when this import unpacked it (else its
    /// directory was there and only its blob was stored).
    LayerDone { index: usize, unpacked: bool },
    /// Layer `index` and its blob were in the store already: nothing was read.
    LayerReused { index: usize },
    /// A push has sent blob `index` up to `position` (from the start again when it retries).
    LayerPosition { index: usize, position: u64 },
    /// A push is done with blob `index`: `how` is `pushed`, `mounted` or `already present`.
    LayerSent { index: usize, how: &'static str },
}

/// A callback told of [`ImportEvent`]s, from whichever thread streams the layer.
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(&ImportEvent) + Send + Sync>);

impl Progress {
    pub fn new(f: impl Fn(&ImportEvent) + Send + Sync + 'static) -> Progress {
        Progress(Arc::new(f))
    }

    pub fn emit(&self, e: &ImportEvent) {
        (self.0)(e)
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// Make sure the directory of an image layer exists, unpacking it from the stored blob when it
/// does not (a committed layer is unpacked at its first use; a lost directory is rebuilt). The
/// blob's digest and the tar's diff_id are verified as on import. Returns whether it unpacked.
pub fn materialize_layer(store: &mut Store, layer: &ImageLayerRow) -> Result<bool> {
    let diff_id = layer.diff_id.clone();
    let layer_dir = store.layer_path(&diff_id);
    if layer_dir.is_dir() {
        return Ok(false);
    }
    let _gc = store.gc_shared()?;
    let _lock = store.lock(Lock::Layer(&diff_id))?;
    if layer_dir.is_dir() {
        return Ok(false);
    }
    let digest = layer.blob_digest.clone();
    let blob_path = store.blob_path(&digest);
    if !blob_path.is_file() {
        if let Some(r) = store.remote_layer(&diff_id)? {
            return Err(LayerError::Remote { layer: diff_id.to_string(), blob: r.blob_digest.to_string() });
        }
    }
    let file = File::open(&blob_path).at(&blob_path)?;
    let staging = store.staging()?;
    let dir = staging.dir.join("layer");
    // 0755 whatever the umask: strata-fuse (umask 0) completes layers too.
    std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o755).create(&dir).at(&dir)?;
    let declared = Some(
        Compression::of_media_type(&layer.media_type)
            .ok_or_else(|| LayerError::MediaType(layer.media_type.clone()))?,
    );
    let label = digest.to_string();
    let (s, stats) = stream_layer(
        Box::new(file),
        Some(layer.blob_size),
        declared,
        None,
        Some(&dir),
        Tap::default(),
        &label,
    )?;
    s.verify(&label, Some(&digest), Some(layer.blob_size), &diff_id)?;
    Store::syncfs(&dir)?;
    fs::rename(&dir, &layer_dir).at(&layer_dir)?;
    if let Some(stats) = stats {
        store.insert_layer(&layer.diff_id, stats.bytes, stats.entries)?;
    }
    tracing::info!(layer = %layer.diff_id, "unpacked layer from its stored blob");
    Ok(true)
}
