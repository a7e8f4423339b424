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
//!
//! The module's parts: `stored` loads a stored image (typed manifest, config, layers), `layout`
//! writes an OCI image layout directory, `archive` the oci-archive and docker-archive tars. Every
//! file is written through [`crate::fsutil::AtomicFile`].

mod archive;
mod layout;
mod stored;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::fsutil::AtomicError;
use crate::image::{self, ImageError};
use crate::store::{Store, StoreError};

use archive::{write_atomically, write_docker_archive, write_oci_archive};
use layout::export_oci_dir;
use stored::{load, Parts};

/// Export errors.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("image {0:?} not found")]
    NoImage(String),
    #[error("image {image:?}: {reason}")]
    BadImage { image: String, reason: String },
    /// A stored manifest that does not parse.
    #[error("image {image:?}: manifest")]
    BadManifest {
        image: String,
        #[source]
        source: serde_json::Error,
    },
    /// A digest in a stored manifest (`what`) that is not a valid one.
    #[error("image {image:?}: {what}")]
    BadDigest {
        image: String,
        what: String,
        #[source]
        source: crate::digest::DigestError,
    },
    #[error("{path}: not an OCI image layout: {reason}")]
    BadLayout { path: PathBuf, reason: String },
    /// A layout's `file` (`oci-layout`, `index.json`) that does not parse, or cannot be rendered.
    #[error("{path}: not an OCI image layout: {file}")]
    LayoutJson {
        path: PathBuf,
        file: &'static str,
        #[source]
        source: serde_json::Error,
    },
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
    Image(#[from] ImageError),
}

impl ExportError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            ExportError::Io { source, .. } => ErrorKind::of_io(source),
            ExportError::NoImage(_) | ExportError::NoDirectory(_) => ErrorKind::NotFound,
            ExportError::Exists(_) | ExportError::TagExists { .. } => ErrorKind::AlreadyExists,
            ExportError::Symlink(_)
            | ExportError::BadDest { .. }
            | ExportError::BadLayout { .. }
            | ExportError::LayoutJson { .. } => ErrorKind::FailedPrecondition,
            ExportError::Format(_) => ErrorKind::InvalidArgument,
            ExportError::BadImage { .. }
            | ExportError::BadManifest { .. }
            | ExportError::BadDigest { .. }
            | ExportError::DiffIdMismatch { .. } => ErrorKind::Internal,
            ExportError::Store(e) => e.kind(),
            ExportError::Image(e) => e.kind(),
        }
    }
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

pub(super) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
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
    use super::archive::docker_repo_tag;
    use super::*;
    use crate::commit::tests::{mknod, need_root, setx};
    use crate::commit::{write_layer, LayerOptions};
    use crate::digest::Sha256Digest;
    use crate::image::Compression;
    use crate::store::ImageLayerRow;
    use serde_json::{json, Value};
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
        store.insert_layer(&info.diff_id, info.tar_size, info.entries).unwrap();
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
        let md = crate::images::put_test_image(&mut store, "tiny", &config, rows);
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
        let rows = store.image("tiny").unwrap().unwrap().layers;
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
