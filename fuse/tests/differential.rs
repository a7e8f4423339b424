//! Differential test: seeded random operation sequences on a kernel overlay mount and on a
//! strata-fuse mount over identical layer stacks; merged views, upper dirs and every errno
//! must match. `STRATA_DIFF_SEEDS` (default 200) and `STRATA_DIFF_OPS` (default 40) scale it,
//! `STRATA_DIFF_SEED_BASE` shifts the seeds.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use common::*;
use strata_test_support::tree::{Options, Tree};

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

/// Three lower layers with whiteouts and an opaque dir, plus an upper with initial content.
fn build(root: &Path) -> Stack {
    let s = Stack::new(root, 3);
    let (l1, l2, l3, u) = (&s.lowers[0], &s.lowers[1], &s.lowers[2], &s.upper);
    let w = |p: PathBuf, c: &str| {
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(p, c).unwrap()
    };
    w(l3.join("f0"), "l3f0");
    w(l3.join("d1/f1"), "l3f1");
    w(l3.join("d1/f2"), "l3f2");
    w(l3.join("d1/s/g1"), "g1");
    w(l3.join("d2/h1"), "h1");
    w(l3.join("opq/o1"), "o1");
    w(l3.join("gone/z"), "z");
    w(l3.join("d4/k"), "k");
    w(l3.join("d4/sub/deep/q"), "q");
    mkfifo(&l3.join("fifo0"));
    chmod(&l3.join("d1/f1"), 0o600);
    chmod(&l3.join("d4"), 0o750);
    std::os::unix::fs::lchown(l3.join("d2/h1"), Some(1000), Some(1000)).unwrap();
    set_xattr(&l3.join("f0"), "user.l3", b"x");
    set_xattr(&l3.join("d1"), "user.dir", b"d");
    w(l2.join("d1/f3"), "l2f3");
    w(l2.join("d1/f1"), "l2f1");
    whiteout(&l2.join("gone"));
    fs::create_dir(l2.join("opq")).unwrap();
    set_xattr(&l2.join("opq"), "trusted.overlay.opaque", b"y");
    w(l2.join("opq/o2"), "o2");
    w(l2.join("d3/m1"), "m1");
    std::os::unix::fs::symlink("f0", l2.join("sym")).unwrap();
    w(l1.join("d1/f5"), "l1f5");
    whiteout(&l1.join("d1/f2"));
    w(l1.join("e/e1"), "e1");
    w(l1.join("d2/h2"), "h2");
    w(l1.join("f6"), "f6");
    w(u.join("d1/u1"), "u1");
    whiteout(&u.join("d1/f3"));
    w(u.join("u0"), "u0");
    w(u.join("ud/ux"), "ux");
    set_xattr(&u.join("u0"), "user.u", b"u");
    s
}

#[derive(Debug, Clone)]
enum Op {
    Create(String, Vec<u8>),
    Write(String, u64, Vec<u8>),
    Append(String, Vec<u8>),
    Truncate(String, u64),
    Chmod(String, u32),
    Chown(String, u32, u32),
    Utimes(String, i64),
    SetXattr(String, String, Vec<u8>),
    RemoveXattr(String, String),
    Link(String, String),
    Symlink(String, String),
    Unlink(String),
    Mkdir(String, u32),
    Rmdir(String),
    Rename(String, String),
    /// renameat2 with RENAME_NOREPLACE or RENAME_EXCHANGE.
    Rename2(String, String, u32),
    Mkfifo(String),
    OpenRdwr(String),
    /// Open read-only and keep the descriptor for the rest of the sequence (later copy-ups then
    /// happen under an open lower file, passthrough's awkward case).
    Hold(String),
}

const NAMES: &[&str] =
    &["a", "b", "f0", "f1", "f2", "f3", "f5", "d1", "d2", "d3", "e", "s", "opq", "gone", "ud", "u0", "x"];

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn rc(r: libc::c_int) -> Result<(), i32> {
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
    } else {
        Ok(())
    }
}

fn io(r: std::io::Result<()>) -> Result<(), i32> {
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn open_nofollow(p: &Path, append: bool) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .append(append)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
}

fn apply(root: &Path, op: &Op, kernel: bool, held: &mut Vec<fs::File>) -> Result<(), i32> {
    let p = |s: &str| root.join(s);
    // SAFETY (all unsafe blocks below): libc calls with valid C strings and buffers.
    match op {
        Op::Create(a, data) => io(fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(p(a))
            .and_then(|f| f.write_all_at(data, 0))),
        Op::Write(a, off, data) => io(open_nofollow(&p(a), false).and_then(|f| f.write_all_at(data, *off))),
        Op::Append(a, data) => {
            io(open_nofollow(&p(a), true).and_then(|mut f| std::io::Write::write_all(&mut f, data)))
        }
        Op::Truncate(a, len) => io(open_nofollow(&p(a), false).and_then(|f| f.set_len(*len))),
        Op::Chmod(a, m) => {
            rc(unsafe { libc::fchmodat(libc::AT_FDCWD, cstr(&p(a)).as_ptr(), *m, libc::AT_SYMLINK_NOFOLLOW) })
        }
        Op::Chown(a, u, g) => rc(unsafe { libc::lchown(cstr(&p(a)).as_ptr(), *u, *g) }),
        Op::Utimes(a, t) => {
            let ts = [
                libc::timespec { tv_sec: *t as _, tv_nsec: 0 },
                libc::timespec { tv_sec: *t as _, tv_nsec: 0 },
            ];
            rc(unsafe {
                libc::utimensat(libc::AT_FDCWD, cstr(&p(a)).as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
            })
        }
        Op::SetXattr(a, n, v) => {
            let n = CString::new(n.as_str()).unwrap();
            rc(unsafe { libc::lsetxattr(cstr(&p(a)).as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) })
        }
        Op::RemoveXattr(a, n) => {
            let n = CString::new(n.as_str()).unwrap();
            rc(unsafe { libc::lremovexattr(cstr(&p(a)).as_ptr(), n.as_ptr()) })
        }
        Op::Link(a, b) => rc(unsafe { libc::link(cstr(&p(a)).as_ptr(), cstr(&p(b)).as_ptr()) }),
        Op::Symlink(t, b) => rc(unsafe { libc::symlink(cstr(Path::new(t)).as_ptr(), cstr(&p(b)).as_ptr()) }),
        Op::Unlink(a) => rc(unsafe { libc::unlink(cstr(&p(a)).as_ptr()) }),
        Op::Mkdir(a, m) => rc(unsafe { libc::mkdir(cstr(&p(a)).as_ptr(), *m) }),
        Op::Rmdir(a) => rc(unsafe { libc::rmdir(cstr(&p(a)).as_ptr()) }),
        Op::Mkfifo(a) => rc(unsafe { libc::mkfifo(cstr(&p(a)).as_ptr(), 0o600) }),
        Op::Hold(a) => io(fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(p(a))
            .map(|f| held.push(f))),
        Op::OpenRdwr(a) => io(fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(p(a))
            .map(drop)),
        Op::Rename(a, b) => {
            let r = rc(unsafe { libc::rename(cstr(&p(a)).as_ptr(), cstr(&p(b)).as_ptr()) });
            if kernel && r == Err(libc::EXDEV) {
                move_dir(&p(a), &p(b))
            } else {
                r
            }
        }
        Op::Rename2(a, b, flags) => {
            let (ca, cb) = (cstr(&p(a)), cstr(&p(b)));
            let r = rc(unsafe {
                libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), *flags)
            });
            // strata-fuse moves directories with lower layers itself, with RENAME_NOREPLACE too
            // (the target is known to be absent when the kernel gets to answer EXDEV).
            if kernel && r == Err(libc::EXDEV) && *flags == libc::RENAME_NOREPLACE {
                move_dir(&p(a), &p(b))
            } else {
                r
            }
        }
    }
}

/// What `mv` does when rename answers EXDEV (directories with lower layers under kernel
/// overlay without redirect_dir): recreate the directory, move its children, remove it.
fn move_dir(src: &Path, dst: &Path) -> Result<(), i32> {
    let st = fs::symlink_metadata(src).map_err(|e| e.raw_os_error().unwrap_or(-1))?;
    if let Ok(dm) = fs::symlink_metadata(dst) {
        if !dm.is_dir() {
            return Err(libc::ENOTDIR);
        }
        if fs::read_dir(dst).map_err(|e| e.raw_os_error().unwrap_or(-1))?.next().is_some() {
            return Err(libc::ENOTEMPTY);
        }
        rc(unsafe { libc::rmdir(cstr(dst).as_ptr()) })?;
    }
    rc(unsafe { libc::mkdir(cstr(dst).as_ptr(), 0o700) })?;
    rc(unsafe { libc::lchown(cstr(dst).as_ptr(), st.uid(), st.gid()) })?;
    rc(unsafe { libc::chmod(cstr(dst).as_ptr(), st.mode() & 0o7777) })?;
    for (k, v) in
        strata_test_support::tree::read_xattrs(src, |n| n.starts_with("user.")).map_err(|_| libc::EIO)?
    {
        let n = CString::new(k).unwrap();
        rc(unsafe { libc::lsetxattr(cstr(dst).as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) })?;
    }
    let mut kids: Vec<_> =
        fs::read_dir(src).map_err(|_| libc::EIO)?.map(|e| e.unwrap().file_name()).collect();
    kids.sort();
    for k in kids {
        let (s, d) = (src.join(&k), dst.join(&k));
        let r = rc(unsafe { libc::rename(cstr(&s).as_ptr(), cstr(&d).as_ptr()) });
        match r {
            Err(libc::EXDEV) => move_dir(&s, &d)?,
            r => r?,
        }
    }
    rc(unsafe { libc::rmdir(cstr(src).as_ptr()) })
}

/// Every path in the merged view (relative), with whether it is a directory.
fn walk(root: &Path) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut ents: Vec<_> = fs::read_dir(root.join(&rel)).unwrap().map(|e| e.unwrap()).collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let r = rel.join(e.file_name());
            let is_dir = e.file_type().unwrap().is_dir();
            if is_dir {
                stack.push(r.clone());
            }
            out.push((r.to_string_lossy().into_owned(), is_dir));
        }
    }
    out
}

fn gen(rng: &mut Rng, view: &[(String, bool)]) -> Op {
    let dirs: Vec<&str> =
        std::iter::once("").chain(view.iter().filter(|e| e.1).map(|e| e.0.as_str())).collect();
    let existing = |rng: &mut Rng| -> String {
        if view.is_empty() {
            "x".into()
        } else {
            view[rng.below(view.len())].0.clone()
        }
    };
    let fresh = |rng: &mut Rng| -> String {
        let d = dirs[rng.below(dirs.len())];
        let n = NAMES[rng.below(NAMES.len())];
        if d.is_empty() {
            n.to_string()
        } else {
            format!("{d}/{n}")
        }
    };
    let any = |rng: &mut Rng| if rng.below(3) == 0 { fresh(rng) } else { existing(rng) };
    let data =
        |rng: &mut Rng| -> Vec<u8> { (0..rng.below(64) + 1).map(|_| b'a' + rng.below(26) as u8).collect() };
    match rng.below(18) {
        0 | 1 => Op::Create(fresh(rng), data(rng)),
        2 => Op::Write(any(rng), rng.below(16) as u64, data(rng)),
        3 => Op::Append(any(rng), data(rng)),
        4 => Op::Truncate(any(rng), rng.below(8) as u64),
        5 => Op::Chmod(any(rng), [0o600, 0o644, 0o755, 0o4755, 0o700, 0o1777][rng.below(6)]),
        6 => Op::Chown(any(rng), [0, 1000, 65534][rng.below(3)], [0, 1000, 100][rng.below(3)]),
        7 => Op::Utimes(any(rng), 1_000_000 + rng.below(1000) as i64),
        8 => Op::SetXattr(any(rng), ["user.a", "user.b"][rng.below(2)].into(), data(rng)),
        9 => {
            if rng.below(2) == 0 {
                Op::Link(any(rng), fresh(rng))
            } else {
                Op::RemoveXattr(any(rng), ["user.a", "user.l3", "user.dir", "user.u"][rng.below(4)].into())
            }
        }
        10 => Op::Symlink(["f0", "a", "nowhere", "d1/f1"][rng.below(4)].into(), fresh(rng)),
        11 | 12 => Op::Unlink(any(rng)),
        13 => Op::Mkdir(fresh(rng), [0o755, 0o700, 0o2775][rng.below(3)]),
        14 => Op::Rmdir(any(rng)),
        15 => Op::Rename(any(rng), any(rng)),
        16 => {
            if rng.below(2) == 0 {
                Op::Rename(any(rng), any(rng))
            } else {
                let fl = [libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE][rng.below(2)];
                Op::Rename2(any(rng), any(rng), fl)
            }
        }
        _ => match rng.below(3) {
            0 => Op::Mkfifo(fresh(rng)),
            1 => Op::OpenRdwr(any(rng)),
            _ => Op::Hold(any(rng)),
        },
    }
}

fn upper_xattrs(n: &str) -> bool {
    // The kernel adds private bookkeeping (origin, impure...) that strata-fuse does not need;
    // only the opaque marker is part of the shared format.
    !n.starts_with("security.") && (!n.starts_with("trusted.overlay.") || n == "trusted.overlay.opaque")
}

fn capture(p: &Path, upper: bool) -> Tree {
    let mut o = Options::default();
    if upper {
        o.xattr_filter = upper_xattrs;
    }
    let mut t = Tree::capture_with(p, &o).unwrap();
    // The root's own attributes are the mountpoint's or the layer dir's.
    t.entries.remove(Path::new("."));
    t
}

fn run_seed(base: &Path, seed: u64, n_ops: usize) -> Result<(), String> {
    let kroot = base.join(format!("k{seed}"));
    let froot = base.join(format!("f{seed}"));
    let ks = build(&kroot);
    let fs_ = build(&froot);
    let mut log = Vec::new();
    let result = {
        let mut km = ks.mount_kernel();
        let mut fm = fs_.mount_fuse("");
        let mut rng = Rng::new(seed);
        let mut res = Ok(());
        let (mut kheld, mut fheld) = (Vec::new(), Vec::new());
        for _ in 0..n_ops {
            let view = walk(&ks.mnt);
            let op = gen(&mut rng, &view);
            let kr = apply(&ks.mnt, &op, true, &mut kheld);
            let fr = apply(&fs_.mnt, &op, false, &mut fheld);
            log.push(format!("{op:?} -> kernel {kr:?} strata {fr:?}"));
            if kr != fr {
                res = Err("errno differs".to_string());
                break;
            }
        }
        // Close held files first: opening (to hash) a file whose lower copy is held open in
        // passthrough mode gives it a new inode number (see fuse/README.md), so a capture
        // taken meanwhile could see a hardlink's names with different numbers.
        drop((kheld, fheld));
        if res.is_ok() {
            let (kv, fv) = (capture(&ks.mnt, false), capture(&fs_.mnt, false));
            let d = kv.diff(&fv);
            if !d.is_empty() {
                res = Err(format!("merged views differ (left kernel, right strata):\n{}", d.join("\n")));
            }
        }
        km.unmount();
        fm.unmount();
        if res.is_ok() {
            let (ku, fu) = (capture(&ks.upper, true), capture(&fs_.upper, true));
            let d = ku.diff(&fu);
            if !d.is_empty() {
                res = Err(format!("upper dirs differ (left kernel, right strata):\n{}", d.join("\n")));
            }
        }
        res
    };
    match result {
        Ok(()) => {
            let _ = fs::remove_dir_all(&kroot);
            let _ = fs::remove_dir_all(&froot);
            Ok(())
        }
        Err(e) => Err(format!("seed {seed}: {e}\nops:\n  {}", log.join("\n  "))),
    }
}

#[test]
fn differential_against_kernel_overlay() {
    if !can_run() {
        return;
    }
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let seeds = env("STRATA_DIFF_SEEDS", 200);
    let n_ops = env("STRATA_DIFF_OPS", 40) as usize;
    let base_seed = env("STRATA_DIFF_SEED_BASE", 1);
    let t = scratch();
    let mut failures = Vec::new();
    for seed in base_seed..base_seed + seeds {
        if let Err(e) = run_seed(t.path(), seed, n_ops) {
            eprintln!("{e}\n");
            failures.push(e);
            if failures.len() >= 3 {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{} failing seed(s); first:\n{}", failures.len(), failures[0]);
}
