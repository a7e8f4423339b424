//! Sparse files in layer tars: real GNU tar output in its four sparse formats (old GNU, PAX 0.0,
//! 0.1, 1.0) imported into a state root on a 256 MiB tmpfs, and hand-made entries unpacked
//! directly. Files are compared by their data extents (SEEK_DATA/SEEK_HOLE) and the bytes in them:
//! reading a 10 GiB file through would take longer than the whole test should.

use crate::common;
use crate::common::tarw;

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};
use strata::unpack::{unpack_layer, UnpackOptions};
use strata_test_support::tree::{assert_trees_eq, Options, Tree};
use tarw::{extent_bytes, pax_sparse, sparse_content, E, T};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const REAL: u64 = 10 * GIB;

// ---- data maps ----

/// The data ranges of a file, as SEEK_DATA/SEEK_HOLE report them.
fn data_map(path: &Path) -> Vec<(u64, u64)> {
    let f = File::open(path).expect("open");
    let size = f.metadata().expect("stat").len();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(pos)) {
            Ok(p) => p,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => panic!("SEEK_DATA {}: {e}", path.display()),
        };
        let end = rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(start)).expect("SEEK_HOLE");
        out.push((start, end));
        pos = end;
    }
    out
}

fn range_hash(f: &File, start: u64, end: u64) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = start;
    while pos < end {
        let n = buf.len().min((end - pos) as usize);
        f.read_exact_at(&mut buf[..n], pos).expect("read");
        h.update(&buf[..n]);
        pos += n as u64;
    }
    hex::encode(h.finalize())
}

/// Some bytes from the start, middle and end of each hole of `path` (given its data map) read
/// as zeros.
fn assert_holes_zero(path: &Path, map: &[(u64, u64)]) {
    let f = File::open(path).expect("open");
    let size = f.metadata().expect("stat").len();
    let mut holes = Vec::new();
    let mut prev = 0;
    for &(s, e) in map {
        if s > prev {
            holes.push((prev, s));
        }
        prev = e;
    }
    if size > prev {
        holes.push((prev, size));
    }
    for (s, e) in holes {
        for at in [s, s + (e - s) / 2, e.saturating_sub(4096).max(s)] {
            let mut buf = vec![1u8; 4096.min(e - at) as usize];
            f.read_exact_at(&mut buf, at).expect("read hole");
            assert!(buf.iter().all(|b| *b == 0), "{}: hole at {at} is not zero", path.display());
        }
    }
}

/// `got` is a sparse copy of `want`: same size and metadata, same data ranges holding the same
/// bytes, holes reading as zeros, and no more blocks allocated than the data needs.
fn assert_same_sparse_file(want: &Path, got: &Path) {
    let (wm, gm) = (fs::metadata(want).expect("stat"), fs::metadata(got).expect("stat"));
    assert_eq!(gm.len(), wm.len(), "{}: size", got.display());
    assert_eq!(
        (gm.mode() & 0o7777, gm.uid(), gm.gid(), gm.mtime()),
        (wm.mode() & 0o7777, wm.uid(), wm.gid(), wm.mtime()),
        "{}: mode, owner, mtime",
        got.display()
    );
    let (wmap, gmap) = (data_map(want), data_map(got));
    assert_eq!(gmap, wmap, "{}: data ranges", got.display());
    let (wf, gf) = (File::open(want).expect("open"), File::open(got).expect("open"));
    for &(s, e) in &wmap {
        assert_eq!(range_hash(&gf, s, e), range_hash(&wf, s, e), "{}: data at {s}..{e}", got.display());
    }
    assert_holes_zero(got, &gmap);
    let data: u64 = gmap.iter().map(|(s, e)| e - s).sum();
    assert!(
        gm.blocks() * 512 <= data + MIB,
        "{}: {} blocks allocated for {data} data bytes",
        got.display(),
        gm.blocks()
    );
}

/// A hand-made sparse file: size, content of each extent, holes zero, few blocks. Extents are
/// 4 KiB aligned (the last one may end unaligned, at the real size).
fn assert_sparse_file(path: &Path, extents: &[(u64, u64)], realsize: u64) {
    let md = fs::metadata(path).expect("stat");
    assert_eq!(md.len(), realsize, "{}: size", path.display());
    let f = File::open(path).expect("open");
    for (i, &(off, len)) in extents.iter().enumerate() {
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, off).expect("read extent");
        assert!(buf == extent_bytes(i, len as usize), "{}: extent {i} at {off}", path.display());
    }
    let mut want: Vec<(u64, u64)> = Vec::new();
    for &(off, len) in extents.iter().filter(|e| e.1 > 0) {
        let end = (off + len).next_multiple_of(4096).min(realsize);
        match want.last_mut() {
            Some(last) if last.1 == off => last.1 = end,
            _ => want.push((off, end)),
        }
    }
    assert_eq!(data_map(path), want, "{}: data ranges", path.display());
    assert_holes_zero(path, &want);
    let data: u64 = extents.iter().map(|e| e.1).sum();
    assert!(
        md.blocks() * 512 <= data + MIB,
        "{}: {} blocks for {data} data bytes",
        path.display(),
        md.blocks()
    );
}

// ---- real GNU tar output, imported into a small filesystem ----

/// Write a sparse file of `realsize` bytes holding `extents` (data from [`extent_bytes`]).
fn make_sparse(path: &Path, extents: &[(u64, u64)], realsize: u64) {
    let f = File::create(path).expect("create");
    f.set_len(realsize).expect("truncate");
    for (i, &(off, len)) in extents.iter().enumerate() {
        f.write_all_at(&extent_bytes(i, len as usize), off).expect("write extent");
    }
}

/// 50 extents over 10 GiB: one at 0, several past 8 GiB (base-256 numbers in old GNU headers),
/// two 4 KiB apart, ending in a hole. More than 4: old GNU needs extended sparse headers.
fn big_extents() -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = (0..46).map(|i| (i * 211 * MIB, 64 << 10)).collect();
    v.extend([
        (8 * GIB, 4096),
        (8 * GIB + 8192, 4096),
        (9 * GIB + 3 * MIB, 256 << 10),
        (REAL - MIB, 12 << 10),
    ]);
    v.sort();
    v
}

/// 3 extents (they fit in the old GNU header), the file ending in data.
fn tail_extents() -> Vec<(u64, u64)> {
    vec![(4096, 4096), (9 * GIB, 128 << 10), (REAL - 8192, 8192)]
}

fn set_mtime(p: &Path, secs: i64) {
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: secs, tv_nsec: 0 },
        last_modification: rustix::fs::Timespec { tv_sec: secs, tv_nsec: 0 },
    };
    rustix::fs::utimensat(rustix::fs::CWD, p, &t, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).expect("utimensat");
}

/// The source tree: two 10 GiB sparse files among ordinary entries.
fn make_source(src: &Path) {
    fs::create_dir_all(src.join("etc")).expect("mkdir");
    fs::create_dir(src.join("empty")).expect("mkdir");
    make_sparse(&src.join("big"), &big_extents(), REAL);
    make_sparse(&src.join("etc/tail"), &tail_extents(), REAL);
    fs::write(src.join("etc/conf"), "key=value\n").expect("write");
    std::os::unix::fs::symlink("../big", src.join("etc/big-link")).expect("symlink");
    rustix::fs::chown(
        src.join("big"),
        Some(rustix::fs::Uid::from_raw(1000)),
        Some(rustix::fs::Gid::from_raw(1000)),
    )
    .expect("chown");
    rustix::fs::chmod(src.join("big"), rustix::fs::Mode::from_raw_mode(0o640)).expect("chmod");
    for p in ["big", "etc/tail", "etc/conf", "etc/big-link", "etc", "empty", "."] {
        set_mtime(&src.join(p), 1_700_000_000);
    }
}

/// A tree without the two big files (compared by extents instead), directory mtimes and the root.
fn capture_rest(root: &Path) -> Tree {
    let opts = Options {
        mtime: true,
        skip: vec![PathBuf::from("big"), PathBuf::from("etc/tail")],
        ..Options::default()
    };
    let mut t = Tree::capture_with(root, &opts).expect("capture");
    t.retain(|p, e| {
        if e.kind == strata_test_support::tree::Kind::Dir
            || e.kind == strata_test_support::tree::Kind::Symlink
        {
            e.mtime = None;
        }
        p != Path::new(".")
    });
    t
}

/// An OCI layout at `dir` with one image `t` whose single (uncompressed) layer is `layer`.
fn layout_with_layer(dir: &Path, layer: &[u8]) -> String {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    let (ld, ls) = put_blob(dir, layer);
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [ld]}});
    let (cd, cs) = put_blob(dir, &serde_json::to_vec(&config).expect("json"));
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}]});
    fs::write(dir.join("index.json"), br#"{"schemaVersion":2,"manifests":[]}"#).expect("index");
    set_tag(dir, "t", &serde_json::to_vec(&manifest).expect("json"));
    ld
}

/// A tmpfs of `size` mounted at `dir` for the life of the value.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        fs::create_dir_all(dir).expect("mkdir");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "strata-sparse-test"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs at {}", dir.display());
        SmallFs(dir.to_path_buf())
    }

    fn used(&self) -> u64 {
        let st = rustix::fs::statvfs(&self.0).expect("statvfs");
        (st.f_blocks - st.f_bfree) * st.f_frsize
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = kernel_overlay::unmount(&self.0, kernel_overlay::UnmountMode::Detach);
    }
}

/// GNU tar with `args` writes the source tree; strata imports the image into a root on a 256 MiB
/// tmpfs; the layer equals the source.
fn gnu_tar_roundtrip(what: &str, args: &[&str]) {
    if !privileged(what) {
        return;
    }
    let root = Root::new();
    let src = root.path().join("src");
    make_source(&src);
    let tar_path = root.path().join("layer.tar");
    let out = Command::new("tar")
        .args(args)
        .arg("-cf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .output()
        .expect("run tar");
    assert!(out.status.success(), "tar {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let layer = fs::read(&tar_path).expect("read layer");
    assert!(layer.len() < 16 << 20, "GNU tar did not write a sparse archive: {} bytes", layer.len());
    let layout = root.path().join("layout");
    let diff_id = layout_with_layer(&layout, &layer);

    let small = SmallFs::mount(&root.path().join("small"), "256m");
    let state = small.0.join("state");
    // Reading the holes (20 GiB of zeros) takes a minute or more; skipping them, well under a
    // second: a generous bound still tells the two apart.
    let t = std::time::Instant::now();
    let mut child = Command::new(STRATA)
        .arg("--root")
        .arg(&state)
        .args(["image", "import", &format!("{}:t", layout.display()), "--name", "s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run strata");
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: import still running after 30 s (reading the holes?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err).expect("stderr");
    assert!(status.success(), "{what}: import failed: {err}");
    eprintln!("{what}: import took {:?}", t.elapsed());
    let layer_dir = state.join("layers/sha256").join(diff_id.trim_start_matches("sha256:"));
    assert!(layer_dir.is_dir(), "{what}: no layer directory {}", layer_dir.display());

    assert_trees_eq(&capture_rest(&src), &capture_rest(&layer_dir), what);
    assert_same_sparse_file(&src.join("big"), &layer_dir.join("big"));
    assert_same_sparse_file(&src.join("etc/tail"), &layer_dir.join("etc/tail"));
    assert!(
        small.used() < 64 << 20,
        "{what}: the import used {} bytes of the small filesystem",
        small.used()
    );
    drop(small);
    assert!(mounts_under(root.path()).is_empty(), "tmpfs left mounted");
}

#[test]
fn gnu_tar_old_gnu_format() {
    gnu_tar_roundtrip("gnu_tar_old_gnu_format", &["--sparse", "--format=gnu"]);
}

#[test]
fn gnu_tar_pax_0_0() {
    gnu_tar_roundtrip("gnu_tar_pax_0_0", &["--sparse", "--format=posix", "--sparse-version=0.0"]);
}

#[test]
fn gnu_tar_pax_0_1() {
    gnu_tar_roundtrip("gnu_tar_pax_0_1", &["--sparse", "--format=posix", "--sparse-version=0.1"]);
}

#[test]
fn gnu_tar_pax_1_0() {
    gnu_tar_roundtrip("gnu_tar_pax_1_0", &["--sparse", "--format=posix", "--sparse-version=1.0"]);
}

// ---- hand-made entries, unpacked directly ----

fn unpack(bytes: &[u8]) -> tempfile::TempDir {
    let base = repo().join("target/test-roots");
    fs::create_dir_all(&base).expect("test roots");
    let dir = tempfile::Builder::new().prefix("sparse-").tempdir_in(base).expect("tempdir");
    let opts =
        UnpackOptions { no_same_owner: !rustix::process::geteuid().is_root(), ..UnpackOptions::default() };
    unpack_layer(bytes, dir.path(), &opts).unwrap_or_else(|e| panic!("unpack failed: {e}"));
    dir
}

/// [`unpack`], failing if it takes longer than a minute (it takes milliseconds when holes are
/// skipped, hours when they are read).
fn unpack_in_time(bytes: Vec<u8>) -> tempfile::TempDir {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let dir = unpack(&bytes);
        let _ = tx.send(dir);
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("unpack finished within a minute")
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into())
        .collect();
    v.sort();
    v
}

#[test]
fn every_format_between_other_entries() {
    // Each sparse entry is followed by an ordinary one: the stream stays in step.
    let ext = [(0, 4096), (64 << 10, 8192), (1 << 20, 100)];
    let real = (1 << 20) + 100;
    let mut t = T::new();
    t.gnu_sparse(b"gnu", &ext, real);
    t.add(E::file("after-gnu", "a"));
    for v in ["0.0", "0.1", "1.0"] {
        t.add(pax_sparse(v, &format!("d/v{v}"), &ext, real));
        t.add(E::file(format!("after-{v}"), v));
    }
    let dir = unpack(&t.finish());
    let d = dir.path();
    for p in ["gnu", "d/v0.0", "d/v0.1", "d/v1.0"] {
        assert_sparse_file(&d.join(p), &ext, real);
        assert_eq!(fs::read(d.join(p)).expect("read"), sparse_content(&ext, real), "{p}");
    }
    assert_eq!(fs::read(d.join("after-gnu")).expect("read"), b"a");
    assert_eq!(fs::read(d.join("after-1.0")).expect("read"), b"1.0");
    // The GNUSparseFile.N placeholder directory of 0.1 and 1.0 is never created.
    assert_eq!(names(d), ["after-0.0", "after-0.1", "after-1.0", "after-gnu", "d", "gnu"]);
    assert_eq!(names(&d.join("d")), ["v0.0", "v0.1", "v1.0"]);
}

#[test]
fn old_gnu_extended_headers_and_large_offsets() {
    // 60 extents: the header's 4 and three extension blocks (21 + 21 + 14); offsets past 8 GiB
    // are base-256 numbers; the map ends with the empty extent GNU tar writes at the real size.
    let mut ext: Vec<(u64, u64)> = (0..59).map(|i| (i * 173 * MIB, 4096 * (1 + i % 3))).collect();
    ext.push((12 * GIB, 0));
    let mut t = T::new();
    t.gnu_sparse(b"f", &ext, 12 * GIB);
    t.add(E::file("next", "n"));
    let dir = unpack(&t.finish());
    assert_sparse_file(&dir.path().join("f"), &ext, 12 * GIB);
    assert_eq!(fs::read(dir.path().join("next")).expect("read"), b"n");
}

#[test]
fn sparse_name_wins_over_path_record() {
    // As in GNU tar, GNU.sparse.name wins over a PAX path, whatever their order.
    let ext = [(4096, 4096)];
    let e = pax_sparse("1.0", "real/name", &ext, 3 * 4096).pax("path", "other/name");
    let dir = unpack(&tarw::tar([e]));
    assert_sparse_file(&dir.path().join("real/name"), &ext, 3 * 4096);
    assert_eq!(names(dir.path()), ["real"]);
}

#[test]
fn empty_and_all_hole_sparse_files() {
    let mut t = T::new();
    t.gnu_sparse(b"holes", &[(5 * GIB, 0)], 5 * GIB);
    t.gnu_sparse(b"empty", &[(0, 0)], 0);
    t.add(pax_sparse("0.1", "pax-holes", &[], 5 * GIB));
    t.add(pax_sparse("1.0", "pax-holes-1", &[(5 * GIB, 0)], 5 * GIB));
    let dir = unpack(&t.finish());
    for p in ["holes", "pax-holes", "pax-holes-1"] {
        assert_sparse_file(&dir.path().join(p), &[], 5 * GIB);
    }
    assert_eq!(fs::metadata(dir.path().join("empty")).expect("stat").len(), 0);
}

#[test]
fn sparse_entry_named_as_whiteout_skips_its_data() {
    // The data of an old GNU sparse whiteout (8 TiB real size) is read past, not through its
    // holes; the next entry is read correctly.
    if !privileged("sparse_entry_named_as_whiteout_skips_its_data") {
        return;
    }
    let mut t = T::new();
    t.gnu_sparse(b".wh.gone", &[(0, 4096), (8 << 40, 0)], 8 << 40);
    t.add(E::file("next", "n"));
    let dir = unpack_in_time(t.finish());
    assert_eq!(fs::read(dir.path().join("next")).expect("read"), b"n");
    let md = fs::symlink_metadata(dir.path().join("gone")).expect("whiteout");
    assert!(md.file_type().is_char_device() && md.rdev() == 0, "gone is a 0:0 whiteout");
}

#[test]
fn holes_of_terabytes_are_not_read() {
    // An 8 TiB file with two small extents: reading its holes (as the tar crate's expansion of
    // old GNU entries does) would take many minutes; skipping them takes milliseconds.
    let real = 8u64 << 40;
    let ext = [(4096, 4096), (real - 4096, 4096)];
    let mut t = T::new();
    t.gnu_sparse(b"gnu", &ext, real);
    for v in ["0.0", "0.1", "1.0"] {
        t.add(pax_sparse(v, &format!("v{v}"), &ext, real));
    }
    let dir = unpack_in_time(t.finish());
    for p in ["gnu", "v0.0", "v0.1", "v1.0"] {
        assert_sparse_file(&dir.path().join(p), &ext, real);
    }
}

#[test]
fn long_name_and_stream_ending_after_the_entry() {
    // The data of an old GNU sparse entry is read past the tar parser: a GNU long name still
    // applies to it, and a tar ending right after the last entry's data (no end-of-archive
    // blocks) still unpacks.
    let long = "l".repeat(150);
    let mut t = T::new();
    t.gnu_long(b'L', long.as_bytes());
    t.gnu_sparse(b"ignored", &[(0, 512), (8192, 512)], 8192 + 512);
    t.gnu_sparse(b"last", &[(0, 1000)], 1000);
    let dir = unpack(&t.buf);
    assert_sparse_file(&dir.path().join(&long), &[(0, 512), (8192, 512)], 8192 + 512);
    assert_eq!(fs::read(dir.path().join("last")).expect("read"), sparse_content(&[(0, 1000)], 1000));
}

#[test]
fn real_sizes_adding_past_u64() {
    // Three files of the largest size a file can have (tmpfs takes them; ext4 answers EFBIG): the
    // layer's apparent size saturates instead of overflowing.
    if !privileged("real_sizes_adding_past_u64") {
        return;
    }
    let root = Root::new();
    let small = SmallFs::mount(&root.path().join("small"), "16m");
    let max = i64::MAX as u64;
    let mut t = T::new();
    t.gnu_sparse(b"a", &[(0, 512), (max, 0)], max);
    t.gnu_sparse(b"b", &[(0, 512), (max, 0)], max);
    t.gnu_sparse(b"c", &[(0, 512), (max, 0)], max);
    let stats = unpack_layer(&t.finish()[..], &small.0, &UnpackOptions::default()).expect("unpack");
    assert_eq!(stats.bytes, u64::MAX);
    assert_eq!(fs::metadata(small.0.join("c")).expect("stat").len(), max);
}
