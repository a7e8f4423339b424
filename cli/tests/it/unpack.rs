//! Feature tests of the layer unpacker: tars built in memory, unpacked into a tempdir, checked
//! entry by entry.

use crate::common::tarw as common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::{need_root, tar, E, MTIME, T};
use strata::unpack::{unpack_layer, UnpackError, UnpackOptions, XattrNamespace};
use strata_test_support::tree::{Kind, Options, Tree};

fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<strata::unpack::UnpackStats, UnpackError>) {
    unpack_with(bytes, &UnpackOptions::default())
}

fn unpack_with(
    bytes: &[u8],
    opts: &UnpackOptions,
) -> (tempfile::TempDir, Result<strata::unpack::UnpackStats, UnpackError>) {
    let dir = tempfile::tempdir().unwrap();
    let r = unpack_layer(bytes, dir.path(), opts);
    (dir, r)
}

fn all_xattrs(_: &str) -> bool {
    true
}

fn capture(p: &Path) -> Tree {
    Tree::capture_with(p, &Options { mtime: true, xattr_filter: all_xattrs, ..Options::default() }).unwrap()
}

fn get<'a>(t: &'a Tree, p: &str) -> &'a strata_test_support::tree::Entry {
    t.entries.get(Path::new(p)).unwrap_or_else(|| panic!("{p} missing in\n{t}"))
}

#[test]
fn files_modes_owners_links_devices() {
    if !need_root("files_modes_owners_links_devices") {
        return;
    }
    let bytes = tar([
        E::dir("bin").mode(0o755),
        E::file("bin/su", "setuid").mode(0o4755).owner(0, 0),
        E::file("bin/wall", "setgid").mode(0o2755).owner(0, 5),
        E::dir("tmp").mode(0o1777),
        E::file("home/u/f", "hello").mode(0o640).owner(1000, 1001),
        E::symlink("abs", "/etc/passwd").owner(7, 8),
        E::symlink("rel", "../bin/su"),
        E::hardlink("bin/su2", "bin/su"),
        E::hardlink("./bin/su3", "/bin/su"),
        E::dev(b'3', "dev/null", 1, 3).mode(0o666),
        E::dev(b'4', "dev/loop0", 7, 0).mode(0o660).owner(0, 6),
        E::new(b'6', "dev/fifo").mode(0o600),
        E::file("empty", ""),
    ]);
    let (dir, r) = unpack(&bytes);
    let stats = r.unwrap();
    assert_eq!(stats.entries, 13);
    assert_eq!(stats.bytes, 6 + 6 + 5);
    let t = capture(dir.path());
    let su = get(&t, "bin/su");
    assert_eq!((su.kind, su.mode, su.uid, su.gid), (Kind::File, 0o4755, 0, 0));
    let wall = get(&t, "bin/wall");
    assert_eq!((wall.mode, wall.gid), (0o2755, 5));
    assert_eq!(get(&t, "tmp").mode, 0o1777);
    let f = get(&t, "home/u/f");
    assert_eq!((f.mode, f.uid, f.gid, f.size), (0o640, 1000, 1001, 5));
    assert_eq!(fs::read(dir.path().join("home/u/f")).unwrap(), b"hello");
    // Missing parents are created 0755.
    assert_eq!(get(&t, "home").mode, 0o755);
    let abs = get(&t, "abs");
    assert_eq!(abs.kind, Kind::Symlink);
    assert_eq!(abs.target.as_deref(), Some(Path::new("/etc/passwd")));
    assert_eq!((abs.uid, abs.gid), (7, 8));
    assert_eq!(get(&t, "rel").target.as_deref(), Some(Path::new("../bin/su")));
    // Hardlink group.
    for p in ["bin/su2", "bin/su3"] {
        assert_eq!(get(&t, p).link_group.as_deref(), Some(Path::new("bin/su")), "{p}");
    }
    assert_eq!(
        fs::metadata(dir.path().join("bin/su")).unwrap().ino(),
        fs::metadata(dir.path().join("bin/su3")).unwrap().ino()
    );
    let null = get(&t, "dev/null");
    assert_eq!((null.kind, null.rdev, null.mode), (Kind::Char, Some((1, 3)), 0o666));
    let lp = get(&t, "dev/loop0");
    assert_eq!((lp.kind, lp.rdev, lp.mode, lp.gid), (Kind::Block, Some((7, 0)), 0o660, 6));
    let fifo = get(&t, "dev/fifo");
    assert_eq!((fifo.kind, fifo.mode), (Kind::Fifo, 0o600));
    assert_eq!(get(&t, "empty").size, 0);
    // File mtimes.
    assert_eq!(f.mtime, Some(MTIME as i64));
}

#[test]
fn directory_mtimes_survive_children() {
    let bytes = tar([
        E::dir("a").mtime(1_000_000),
        E::dir("a/b").mtime(2_000_000),
        E::file("a/b/f", "x").mtime(3_000_000),
        E::file("a/g", "y").mtime(4_000_000),
        E::dir("a/b/c").mtime(5_000_000),
        E::file("a/b/c/h", "z"),
        // A later entry for an existing directory updates its metadata (and mtime).
        E::dir("a/b/c").mtime(6_000_000).mode(0o700),
    ]);
    let (dir, r) = unpack(&bytes);
    r.unwrap();
    let t = capture(dir.path());
    assert_eq!(get(&t, "a").mtime, Some(1_000_000));
    assert_eq!(get(&t, "a/b").mtime, Some(2_000_000));
    assert_eq!(get(&t, "a/b/f").mtime, Some(3_000_000));
    assert_eq!(get(&t, "a/g").mtime, Some(4_000_000));
    assert_eq!(get(&t, "a/b/c").mtime, Some(6_000_000));
    assert_eq!(get(&t, "a/b/c").mode, 0o700);
    assert!(dir.path().join("a/b/c/h").exists(), "dir over dir keeps children");
}

#[test]
fn pax_fractional_mtime_and_symlink_mtime() {
    let bytes =
        tar([E::file("f", "x").pax("mtime", "1234567890.5"), E::symlink("l", "f").mtime(987_654_321)]);
    let (dir, r) = unpack(&bytes);
    r.unwrap();
    let md = fs::symlink_metadata(dir.path().join("f")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_234_567_890, 500_000_000));
    let lmd = fs::symlink_metadata(dir.path().join("l")).unwrap();
    assert_eq!(lmd.mtime(), 987_654_321, "symlink mtime set without following");
    assert_eq!(md.mtime(), 1_234_567_890, "target untouched by symlink mtime");
}

#[test]
fn root_entry_sets_dest_metadata() {
    let bytes = tar([E::dir("./").mode(0o750).mtime(42), E::file("f", "x")]);
    let (dir, r) = unpack(&bytes);
    r.unwrap();
    let md = fs::metadata(dir.path()).unwrap();
    assert_eq!((md.mode() & 0o7777, md.mtime()), (0o750, 42));
}

#[test]
fn xattrs_applied_and_overlay_ones_dropped() {
    if !need_root("xattrs_applied_and_overlay_ones_dropped") {
        return;
    }
    let bytes = tar([
        E::dir("d").pax("SCHILY.xattr.user.dir", "dv").pax("SCHILY.xattr.trusted.overlay.opaque", "y"),
        E::file("d/f", "data")
            .pax("SCHILY.xattr.user.comment", b"bin\x00ary")
            .pax("SCHILY.xattr.trusted.other", "kept")
            .pax("SCHILY.xattr.trusted.overlay.redirect", "/etc")
            .pax("SCHILY.xattr.user.overlay.metacopy", ""),
    ]);
    let (dir, r) = unpack(&bytes);
    r.unwrap();
    let t = capture(dir.path());
    let want_d: BTreeMap<String, Vec<u8>> = [("user.dir".to_string(), b"dv".to_vec())].into();
    assert_eq!(get(&t, "d").xattrs, want_d);
    let want_f: BTreeMap<String, Vec<u8>> = [
        ("user.comment".to_string(), b"bin\x00ary".to_vec()),
        ("trusted.other".to_string(), b"kept".to_vec()),
    ]
    .into();
    assert_eq!(get(&t, "d/f").xattrs, want_f);
}

#[test]
fn long_names_pax_and_gnu() {
    let long_dir = "d".repeat(150);
    let long_file = format!("{long_dir}/{}", "f".repeat(200));
    let gnu_file = format!("{long_dir}/{}", "g".repeat(180));
    let long_target = format!("/{}", "t".repeat(300));
    let mut t = T::new();
    t.add(E::dir(&long_dir).pax("path", &long_dir));
    t.add(E::file("placeholder", "pax").pax("path", &long_file));
    t.gnu_long(b'L', gnu_file.as_bytes());
    t.add(E::file("placeholder2", "gnu"));
    t.gnu_long(b'L', b"sym");
    t.gnu_long(b'K', long_target.as_bytes());
    t.add(E::symlink("x", "y"));
    t.add(E::hardlink("hl", "placeholder").pax("linkpath", &long_file));
    let (dir, r) = unpack(&t.finish());
    r.unwrap();
    assert_eq!(fs::read(dir.path().join(&long_file)).unwrap(), b"pax");
    assert_eq!(fs::read(dir.path().join(&gnu_file)).unwrap(), b"gnu");
    assert_eq!(fs::read_link(dir.path().join("sym")).unwrap(), PathBuf::from(&long_target));
    assert_eq!(fs::read(dir.path().join("hl")).unwrap(), b"pax");
    assert!(!dir.path().join("placeholder").exists());
}

fn is_whiteout(p: &Path) -> bool {
    let md = fs::symlink_metadata(p).unwrap();
    md.file_type().is_char_device() && md.rdev() == 0
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(p, name, &mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

#[test]
fn whiteouts_and_opaque_dirs() {
    if !need_root("whiteouts_and_opaque_dirs") {
        return;
    }
    let bytes = tar([
        E::dir("a"),
        E::file("a/.wh.gone", ""),
        E::dir("b"),
        E::file("b/.wh..wh..opq", ""),
        E::file("b/kept", "k"),
        // Opaque marker for a directory not yet listed: created.
        E::file("c/d/.wh..wh..opq", ""),
        // Whiteout at the top level.
        E::file(".wh.top", ""),
        // A same-layer file is not deleted by a whiteout.
        E::file("same", "stays"),
        E::file(".wh.same", ""),
        // A later regular entry replaces an earlier whiteout.
        E::file(".wh.back", ""),
        E::file("back", "again"),
        // A directory replacing a same-layer whiteout hides the lower directory.
        E::file(".wh.redir", ""),
        E::dir("redir"),
        E::file("redir/x", "x"),
        // A whiteout of a same-layer directory leaves it, marked opaque.
        E::dir("samedir"),
        E::file(".wh.samedir", ""),
        // AUFS metadata is skipped.
        E::file(".wh..wh.plnk/123.456", "aufs"),
        E::file(".wh..wh.aufs", ""),
    ]);
    let (dir, r) = unpack(&bytes);
    r.unwrap();
    let d = dir.path();
    assert!(is_whiteout(&d.join("a/gone")));
    assert!(!d.join("a/.wh.gone").exists());
    assert_eq!(xattr(&d.join("b"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert!(!d.join("b/.wh..wh..opq").exists());
    assert_eq!(fs::read(d.join("b/kept")).unwrap(), b"k");
    assert_eq!(xattr(&d.join("c/d"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(xattr(&d.join("a"), "trusted.overlay.opaque"), None);
    assert!(is_whiteout(&d.join("top")));
    assert_eq!(fs::read(d.join("same")).unwrap(), b"stays");
    assert_eq!(fs::read(d.join("back")).unwrap(), b"again");
    assert!(fs::metadata(d.join("redir")).unwrap().is_dir());
    assert_eq!(xattr(&d.join("redir"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(xattr(&d.join("samedir"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    let names: Vec<_> = fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().all(|n| !n.to_string_lossy().starts_with(".wh.")), "{names:?}");
}

#[test]
fn opaque_in_user_namespace() {
    let bytes = tar([E::dir("b"), E::file("b/.wh..wh..opq", "")]);
    let opts = UnpackOptions { opaque_xattr: XattrNamespace::User, ..Default::default() };
    let (dir, r) = unpack_with(&bytes, &opts);
    r.unwrap();
    assert_eq!(xattr(&dir.path().join("b"), "user.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(xattr(&dir.path().join("b"), "trusted.overlay.opaque"), None);
}

#[test]
fn malformed_whiteout_names_rejected() {
    for name in [".wh.", "a/.wh..", "a/.wh...", ".wh.x/y"] {
        let (_d, r) = unpack(&tar([E::dir("a"), E::file(name, "")]));
        match r {
            Err(UnpackError::InvalidPath { path, reason }) => {
                assert!(path.contains(".wh."), "{path}: {reason}");
            }
            other => panic!("{name}: expected InvalidPath, got {other:?}"),
        }
    }
}

#[test]
fn replacement_semantics() {
    let bytes = tar([
        E::file("f", "one"),
        E::file("f", "two"),
        E::dir("d"),
        E::file("d/child", "c"),
        E::file("d", "file now"),
        E::file("g", "was file"),
        E::dir("g"),
        E::file("g/in", "in"),
        E::symlink("s", "f"),
        E::file("s", "not a link"),
        E::file("t", "x"),
        E::symlink("t", "/target"),
        E::file("h", "h"),
        E::hardlink("h2", "h"),
        E::hardlink("h2", "h"),
    ]);
    let (dir, r) = unpack(&bytes);
    r.unwrap();
    let d = dir.path();
    assert_eq!(fs::read(d.join("f")).unwrap(), b"two");
    assert_eq!(fs::read(d.join("d")).unwrap(), b"file now");
    assert_eq!(fs::read(d.join("g/in")).unwrap(), b"in");
    assert!(fs::symlink_metadata(d.join("s")).unwrap().is_file());
    assert_eq!(fs::read(d.join("f")).unwrap(), b"two", "write did not go through the link");
    assert_eq!(fs::read_link(d.join("t")).unwrap(), PathBuf::from("/target"));
    assert_eq!(fs::metadata(d.join("h2")).unwrap().ino(), fs::metadata(d.join("h")).unwrap().ino());
}

#[test]
fn hardlink_to_symlink_links_the_symlink() {
    let bytes = tar([E::file("f", "x"), E::symlink("s", "f"), E::hardlink("h", "s")]);
    let (dir, r) = unpack(&bytes);
    r.unwrap();
    let d = dir.path();
    let h = fs::symlink_metadata(d.join("h")).unwrap();
    assert!(h.file_type().is_symlink());
    assert_eq!(h.ino(), fs::symlink_metadata(d.join("s")).unwrap().ino());
}

#[test]
fn gnu_sparse_file() {
    // Old GNU sparse: data blocks at 0 and at 1 MiB; real size 1 MiB + 1024.
    let mut h = tar::Header::new_gnu();
    let real: u64 = (1 << 20) + 1024;
    {
        let g = h.as_gnu_mut().unwrap();
        g.name[..6].copy_from_slice(b"sparse");
        g.sparse[0].offset = octal(0);
        g.sparse[0].numbytes = octal(512);
        g.sparse[1].offset = octal(1 << 20);
        g.sparse[1].numbytes = octal(1024);
        g.realsize = octal(real);
    }
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(1536);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_cksum();
    let mut t = T::new();
    t.raw(h.as_bytes());
    t.raw(&[b'A'; 512]);
    t.raw(&[b'B'; 1024]);
    t.add(E::file("after", "ok"));
    let (dir, r) = unpack(&t.finish());
    r.unwrap();
    let data = fs::read(dir.path().join("sparse")).unwrap();
    assert_eq!(data.len() as u64, real);
    assert!(data[..512].iter().all(|b| *b == b'A'));
    assert!(data[512..1 << 20].iter().all(|b| *b == 0));
    assert!(data[1 << 20..].iter().all(|b| *b == b'B'));
    let md = fs::metadata(dir.path().join("sparse")).unwrap();
    assert!(md.blocks() * 512 < 512 * 1024, "holes not punched: {} blocks", md.blocks());
    assert_eq!(fs::read(dir.path().join("after")).unwrap(), b"ok");
}

fn octal<const N: usize>(v: u64) -> [u8; N] {
    let s = format!("{:0width$o}", v, width = N - 1);
    let mut out = [0u8; N];
    out[..N - 1].copy_from_slice(s.as_bytes());
    out
}

#[test]
fn unknown_types_and_global_headers() {
    // PAX global header: skipped.
    let mut t = T::new();
    let rec = common::pax_record("comment", b"global");
    let h = common::header(b"pax_global_header", b'g', rec.len() as u64, b"", None);
    t.raw(h.as_bytes());
    let mut data = rec.clone();
    data.resize(512, 0);
    t.raw(&data);
    t.add(E::file("f", "x"));
    let (dir, r) = unpack(&t.finish());
    r.unwrap();
    assert!(dir.path().join("f").exists());
    assert!(!dir.path().join("pax_global_header").exists());
    // A volume label ('V'): unsupported, named.
    let (_d, r) = unpack(&tar([E::new(b'V', "label")]));
    match r {
        Err(e @ UnpackError::Unsupported { .. }) => {
            assert!(e.to_string().contains("label"), "{e}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

/// Differential check against GNU tar on a real tree (when `tar` and a source tree exist).
#[test]
fn same_tree_as_gnu_tar() {
    if !need_root("same_tree_as_gnu_tar") {
        return;
    }
    let src = ["/usr/share/zoneinfo", "/usr/share/doc", "/etc"].into_iter().find(|p| Path::new(p).is_dir());
    let Some(src) = src else {
        eprintln!("SKIPPED: no source tree");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a.tar");
    let st = std::process::Command::new("tar")
        .args(["--xattrs", "--numeric-owner", "-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(src)
        .arg(".")
        .status();
    let Ok(st) = st else {
        eprintln!("SKIPPED: no tar binary");
        return;
    };
    assert!(st.success() || st.code() == Some(1), "tar -c failed");
    let ours = work.path().join("ours");
    let theirs = work.path().join("theirs");
    fs::create_dir(&ours).unwrap();
    fs::create_dir(&theirs).unwrap();
    let st = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&archive)
        .arg("-C")
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(st.success());
    unpack_layer(fs::File::open(&archive).unwrap(), &ours, &UnpackOptions::default()).unwrap();
    let opts = Options { mtime: true, ..Options::default() };
    let a = Tree::capture_with(&ours, &opts).unwrap();
    let b = Tree::capture_with(&theirs, &opts).unwrap();
    strata_test_support::tree::assert_trees_eq(&a, &b, src);
}

/// Rootless unpack (`skip_devices`): device nodes are left out and counted (one warning per
/// layer names the count and the first), FIFOs and 0:0 whiteouts are still made.
#[test]
fn skipped_device_nodes_are_counted_and_the_rest_made() {
    if !need_root("skipped_device_nodes_are_counted_and_the_rest_made") {
        return;
    }
    let bytes = tar([
        E::dev(b'3', "dev/null", 1, 3).mode(0o666),
        E::dev(b'3', "dev/zero", 1, 5).mode(0o666),
        E::dev(b'4', "dev/loop0", 7, 0).mode(0o660),
        E::new(b'6', "dev/fifo").mode(0o600),
        E::file(".wh.gone", ""),
        E::file("f", "data"),
    ]);
    let opts = UnpackOptions { skip_devices: true, ..UnpackOptions::default() };
    let (dir, r) = unpack_with(&bytes, &opts);
    let stats = r.unwrap();
    assert_eq!(stats.devices_skipped, 3);
    assert_eq!(stats.entries, 6);
    let t = capture(dir.path());
    for p in ["dev/null", "dev/zero", "dev/loop0"] {
        assert!(!t.entries.contains_key(Path::new(p)), "{p} was made:\n{t}");
    }
    assert_eq!(get(&t, "dev/fifo").kind, Kind::Fifo, "{t}");
    let wh = get(&t, "gone");
    assert_eq!((wh.kind, wh.rdev), (Kind::Char, Some((0, 0))), "{t}");
    assert_eq!(get(&t, "f").kind, Kind::File, "{t}");
    // Without the option the devices are made and nothing is counted.
    let (_d, r) = unpack(&bytes);
    assert_eq!(r.unwrap().devices_skipped, 0);
}
