//! The skeleton of a remote layer: the plain unpack of the same layer but for file data, and
//! hostile TOCs refused (or confined) as hostile tars are.

use std::os::unix::fs::MetadataExt;

use super::*;
use crate::seekable::footer::{estargz_toc_range, parse_estargz_footer};
use crate::seekable::write::{write_estargz, EstargzOptions};
use crate::unpack::UnpackError;
use strata_test_support::tree::{assert_trees_eq, Options, Tree};

/// A layer tar with one of each kind of entry: directories with odd modes and owners, a file
/// of several chunks, an empty file, a setuid file with an xattr, a symlink, a hard link, a
/// FIFO, a device, a whiteout and an opaque directory.
fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(1000 + data.len() as u64 % 7);
        h.set_gid(2000);
        h.set_mtime(1_600_000_000 + path.len() as u64);
        if kind == tar::EntryType::Char {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        match link {
            Some(l) => b.append_link(&mut h, path, l).unwrap(),
            None => b.append_data(&mut h, path, data).unwrap(),
        }
    };
    use tar::EntryType as T;
    add("./", T::Directory, 0o755, b"", None);
    add("etc/", T::Directory, 0o750, b"", None);
    add("etc/big", T::Regular, 0o644, &strata_test_support::noise(10_000, 3), None);
    add("etc/empty", T::Regular, 0o600, b"", None);
    add("etc/hosts-link", T::Link, 0o644, b"", Some("etc/big"));
    add("etc/sym", T::Symlink, 0o777, b"", Some("../etc/big"));
    add("run/", T::Directory, 0o1777, b"", None);
    add("run/fifo", T::Fifo, 0o640, b"", None);
    add("dev/", T::Directory, 0o755, b"", None);
    add("dev/null", T::Char, 0o666, b"", None);
    add("old/", T::Directory, 0o755, b"", None);
    add("old/.wh..wh..opq", T::Regular, 0o644, b"", None);
    add(".wh.gone", T::Regular, 0o644, b"", None);
    let mut h = tar::Header::new_ustar();
    h.set_size(5);
    h.set_mode(0o4755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    b.append_pax_extensions([("SCHILY.xattr.user.note", b"skeleton".as_slice())]).unwrap();
    b.append_data(&mut h, "bin/su", &b"su!!\n"[..]).unwrap();
    b.into_inner().unwrap()
}

/// `tar` as eStargz (chunks of 4 000 bytes), and its verified TOC.
fn toc_of(tar: &[u8]) -> Toc {
    let opts = EstargzOptions { chunk_size: 4000, ..Default::default() };
    let (info, blob) = write_estargz(tar, Vec::new(), &opts).unwrap();
    let off = parse_estargz_footer(&blob[blob.len() - 51..]).unwrap();
    let r = estargz_toc_range(blob.len() as u64, off).unwrap();
    Toc::from_estargz(&blob[r.start as usize..r.end as usize], off, &info.toc_digest).unwrap()
}

fn options() -> Options {
    Options { mtime: true, ..Default::default() }
}

#[test]
fn the_skeleton_is_the_plain_unpack_without_file_data() {
    if !strata_test_support::privileged("the_skeleton_is_the_plain_unpack_without_file_data") {
        return;
    }
    let tar = layer_tar();
    let toc = toc_of(&tar);
    assert!(toc.entries.iter().any(|e| e.name == "etc/big" && e.chunks.len() == 3), "{toc:?}");
    let t = tempfile::tempdir().unwrap();
    let (plain, skel) = (t.path().join("plain"), t.path().join("skel"));
    fs::create_dir(&plain).unwrap();
    fs::create_dir(&skel).unwrap();
    let opts = UnpackOptions::default();
    unpack::unpack_layer(&tar[..], &plain, &opts).unwrap();
    build_tree(&toc, &t.path().join("scratch.tar"), &skel, &opts).unwrap();
    assert!(!t.path().join("scratch.tar").exists(), "the scratch tar is removed");

    // The landmark the writer added is hidden; everything else is the plain unpack's, entry by
    // entry (modes, owners, times, xattrs, links, devices, whiteouts, opaque markers), but for
    // file contents.
    assert!(toc.entries.iter().any(|e| e.name == ".no.prefetch.landmark"));
    let mut want = Tree::capture_with(&plain, &options()).unwrap();
    let mut got = Tree::capture_with(&skel, &options()).unwrap();
    assert!(
        got.entries[Path::new("gone")].kind == strata_test_support::tree::Kind::Char
            && got.entries.contains_key(Path::new("bin/su"))
    );
    assert_eq!(
        got.entries[Path::new("bin/su")].xattrs.get("user.note").map(|v| &v[..]),
        Some(&b"skeleton"[..])
    );
    for tree in [&mut want, &mut got] {
        for e in tree.entries.values_mut() {
            e.hash = None;
        }
    }
    assert_trees_eq(&want, &got, "skeleton vs plain unpack");
    // Files hold no data: sparse at their size, read as zeros.
    let big = fs::metadata(skel.join("etc/big")).unwrap();
    assert_eq!((big.len(), big.blocks()), (10_000, 0));
    assert!(fs::read(skel.join("etc/big")).unwrap().iter().all(|&b| b == 0));
}

/// A TOC from JSON, checked as a fetched one is (data ends far away).
fn parsed(entries: &str) -> Result<Toc, seekable::SeekableError> {
    let json = format!(r#"{{"version":1,"entries":[{entries}]}}"#);
    Toc::parse(json.as_bytes(), Format::Estargz, 1 << 30)
}

fn build(toc: &Toc) -> (tempfile::TempDir, Result<UnpackStats>) {
    let t = tempfile::tempdir().unwrap();
    for d in ["tree", "outside"] {
        fs::create_dir(t.path().join(d)).unwrap();
    }
    let r = build_tree(toc, &t.path().join("scratch.tar"), &t.path().join("tree"), &UnpackOptions::default());
    (t, r)
}

fn unpack_error(r: Result<UnpackStats>) -> UnpackError {
    match r {
        Err(LayerError::Unpack { source, .. }) => source,
        other => panic!("expected an unpack error, got {other:?}"),
    }
}

/// The TOC's times reach the skeleton exactly: nanoseconds (containers/storage writes Go's
/// RFC3339Nano) and times before 1970, which the ustar field cannot hold.
#[test]
fn skeleton_times_keep_nanoseconds_and_dates_before_1970() {
    if !strata_test_support::privileged("skeleton_times_keep_nanoseconds_and_dates_before_1970") {
        return;
    }
    let toc = parsed(
        r#"{"name":"ns","type":"dir","mode":493,"modtime":"2001-02-03T04:05:06.123456789Z"},
           {"name":"ns/old","type":"symlink","linkName":"x","modtime":"1969-07-20T20:17:40Z"},
           {"name":"ns/f","type":"reg","mode":420,"modtime":"1969-12-31T23:59:59.25Z"},
           {"name":"ns/whole","type":"fifo","mode":420,"modtime":"2023-11-14T22:13:20Z"}"#,
    )
    .unwrap();
    let (t, r) = build(&toc);
    r.unwrap();
    let tree = t.path().join("tree");
    let time = |p: &str| {
        let m = fs::symlink_metadata(tree.join(p)).unwrap();
        (m.mtime(), m.mtime_nsec())
    };
    assert_eq!(time("ns"), (981_173_106, 123_456_789));
    assert_eq!(time("ns/old"), (-14_182_940, 0));
    assert_eq!(time("ns/f"), (-1, 250_000_000));
    assert_eq!(time("ns/whole"), (1_700_000_000, 0));
}

#[test]
fn hostile_tocs_are_refused_or_confined_as_hostile_tars() {
    if !strata_test_support::privileged("hostile_tocs_are_refused_or_confined_as_hostile_tars") {
        return;
    }
    // `..` and absolute names never make a TOC.
    for name in ["../escape", "a/../../escape"] {
        let e = parsed(&format!(r#"{{"name":"{name}","type":"dir","mode":493}}"#)).unwrap_err();
        assert!(matches!(e, seekable::SeekableError::TocEntry { .. }), "{name}: {e:?}");
    }

    // A path through a symlink that points out of the layer resolves inside it: to nothing
    // (refused, naming the entry), or to the tree's own root.
    let toc = parsed(
        r#"{"name":"up","type":"symlink","linkName":"../outside","mode":511},
           {"name":"up/planted","type":"reg","size":0,"mode":420}"#,
    )
    .unwrap();
    let (t, r) = build(&toc);
    assert_eq!(unpack_error(r).path(), Some("up/planted"));
    assert_eq!(fs::read_dir(t.path().join("outside")).unwrap().count(), 0, "nothing outside the tree");
    let toc = parsed(
        r#"{"name":"abs","type":"symlink","linkName":"/","mode":511},
           {"name":"abs/planted","type":"reg","size":0,"mode":420}"#,
    )
    .unwrap();
    let (t, r) = build(&toc);
    r.unwrap();
    assert!(t.path().join("tree/planted").is_file(), "`/` is the tree's root");

    // A hard link to an entry the skeleton leaves out (the prefetch landmark) is a hard link to
    // nothing: refused, naming the entry.
    let toc = parsed(
        r#"{"name":".prefetch.landmark","type":"reg","size":0,"mode":420},
           {"name":"linked","type":"hardlink","linkName":".prefetch.landmark","mode":420}"#,
    )
    .unwrap();
    let (_t, r) = build(&toc);
    let e = unpack_error(r);
    assert!(matches!(&e, UnpackError::Hardlink { path, .. } if path == "linked"), "{e:?}");

    // A hard link to a symlink that leads out: linked as the symlink itself, never its target.
    let toc = parsed(
        r#"{"name":"up","type":"symlink","linkName":"../outside/x","mode":511},
           {"name":"same","type":"hardlink","linkName":"up","mode":420}"#,
    )
    .unwrap();
    let (t, r) = build(&toc);
    r.unwrap();
    let (a, b) = (
        fs::symlink_metadata(t.path().join("tree/up")).unwrap(),
        fs::symlink_metadata(t.path().join("tree/same")).unwrap(),
    );
    assert!(b.file_type().is_symlink() && a.ino() == b.ino());
    assert_eq!(fs::read_dir(t.path().join("outside")).unwrap().count(), 0);

    // Malformed whiteouts and whiteout names used as directories, as in a tar.
    for (entries, want) in [
        (r#"{"name":".wh.","type":"reg","size":0,"mode":420}"#, ".wh."),
        (r#"{"name":".wh.x/y","type":"reg","size":0,"mode":420}"#, ".wh.x/y"),
    ] {
        let (_t, r) = build(&parsed(entries).unwrap());
        let e = unpack_error(r);
        assert!(matches!(&e, UnpackError::InvalidPath { path, .. } if path == want), "{e:?}");
    }

    // An entry under a regular file.
    let toc = parsed(
        r#"{"name":"f","type":"reg","size":0,"mode":420},
           {"name":"f/x","type":"reg","size":0,"mode":420}"#,
    )
    .unwrap();
    let (_t, r) = build(&toc);
    assert_eq!(unpack_error(r).path(), Some("f/x"));
}

/// Through the store: the stored TOC is checked against its digest, the skeleton built once
/// under `remote/<diff_id>/tree`, and a TOC blob changed on disk is refused.
#[test]
fn skeletons_are_built_once_from_the_stored_toc() {
    if !strata_test_support::privileged("skeletons_are_built_once_from_the_stored_toc") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let store = &mut Store::open(&t.path().join("root")).unwrap();
    let opts = EstargzOptions { chunk_size: 4000, ..Default::default() };
    let (info, blob) = write_estargz(&layer_tar()[..], Vec::new(), &opts).unwrap();
    let off = parse_estargz_footer(&blob[blob.len() - 51..]).unwrap();
    let r = estargz_toc_range(blob.len() as u64, off).unwrap();
    let json = crate::seekable::toc::estargz_toc_json(&blob[r.start as usize..r.end as usize]).unwrap();
    let toc_digest = store.put_blob(&json).unwrap();
    assert_eq!(toc_digest, info.toc_digest);
    let row = RemoteLayerRow {
        diff_id: Sha256Digest::of(b"diff"),
        blob_digest: Sha256Digest::of(&blob),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        toc_digest,
        blob_size: blob.len() as u64,
        bytes_local: 0,
        source: "localhost:1/x".into(),
        tls_verify: false,
        data_end: off,
        bad: None,
    };
    assert!(store.insert_remote_layer(&row, 10_000, 14).unwrap());
    assert_eq!(stored_toc(store, &row).unwrap().entries, toc_of(&layer_tar()).entries);
    let tree = skeleton(store, &row).unwrap();
    assert_eq!(tree, store.remote_tree(&row.diff_id));
    assert_eq!(fs::metadata(tree.join("etc/big")).unwrap().len(), 10_000);
    let ino = fs::metadata(&tree).unwrap().ino();
    assert_eq!(fs::metadata(skeleton(store, &row).unwrap()).unwrap().ino(), ino, "built once");

    // A TOC blob that is not what was verified at the pull.
    let mut other = json.clone();
    other.push(b' ');
    fs::write(store.blob_path(&row.toc_digest), &other).unwrap();
    assert!(matches!(stored_toc(store, &row), Err(LayerError::DigestMismatch { .. })));
    // Removing the layer takes its remote directory with it.
    store.remove_remote_layer(&row.diff_id).unwrap();
    assert!(store.remove_unreferenced_layers().unwrap().contains(&row.diff_id));
    assert!(!store.remote_dir(&row.diff_id).exists());
}
