//! Sparse files committed: a container writes files that are mostly holes, and the committed
//! layer holds only their data (GNU sparse 1.0 PAX entries), which GNU tar and umoci read back to
//! the same contents (GNU tar with the holes restored).

use crate::common;
use crate::common::layout;
use crate::common::tarw;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::{Digest, Sha256};
use strata_test_support::tree::assert_trees_eq;
use tarw::{tar, E};

const MIB: u64 = 1 << 20;
/// 64 MiB, 8 data blocks of 4 KiB, ending in a hole.
const HOLEY: u64 = 64 * MIB;
/// 16 MiB and 1,000 bytes, ending in data that is not a whole block.
const TAIL: u64 = 16 * MIB + 1000;

fn block(k: u64) -> Vec<u8> {
    (0..4096u64).map(|i| (k * 31 + i % 251) as u8 | 1).collect()
}

/// Write the two sparse files into `dir` (the mounted container).
fn write_sparse(dir: &Path) {
    fs::create_dir_all(dir.join("data")).expect("mkdir");
    let f = fs::File::create(dir.join("data/holey")).expect("create");
    f.set_len(HOLEY).expect("truncate");
    for k in 0..8 {
        f.write_all_at(&block(k), k * 8 * MIB + k * 4096).expect("write");
    }
    let g = fs::File::create(dir.join("data/tail")).expect("create");
    g.set_len(TAIL).expect("truncate");
    g.write_all_at(&block(9), 4096).expect("write");
    g.write_all_at(&[7u8; 1000], TAIL - 1000).expect("write");
}

fn sha_file(p: &Path) -> String {
    let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Bytes allocated on disk.
fn allocated(p: &Path) -> u64 {
    fs::metadata(p).expect("stat").blocks() * 512
}

struct Committed {
    root: Root,
    /// The container's merged view before the commit.
    view: strata_test_support::tree::Tree,
    /// Contents of the two files, by name.
    sums: Vec<(&'static str, String)>,
    /// The export, tag `v1`.
    export: PathBuf,
}

/// Import a one-file image, write the sparse files in a container, commit it as `committed` and
/// export that.
fn commit_sparse() -> Committed {
    let root = Root::new();
    let src = root.path().join("src-layout");
    layout::layout_with_layers(&src, "base", &[tar([E::dir("etc/"), E::file("etc/hostname", "base\n")])]);
    root.ok(&["image", "import", &format!("{}:base", src.display()), "--name", "base"]);
    root.ok(&["container", "create", "base", "c"]);
    let at = PathBuf::from(root.ok(&["container", "mount", "c"]).trim());
    write_sparse(&at);
    let sums = vec![("holey", sha_file(&at.join("data/holey"))), ("tail", sha_file(&at.join("data/tail")))];
    assert!(allocated(&at.join("data/holey")) < MIB, "the upper file is sparse to begin with");
    let view = capture(&at);
    root.ok(&["container", "umount", "c"]);
    root.ok(&["container", "commit", "c", "committed"]);
    let export = root.path().join("export");
    root.ok(&["image", "export", "committed", &format!("{}:v1", export.display())]);
    Committed { root, view, sums, export }
}

#[test]
fn sparse_files_commit_to_sparse_entries_read_by_gnu_tar_and_umoci() {
    if !privileged("sparse_files_commit_to_sparse_entries_read_by_gnu_tar_and_umoci") {
        return;
    }
    let c = commit_sparse();
    let m = manifest_of(&c.export, "v1");
    let layer = &m["layers"][1];
    assert!(layer["size"].as_u64().expect("size") < 16 * 1024, "blob of {} bytes", layer["size"]);

    // The layer tar holds the data only.
    let blob = fs::File::open(blob(&c.export, layer["digest"].as_str().expect("digest"))).expect("blob");
    let mut tar_bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(blob).read_to_end(&mut tar_bytes).expect("gunzip");
    assert!(tar_bytes.len() < 64 * 1024, "layer tar of {} bytes for 36 KiB of data", tar_bytes.len());
    let work = c.root.path().join("gnu");
    fs::create_dir_all(&work).expect("mkdir");
    let tar_path = work.join("layer.tar");
    fs::write(&tar_path, &tar_bytes).expect("write tar");

    // GNU tar lists the files under their names and sizes, and extracts them with their holes.
    let out = Command::new("tar").arg("-tvf").arg(&tar_path).output().expect("tar -t");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8_lossy(&out.stdout);
    for (name, size) in [("data/holey", HOLEY), ("data/tail", TAIL)] {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {name}")) && l.contains(&format!(" {size} "))),
            "{name} of {size} bytes in:\n{listing}"
        );
    }
    assert!(!listing.contains("GNUSparseFile"), "{listing}");
    let x = work.join("x");
    fs::create_dir_all(&x).expect("mkdir");
    let out = Command::new("tar").arg("-xSf").arg(&tar_path).arg("-C").arg(&x).output().expect("tar -x");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (name, sum) in &c.sums {
        let p = x.join("data").join(name);
        assert_eq!(&sha_file(&p), sum, "{name} extracted by GNU tar");
        assert!(allocated(&p) < MIB, "{name}: {} bytes allocated", allocated(&p));
    }

    // umoci (Go's archive/tar) unpacks the export to the container's view.
    let (_keep, rootfs) = umoci_unpack(&c.export, "v1");
    assert_trees_eq(
        &capture_reference(&rootfs),
        &c.view,
        "umoci unpack of the export vs the container's view",
    );
}

/// Through strata's own unpacker: the committed image's layer directory, and a container over
/// it, hold the files with their holes (the unpacker reads GNU sparse PAX entries).
#[test]
fn sparse_files_round_trip_through_strata() {
    if !privileged("sparse_files_round_trip_through_strata") {
        return;
    }
    let c = commit_sparse();
    c.root.ok(&["container", "create", "committed", "again"]);
    let at = PathBuf::from(c.root.ok(&["container", "mount", "again"]).trim());
    let view = capture(&at);
    for (name, sum) in &c.sums {
        let p = at.join("data").join(name);
        assert_eq!(&sha_file(&p), sum, "{name} in a container over the committed image");
        assert!(allocated(&p) < MIB, "{name}: {} bytes allocated", allocated(&p));
    }
    c.root.ok(&["container", "umount", "again"]);
    assert_trees_eq(&view, &c.view, "container over the committed image vs the committed container");
    // And from the export, in a fresh root.
    let fresh = Root::new();
    fresh.ok(&["image", "import", &format!("{}:v1", c.export.display()), "--name", "again"]);
    fresh.ok(&["container", "create", "again", "v", "--read-only"]);
    let at = PathBuf::from(fresh.ok(&["container", "mount", "v"]).trim());
    for (name, _) in &c.sums {
        let p = at.join("data").join(name);
        assert!(allocated(&p) < MIB, "{name} imported: {} bytes allocated", allocated(&p));
    }
    assert_trees_eq(&capture(&at), &c.view, "fresh import of the export");
    fresh.ok(&["container", "umount", "v"]);
}
