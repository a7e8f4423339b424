//! An OCI image layout directory (`image export --format oci`): created or added to, blobs
//! copied when missing, `index.json` replaced atomically, concurrent exports taking turns. The
//! index entry and blob list here are shared with the oci-archive writer.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use serde_json::{json, Value};

use super::{io_at, ExportError, Parts, Result};
use crate::digest::Sha256Digest;
use crate::fsutil::{remove_stale_temps, AtomicFile};
use crate::image;
use crate::store::Store;

pub(super) fn index_descriptor(parts: &Parts, ref_name: &str) -> Value {
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

pub(super) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Every blob the images need, each once: (digest, source path in the store).
pub(super) fn blob_list<'a>(
    store: &Store,
    parts: impl IntoIterator<Item = &'a Parts>,
) -> Vec<(Sha256Digest, PathBuf)> {
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

pub(super) fn export_oci_dir(
    store: &Store,
    parts: &Parts,
    dir: &Path,
    ref_name: &str,
    force: bool,
) -> Result<()> {
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
            let v: Value = serde_json::from_slice(&data).map_err(|source| ExportError::LayoutJson {
                path: dir.to_path_buf(),
                file: "oci-layout",
                source,
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
        Ok(data) => serde_json::from_slice::<Value>(&data).map_err(|source| ExportError::LayoutJson {
            path: dir.to_path_buf(),
            file: "index.json",
            source,
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
    let data = serde_json::to_vec(&index).map_err(|source| ExportError::LayoutJson {
        path: dir.to_path_buf(),
        file: "index.json",
        source,
    })?;
    write_file_atomic(&index_path, &data)
}
