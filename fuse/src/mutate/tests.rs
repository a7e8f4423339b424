//! The path-level changes without FUSE: plain calls over temp dirs holding lower, upper and work
//! layers, each checked entry by entry in the upper layer (type, mode, rdev, xattrs, data) and
//! in the merged view.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Invalidate, Mutator, Owner, SetAttr, StagedCopy};
use crate::overlay::Layers;
use crate::sys;

/// True when the test may run: whiteouts (mknod) and `trusted.*` xattrs need root. Without root
/// it skips, loudly, unless CI is set (CI runs as root: a skip there would hide a broken test).
fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{test}: needs root, and CI is set");
    eprintln!("SKIPPED (not root): {test}");
    false
}

/// Counts the invalidations a change reports.
#[derive(Default)]
struct Count(AtomicU64);

impl Invalidate for Count {
    fn changed(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

struct Stack {
    _dir: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
    layers: Layers,
    count: Count,
}

impl Stack {
    /// An empty lower layer filled by `fill`, an empty upper layer and a workdir.
    fn new(fill: impl FnOnce(&Path)) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lower, upper, work) =
            (dir.path().join("lower"), dir.path().join("upper"), dir.path().join("work"));
        for d in [&lower, &upper, &work] {
            fs::create_dir(d).expect("layer dir");
        }
        fill(&lower);
        let layers = Layers::new(vec![lower.clone()], Some(upper.clone()), Some(work)).expect("layers");
        Stack { _dir: dir, lower, upper, layers, count: Count::default() }
    }

    fn ops(&self) -> Mutator<'_> {
        Mutator::new(&self.layers, &self.count)
    }

    fn changes(&self) -> u64 {
        self.count.0.load(Ordering::Relaxed)
    }

    /// The merged listing of directory `rel`, sorted.
    fn merged(&self, rel: &str) -> Vec<String> {
        let r = self.layers.resolve_rel(Path::new(rel)).expect("resolve");
        let mut v: Vec<String> = self
            .layers
            .list(&r, Path::new(rel))
            .expect("list")
            .into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn errno_of_resolve(&self, rel: &str) -> Option<i32> {
        self.layers.resolve_rel(Path::new(rel)).err().map(|e| sys::errno(&e))
    }
}

/// One entry of a layer: type, permission bits, rdev (devices), xattrs, data (regular files).
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    rdev: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    data: Option<Vec<u8>>,
}

fn entry(kind: &'static str, mode: u32) -> Entry {
    Entry { kind, mode, rdev: 0, xattrs: BTreeMap::new(), data: None }
}

fn file(mode: u32, data: &str) -> Entry {
    Entry { data: Some(data.as_bytes().to_vec()), ..entry("file", mode) }
}

fn whiteout() -> Entry {
    entry("chr", 0)
}

fn with_xattr(mut e: Entry, k: &str, v: &[u8]) -> Entry {
    e.xattrs.insert(k.to_string(), v.to_vec());
    e
}

/// Every entry under `root` by relative path (the workdir's scratch space is not looked at).
fn tree(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        let mut names: Vec<_> =
            fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry").path()).collect();
        names.sort();
        for p in names {
            let st = sys::lstat(&p).expect("lstat");
            let kind = match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => "dir",
                libc::S_IFREG => "file",
                libc::S_IFLNK => "symlink",
                libc::S_IFCHR => "chr",
                _ => "other",
            };
            let mut xattrs = BTreeMap::new();
            if kind != "symlink" {
                for n in sys::list_xattrs(&p).expect("listxattr") {
                    let v = sys::get_xattr(&p, &n).expect("getxattr");
                    xattrs.insert(n.to_string_lossy().into_owned(), v);
                }
            }
            let data = (kind == "file").then(|| fs::read(&p).expect("read"));
            let rel = p.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
            let e = Entry { kind, mode: st.st_mode & 0o7777, rdev: st.st_rdev, xattrs, data };
            out.insert(rel, e);
            if kind == "dir" {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn expect(entries: Vec<(&str, Entry)>) -> BTreeMap<String, Entry> {
    entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn write(p: &Path, data: &str, mode: u32) {
    fs::write(p, data).expect("write");
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn mkdir(p: &Path, mode: u32) {
    fs::create_dir(p).expect("mkdir");
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

const ROOT_OWNER: Owner = Owner { uid: 0, gid: 0 };

#[test]
fn unlink_of_a_lower_file_leaves_a_whiteout_and_of_an_upper_one_nothing() {
    if !privileged("unlink_of_a_lower_file_leaves_a_whiteout_and_of_an_upper_one_nothing") {
        return;
    }
    let s = Stack::new(|l| {
        write(&l.join("a"), "a\n", 0o644);
        write(&l.join("b"), "b\n", 0o600);
    });
    s.ops().remove(Path::new(""), OsStr::new("a"), false).expect("unlink a");
    assert_eq!(tree(&s.upper), expect(vec![("a", whiteout())]));
    assert_eq!(s.merged(""), ["b"]);
    assert_eq!(s.errno_of_resolve("a"), Some(libc::ENOENT));
    assert!(s.changes() > 0, "the cache is told of the change");
    // The lower layer is untouched.
    assert_eq!(tree(&s.lower), expect(vec![("a", file(0o644, "a\n")), ("b", file(0o600, "b\n"))]));

    // A file made in the upper layer goes without a trace; unlink of a directory is EISDIR,
    // of a missing name ENOENT.
    s.ops()
        .create(ROOT_OWNER, Path::new(""), OsStr::new("n"), libc::S_IFREG | 0o640, &mut |p| fs::write(p, "n"))
        .expect("create n");
    assert_eq!(tree(&s.upper), expect(vec![("a", whiteout()), ("n", file(0o640, "n"))]));
    s.ops().remove(Path::new(""), OsStr::new("n"), false).expect("unlink n");
    assert_eq!(tree(&s.upper), expect(vec![("a", whiteout())]));
    let e = s.ops().remove(Path::new(""), OsStr::new("a"), false).expect_err("unlink of a whiteout");
    assert_eq!(sys::errno(&e), libc::ENOENT);
    fs::create_dir(s.lower.join("d")).expect("mkdir d");
    let e = s.ops().remove(Path::new(""), OsStr::new("d"), false).expect_err("unlink of a dir");
    assert_eq!(sys::errno(&e), libc::EISDIR);
    assert_eq!(tree(&s.upper), expect(vec![("a", whiteout())]));
}

#[test]
fn rmdir_of_a_merged_dir_leaves_a_whiteout_and_its_recreation_is_opaque() {
    if !privileged("rmdir_of_a_merged_dir_leaves_a_whiteout_and_its_recreation_is_opaque") {
        return;
    }
    let s = Stack::new(|l| {
        mkdir(&l.join("d"), 0o755);
        write(&l.join("d/x"), "x", 0o644);
    });
    // d is merged: the upper has d/u too.
    s.ops()
        .create(ROOT_OWNER, Path::new("d"), OsStr::new("u"), libc::S_IFREG | 0o600, &mut |p| {
            fs::write(p, "u")
        })
        .expect("create d/u");
    assert_eq!(s.merged("d"), ["u", "x"]);
    let e = s.ops().remove(Path::new(""), OsStr::new("d"), true).expect_err("rmdir of a non-empty dir");
    assert_eq!(sys::errno(&e), libc::ENOTEMPTY);
    s.ops().remove(Path::new("d"), OsStr::new("x"), false).expect("unlink d/x");
    s.ops().remove(Path::new("d"), OsStr::new("u"), false).expect("unlink d/u");
    assert_eq!(tree(&s.upper), expect(vec![("d", entry("dir", 0o755)), ("d/x", whiteout())]));
    s.ops().remove(Path::new(""), OsStr::new("d"), true).expect("rmdir d");
    assert_eq!(tree(&s.upper), expect(vec![("d", whiteout())]));
    assert!(s.merged("").is_empty());

    // mkdir over the whiteout: a new opaque directory, so the lower d/x stays hidden.
    s.ops()
        .create(ROOT_OWNER, Path::new(""), OsStr::new("d"), libc::S_IFDIR | 0o750, &mut |p| {
            sys::mkdir(p, 0o700)
        })
        .expect("mkdir d");
    assert_eq!(
        tree(&s.upper),
        expect(vec![("d", with_xattr(entry("dir", 0o750), "trusted.overlay.opaque", b"y"))])
    );
    assert!(s.merged("d").is_empty(), "lower d/x is hidden by the opaque dir");
    assert_eq!(s.errno_of_resolve("d/x"), Some(libc::ENOENT));
    // And it is empty, so rmdir works, leaving the whiteout again.
    s.ops().remove(Path::new(""), OsStr::new("d"), true).expect("rmdir d again");
    assert_eq!(tree(&s.upper), expect(vec![("d", whiteout())]));
}

#[test]
fn rename_of_a_lower_file_copies_it_up_and_whiteouts_the_source() {
    if !privileged("rename_of_a_lower_file_copies_it_up_and_whiteouts_the_source") {
        return;
    }
    let s = Stack::new(|l| {
        write(&l.join("f"), "data\n", 0o640);
        sys::set_xattr(&l.join("f"), OsStr::new("user.k"), b"v", 0).expect("setxattr");
        // A private xattr of the lower file is not copied up.
        sys::set_xattr(&l.join("f"), OsStr::new("trusted.overlay.origin"), b"o", 0).expect("setxattr");
        mkdir(&l.join("sub"), 0o755);
    });
    s.ops().rename(Path::new(""), OsStr::new("f"), Path::new("sub"), OsStr::new("g"), false).expect("rename");
    assert_eq!(
        tree(&s.upper),
        expect(vec![
            ("f", whiteout()),
            ("sub", entry("dir", 0o755)),
            ("sub/g", with_xattr(file(0o640, "data\n"), "user.k", b"v")),
        ])
    );
    assert_eq!(s.merged(""), ["sub"]);
    assert_eq!(s.merged("sub"), ["g"]);
    // RENAME_NOREPLACE onto an existing name changes nothing.
    write(&s.lower.join("h"), "h", 0o600);
    let e = s
        .ops()
        .rename(Path::new("sub"), OsStr::new("g"), Path::new(""), OsStr::new("h"), true)
        .expect_err("noreplace");
    assert_eq!(sys::errno(&e), libc::EEXIST);
    assert_eq!(tree(&s.upper).len(), 3);
}

#[test]
fn rename_of_a_lower_dir_recreates_it_and_moves_its_entries() {
    if !privileged("rename_of_a_lower_dir_recreates_it_and_moves_its_entries") {
        return;
    }
    let s = Stack::new(|l| {
        mkdir(&l.join("d"), 0o751);
        sys::set_xattr(&l.join("d"), OsStr::new("user.d"), b"1", 0).expect("setxattr");
        write(&l.join("d/x"), "x", 0o604);
    });
    s.ops()
        .rename(Path::new(""), OsStr::new("d"), Path::new(""), OsStr::new("e"), false)
        .expect("rename d e");
    assert_eq!(
        tree(&s.upper),
        expect(vec![
            ("d", whiteout()),
            ("e", with_xattr(entry("dir", 0o751), "user.d", b"1")),
            ("e/x", file(0o604, "x")),
        ])
    );
    assert_eq!(s.merged(""), ["e"]);
    assert_eq!(s.merged("e"), ["x"]);
    // A directory with lower layers cannot take part in RENAME_EXCHANGE (EXDEV, as the kernel
    // without redirect_dir).
    mkdir(&s.lower.join("k"), 0o755);
    write(&s.lower.join("k/y"), "y", 0o644);
    let e = s
        .ops()
        .exchange(Path::new(""), OsStr::new("e"), Path::new(""), OsStr::new("k"))
        .expect_err("exchange");
    assert_eq!(sys::errno(&e), libc::EXDEV);
}

#[test]
fn setattr_copies_up_and_changes_only_the_upper_copy() {
    if !privileged("setattr_copies_up_and_changes_only_the_upper_copy") {
        return;
    }
    let s = Stack::new(|l| write(&l.join("f"), "0123456789", 0o644));
    let p = Path::new("f");
    let r = s.layers.resolve_rel(p).expect("resolve");
    s.ops().copy_up_path(p, &r, true).expect("copy up");
    let a = SetAttr {
        mode: Some(0o600),
        uid: Some(123),
        size: Some(4),
        mtime: Some(sys::timespec(1_000_000, 5)),
        ..SetAttr::default()
    };
    s.ops().set_attrs(p, &a, None).expect("setattr");
    assert_eq!(tree(&s.upper), expect(vec![("f", file(0o600, "0123"))]));
    let md = fs::symlink_metadata(s.upper.join("f")).expect("stat");
    assert_eq!((md.uid(), md.gid(), md.mtime(), md.mtime_nsec()), (123, 0, 1_000_000, 5));
    assert_eq!(tree(&s.lower), expect(vec![("f", file(0o644, "0123456789"))]));
}

#[test]
fn setattr_kills_suid_and_sgid_of_regular_files_only() {
    if !privileged("setattr_kills_suid_and_sgid_of_regular_files_only") {
        return;
    }
    let s = Stack::new(|l| {
        write(&l.join("x"), "x", 0o644);
        write(&l.join("lock"), "l", 0o644);
        mkdir(&l.join("d"), 0o755);
    });
    for (name, mode, want) in [("x", 0o6755, 0o755), ("lock", 0o6644, 0o2644), ("d", 0o2755, 0o2755)] {
        let p = Path::new(name);
        let r = s.layers.resolve_rel(p).expect("resolve");
        s.ops().copy_up_path(p, &r, true).expect("copy up");
        fs::set_permissions(s.upper.join(name), fs::Permissions::from_mode(mode)).expect("chmod");
        let a = SetAttr { size: (name != "d").then_some(0), kill_suidgid: true, ..SetAttr::default() };
        s.ops().set_attrs(p, &a, None).expect("setattr");
        let md = fs::symlink_metadata(s.upper.join(name)).expect("stat");
        assert_eq!(md.mode() & 0o7777, want, "{name}");
    }
}

#[test]
fn xattr_changes_copy_up_except_when_refused() {
    if !privileged("xattr_changes_copy_up_except_when_refused") {
        return;
    }
    let s = Stack::new(|l| {
        write(&l.join("f"), "f", 0o644);
        sys::set_xattr(&l.join("f"), OsStr::new("user.old"), b"1", 0).expect("setxattr");
    });
    let p = Path::new("f");
    let r = s.layers.resolve_rel(p).expect("resolve");
    // Refused without a copy-up: a private name, and removal of an attribute that is not there.
    let e = s.ops().set_xattr(p, &r, OsStr::new("trusted.overlay.opaque"), b"y", 0).expect_err("private");
    assert_eq!(sys::errno(&e), libc::EOPNOTSUPP);
    let e = s.ops().remove_xattr(p, &r, OsStr::new("user.none")).expect_err("absent");
    assert_eq!(sys::errno(&e), libc::ENODATA);
    assert!(tree(&s.upper).is_empty(), "nothing copied up");

    s.ops().set_xattr(p, &r, OsStr::new("user.new"), b"2", 0).expect("setxattr");
    let r = s.layers.resolve_rel(p).expect("resolve");
    s.ops().remove_xattr(p, &r, OsStr::new("user.old")).expect("removexattr");
    assert_eq!(tree(&s.upper), expect(vec![("f", with_xattr(file(0o644, "f"), "user.new", b"2"))]));
}

#[test]
fn link_of_a_lower_file_copies_it_up_once_for_both_names() {
    if !privileged("link_of_a_lower_file_copies_it_up_once_for_both_names") {
        return;
    }
    let s = Stack::new(|l| {
        write(&l.join("f"), "f", 0o644);
        mkdir(&l.join("d"), 0o755);
    });
    let p = Path::new("f");
    let r = s.layers.resolve_rel(p).expect("resolve");
    let staged = s.layers.stage_data(p, &r).expect("stage");
    let usrc =
        s.ops().link(p, &r, &mut StagedCopy(Some(staged)), Path::new("d"), OsStr::new("l")).expect("link");
    assert_eq!(usrc, s.upper.join("f"));
    assert_eq!(
        tree(&s.upper),
        expect(vec![("d", entry("dir", 0o755)), ("d/l", file(0o644, "f")), ("f", file(0o644, "f"))])
    );
    let (a, b) = (sys::lstat(&s.upper.join("f")).expect("f"), sys::lstat(&s.upper.join("d/l")).expect("l"));
    assert_eq!((a.st_ino, a.st_nlink), (b.st_ino, 2));
    // Onto an existing name: EEXIST.
    let r = s.layers.resolve_rel(p).expect("resolve");
    let e = s.ops().link(p, &r, &mut StagedCopy(None), Path::new(""), OsStr::new("d")).expect_err("exists");
    assert_eq!(sys::errno(&e), libc::EEXIST);
}

#[test]
fn create_over_a_whiteout_replaces_it() {
    if !privileged("create_over_a_whiteout_replaces_it") {
        return;
    }
    let s = Stack::new(|l| write(&l.join("f"), "lower", 0o644));
    s.ops().remove(Path::new(""), OsStr::new("f"), false).expect("unlink");
    assert_eq!(tree(&s.upper), expect(vec![("f", whiteout())]));
    let e = s
        .ops()
        .create(ROOT_OWNER, Path::new(""), OsStr::new("x"), libc::S_IFREG | 0o644, &mut |_| {
            Err(sys::err(libc::EIO))
        })
        .expect_err("a failing create leaves nothing");
    assert_eq!(sys::errno(&e), libc::EIO);
    s.ops()
        .create(ROOT_OWNER, Path::new(""), OsStr::new("f"), libc::S_IFLNK | 0o777, &mut |p| {
            sys::symlink(Path::new("target"), p)
        })
        .expect("symlink over the whiteout");
    let t = tree(&s.upper);
    assert_eq!(t.keys().collect::<Vec<_>>(), ["f"]);
    assert_eq!(t["f"].kind, "symlink");
    assert_eq!(fs::read_link(s.upper.join("f")).expect("readlink"), Path::new("target"));
    let e = s
        .ops()
        .create(ROOT_OWNER, Path::new(""), OsStr::new("f"), libc::S_IFREG | 0o644, &mut |p| fs::write(p, ""))
        .expect_err("exists");
    assert_eq!(sys::errno(&e), libc::EEXIST);
}
