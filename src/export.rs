//! `strata image export`: write a stored image as an OCI image layout directory, an oci-archive or
//! a docker-archive (what `skopeo`, `umoci`, `podman load` and `docker load` read).
//!
//! - `oci`: `DEST` or `DEST:TAG`, a directory. Created if missing (its parent must exist); an
//!   existing layout is added to: other manifests in `index.json` are kept, an entry with the same
//!   ref name and manifest is replaced (one for another manifest only with `--force`), blobs are
//!   written only when missing (copied with `copy_file_range`, so reflinked where the filesystem
//!   can, to a temp name, fsynced, renamed), and `index.json` is replaced atomically. Concurrent
//!   strata exports into one layout take turns (flock on the layout directory).
//! - `oci-archive`: the same tree in a tar file (`DEST` or `DEST:TAG`).
//! - `docker-archive`: `manifest.json` (`Config`, `RepoTags`, `Layers`), `repositories`,
//!   `<config hex>.json` and `<diff_id hex>/layer.tar`, the layers uncompressed (their sha256 is
//!   checked against the config's diff_ids on the way). `RepoTags` is `DEST`'s TAG, else the image
//!   name, with `:latest` added when it has no tag.
//!
//! The ref name (`org.opencontainers.image.ref.name`) is TAG when given, else the image name.
//! Archives are written to a temp file next to `DEST`, fsynced and renamed: `DEST` is either the
//! old file or the complete new one; an existing file is replaced only with `--force`, and a
//! symlink at `DEST` is never followed (see [`export_with`]). Temp files of an export that was
//! killed are removed by the next export to the same place (see [`crate::fsutil::AtomicFile`]).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustix::fs::FlockOperation;

use serde_json::{json, Value};

use crate::db::DbError;
use crate::digest::Sha256Digest;
use crate::fsutil::{remove_stale_temps, AtomicError, AtomicFile};
use crate::image::{self, Compression, ImageError};
use crate::store::{Store, StoreError};

/// Export errors.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("image {0:?} not found")]
    NoImage(String),
    #[error("image {image:?}: {reason}")]
    BadImage { image: String, reason: String },
    #[error("{path}: not an OCI image layout: {reason}")]
    BadLayout { path: PathBuf, reason: String },
    #[error("{}: no such directory", .0.display())]
    NoDirectory(PathBuf),
    #[error("{}: already exists; use --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error("{}: is a symbolic link; not following it (give the path it points to)", .0.display())]
    Symlink(PathBuf),
    #[error("{}: {reason}", path.display())]
    BadDest { path: PathBuf, reason: String },
    #[error("{}: already holds tag {tag:?} for manifest {digest}; use --force to replace it", path.display())]
    TagExists { path: PathBuf, tag: String, digest: String },
    #[error("layer {digest}: uncompressed content is {actual}, but the config says diff_id {expected}")]
    DiffIdMismatch { digest: String, expected: String, actual: String },
    #[error("unknown export format {0:?}: expected oci, oci-archive or docker-archive")]
    Format(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl From<AtomicError> for ExportError {
    /// The writer's errors are export's own: an I/O error at a path, or `DEST` already exists.
    fn from(e: AtomicError) -> ExportError {
        match e {
            AtomicError::Io { path, source } => ExportError::Io { path, source },
            AtomicError::Exists { path } => ExportError::Exists(path),
            AtomicError::NotAFileName { path } => {
                ExportError::BadDest { path, reason: "not a file name".into() }
            }
        }
    }
}

pub type Result<T, E = ExportError> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Io { path: path.to_path_buf(), source }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// OCI image layout directory.
    Oci,
    /// OCI image layout in a tar file.
    OciArchive,
    /// `docker save` format.
    DockerArchive,
}

impl FromStr for ExportFormat {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "oci" | "oci-dir" => Ok(ExportFormat::Oci),
            "oci-archive" => Ok(ExportFormat::OciArchive),
            "docker-archive" => Ok(ExportFormat::DockerArchive),
            _ => Err(ExportError::Format(s.to_string())),
        }
    }
}

/// A stored image's metadata, read and checked.
struct Parts {
    manifest: Vec<u8>,
    manifest_digest: Sha256Digest,
    manifest_media_type: String,
    config: Vec<u8>,
    config_digest: Sha256Digest,
    /// (blob digest, media type, diff_id), bottom first.
    layers: Vec<(Sha256Digest, String, Sha256Digest)>,
}

fn load(store: &Store, name: &str) -> Result<Parts> {
    let row = store.db.image(name)?.ok_or_else(|| ExportError::NoImage(name.to_string()))?;
    let bad = |reason: String| ExportError::BadImage { image: name.to_string(), reason };
    let manifest_digest = row.manifest_digest.clone();
    let manifest = store.read_blob(&manifest_digest)?;
    let m: Value = serde_json::from_slice(&manifest).map_err(|e| bad(format!("manifest: {e}")))?;
    let digest_of = |d: &Value, what: &str| -> Result<Sha256Digest> {
        let s =
            d.get("digest").and_then(|v| v.as_str()).ok_or_else(|| bad(format!("{what} has no digest")))?;
        Sha256Digest::parse(s).map_err(|e| bad(format!("{what}: {e}")))
    };
    let config_digest = digest_of(m.get("config").unwrap_or(&Value::Null), "manifest config")?;
    let config = store.read_blob(&config_digest)?;
    let diff_ids = image::diff_ids(&config, &format!("image {name:?} config"))?;
    let descs =
        m.get("layers").and_then(|l| l.as_array()).ok_or_else(|| bad("manifest has no layers".into()))?;
    if descs.len() != diff_ids.len() {
        return Err(bad(format!("{} layers but {} diff_ids", descs.len(), diff_ids.len())));
    }
    let mut layers = Vec::new();
    for (d, id) in descs.iter().zip(diff_ids) {
        let mt = d.get("mediaType").and_then(|v| v.as_str()).unwrap_or(image::MT_OCI_LAYER_GZIP).to_string();
        layers.push((digest_of(d, "manifest layer")?, mt, id));
    }
    let manifest_media_type =
        m.get("mediaType").and_then(|v| v.as_str()).unwrap_or(image::MT_OCI_MANIFEST).to_string();
    Ok(Parts { manifest, manifest_digest, manifest_media_type, config, config_digest, layers })
}

/// Export options.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportOptions {
    /// Replace an existing archive file, or an existing tag of a layout naming another manifest.
    pub force: bool,
}

/// Export image `image` to `dest` (`PATH` or `PATH:TAG`) in `format`, replacing nothing.
pub fn export(store: &Store, image: &str, dest: &str, format: ExportFormat) -> Result<()> {
    export_with(store, image, dest, format, &ExportOptions::default())
}

/// Export image `image` to `dest` (`PATH` or `PATH:TAG`) in `format`.
///
/// What may already be at `DEST`:
/// - `oci`: nothing, an empty directory, or an OCI image layout, which gets the tag added (as
///   `skopeo copy` does). A tag the layout already holds for another manifest is replaced only
///   with `force`. A directory that is neither empty nor a layout is refused, `force` or not:
///   skopeo writes a layout into it, mixing it with unrelated files; strata never does.
/// - archives: nothing, or with `force` a regular file, which is replaced atomically. (skopeo
///   silently overwrites an oci-archive and refuses to write a docker-archive over a file.)
/// - a symbolic link is refused, not followed; the parent directory must exist.
pub fn export_with(
    store: &Store,
    image: &str,
    dest: &str,
    format: ExportFormat,
    opts: &ExportOptions,
) -> Result<()> {
    let _gc = store.gc_shared()?;
    let parts = load(store, image)?;
    let (path, tag) = image::split_reference(dest);
    let ref_name = tag.clone().unwrap_or_else(|| image.to_string());
    check_parent(&path)?;
    match format {
        ExportFormat::Oci => export_oci_dir(store, &parts, &path, &ref_name, opts.force),
        ExportFormat::OciArchive | ExportFormat::DockerArchive => {
            let images = [(parts, ref_name)];
            write_atomically(&path, opts.force, |f| write_archive(store, &images, format, f))
        }
    }
}

/// Write several images into one archive file `path` (`oci-archive` or `docker-archive`), as
/// `podman save IMAGE...` does: each under its own name, shared blobs once.
pub fn save_with(
    store: &Store,
    images: &[&str],
    path: &Path,
    format: ExportFormat,
    opts: &ExportOptions,
) -> Result<()> {
    let _gc = store.gc_shared()?;
    let images = load_named(store, images)?;
    check_parent(path)?;
    write_atomically(path, opts.force, |f| write_archive(store, &images, format, f))
}

/// [`save_with`] to a stream (stdout).
pub fn save_to(store: &Store, images: &[&str], format: ExportFormat, w: &mut impl Write) -> Result<()> {
    let _gc = store.gc_shared()?;
    let images = load_named(store, images)?;
    write_archive(store, &images, format, w)
}

fn load_named(store: &Store, images: &[&str]) -> Result<Vec<(Parts, String)>> {
    if images.is_empty() {
        return Err(ExportError::Format("an archive of no images".into()));
    }
    images.iter().map(|i| Ok((load(store, i)?, i.to_string()))).collect()
}

fn write_archive(
    store: &Store,
    images: &[(Parts, String)],
    format: ExportFormat,
    w: &mut impl Write,
) -> Result<()> {
    match format {
        ExportFormat::Oci => Err(ExportError::Format("oci (a directory) in an archive".into())),
        ExportFormat::OciArchive => write_oci_archive(store, images, w),
        ExportFormat::DockerArchive => write_docker_archive(store, images, w),
    }
}

/// The directory `DEST` goes in must exist (as with skopeo): a typo in it is an error naming
/// it, not a tree of new directories or a failure naming a temp file.
fn check_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match fs::metadata(parent) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(ExportError::BadDest { path: parent.to_path_buf(), reason: "not a directory".into() }),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            Err(ExportError::NoDirectory(parent.to_path_buf()))
        }
        Err(e) => Err(io_at(parent)(e)),
    }
}

/// `name` with `:latest` when it has no tag.
fn docker_repo_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

fn index_descriptor(parts: &Parts, ref_name: &str) -> Value {
    let mut d = json!({
        "mediaType": parts.manifest_media_type,
        "digest": parts.manifest_digest.to_string(),
        "size": parts.manifest.len(),
        "annotations": { image::REF_NAME: ref_name },
    });
    if let Ok(c) = serde_json::from_slice::<Value>(&parts.config) {
        if let (Some(os), Some(arch)) =
            (c.get("os").and_then(|v| v.as_str()), c.get("architecture").and_then(|v| v.as_str()))
        {
            let mut p = json!({ "os": os, "architecture": arch });
            if let Some(v) = c.get("variant").and_then(|v| v.as_str()) {
                p["variant"] = v.into();
            }
            d["platform"] = p;
        }
    }
    d
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Every blob the images need, each once: (digest, source path in the store).
fn blob_list<'a>(store: &Store, parts: impl IntoIterator<Item = &'a Parts>) -> Vec<(Sha256Digest, PathBuf)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for parts in parts {
        let all = [parts.manifest_digest.clone(), parts.config_digest.clone()]
            .into_iter()
            .chain(parts.layers.iter().map(|l| l.0.clone()));
        for d in all {
            if seen.insert(d.clone()) {
                let p = store.blob_path(&d);
                out.push((d, p));
            }
        }
    }
    out
}

/// Write a small file atomically (temp, fsync, rename over `path`).
fn write_file_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let mut t = AtomicFile::create(path, 0o644)?;
    t.write_all(data)?;
    Ok(t.commit()?)
}

/// Copy a store blob into a layout as `dst` (temp, fsync, rename).
fn copy_blob(src: &Path, dst: &Path) -> Result<()> {
    let t = AtomicFile::create(dst, 0o644)?;
    let mut from = File::open(src).map_err(io_at(src))?;
    // io::copy between files is copy_file_range: a reflink on filesystems that can, no
    // user-space copy otherwise.
    io::copy(&mut from, &mut t.file()).map_err(io_at(&t.path()))?;
    // Store blobs are 0600 (the root is private); a layout is for others to read, whatever the umask.
    t.file().set_permissions(fs::Permissions::from_mode(0o644)).map_err(io_at(&t.path()))?;
    Ok(t.commit()?)
}

fn export_oci_dir(store: &Store, parts: &Parts, dir: &Path, ref_name: &str, force: bool) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_at(dir)(e)),
        },
        Err(e) => return Err(io_at(dir)(e)),
        Ok(md) if md.file_type().is_symlink() => return Err(ExportError::Symlink(dir.to_path_buf())),
        Ok(md) if !md.is_dir() => {
            return Err(ExportError::BadDest {
                path: dir.to_path_buf(),
                reason: "exists and is not a directory (an OCI layout is a directory)".into(),
            })
        }
        Ok(_) => {}
    }
    // Exports into one layout take turns (an flock on the directory itself, so the layout gets
    // no extra file): index.json is read, changed and replaced, and a concurrent export would
    // otherwise drop the other's entry.
    let dir_fd = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => ExportError::Symlink(dir.to_path_buf()),
            _ => io_at(dir)(e),
        })?;
    rustix::fs::flock(&dir_fd, FlockOperation::LockExclusive).map_err(|e| io_at(dir)(e.into()))?;
    let blobs = dir.join("blobs/sha256");
    remove_stale_temps(dir, |n| n == "oci-layout" || n == "index.json");
    remove_stale_temps(&blobs, |n| Sha256Digest::from_hex(n).is_ok());
    let layout = dir.join("oci-layout");
    match fs::read(&layout) {
        Ok(data) => {
            let v: Value = serde_json::from_slice(&data).map_err(|e| ExportError::BadLayout {
                path: dir.to_path_buf(),
                reason: format!("oci-layout: {e}"),
            })?;
            if v.get("imageLayoutVersion").and_then(|v| v.as_str()).is_none() {
                return Err(ExportError::BadLayout {
                    path: dir.to_path_buf(),
                    reason: "oci-layout has no imageLayoutVersion".into(),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A new layout goes only into an empty directory.
            if fs::read_dir(dir).map_err(io_at(dir))?.next().is_some() {
                return Err(ExportError::BadDest {
                    path: dir.to_path_buf(),
                    reason: "a directory that is neither empty nor an OCI image layout (no oci-layout \
                             file); refusing to write into it"
                        .into(),
                });
            }
            write_file_atomic(&layout, OCI_LAYOUT)?
        }
        Err(e) => return Err(io_at(&layout)(e)),
    }
    let index_path = dir.join("index.json");
    let mut index = match fs::read(&index_path) {
        Ok(data) => serde_json::from_slice::<Value>(&data).map_err(|e| ExportError::BadLayout {
            path: dir.to_path_buf(),
            reason: format!("index.json: {e}"),
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            json!({ "schemaVersion": 2, "mediaType": image::MT_OCI_INDEX, "manifests": [] })
        }
        Err(e) => return Err(io_at(&index_path)(e)),
    };
    let obj = index.as_object_mut().ok_or_else(|| ExportError::BadLayout {
        path: dir.to_path_buf(),
        reason: "index.json is not an object".into(),
    })?;
    let manifests = obj.entry("manifests").or_insert_with(|| json!([]));
    let list = manifests.as_array_mut().ok_or_else(|| ExportError::BadLayout {
        path: dir.to_path_buf(),
        reason: "index.json manifests is not an array".into(),
    })?;
    let has_ref = |m: &Value| {
        m.get("annotations").and_then(|a| a.get(image::REF_NAME)).and_then(|v| v.as_str()) == Some(ref_name)
    };
    let ours = parts.manifest_digest.to_string();
    if !force {
        if let Some(other) = list.iter().filter(|m| has_ref(m)).find_map(|m| {
            let d = m.get("digest").and_then(|v| v.as_str()).unwrap_or("?");
            (d != ours).then(|| d.to_string())
        }) {
            return Err(ExportError::TagExists {
                path: dir.to_path_buf(),
                tag: ref_name.to_string(),
                digest: image::printable(&other, 80),
            });
        }
    }
    // Blobs before the index that names them.
    fs::create_dir_all(&blobs).map_err(io_at(&blobs))?;
    for (d, src) in blob_list(store, [parts]) {
        let dst = blobs.join(d.hex());
        if !dst.is_file() {
            copy_blob(&src, &dst)?;
        }
    }
    // Sync the blobs' directory entries before index.json can name them.
    if let Ok(f) = File::open(&blobs) {
        let _ = f.sync_all();
    }
    list.retain(|m| !has_ref(m));
    list.push(index_descriptor(parts, ref_name));
    let data = serde_json::to_vec(&index).map_err(|e| ExportError::BadLayout {
        path: dir.to_path_buf(),
        reason: format!("index.json: {e}"),
    })?;
    write_file_atomic(&index_path, &data)
}

/// Create the archive `path` through a locked temp file next to it: fsynced and renamed only
/// when `f` succeeds. An existing regular file is replaced only with `force`.
fn write_atomically(
    path: &Path,
    force: bool,
    f: impl FnOnce(&mut BufWriter<&File>) -> Result<()>,
) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(path)(e)),
        Ok(md) if md.file_type().is_symlink() => return Err(ExportError::Symlink(path.to_path_buf())),
        Ok(md) if md.is_dir() => {
            return Err(ExportError::BadDest { path: path.to_path_buf(), reason: "is a directory".into() })
        }
        Ok(md) if !md.is_file() => {
            return Err(ExportError::BadDest {
                path: path.to_path_buf(),
                reason: "exists and is not a regular file".into(),
            })
        }
        Ok(_) if !force => return Err(ExportError::Exists(path.to_path_buf())),
        Ok(_) => {}
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    remove_stale_temps(parent, |n| n == name);
    let t = AtomicFile::create(path, 0o644)?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, t.file());
        f(&mut w)?;
        w.flush().map_err(io_at(&t.path()))?;
    }
    Ok(if force { t.commit() } else { t.commit_new() }?)
}

/// Deterministic tar headers for archive members.
fn header(path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    // Every path here is short and ASCII: `blobs/sha256/<64 hex>` at most.
    let bytes = path.as_bytes();
    let name = &mut h.as_old_mut().name;
    let n = bytes.len().min(name.len());
    name[..n].copy_from_slice(&bytes[..n]);
    h.set_cksum();
    h
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, path: &str, data: &[u8], at: &Path) -> Result<()> {
    b.append(&header(path, tar::EntryType::Regular, data.len() as u64), data).map_err(io_at(at))
}

fn append_file<W: Write>(b: &mut tar::Builder<W>, path: &str, src: &Path, at: &Path) -> Result<()> {
    let f = File::open(src).map_err(io_at(src))?;
    let len = f.metadata().map_err(io_at(src))?.len();
    b.append(&header(path, tar::EntryType::Regular, len), f.take(len)).map_err(io_at(at))
}

/// An oci-archive of `images`, each (metadata, ref name) one index entry.
fn write_oci_archive(store: &Store, images: &[(Parts, String)], w: &mut impl Write) -> Result<()> {
    let at = PathBuf::from("oci-archive");
    let mut b = tar::Builder::new(w);
    append_bytes(&mut b, "oci-layout", OCI_LAYOUT, &at)?;
    let manifests: Vec<Value> = images.iter().map(|(p, r)| index_descriptor(p, r)).collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": image::MT_OCI_INDEX,
        "manifests": manifests,
    });
    let index = serde_json::to_vec(&index).unwrap_or_default();
    append_bytes(&mut b, "index.json", &index, &at)?;
    for dir in ["blobs/", "blobs/sha256/"] {
        b.append(&header(dir, tar::EntryType::Directory, 0), io::empty()).map_err(io_at(&at))?;
    }
    for (d, src) in blob_list(store, images.iter().map(|(p, _)| p)) {
        append_file(&mut b, &format!("blobs/sha256/{}", d.hex()), &src, &at)?;
    }
    b.finish().map_err(io_at(&at))
}

/// Decompress a stored layer blob into `tmp`, checking its sha256 against `diff_id`.
fn uncompressed_layer(src: &Path, diff_id: &Sha256Digest, digest: &Sha256Digest, tmp: &Path) -> Result<()> {
    let mut f = File::open(src).map_err(io_at(src))?;
    let mut head = [0u8; 4];
    let n = f.read(&mut head).map_err(io_at(src))?;
    f.rewind().map_err(io_at(src))?;
    let compression = image::sniff_compression(&head[..n]);
    let mut r: Box<dyn Read> = match compression {
        Compression::Gzip => {
            Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 18, f)))
        }
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(f).map_err(io_at(src))?),
        Compression::None => Box::new(f),
    };
    let out = OpenOptions::new().write(true).create_new(true).mode(0o600).open(tmp).map_err(io_at(tmp))?;
    let mut w = crate::hashing::Hashing::new(BufWriter::with_capacity(1 << 20, out));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_at(src)(e)),
        };
        w.write_all(&buf[..n]).map_err(io_at(tmp))?;
    }
    w.flush().map_err(io_at(tmp))?;
    let (_, actual, _) = w.finish();
    if &actual != diff_id {
        return Err(ExportError::DiffIdMismatch {
            digest: digest.to_string(),
            expected: diff_id.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// A docker-archive of `images` (`docker save` of several: one manifest.json entry each, layers
/// and configs they share written once).
fn write_docker_archive(store: &Store, images: &[(Parts, String)], w: &mut impl Write) -> Result<()> {
    let at = PathBuf::from("docker-archive");
    let staging = store.staging()?;
    let mut b = tar::Builder::new(w);
    let mut written = HashSet::new();
    let mut manifest = Vec::new();
    let mut repos = serde_json::Map::new();
    for (parts, name) in images {
        let repo_tag = docker_repo_tag(name);
        let config_name = format!("{}.json", parts.config_digest.hex());
        if written.insert(config_name.clone()) {
            append_bytes(&mut b, &config_name, &parts.config, &at)?;
        }
        let mut layer_names = Vec::new();
        for (digest, _mt, diff_id) in &parts.layers {
            let name = format!("{}/layer.tar", diff_id.hex());
            layer_names.push(name.clone());
            if !written.insert(name.clone()) {
                continue;
            }
            b.append(&header(&format!("{}/", diff_id.hex()), tar::EntryType::Directory, 0), io::empty())
                .map_err(io_at(&at))?;
            let src = store.blob_path(digest);
            if digest == diff_id {
                // Stored uncompressed already.
                append_file(&mut b, &name, &src, &at)?;
            } else {
                let tmp = staging.dir.join(diff_id.hex());
                uncompressed_layer(&src, diff_id, digest, &tmp)?;
                append_file(&mut b, &name, &tmp, &at)?;
                fs::remove_file(&tmp).map_err(io_at(&tmp))?;
            }
        }
        manifest.push(json!({ "Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names }));
        // Legacy `repositories`: repo -> tag -> top layer id (skopeo writes the same).
        if let (Some((repo, tag)), Some(top)) = (repo_tag.rsplit_once(':'), parts.layers.last()) {
            let tags = repos.entry(repo.to_string()).or_insert_with(|| json!({}));
            tags[tag] = top.2.hex().into();
        }
    }
    append_bytes(&mut b, "manifest.json", &serde_json::to_vec(&manifest).unwrap_or_default(), &at)?;
    if !repos.is_empty() {
        append_bytes(&mut b, "repositories", &serde_json::to_vec(&repos).unwrap_or_default(), &at)?;
    }
    b.finish().map_err(io_at(&at))
}

/// Write image `image` as an archive (`oci-archive` or `docker-archive`) to the stream `w`, as
/// `podman save` to stdout does; the archive names the image `image`. The OCI layout format is a
/// directory and cannot be streamed.
pub fn export_archive_to(store: &Store, image: &str, format: ExportFormat, w: &mut impl Write) -> Result<()> {
    if format == ExportFormat::Oci {
        return Err(ExportError::Format("oci (a directory) to a stream".into()));
    }
    save_to(store, &[image], format, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::tests::{mknod, need_root, setx};
    use crate::commit::{write_layer, LayerOptions};
    use crate::db::ImageLayerRow;
    use std::process::Command;
    use strata_test_support::tree::{assert_trees_eq, Tree};

    fn run(cmd: &mut Command) -> String {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Store a layer made from `dir`; returns its row.
    fn add_layer(store: &mut Store, dir: &Path, c: Compression) -> ImageLayerRow {
        let mut blob = vec![];
        let info =
            write_layer(dir, &mut blob, &LayerOptions { compression: c, ..Default::default() }).unwrap();
        assert_eq!(store.put_blob(&blob).unwrap(), info.digest);
        store.db.insert_layer(&info.diff_id, info.tar_size, info.entries).unwrap();
        ImageLayerRow {
            diff_id: info.diff_id.clone(),
            blob_digest: info.digest.clone(),
            media_type: info.media_type.into(),
            blob_size: info.size,
            size: info.tar_size,
        }
    }

    /// A two-layer image "tiny" in a new store; returns the store and the expected root filesystem.
    fn tiny_image(t: &Path) -> (Store, PathBuf, Sha256Digest) {
        let mut store = Store::open(&t.join("root")).unwrap();
        let (l1, l2, want) = (t.join("l1"), t.join("l2"), t.join("want"));
        for d in [&l1, &l2, &want] {
            fs::create_dir(d).unwrap();
        }
        for root in [&l1, &want] {
            fs::create_dir_all(root.join("etc/sub")).unwrap();
            fs::write(root.join("etc/hello"), b"hello\n").unwrap();
            fs::hard_link(root.join("etc/hello"), root.join("etc/hello2")).unwrap();
            std::os::unix::fs::symlink("../etc/hello", root.join("etc/sub/link")).unwrap();
            fs::write(root.join(format!("etc/{}", "n".repeat(120))), b"long").unwrap();
            mknod(&root.join("etc/null"), rustix::fs::FileType::CharacterDevice, 1, 3);
            setx(&root.join("etc/hello"), "user.note", b"hi");
        }
        fs::write(l1.join("etc/gone"), b"bye").unwrap();
        // Layer 2 deletes etc/gone and adds bin/tool.
        fs::create_dir(l2.join("etc")).unwrap();
        mknod(&l2.join("etc/gone"), rustix::fs::FileType::CharacterDevice, 0, 0);
        for root in [&l2, &want] {
            fs::create_dir(root.join("bin")).unwrap();
            fs::write(root.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        }
        let rows = vec![
            add_layer(&mut store, &l1, Compression::Gzip),
            add_layer(&mut store, &l2, Compression::None),
        ];
        let config = json!({
            "architecture": image::Platform::host().arch, "os": "linux",
            "config": { "Cmd": ["/bin/tool"] },
            "rootfs": { "type": "layers", "diff_ids": rows.iter().map(|r| r.diff_id.clone()).collect::<Vec<_>>() },
            "history": [{ "created_by": "test" }, { "created_by": "test" }],
        });
        let md = crate::import::put_test_image(&mut store, "tiny", &config, rows);
        (store, want, md)
    }

    fn rootfs_tree(dir: &Path) -> Tree {
        let mut t = Tree::capture(dir).unwrap();
        t.entries.remove(Path::new("."));
        t
    }

    fn inspect(transport: &str) -> Value {
        serde_json::from_str(&run(Command::new("skopeo").args(["inspect", transport]))).unwrap()
    }

    fn umoci_rootfs(layout_ref: &str, bundle: &Path) -> Tree {
        run(Command::new("umoci").args(["unpack", "--image", layout_ref]).arg(bundle));
        rootfs_tree(&bundle.join("rootfs"))
    }

    #[test]
    fn exports_read_by_skopeo_and_umoci() {
        if !need_root("exports_read_by_skopeo_and_umoci (mknod, umoci unpack)") {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (store, want, md) = tiny_image(t);
        let want = rootfs_tree(&want);

        // OCI layout, then a second tag added to the same layout.
        let layout = t.join("layout");
        export(&store, "tiny", &format!("{}:v1", layout.display()), ExportFormat::Oci).unwrap();
        export(&store, "tiny", &format!("{}:v2", layout.display()), ExportFormat::Oci).unwrap();
        export(&store, "tiny", &format!("{}:v1", layout.display()), ExportFormat::Oci).unwrap();
        let index: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        let refs: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["annotations"][image::REF_NAME].as_str().unwrap())
            .collect();
        assert_eq!(refs, ["v2", "v1"], "re-export replaces its own entry, keeps others");
        let i = inspect(&format!("oci:{}:v1", layout.display()));
        assert_eq!(i["Digest"], md.to_string());
        assert_eq!(i["Layers"].as_array().unwrap().len(), 2);
        assert_trees_eq(
            &umoci_rootfs(&format!("{}:v2", layout.display()), &t.join("b1")),
            &want,
            "umoci oci",
        );

        // oci-archive.
        let oa = t.join("img.oci.tar");
        export(&store, "tiny", &format!("{}:arch", oa.display()), ExportFormat::OciArchive).unwrap();
        let i = inspect(&format!("oci-archive:{}", oa.display()));
        assert_eq!(i["Digest"], md.to_string());
        let unpacked = t.join("oa");
        fs::create_dir(&unpacked).unwrap();
        run(Command::new("tar").arg("-xf").arg(&oa).arg("-C").arg(&unpacked));
        assert_trees_eq(
            &umoci_rootfs(&format!("{}:arch", unpacked.display()), &t.join("b2")),
            &want,
            "umoci oci-archive",
        );

        // docker-archive: skopeo reads it, and copying it back to OCI gives the same root filesystem.
        let da = t.join("img.docker.tar");
        export(&store, "tiny", &da.display().to_string(), ExportFormat::DockerArchive).unwrap();
        let i = inspect(&format!("docker-archive:{}", da.display()));
        assert_eq!(i["Layers"].as_array().unwrap().len(), 2);
        let dm: Value =
            serde_json::from_str(&run(Command::new("tar").arg("-xOf").arg(&da).arg("manifest.json")))
                .unwrap();
        assert_eq!(dm[0]["RepoTags"], json!(["tiny:latest"]), "{dm}");
        let copy = t.join("copy");
        run(Command::new("skopeo").args([
            "copy",
            &format!("docker-archive:{}", da.display()),
            &format!("oci:{}:c", copy.display()),
        ]));
        assert_trees_eq(
            &umoci_rootfs(&format!("{}:c", copy.display()), &t.join("b3")),
            &want,
            "docker-archive",
        );
        // manifest.json names uncompressed layer tars whose sha256 are the diff_ids.
        let listing = run(Command::new("tar").arg("-tf").arg(&da));
        assert!(listing.contains("manifest.json") && listing.contains("repositories"), "{listing}");
        let rows = store.db.image_layers("tiny").unwrap();
        for r in &rows {
            let hex = r.diff_id.hex();
            let member = run(Command::new("sh")
                .arg("-c")
                .arg(format!("tar -xOf {} {hex}/layer.tar | sha256sum", da.display())));
            assert!(member.starts_with(hex), "{member} vs {hex}");
        }
        // Re-export over an existing archive is refused without force; with it, the archive is
        // replaced atomically and no temp files are left.
        let before = fs::read(&da).unwrap();
        let e = export(&store, "tiny", &da.display().to_string(), ExportFormat::DockerArchive).unwrap_err();
        assert!(matches!(&e, ExportError::Exists(p) if p == &da), "{e}");
        let force = ExportOptions { force: true };
        export_with(&store, "tiny", &da.display().to_string(), ExportFormat::DockerArchive, &force).unwrap();
        assert_eq!(fs::read(&da).unwrap(), before, "a re-export writes the same bytes");
        let leftovers: Vec<_> = fs::read_dir(t)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn concurrent_exports_into_one_layout_keep_every_tag() {
        if !need_root("concurrent_exports_into_one_layout_keep_every_tag (mknod)") {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (store, _, _) = tiny_image(t);
        drop(store);
        let layout = t.join("layout");
        std::thread::scope(|s| {
            for i in 0..8 {
                let (root, layout) = (t.join("root"), layout.clone());
                s.spawn(move || {
                    let store = Store::open(&root).unwrap();
                    export(&store, "tiny", &format!("{}:t{i}", layout.display()), ExportFormat::Oci).unwrap();
                });
            }
        });
        let index: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        let mut refs: Vec<String> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["annotations"][image::REF_NAME].as_str().unwrap().to_string())
            .collect();
        refs.sort();
        assert_eq!(refs, (0..8).map(|i| format!("t{i}")).collect::<Vec<_>>());
        let leftovers: Vec<_> = fs::read_dir(&layout)
            .unwrap()
            .chain(fs::read_dir(layout.join("blobs/sha256")).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn export_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("root")).unwrap();
        let e = export(&store, "nope", "/tmp/x", ExportFormat::Oci).unwrap_err();
        assert!(matches!(e, ExportError::NoImage(_)), "{e}");
        assert!("tarball".parse::<ExportFormat>().is_err());
        assert_eq!("oci-archive".parse::<ExportFormat>().unwrap(), ExportFormat::OciArchive);
        assert_eq!(docker_repo_tag("a/b"), "a/b:latest");
        assert_eq!(docker_repo_tag("localhost:5000/b"), "localhost:5000/b:latest");
        assert_eq!(docker_repo_tag("b:1"), "b:1");
    }
}
