//! `strata image import`: stream each layer blob once — hashing the compressed bytes, storing the
//! blob, decompressing, hashing the tar, unpacking — on two threads, and publish the image only when
//! every digest has been verified.
//!
//! Layers are independent here (each is unpacked into its own directory, whiteouts included), so
//! up to [`ImportOptions::jobs`] of them stream at once, each worker thread with its own database
//! connection ([`Store::reopen`]). Each layer still goes through the same steps under its own
//! lock and the import's lease; the first failure stops the others and is the one returned.
//! Progress is reported through [`ImportOptions::progress`], never drawn here.
//!
//! Here the import's steps (layers in parallel, each reused, unpacked from its stored blob or
//! streamed, then [`ImagePublish`]); the streaming of one blob, its verification and unpacking
//! are the layer store's ([`crate::layers`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::digest::Sha256Digest;
use crate::image::{self, Compression, ImageError, LayerRef, Platform, Resolved};
use crate::images::{ImagePublish, ImagesError};
use crate::layers::{stream_layer, LayerError, Tap, CHUNK};
pub use crate::layers::{ImportEvent, Progress};
use crate::store::{remove_tree, ImageLayerRow, IoContext, Lock, Staging, Store, StoreError};

/// Import errors. Layer errors name the layer and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Publishing the image (its blobs, its rows and its layer chain).
    #[error(transparent)]
    Publish(#[from] ImagesError),
    #[error("layer {layer}: {reason}")]
    Layer { layer: String, reason: String },
    /// The layer's blob could not be opened in its source.
    #[error("layer {layer}: opening its blob")]
    OpenBlob {
        layer: String,
        #[source]
        source: ImageError,
    },
    /// Streaming, verifying or unpacking a layer's blob failed.
    #[error(transparent)]
    Stream(#[from] LayerError),
    #[error("no image name: the source has no tag; give --name")]
    NoName,
    #[error(transparent)]
    Name(#[from] crate::reference::ReferenceError),
    /// (Not a `source`: the message already holds it.)
    #[error("{0} (the name comes from the source's tag; give --name)")]
    TagName(crate::reference::ReferenceError),
}

impl ImportError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            ImportError::Store(e) => e.kind(),
            ImportError::Publish(e) => e.kind(),
            ImportError::Image(_) => ErrorKind::InvalidArgument,
            ImportError::OpenBlob { source, .. } => source.kind(),
            ImportError::Stream(e) => e.kind(),
            ImportError::Layer { .. } => ErrorKind::InvalidArgument,
            ImportError::NoName | ImportError::Name(_) | ImportError::TagName(_) => {
                ErrorKind::InvalidArgument
            }
        }
    }
}

pub type Result<T, E = ImportError> = std::result::Result<T, E>;

/// Import options.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub name: Option<String>,
    pub platform: Option<Platform>,
    /// How many layers are fetched, verified and unpacked at once: 0 for [`default_jobs`], 1 for
    /// one after the other.
    pub jobs: usize,
    /// Told what the import is doing (for a progress display); `None`: nobody is.
    pub progress: Option<Progress>,
    /// A lazy pull's: asked first for each layer the store lacks, it may record the layer as
    /// remote instead of its blob being fetched.
    pub lazy: Option<LazyLayers>,
}

/// Records a layer as remote instead of fetching its blob (a lazy pull, `registry::lazy`):
/// called with the layer's lock and the import's lease held, it returns the layer's row when
/// it recorded the layer (its TOC stored and verified), `None` for a layer to fetch as usual.
#[derive(Clone)]
pub struct LazyLayers(Arc<LazyFn>);

type LazyFn = dyn Fn(&mut Store, &LayerRef) -> Result<Option<ImageLayerRow>> + Send + Sync;

impl LazyLayers {
    pub fn new(
        f: impl Fn(&mut Store, &LayerRef) -> Result<Option<ImageLayerRow>> + Send + Sync + 'static,
    ) -> Self {
        LazyLayers(Arc::new(f))
    }

    /// Ask the hook about layer `l` (the caller holds the layer's lock and a gc lease).
    pub fn record(&self, store: &mut Store, l: &LayerRef) -> Result<Option<ImageLayerRow>> {
        (self.0)(store, l)
    }
}

impl std::fmt::Debug for LazyLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LazyLayers(..)")
    }
}

/// At most this many jobs by default: beyond it a local import gains nothing on the machines
/// measured (docs/BENCHMARKS.md), and a registry is asked for no more blobs at once.
pub const MAX_DEFAULT_JOBS: usize = 4;

/// The default number of layers streamed at once: one per layer, per CPU, at most
/// [`MAX_DEFAULT_JOBS`].
pub fn default_jobs(layers: usize) -> usize {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    layers.min(cpus).clamp(1, MAX_DEFAULT_JOBS)
}

/// What an import did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub name: String,
    pub manifest_digest: Sha256Digest,
    pub layers: Vec<ImageLayerRow>,
    /// Layers unpacked by this import (others were already present).
    pub unpacked: usize,
}

/// Import an image from `reference` (`PATH` or `PATH:TAG`).
pub fn import(store: &mut Store, reference: &str, opts: &ImportOptions) -> Result<Imported> {
    let (resolved, name) = prepare(reference, opts)?;
    import_prepared(store, &resolved, &name, opts)
}

/// Everything about an import that needs no store: the name checked, the source opened and its
/// metadata verified. Bad input fails here, before the state root is touched.
pub fn prepare(reference: &str, opts: &ImportOptions) -> Result<(Resolved, String)> {
    if let Some(n) = &opts.name {
        crate::reference::validate_image_name(n)?;
    }
    let resolved = image::resolve(reference, opts.platform.as_ref())?;
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => {
            let n = resolved.name.clone().ok_or(ImportError::NoName)?;
            crate::reference::validate_image_name(&n).map_err(ImportError::TagName)?;
            n
        }
    };
    Ok((resolved, name))
}

/// `load`: the image an archive holds, or every image of an archive that holds several by name
/// (as `podman load`); `opts.name` applies to an archive of one image only.
pub fn load(store: &mut Store, reference: &str, opts: &ImportOptions) -> Result<Vec<Imported>> {
    match prepare(reference, opts) {
        Ok((resolved, name)) => Ok(vec![import_prepared(store, &resolved, &name, opts)?]),
        Err(ImportError::Image(e @ ImageError::Ambiguous { .. })) => {
            if opts.name.is_some() {
                return Err(e.into());
            }
            let (transport, path, names) = image::archive_images(reference)?;
            if names.is_empty() {
                return Err(e.into());
            }
            let mut done = Vec::new();
            for n in names {
                let one = format!("{transport}:{}:{n}", path.display());
                let (resolved, name) = prepare(&one, opts)?;
                done.push(import_prepared(store, &resolved, &name, opts)?);
            }
            Ok(done)
        }
        Err(e) => Err(e),
    }
}

/// Import what [`prepare`] resolved, under `name`.
pub fn import_prepared(
    store: &mut Store,
    resolved: &Resolved,
    name: &str,
    opts: &ImportOptions,
) -> Result<Imported> {
    let _gc = store.gc_shared()?;
    let staging = store.staging()?;
    let result = import_resolved(store, resolved, name, &staging, opts);
    if result.is_err() {
        // Release what this import leased; layers only it held go with them.
        store.drop_leases(&staging.token)?;
        store.remove_unreferenced_layers()?;
    }
    result
}

fn import_resolved(
    store: &mut Store,
    r: &Resolved,
    name: &str,
    staging: &Staging,
    opts: &ImportOptions,
) -> Result<Imported> {
    let (rows, unpacked) = import_layers(store, r, staging, opts)?;
    // The verified manifest, or for docker-archive one built over what was hashed.
    let mut image = ImagePublish::new(name, &r.config, rows.clone()).lease(&staging.token);
    if let Some((bytes, digest)) = &r.manifest {
        image = image.manifest(bytes, digest);
    }
    let published = image.publish(store)?;
    Ok(Imported { name: published.name, manifest_digest: published.manifest_digest, layers: rows, unpacked })
}

/// Import every layer of `r`, up to `opts.jobs` at once; returns their rows, bottom first, and
/// how many were unpacked. Each worker has a store handle of its own (the first is `store`);
/// after the first failure no layer starts, the running ones are stopped, and that failure is
/// returned.
fn import_layers(
    store: &mut Store,
    r: &Resolved,
    staging: &Staging,
    opts: &ImportOptions,
) -> Result<(Vec<ImageLayerRow>, usize)> {
    let n = r.layers.len();
    let progress = opts.progress.as_ref();
    if let Some(p) = progress {
        p.emit(&ImportEvent::Start { layers: n, bytes: r.layers.iter().filter_map(|l| l.size).sum() });
    }
    let jobs = if opts.jobs == 0 { default_jobs(n) } else { opts.jobs.min(n.max(1)) };
    let mut others = (1..jobs).map(|_| store.reopen()).collect::<Result<Vec<_>, _>>()?;
    let next = AtomicUsize::new(0);
    let cancel = AtomicBool::new(false);
    let done: Mutex<Vec<Option<(ImageLayerRow, bool)>>> = Mutex::new(vec![None; n]);
    let failed: Mutex<Option<ImportError>> = Mutex::new(None);
    let work = |store: &mut Store| {
        while !cancel.load(Ordering::Relaxed) {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(l) = r.layers.get(index) else { break };
            let tap = Tap { progress, index, cancel: Some(&cancel) };
            match import_layer(store, r, l, staging, tap, opts.lazy.as_ref()) {
                Ok(x) => done.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(x),
                Err(e) => {
                    let mut first = failed.lock().unwrap_or_else(|e| e.into_inner());
                    if first.is_none() {
                        *first = Some(e);
                    }
                    cancel.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
    };
    let work = &work;
    if others.is_empty() {
        work(store);
    } else {
        std::thread::scope(|s| {
            for other in &mut others {
                s.spawn(move || work(other));
            }
            work(store);
        });
    }
    drop(others);
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let mut rows = Vec::with_capacity(n);
    let mut unpacked = 0;
    for (l, x) in r.layers.iter().zip(done.into_inner().unwrap_or_else(|e| e.into_inner())) {
        let (row, did) = x.ok_or_else(|| ImportError::Layer {
            layer: l.diff_id.to_string(),
            reason: "not imported (a worker stopped early)".into(),
        })?;
        unpacked += did as usize;
        rows.push(row);
    }
    Ok((rows, unpacked))
}

/// Import one layer: reuse it when present; otherwise stream, store the blob and unpack once.
fn import_layer(
    store: &mut Store,
    r: &Resolved,
    l: &LayerRef,
    staging: &Staging,
    tap: Tap<'_>,
    lazy: Option<&LazyLayers>,
) -> Result<(ImageLayerRow, bool)> {
    let diff_id = &l.diff_id;
    // A docker-archive layer is named by its file, which the archive chose: printable only.
    let label = l.digest.as_ref().map(|d| d.to_string()).unwrap_or_else(|| image::printable(&l.file, 200));
    let declared = match &l.media_type {
        Some(mt) => Some(image::layer_compression(mt)?),
        None => None,
    };
    tap.emit(ImportEvent::LayerStarted { index: tap.index, layer: label.clone(), size: l.size });
    // Lease first, so a concurrent gc or recovery keeps the layer while this import needs it.
    store.add_lease(&staging.token, diff_id)?;
    let _lock = store.lock(Lock::Layer(diff_id))?;
    let layer_dir = store.layer_path(diff_id);
    let have_layer = store.has_layer(diff_id)? && layer_dir.is_dir();
    let have_blob = l.digest.as_ref().is_some_and(|d| store.has_blob(d));
    if have_layer && have_blob {
        if let (Some(d), Some(sz)) = (&l.digest, l.size) {
            tap.emit(ImportEvent::LayerReused { index: tap.index });
            let size = store.layer_size(diff_id)?.unwrap_or(0);
            let mt = l.media_type.clone().unwrap_or_else(|| image::MT_OCI_LAYER.into());
            return Ok((
                ImageLayerRow {
                    diff_id: diff_id.clone(),
                    blob_digest: d.clone(),
                    media_type: mt,
                    blob_size: sz,
                    size,
                },
                false,
            ));
        }
    }
    if let (false, false, Some(lazy)) = (have_layer, have_blob, lazy) {
        if let Some(row) = (lazy.0)(store, l)? {
            tap.emit(ImportEvent::LayerDone { index: tap.index, unpacked: false });
            return Ok((row, false));
        }
    }
    let job = LayerJob { r, l, staging, tap, label: &label, declared, have_layer };
    // A stored blob was verified when it was stored: a layer without its directory (a failed or
    // killed import removes the directories of the layers it unpacked, not their blobs) is
    // unpacked from it instead of being fetched again. Should the stored copy fail, the source
    // is read after all (and its verified bytes replace the stored ones).
    if let (false, true, Some(d)) = (have_layer, have_blob, &l.digest) {
        match stream_into_store(store, &job, Some(d)) {
            Ok(x) => return Ok(x),
            Err(e) if tap.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) => return Err(e),
            Err(e) => {
                tracing::warn!(layer = %label, error = %crate::error::report(&e), "stored blob failed; reading the source")
            }
        }
    }
    stream_into_store(store, &job, None)
}

/// One layer to bring into the store, its lock held.
struct LayerJob<'a> {
    r: &'a Resolved,
    l: &'a LayerRef,
    staging: &'a Staging,
    tap: Tap<'a>,
    label: &'a str,
    declared: Option<Compression>,
    /// Its directory and row exist: only its blob is wanted.
    have_layer: bool,
}

/// Stream a layer's blob from the source (or, given `stored`, from the blob store, which it is
/// not written to again), verify it, and publish what was missing: the layer directory and
/// row, the blob. Leaves nothing behind on failure.
fn stream_into_store(
    store: &mut Store,
    job: &LayerJob<'_>,
    stored: Option<&Sha256Digest>,
) -> Result<(ImageLayerRow, bool)> {
    let LayerJob { r, l, staging, tap, label, declared, have_layer } = *job;
    let diff_id = &l.diff_id;
    let layer_dir = store.layer_path(diff_id);
    let (src, file_size): (Box<dyn Read + Send>, u64) = match stored {
        Some(d) => {
            let p = store.blob_path(d);
            let f = File::open(&p).at(&p)?;
            let len = f.metadata().at(&p)?.len();
            (Box::new(f), len)
        }
        None => r
            .source
            .open_blob(l)
            .map_err(|source| ImportError::OpenBlob { layer: label.to_string(), source })?,
    };
    let limit = l.size.or(Some(file_size));
    let blob_tmp = staging.dir.join(format!("blob-{}", diff_id.hex()));
    let blob_file = match stored {
        Some(_) => None,
        None => {
            Some(OpenOptions::new().write(true).create_new(true).mode(0o600).open(&blob_tmp).at(&blob_tmp)?)
        }
    };
    let unpack_dir: Option<PathBuf> = if have_layer {
        None
    } else {
        let d = staging.dir.join(format!("layer-{}", diff_id.hex()));
        fs::create_dir(&d).at(&d)?;
        Some(d)
    };
    let streamed = stream_layer(src, limit, declared, blob_file, unpack_dir.as_deref(), tap, label);
    let cleanup = || {
        if stored.is_none() {
            let _ = fs::remove_file(&blob_tmp);
        }
        if let Some(d) = &unpack_dir {
            let _ = remove_tree(d);
        }
    };
    let (s, stats) = match streamed {
        Ok(x) => x,
        Err(e) => {
            cleanup();
            return Err(e.into());
        }
    };
    // Verify everything before anything is published.
    if let Err(e) = s.verify(label, l.digest.as_ref(), l.size, diff_id) {
        cleanup();
        return Err(e.into());
    }
    let mut size = store.layer_size(diff_id)?.unwrap_or(0);
    if let (Some(d), Some(stats)) = (&unpack_dir, &stats) {
        // Durable before visible: one syncfs for the whole layer instead of an fsync per file.
        if let Err(e) = Store::syncfs(d) {
            cleanup();
            return Err(e.into());
        }
        let _ = remove_tree(&layer_dir);
        if let Err(e) = fs::rename(d, &layer_dir).at(&layer_dir) {
            cleanup();
            return Err(e.into());
        }
        store.insert_layer(diff_id, stats.bytes, stats.entries)?;
        size = stats.bytes;
    }
    if stored.is_none() {
        store.commit_blob_file(&blob_tmp, &s.digest)?;
    }
    let media_type = match &l.media_type {
        Some(mt) => mt.clone(),
        None => Compression::media_type(s.compression).to_string(),
    };
    tap.emit(ImportEvent::LayerDone { index: tap.index, unpacked: unpack_dir.is_some() });
    Ok((
        ImageLayerRow {
            diff_id: diff_id.clone(),
            blob_digest: s.digest.clone(),
            media_type,
            blob_size: s.size,
            size,
        },
        unpack_dir.is_some(),
    ))
}

/// Import an oci-archive or docker-archive read from a stream (stdin, a pipe), as `podman load`
/// does. Archives need random access, so the stream is spooled to a file in the state root's
/// staging first; the file is removed when the import ends, whatever its outcome.
pub fn import_stream(
    store: &mut Store,
    mut input: impl io::Read,
    opts: &ImportOptions,
) -> Result<Vec<Imported>> {
    let spool = store.staging()?;
    let path = spool.dir.join("stdin.tar");
    {
        let f = File::create(&path).map_err(|e| StoreError::Io { path: path.clone(), source: e })?;
        let mut w = BufWriter::with_capacity(CHUNK, f);
        io::copy(&mut input, &mut w)
            .and_then(|_| w.flush())
            .map_err(|e| StoreError::Io { path: PathBuf::from("-"), source: e })?;
    }
    let reference = path.to_str().ok_or_else(|| StoreError::Io {
        path: path.clone(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "state root path is not UTF-8"),
    })?;
    let done = load(store, reference, opts).map_err(|e| match e {
        ImportError::Image(e) => ImportError::Image(e.relabel(reference, "standard input")),
        ImportError::Layer { layer, reason } => ImportError::Layer {
            layer: layer.replace(reference, "standard input"),
            reason: reason.replace(reference, "standard input"),
        },
        ImportError::OpenBlob { layer, source } => ImportError::OpenBlob {
            layer: layer.replace(reference, "standard input"),
            source: source.relabel(reference, "standard input"),
        },
        ImportError::Stream(LayerError::Read { layer, source }) => ImportError::Stream(LayerError::Read {
            layer: layer.replace(reference, "standard input"),
            source,
        }),
        ImportError::Stream(LayerError::Unpack { layer, source }) => {
            ImportError::Stream(LayerError::Unpack {
                layer: layer.replace(reference, "standard input"),
                source,
            })
        }
        e => e,
    });
    drop(spool);
    done
}
