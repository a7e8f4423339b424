//! Hostile layer tars. Each case unpacks into `<tmp>/root` next to a sentinel tree
//! `<tmp>/sentinel`, then asserts that nothing outside `root` changed (contents, modes, owners,
//! xattrs, mtimes, new entries) and that the outcome is the designed one: a specific error naming
//! the entry, or an entry confined to `root`. Hostile sparse maps are in `hostile_sparse.rs`,
//! hostile image sources in `hostile_import.rs`.

use crate::common::tarw as common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use common::{header, tar, E, T};
use strata::unpack::{unpack_layer, UnpackError, UnpackOptions, UnpackStats, MAX_HEADER_BYTES};
use strata_test_support::tree::{assert_trees_eq, Options, Tree};

fn all_xattrs(_: &str) -> bool {
    true
}

/// A fresh unpack root beside a sentinel tree (shared with [`super::hostile_sparse`]).
pub(crate) struct Env {
    _tmp: tempfile::TempDir,
    pub(crate) top: PathBuf,
    pub(crate) dest: PathBuf,
    sentinel: PathBuf,
    before: Tree,
}

fn opts_outside() -> Options {
    Options { mtime: true, xattr_filter: all_xattrs, skip: vec![PathBuf::from("root")], ..Options::default() }
}

pub(crate) fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().to_path_buf();
    let dest = top.join("root");
    let sentinel = top.join("sentinel");
    fs::create_dir(&dest).unwrap();
    fs::create_dir_all(sentinel.join("sub")).unwrap();
    fs::write(sentinel.join("a"), "sentinel a").unwrap();
    fs::write(sentinel.join("sub/b"), "sentinel b").unwrap();
    fs::set_permissions(sentinel.join("a"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(top.join("passwd"), "root:x:0:0").unwrap();
    // Old mtimes, so any touch shows.
    for p in ["sentinel/a", "sentinel/sub/b", "sentinel/sub", "sentinel", "passwd"] {
        let t = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec { tv_sec: 1_000_000, tv_nsec: 0 },
            last_modification: rustix::fs::Timespec { tv_sec: 1_000_000, tv_nsec: 0 },
        };
        rustix::fs::utimensat(rustix::fs::CWD, top.join(p), &t, rustix::fs::AtFlags::empty()).unwrap();
    }
    let before = Tree::capture_with(&top, &opts_outside()).unwrap();
    Env { _tmp: tmp, top, dest, sentinel, before }
}

impl Env {
    pub(crate) fn run(&self, bytes: &[u8]) -> Result<UnpackStats, UnpackError> {
        self.run_reader(bytes)
    }
    pub(crate) fn run_reader(&self, r: impl Read) -> Result<UnpackStats, UnpackError> {
        let res = unpack_layer(r, &self.dest, &UnpackOptions::default());
        self.check_outside();
        res
    }
    pub(crate) fn check_outside(&self) {
        let after = Tree::capture_with(&self.top, &opts_outside()).unwrap();
        assert_trees_eq(&self.before, &after, "outside the unpack root");
    }
    fn s(&self) -> String {
        self.sentinel.to_str().unwrap().to_string()
    }
    pub(crate) fn d(&self, p: &str) -> PathBuf {
        self.dest.join(p)
    }
}

/// Assert an InvalidPath error naming `path`.
/// Unpacks mutant tar `m` (number `i`) into a directory of its own under `env`: whether it
/// unpacked; a failure must say why.
pub(crate) fn unpack_mutant(env: &Env, i: usize, m: &[u8]) -> bool {
    let dest = env.top.join("root").join(format!("{i}"));
    fs::create_dir(&dest).unwrap();
    match unpack_layer(m, &dest, &UnpackOptions::default()) {
        Ok(_) => true,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            false
        }
    }
}

pub(crate) fn invalid_path(r: Result<UnpackStats, UnpackError>, path: &str) {
    match r {
        Err(e @ UnpackError::InvalidPath { .. }) => {
            assert_eq!(e.path(), Some(path), "{e}");
            let quoted = format!("{path:?}");
            assert!(e.to_string().contains(&quoted) && e.to_string().contains("invalid path"), "{e}");
        }
        other => panic!("expected InvalidPath for {path:?}, got {other:?}"),
    }
}

fn hardlink_err(r: Result<UnpackStats, UnpackError>, path: &str, reason: &str) {
    match r {
        Err(e @ UnpackError::Hardlink { .. }) => {
            assert_eq!(e.path(), Some(path), "{e}");
            assert!(e.to_string().contains(reason), "{e}");
        }
        other => panic!("expected Hardlink error for {path:?}, got {other:?}"),
    }
}

fn io_err(r: Result<UnpackStats, UnpackError>, path: &str, errno: i32) {
    match r {
        Err(e @ UnpackError::Io { .. }) => {
            assert_eq!(e.path(), Some(path), "{e}");
            assert_eq!(e.errno(), Some(errno), "{e}");
            assert!(e.to_string().contains(path), "{e}");
        }
        other => panic!("expected Io error (errno {errno}) for {path:?}, got {other:?}"),
    }
}

pub(crate) fn corrupt(r: Result<UnpackStats, UnpackError>) -> UnpackError {
    match r {
        Err(e @ UnpackError::Corrupt { .. }) => e,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn dotdot_prefix() {
    let env = env();
    invalid_path(env.run(&tar([E::file("../x", "pwned")])), "../x");
    assert!(!env.top.join("x").exists());
}

#[test]
fn dotdot_in_middle() {
    let env = env();
    invalid_path(env.run(&tar([E::dir("a"), E::file("a/../../x", "pwned")])), "a/../../x");
}

#[test]
fn absolute_path_is_confined() {
    let env = env();
    let target = format!("{}/a", env.s());
    env.run(&tar([E::file(&target, "inside")])).unwrap();
    assert_eq!(fs::read(env.d(target.trim_start_matches('/'))).unwrap(), b"inside");
}

#[test]
fn absolute_dotdot() {
    let env = env();
    invalid_path(env.run(&tar([E::file("/../x", "pwned")])), "/../x");
}

#[test]
fn write_through_absolute_symlink() {
    let env = env();
    // l -> <abs sentinel>; resolved in root that directory does not exist: refused.
    let r = env.run(&tar([E::symlink("l", env.s()), E::file("l/a", "pwned")]));
    io_err(r, "l/a", libc::ENOENT);
}

#[test]
fn write_through_absolute_symlink_to_root_lands_inside() {
    let env = env();
    env.run(&tar([E::symlink("d", "/"), E::file("d/etc/passwd", "inside")])).unwrap();
    assert_eq!(fs::read(env.d("etc/passwd")).unwrap(), b"inside");
    assert_eq!(fs::read_link(env.d("d")).unwrap(), PathBuf::from("/"));
}

#[test]
fn write_through_relative_dotdot_symlink() {
    let env = env();
    let r = env.run(&tar([E::symlink("l", "../sentinel"), E::file("l/a", "pwned")]));
    io_err(r, "l/a", libc::ENOENT);
}

#[test]
fn write_through_relative_dotdot_symlink_confined() {
    let env = env();
    // With a `sentinel` dir inside the layer, `../sentinel` from the root resolves to it.
    let bytes = tar([E::dir("sentinel"), E::symlink("l", "../../../sentinel"), E::file("l/a", "inside")]);
    env.run(&bytes).unwrap();
    assert_eq!(fs::read(env.d("sentinel/a")).unwrap(), b"inside");
}

#[test]
fn write_through_chained_symlinks() {
    let env = env();
    let bytes = tar([
        E::dir("sentinel"),
        E::symlink("a", "b"),
        E::symlink("b", "c/../../../sentinel"),
        E::dir("c"),
        E::file("a/x", "inside"),
        E::symlink("p", "q"),
        E::symlink("q", env.s()),
        E::file("p/y", "no"),
    ]);
    let r = env.run(&bytes);
    io_err(r, "p/y", libc::ENOENT);
    assert_eq!(fs::read(env.d("sentinel/x")).unwrap(), b"inside");
}

#[test]
fn symlink_to_dir_then_file_under_it() {
    let env = env();
    let bytes = tar([E::symlink("d", format!("{}/sub", env.s())), E::file("d/b", "pwned")]);
    io_err(env.run(&bytes), "d/b", libc::ENOENT);
}

#[test]
fn hardlink_dotdot_target() {
    let env = env();
    let r = env.run(&tar([E::hardlink("x", "../sentinel/a")]));
    hardlink_err(r, "x", "'..'");
}

#[test]
fn hardlink_absolute_outside_target() {
    let env = env();
    let r = env.run(&tar([E::hardlink("x", format!("{}/a", env.s()))]));
    hardlink_err(r, "x", "does not exist");
}

#[test]
fn hardlink_through_symlink() {
    let env = env();
    let bytes = tar([E::symlink("l", env.s()), E::symlink("r", "../sentinel"), E::hardlink("x", "l/a")]);
    hardlink_err(env.run(&bytes), "x", "does not exist");
    let env = env_fresh();
    let bytes = tar([E::symlink("r", "../sentinel"), E::hardlink("x", "r/a")]);
    hardlink_err(env.run(&bytes), "x", "does not exist");
}

pub(crate) fn env_fresh() -> Env {
    env()
}

#[test]
fn hardlink_to_directory() {
    let env = env();
    hardlink_err(env.run(&tar([E::dir("d"), E::hardlink("x", "d")])), "x", "directory");
    let env = env_fresh();
    hardlink_err(env.run(&tar([E::hardlink("x", "./")])), "x", "directory");
}

#[test]
fn hardlink_to_later_entry() {
    let env = env();
    let r = env.run(&tar([E::hardlink("x", "later"), E::file("later", "data")]));
    hardlink_err(r, "x", "does not exist");
}

#[test]
fn hardlink_to_symlink_pointing_outside() {
    let env = env();
    let bytes = tar([
        E::symlink("s", format!("{}/a", env.s())),
        E::hardlink("h", "s"),
        // Writing to h replaces the link; it never writes through it.
        E::file("h", "replaced"),
    ]);
    env.run(&bytes).unwrap();
    assert_eq!(fs::read(env.d("h")).unwrap(), b"replaced");
    assert!(fs::symlink_metadata(env.d("s")).unwrap().file_type().is_symlink());
}

#[test]
fn whiteout_through_symlinked_dir() {
    let env = env();
    let r = env.run(&tar([E::symlink("l", env.s()), E::file("l/.wh.a", "")]));
    io_err(r, "l/.wh.a", libc::ENOENT);
    let env = env_fresh();
    let top = env.top.to_str().unwrap().to_string();
    let r = env.run(&tar([E::symlink("l", &top), E::file("l/sentinel/.wh.a", "")]));
    io_err(r, "l/sentinel/.wh.a", libc::ENOENT);
    assert!(env.sentinel.join("a").is_file());
}

#[test]
fn whiteout_dotdot() {
    let env = env();
    invalid_path(env.run(&tar([E::file("../.wh.sentinel", "")])), "../.wh.sentinel");
    let env = env_fresh();
    invalid_path(env.run(&tar([E::file("a/../../.wh.x", "")])), "a/../../.wh.x");
}

#[test]
fn opaque_marker_through_symlink() {
    let env = env();
    let r = env.run(&tar([E::symlink("l", env.s()), E::file("l/.wh..wh..opq", "")]));
    io_err(r, "l/.wh..wh..opq", libc::ENOENT);
    let env = env_fresh();
    let bytes = tar([E::dir("sentinel"), E::symlink("l", "../sentinel"), E::file("l/.wh..wh..opq", "")]);
    env.run(&bytes).unwrap();
    let mut buf = [0u8; 8];
    let n = rustix::fs::lgetxattr(env.d("sentinel"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
}

#[test]
fn symlink_replaced_by_regular_file() {
    let env = env();
    let bytes = tar([E::symlink("f", format!("{}/a", env.s())), E::file("f", "new content").mode(0o777)]);
    env.run(&bytes).unwrap();
    let md = fs::symlink_metadata(env.d("f")).unwrap();
    assert!(md.is_file());
    assert_eq!(md.mode() & 0o7777, 0o777);
    assert_eq!(fs::read(env.d("f")).unwrap(), b"new content");
}

#[test]
fn dir_replaced_by_symlink_then_written_into() {
    let env = env();
    let bytes = tar([E::dir("d"), E::file("d/x", "1"), E::symlink("d", env.s()), E::file("d/a", "pwned")]);
    io_err(env.run(&bytes), "d/a", libc::ENOENT);
    assert!(fs::symlink_metadata(env.d("d")).unwrap().file_type().is_symlink());
}

#[test]
fn chmod_chown_via_dir_entry_on_symlink() {
    let env = env();
    let bytes = tar([E::symlink("l", env.s()), E::dir("l/").mode(0o777).owner(4321, 4321).mtime(5)]);
    env.run(&bytes).unwrap();
    let md = fs::symlink_metadata(env.d("l")).unwrap();
    assert!(md.is_dir(), "the symlink was replaced by a directory");
    assert_eq!(md.mode() & 0o7777, 0o777);
}

#[test]
fn chmod_via_file_entry_metadata_never_follows() {
    // A device and a symlink entry with modes/owners over symlinks to the outside.
    let env = env();
    if !common::need_root("chmod_via_file_entry_metadata_never_follows") {
        return;
    }
    let bytes = tar([
        E::symlink("l", format!("{}/a", env.s())),
        E::dev(b'3', "l", 1, 3).mode(0o6777).owner(99, 99),
        E::symlink("m", format!("{}/a", env.s())),
        E::symlink("m", format!("{}/sub", env.s())).owner(77, 77),
        E::new(b'6', "n").mode(0o777),
    ]);
    env.run(&bytes).unwrap();
    let md = fs::symlink_metadata(env.d("l")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o6777, 99));
    assert_eq!(fs::symlink_metadata(env.d("m")).unwrap().uid(), 77);
}

#[test]
fn xattr_on_symlink_to_outside() {
    let env = env();
    let bytes = tar([E::symlink("l", format!("{}/a", env.s()))
        .pax("SCHILY.xattr.user.evil", "1")
        .pax("SCHILY.xattr.trusted.evil", "1")]);
    // user.* cannot be set on symlinks (skipped with a warning); trusted.* lands on the link.
    env.run(&bytes).unwrap();
    let mut buf = [0u8; 8];
    assert!(rustix::fs::lgetxattr(env.sentinel.join("a"), "trusted.evil", &mut buf).is_err());
}

#[test]
fn name_component_300_bytes() {
    let env = env();
    let name = "n".repeat(300);
    let mut t = T::new();
    t.add(E::file("x", "data").pax("path", &name));
    invalid_path(env.run(&t.finish()), &name);
    let env = env_fresh();
    let mut t = T::new();
    t.gnu_long(b'L', format!("d/{name}").as_bytes());
    t.add(E::file("x", "data"));
    match env.run(&t.finish()) {
        Err(e @ UnpackError::InvalidPath { .. }) => assert!(e.to_string().contains("255"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn path_8000_bytes_deep() {
    let env = env();
    let deep = "a/".repeat(4000) + "f";
    let mut t = T::new();
    t.add(E::file("x", "data").pax("path", &deep));
    invalid_path(env.run(&t.finish()), &deep);
    // 2000 levels of real directories, each path just under the limit, are fine and confined.
    let env = env_fresh();
    let deep = "a/".repeat(2000) + "f";
    let mut t = T::new();
    t.add(E::file("x", "deep").pax("path", &deep));
    env.run(&t.finish()).unwrap();
}

/// A reader producing `head` followed by `n` bytes of `fill`, without allocating them.
fn stream(head: Vec<u8>, fill: u8, n: u64) -> impl Read {
    std::io::Cursor::new(head).chain(std::io::repeat(fill).take(n))
}

#[test]
fn gigantic_pax_header() {
    let env = env();
    // A 100 MB PAX header that really is there: refused after MAX_HEADER_BYTES.
    let size = 100 << 20;
    let h = header(b"././@PaxHeader", b'x', size, b"", None);
    let mut head = T::new();
    head.add(E::file("first", "ok"));
    head.raw(h.as_bytes());
    let mut rec_head = format!("{size} path=").into_bytes();
    rec_head.truncate(rec_head.len());
    head.raw(&rec_head);
    match env.run_reader(stream(head.buf, b'a', size)) {
        Err(e @ UnpackError::HeaderTooLarge { .. }) => {
            assert_eq!(e.path(), Some("first"));
            assert!(e.to_string().contains(&MAX_HEADER_BYTES.to_string()), "{e}");
        }
        other => panic!("expected HeaderTooLarge, got {other:?}"),
    }
    // Same with a GNU long name.
    let env = env_fresh();
    let h = header(b"././@LongLink", b'L', size, b"", None);
    match env.run_reader(stream(h.as_bytes().to_vec(), b'n', size)) {
        Err(UnpackError::HeaderTooLarge { .. }) => {}
        other => panic!("expected HeaderTooLarge, got {other:?}"),
    }
}

#[test]
fn pax_length_claim_beyond_stream() {
    let env = env();
    let h = header(b"././@PaxHeader", b'x', 1 << 40, b"", None);
    let mut t = T::new();
    t.raw(h.as_bytes());
    t.raw(b"30 path=short\n");
    let e = corrupt(env.run(&t.buf));
    assert!(e.to_string().contains("start of stream"), "{e}");
    // A record claiming a huge length inside a small header.
    let env = env_fresh();
    let mut t = T::new();
    t.pax_header(&[]);
    let rec = b"99999999999 path=x\n";
    let h = header(b"././@PaxHeader", b'x', rec.len() as u64, b"", None);
    t.raw(h.as_bytes()).raw(rec);
    t.raw(&vec![0u8; 512 - rec.len()]);
    t.add(E::file("f", "x"));
    assert!(env.run(&t.finish()).is_err());
}

#[test]
fn truncated_mid_header() {
    let env = env();
    let full = tar([E::file("one", "1"), E::file("two", "2")]);
    let e = corrupt(env.run(&full[..1024 + 300]));
    assert_eq!(e.path(), Some("one"));
}

#[test]
fn truncated_mid_data() {
    let env = env();
    let full = tar([E::file("one", "1"), E::file("big", vec![7u8; 5000])]);
    let e = corrupt(env.run(&full[..1024 + 512 + 2000]));
    assert_eq!(e.path(), Some("big"));
    let msg = strata::error::report(&e);
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn corrupt_header_checksum() {
    let env = env();
    let mut full = tar([E::file("one", "1"), E::file("two", "2")]);
    full[1024 + 10] ^= 0x55;
    let e = corrupt(env.run(&full));
    let msg = strata::error::report(&e);
    assert!(msg.contains("checksum"), "{msg}");
    assert_eq!(e.path(), Some("one"));
    let env = env_fresh();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    corrupt(env.run(&garbage));
}

#[test]
fn device_entries_named_like_whiteouts() {
    if !common::need_root("device_entries_named_like_whiteouts") {
        return;
    }
    let env = env();
    let bytes = tar([
        E::dir("d"),
        E::dev(b'3', "d/.wh..wh..opq", 1, 3),
        E::dev(b'4', "d/.wh.x", 8, 0),
        E::new(b'6', "d/.wh..wh.fifo"),
    ]);
    env.run(&bytes).unwrap();
    let mut buf = [0u8; 8];
    let n = rustix::fs::lgetxattr(env.d("d"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    let x = fs::symlink_metadata(env.d("d/x")).unwrap();
    assert!(x.file_type().is_char_device() && x.rdev() == 0, "a whiteout, not the block device");
    let names: Vec<_> = fs::read_dir(env.d("d")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("x")]);
    for bad in ["d/.wh.", "d/.wh..", "d/.wh..."] {
        let env = env_fresh();
        invalid_path(env.run(&tar([E::dir("d"), E::dev(b'3', bad, 0, 0)])), bad);
    }
}

#[test]
fn nul_in_names() {
    let env = env();
    let mut t = T::new();
    t.add(E::file("x", "data").pax("path", b"a\0/../../b"));
    invalid_path(env.run(&t.finish()), "a\0/../../b");
    let env = env_fresh();
    let mut t = T::new();
    t.gnu_long(b'L', b"a\0b");
    t.add(E::file("x", "data"));
    invalid_path(env.run(&t.finish()), "a\0b");
    let env = env_fresh();
    let mut t = T::new();
    t.add(E::symlink("s", "x").pax("linkpath", b"/etc\0passwd"));
    invalid_path(env.run(&t.finish()), "s");
}

#[test]
fn overlay_xattr_smuggling_dropped() {
    let env = env();
    let bytes = tar([
        E::dir("d")
            .pax("SCHILY.xattr.trusted.overlay.redirect", "/sentinel")
            .pax("SCHILY.xattr.trusted.overlay.opaque", "y")
            .pax("SCHILY.xattr.user.overlay.opaque", "y"),
        E::file("d/f", "x")
            .pax("SCHILY.xattr.trusted.overlay.metacopy", "")
            .pax("SCHILY.xattr.trusted.overlay.origin", "zz")
            .pax("SCHILY.xattr.user.overlay.redirect", "/x"),
    ]);
    env.run(&bytes).unwrap();
    for p in ["d", "d/f"] {
        let x = strata_test_support::tree::read_xattrs(&env.d(p), all_xattrs).unwrap();
        assert!(x.keys().all(|k| !k.contains("overlay")), "{p}: {x:?}");
    }
}

#[test]
fn root_as_non_directory() {
    let env = env();
    invalid_path(env.run(&tar([E::file(".", "x")])), ".");
    let env = env_fresh();
    invalid_path(env.run(&tar([E::hardlink("/", "x")])), ".");
    let env = env_fresh();
    invalid_path(env.run(&tar([E::symlink("/", "/etc")])), ".");
}

/// 2,000 seeded random mutations of a small valid tar: every run returns (no panic) and nothing
/// outside the root changes.
#[test]
fn random_mutations_never_panic_or_escape() {
    let base = tar([
        E::dir("d").mode(0o755),
        E::file("d/f", "hello world").mode(0o4755),
        E::symlink("d/l", "../../sentinel"),
        E::hardlink("d/h", "d/f"),
        E::file("d/.wh.gone", ""),
        E::file("e/.wh..wh..opq", ""),
        E::file("p", "pax").pax("path", "q/long").pax("SCHILY.xattr.user.x", "v"),
        E::new(b'6', "fifo"),
    ]);
    let env = env();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut ok, mut err) = (0, 0);
    for i in 0..2000 {
        let mut m = base.clone();
        let edits = 1 + next() % 8;
        for _ in 0..edits {
            let pos = (next() % m.len() as u64) as usize;
            match next() % 4 {
                0 => m[pos] = next() as u8,
                1 => m[pos] ^= 1 << (next() % 8),
                2 => m[pos] = b"0123456789/.\0x"[(next() % 14) as usize],
                _ => m.truncate(pos),
            }
            if m.is_empty() {
                break;
            }
        }
        // Headers with a broken checksum are rejected early; fix it half of the time so the
        // mutation reaches the entry logic.
        if i % 2 == 0 {
            for blk in (0..m.len() / 512).map(|b| b * 512) {
                let h = &mut m[blk..blk + 512];
                if h[257..262] == *b"ustar" {
                    h[148..156].fill(b' ');
                    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
                    let s = format!("{sum:06o}\0 ");
                    h[148..156].copy_from_slice(s.as_bytes());
                }
            }
        }
        if unpack_mutant(&env, i, &m) {
            ok += 1;
        } else {
            err += 1;
        }
        if i % 50 == 0 {
            env.check_outside();
        }
    }
    env.check_outside();
    eprintln!("mutations: {ok} ok, {err} errors");
    assert!(ok > 0 && err > 0, "mutations should exercise both outcomes: {ok} ok, {err} err");
}
