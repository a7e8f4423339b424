//! Archive files: an oci-archive (an OCI layout in a tar) and a docker-archive (`docker save`),
//! of one image or several, with deterministic tar headers; and the atomic creation of the file
//! they go to.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::layout::{blob_list, index_descriptor, OCI_LAYOUT};
use super::{io_at, ExportError, Parts, Result};
use crate::digest::Sha256Digest;
use crate::fsutil::{remove_stale_temps, AtomicFile};
use crate::image::{self, Compression};
use crate::store::Store;

/// `name` with `:latest` when it has no tag.
pub(super) fn docker_repo_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// Create the archive `path` through a locked temp file next to it: fsynced and renamed only
/// when `f` succeeds. An existing regular file is replaced only with `force`.
pub(super) fn write_atomically(
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
pub(super) fn write_oci_archive(store: &Store, images: &[(Parts, String)], w: &mut impl Write) -> Result<()> {
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
    let f = File::open(src).map_err(io_at(src))?;
    let mut r =
        Compression::sniffing_decoder(io::BufReader::with_capacity(1 << 18, f)).map_err(io_at(src))?;
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
pub(super) fn write_docker_archive(
    store: &Store,
    images: &[(Parts, String)],
    w: &mut impl Write,
) -> Result<()> {
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
