//! Functional tests of each operation through a real mount of the built binary.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;
use strata_test_support::tree::{assert_trees_eq, Tree};

/// l2 (bottom): a, d/{x, sub/}, opq/{h}, gone/{g}, oci/{o1}
/// l1 (top):    y, d/{z}, whiteout gone, opq (opaque) {v}, oci/{.wh.o1, o2}, ocopq/{.wh..wh..opq}, sym -> y
fn build(root: &Path) -> Stack {
    let s = Stack::new(root, 2);
    let (l1, l2) = (&s.lowers[0], &s.lowers[1]);
    fs::write(l2.join("a"), "hello\n").unwrap();
    fs::create_dir_all(l2.join("d/sub")).unwrap();
    fs::write(l2.join("d/x"), "x\n").unwrap();
    fs::create_dir(l2.join("opq")).unwrap();
    fs::write(l2.join("opq/h"), "hidden").unwrap();
    fs::create_dir(l2.join("gone")).unwrap();
    fs::write(l2.join("gone/g"), "g").unwrap();
    fs::create_dir(l2.join("oci")).unwrap();
    fs::write(l2.join("oci/o1"), "o1").unwrap();
    fs::create_dir(l2.join("ocopq")).unwrap();
    fs::write(l2.join("ocopq/hidden"), "h").unwrap();
    fs::write(l1.join("y"), "y\n").unwrap();
    fs::set_permissions(l1.join("y"), fs::Permissions::from_mode(0o640)).unwrap();
    set_xattr(&l1.join("y"), "user.k", b"v");
    fs::create_dir(l1.join("d")).unwrap();
    fs::write(l1.join("d/z"), "z\n").unwrap();
    whiteout(&l1.join("gone"));
    fs::create_dir(l1.join("opq")).unwrap();
    set_xattr(&l1.join("opq"), "trusted.overlay.opaque", b"y");
    fs::write(l1.join("opq/v"), "vis").unwrap();
    fs::create_dir(l1.join("oci")).unwrap();
    fs::write(l1.join("oci/.wh.o1"), "").unwrap();
    fs::write(l1.join("oci/o2"), "o2").unwrap();
    fs::create_dir(l1.join("ocopq")).unwrap();
    fs::write(l1.join("ocopq/.wh..wh..opq"), "").unwrap();
    std::os::unix::fs::symlink("y", l1.join("sym")).unwrap();
    s
}

fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// The stack of [`build`] in a scratch directory, mounted by strata-fuse. Fields drop in order:
/// the mount first, then the directories.
struct Mounted {
    g: MountGuard,
    s: Stack,
    _t: tempfile::TempDir,
}

fn mounted(extra: &str) -> Mounted {
    let t = scratch();
    let s = build(t.path());
    let g = s.mount_fuse(extra);
    Mounted { g, s, _t: t }
}

#[test]
fn merged_view_lookup_readdir_getattr() {
    if !can_run() {
        return;
    }
    let fx = mounted("");
    let (s, m) = (&fx.s, &fx.s.mnt);
    assert_eq!(names(m), ["a", "d", "oci", "ocopq", "opq", "sym", "y"]);
    assert_eq!(names(&m.join("d")), ["sub", "x", "z"]);
    assert_eq!(names(&m.join("opq")), ["v"]);
    assert_eq!(names(&m.join("oci")), ["o2"]);
    assert!(names(&m.join("ocopq")).is_empty());
    assert!(!m.join("gone").exists());
    assert!(!m.join("oci/o1").exists());
    assert!(!m.join("oci/.wh.o1").exists());
    assert_eq!(fs::read_to_string(m.join("a")).unwrap(), "hello\n");
    assert_eq!(fs::read_link(m.join("sym")).unwrap(), Path::new("y"));
    assert_eq!(fs::read_to_string(m.join("sym")).unwrap(), "y\n");
    let md = fs::metadata(m.join("y")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!(get_xattr(&m.join("y"), "user.k").as_deref(), Some(&b"v"[..]));
    // The overlay's private xattrs are hidden.
    assert_eq!(get_xattr(&m.join("opq"), "trusted.overlay.opaque"), None);
    // statfs works.
    let c = std::ffi::CString::new(m.to_str().unwrap()).unwrap();
    let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut sv) }, 0);
    assert!(sv.f_blocks > 0);
    // Layers are untouched by reads.
    assert!(names(&s.upper).is_empty());
}

#[test]
fn copy_up_and_metadata_changes() {
    if !can_run() {
        return;
    }
    let t = scratch();
    let s = build(t.path());
    let before = Tree::capture(&s.lowers[0]).unwrap();
    let mut g = s.mount_fuse("");
    let m = &s.mnt;
    let ino = fs::metadata(m.join("y")).unwrap().ino();
    // Append copies up data, mode, owner, xattrs.
    OpenOptions::new().append(true).open(m.join("y")).unwrap().write_all(b"more\n").unwrap();
    assert_eq!(fs::read_to_string(m.join("y")).unwrap(), "y\nmore\n");
    assert_eq!(fs::metadata(m.join("y")).unwrap().ino(), ino, "st_ino stable across copy-up");
    let up = s.upper.join("y");
    assert_eq!(fs::read_to_string(&up).unwrap(), "y\nmore\n");
    assert_eq!(fs::metadata(&up).unwrap().mode() & 0o7777, 0o640);
    assert_eq!(get_xattr(&up, "user.k").as_deref(), Some(&b"v"[..]));
    // chmod/chown/utimes/truncate of lower files.
    fs::set_permissions(m.join("a"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::lchown(m.join("d/x"), Some(1234), Some(5678)).unwrap();
    let f = File::options().write(true).open(m.join("d/z")).unwrap();
    f.set_len(1).unwrap();
    drop(f);
    let times = [libc::timespec { tv_sec: 1000, tv_nsec: 0 }, libc::timespec { tv_sec: 2000, tv_nsec: 0 }];
    let c = std::ffi::CString::new(m.join("sym").to_str().unwrap()).unwrap();
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) },
        0
    );
    assert_eq!(fs::metadata(s.upper.join("a")).unwrap().mode() & 0o777, 0o600);
    let md = fs::metadata(s.upper.join("d/x")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    assert_eq!(fs::read(m.join("d/z")).unwrap(), b"z");
    assert_eq!(fs::symlink_metadata(s.upper.join("sym")).unwrap().mtime(), 2000);
    assert_eq!(fs::symlink_metadata(m.join("sym")).unwrap().mtime(), 2000);
    // xattrs set/list/remove.
    set_xattr(&m.join("a"), "user.n", b"1");
    assert_eq!(get_xattr(&s.upper.join("a"), "user.n").as_deref(), Some(&b"1"[..]));
    let out = Command::new("getfattr").args(["-d", "-m", "-"]).arg(m.join("opq")).output();
    if let Ok(out) = out {
        assert!(!String::from_utf8_lossy(&out.stdout).contains("overlay"));
    }
    let cn = std::ffi::CString::new(m.join("a").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::lremovexattr(cn.as_ptr(), c"user.n".as_ptr()) }, 0);
    assert_eq!(get_xattr(&m.join("a"), "user.n"), None);
    // Setting the overlay's own xattrs is refused.
    let r = unsafe {
        libc::lsetxattr(cn.as_ptr(), c"trusted.overlay.opaque".as_ptr(), b"y".as_ptr().cast(), 1, 0)
    };
    assert_eq!(r, -1);
    g.unmount();
    assert_trees_eq(&before, &Tree::capture(&s.lowers[0]).unwrap(), "lower layer unchanged");
}

#[test]
fn create_remove_link_and_whiteouts() {
    if !can_run() {
        return;
    }
    let fx = mounted("");
    let (s, m) = (&fx.s, &fx.s.mnt);
    fs::write(m.join("new"), "n").unwrap();
    fs::create_dir(m.join("d/nd")).unwrap();
    let c = std::ffi::CString::new(m.join("fifo").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(fs::symlink_metadata(s.upper.join("fifo")).unwrap().file_type().is_fifo());
    std::os::unix::fs::symlink("new", m.join("ln")).unwrap();
    assert_eq!(fs::read_to_string(m.join("ln")).unwrap(), "n");
    // Hardlink of a lower file: copy-up, same inode for both names.
    fs::hard_link(m.join("a"), m.join("a2")).unwrap();
    let (m1, m2) = (fs::metadata(m.join("a")).unwrap(), fs::metadata(m.join("a2")).unwrap());
    assert_eq!(m1.ino(), m2.ino());
    assert_eq!(m2.nlink(), 2);
    assert_eq!(
        fs::metadata(s.upper.join("a")).unwrap().ino(),
        fs::metadata(s.upper.join("a2")).unwrap().ino()
    );
    // Unlink a lower file: whiteout in upper.
    fs::remove_file(m.join("d/x")).unwrap();
    assert!(!m.join("d/x").exists());
    let md = fs::symlink_metadata(s.upper.join("d/x")).unwrap();
    assert!(md.file_type().is_char_device() && md.rdev() == 0);
    // Unlink an upper-only file: no whiteout.
    fs::remove_file(m.join("new")).unwrap();
    assert!(!s.upper.join("new").exists());
    // rmdir of a non-empty merged dir fails, of an empty lower dir leaves a whiteout.
    assert_eq!(errno_of(fs::remove_dir(m.join("d"))), libc::ENOTEMPTY);
    fs::remove_dir(m.join("d/sub")).unwrap();
    assert!(fs::symlink_metadata(s.upper.join("d/sub")).unwrap().file_type().is_char_device());
    // A new dir over a whiteout of a lower dir is opaque.
    fs::create_dir(m.join("d/sub")).unwrap();
    assert_eq!(get_xattr(&s.upper.join("d/sub"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    // Same over an OCI whiteout in a lower layer.
    fs::create_dir(m.join("oci/o1")).unwrap();
    assert_eq!(get_xattr(&s.upper.join("oci/o1"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert!(names(&m.join("oci/o1")).is_empty());
    // Errors.
    assert_eq!(errno_of(fs::create_dir(m.join("d"))), libc::EEXIST);
    assert_eq!(errno_of(fs::remove_file(m.join("nothing"))), libc::ENOENT);
    assert_eq!(errno_of(fs::remove_dir(m.join("y"))), libc::ENOTDIR);
    assert_eq!(errno_of(fs::remove_file(m.join("d"))), libc::EISDIR);
}

#[test]
fn renames_and_kernel_interop() {
    if !can_run() {
        return;
    }
    let mut fx = mounted("");
    let (s, m) = (&fx.s, &fx.s.mnt);
    let before = Tree::capture(&m.join("d")).unwrap();
    // File from lower: copy-up, whiteout at old name.
    fs::rename(m.join("a"), m.join("a.moved")).unwrap();
    assert!(fs::symlink_metadata(s.upper.join("a")).unwrap().file_type().is_char_device());
    assert_eq!(fs::read_to_string(m.join("a.moved")).unwrap(), "hello\n");
    // Merged directory (kernel overlay without redirect_dir answers EXDEV): must stay intact.
    fs::rename(m.join("d"), m.join("d2")).unwrap();
    assert!(!m.join("d").exists());
    assert_trees_eq(&before, &Tree::capture(&m.join("d2")).unwrap(), "moved merged dir");
    // Lower-only directory into a subdirectory, and back over an (empty) lower dir name.
    fs::rename(m.join("d2/sub"), m.join("sub")).unwrap();
    assert!(m.join("sub").is_dir());
    fs::create_dir(m.join("e")).unwrap();
    fs::write(m.join("e/f"), "f").unwrap();
    fs::rename(m.join("e"), m.join("d2/e")).unwrap();
    assert_eq!(fs::read_to_string(m.join("d2/e/f")).unwrap(), "f");
    // Rename over a non-empty dir fails.
    assert_eq!(errno_of(fs::rename(m.join("sub"), m.join("d2"))), libc::ENOTEMPTY);
    let view = Tree::capture(m).unwrap();
    fx.g.unmount();
    // The same upper mounted by the kernel shows the same view.
    fs::remove_dir_all(&s.work).unwrap();
    fs::create_dir(&s.work).unwrap();
    // Kernel overlay does not know OCI whiteouts: compare without those dirs.
    let _k = s.mount_kernel();
    let mut kview = Tree::capture(m).unwrap();
    let mut view = view;
    for v in [&mut kview, &mut view] {
        v.retain(|p, _| !p.starts_with("oci") && !p.starts_with("ocopq") && p != Path::new("."));
    }
    assert_trees_eq(&view, &kview, "strata-fuse vs kernel view of the same upper");
}

#[test]
fn mmap_locks_fsync_and_readonly() {
    if !can_run() {
        return;
    }
    let t = scratch();
    let s = build(t.path());
    {
        let _g = s.mount_fuse("");
        let m = &s.mnt;
        let f = OpenOptions::new().read(true).write(true).open(m.join("y")).unwrap();
        // SAFETY: mapping a 2-byte file shared, then unmapping.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                2,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            *(p as *mut u8) = b'Q';
            assert_eq!(libc::msync(p, 2, libc::MS_SYNC), 0);
            libc::munmap(p, 2);
        }
        f.sync_all().unwrap();
        assert_eq!(fs::read(s.upper.join("y")).unwrap(), b"Q\n");
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
        let f2 = File::open(m.join("y")).unwrap();
        assert_eq!(unsafe { libc::flock(f2.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, -1);
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &fl) }, 0);
        // Read and seek through the mount.
        let mut r = File::open(m.join("a")).unwrap();
        r.seek(SeekFrom::Start(1)).unwrap();
        let mut buf = String::new();
        r.read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "ello\n");
    }
    // Without upperdir the mount is read-only.
    let st =
        Command::new(BIN).arg("-o").arg(format!("lowerdir={}", s.lowerdir())).arg(&s.mnt).status().unwrap();
    assert!(st.success());
    let _g = MountGuard { mnt: s.mnt.clone(), active: true };
    assert_eq!(fs::read_to_string(s.mnt.join("a")).unwrap(), "hello\n");
    assert_eq!(errno_of(fs::write(s.mnt.join("new"), "x")), libc::EROFS);
}

#[test]
fn readdir_is_stable_under_changes() {
    if !can_run() {
        return;
    }
    let t = scratch();
    let s = Stack::new(t.path(), 1);
    // Enough entries for many getdents calls (a 32 KiB buffer holds about 1,300).
    for i in 0..4000 {
        fs::write(s.lowers[0].join(format!("f{i:04}")), "").unwrap();
    }
    let _g = s.mount_fuse("");
    let m = s.mnt.clone();
    let c = std::ffi::CString::new(m.to_str().unwrap()).unwrap();
    // SAFETY: opendir/readdir/closedir on a valid path.
    let mut seen = Vec::new();
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null());
        for i in 0.. {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr()).to_string_lossy().into_owned();
            seen.push(name);
            if i == 50 {
                for j in 0..100 {
                    fs::remove_file(m.join(format!("f{j:04}"))).unwrap();
                    fs::write(m.join(format!("n{j:04}")), "").unwrap();
                }
                // Another reader lists the whole directory in the middle of this one.
                assert_eq!(fs::read_dir(&m).unwrap().count(), 4000);
            }
        }
        libc::closedir(d);
    }
    let uniq: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(uniq.len(), seen.len(), "duplicates in readdir");
    // Entries removed after opendir may or may not show up; the others must, exactly once.
    let seen: std::collections::HashSet<String> = seen.into_iter().collect();
    for i in 100..4000 {
        assert!(seen.contains(&format!("f{i:04}")), "f{i:04} skipped");
    }
}

#[test]
fn cli_forms_and_clean_exit() {
    if !can_run() {
        return;
    }
    let t = scratch();
    let s = build(t.path());
    // Foreground: unmount ends the process with status 0. Unknown options are ignored.
    let mut child = Command::new(BIN)
        .args(["-f", "-o"])
        .arg(format!("{},bogus_option=1,allow_other", s.opts()))
        .arg(&s.mnt)
        .spawn()
        .unwrap();
    assert!(wait_until(|| is_mounted(&s.mnt), 10), "foreground mount did not appear");
    let mut g = MountGuard { mnt: s.mnt.clone(), active: true };
    assert_eq!(fs::read_to_string(s.mnt.join("a")).unwrap(), "hello\n");
    g.unmount();
    let st = child.wait().unwrap();
    assert!(st.success(), "daemon exit status {st}");
    // mount.fuse form, invoked through a symlink named mount.fuse.strata-fuse.
    let link = t.path().join("mount.fuse.strata-fuse");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let st = Command::new(&link).arg("strata").arg(&s.mnt).arg("-o").arg(s.opts()).status().unwrap();
    assert!(st.success());
    let _g = MountGuard { mnt: s.mnt.clone(), active: true };
    assert_eq!(fs::read_to_string(s.mnt.join("y")).unwrap(), "y\n");
    assert!(is_mounted(&s.mnt));
    // The mount table names the filesystem type and the source as given.
    let canon = fs::canonicalize(&s.mnt).unwrap();
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mi.lines().find(|l| l.split(' ').nth(4) == canon.to_str()).unwrap();
    let after: Vec<&str> = line.split(" - ").nth(1).unwrap().split(' ').collect();
    assert_eq!(&after[..2], ["fuse.strata-fuse", "strata"], "{line}");
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> i32 {
    let a = std::ffi::CString::new(from.to_str().unwrap()).unwrap();
    let b = std::ffi::CString::new(to.to_str().unwrap()).unwrap();
    // SAFETY: valid C strings.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags) };
    if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

#[test]
fn rename_exchange_and_noreplace() {
    if !can_run() {
        return;
    }
    let mut fx = mounted("");
    let (s, m) = (&fx.s, &fx.s.mnt);
    // Upper and lower files swap (the lower ones are copied up first); nodes follow the names.
    fs::write(m.join("u"), "u").unwrap();
    let ino_u = fs::metadata(m.join("u")).unwrap().ino();
    assert_eq!(renameat2(&m.join("u"), &m.join("a"), libc::RENAME_EXCHANGE), 0);
    assert_eq!(fs::read_to_string(m.join("a")).unwrap(), "u");
    assert_eq!(fs::read_to_string(m.join("u")).unwrap(), "hello\n");
    assert_eq!(fs::metadata(m.join("a")).unwrap().ino(), ino_u);
    assert_eq!(fs::read_to_string(s.upper.join("u")).unwrap(), "hello\n");
    // Across directories, a pure upper directory with a file; it lands in a merged dir: opaque.
    fs::create_dir(m.join("nd")).unwrap();
    fs::write(m.join("nd/f"), "f").unwrap();
    assert_eq!(renameat2(&m.join("nd"), &m.join("d/x"), libc::RENAME_EXCHANGE), 0);
    assert_eq!(fs::read_to_string(m.join("d/x/f")).unwrap(), "f");
    assert_eq!(fs::read_to_string(m.join("nd")).unwrap(), "x\n");
    assert_eq!(get_xattr(&s.upper.join("d/x"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    // Errors like kernel overlayfs: missing target, a directory with lower layers, into itself.
    assert_eq!(renameat2(&m.join("a"), &m.join("missing"), libc::RENAME_EXCHANGE), libc::ENOENT);
    assert_eq!(renameat2(&m.join("d"), &m.join("y"), libc::RENAME_EXCHANGE), libc::EXDEV);
    assert_eq!(renameat2(&m.join("d/x"), &m.join("d/x/f"), libc::RENAME_EXCHANGE), libc::EINVAL);
    assert_eq!(
        renameat2(&m.join("a"), &m.join("y"), libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE),
        libc::EINVAL
    );
    // NOREPLACE: EEXIST on an existing target, a plain rename otherwise.
    assert_eq!(renameat2(&m.join("a"), &m.join("y"), libc::RENAME_NOREPLACE), libc::EEXIST);
    assert_eq!(renameat2(&m.join("a"), &m.join("a2"), libc::RENAME_NOREPLACE), 0);
    assert_eq!(fs::read_to_string(m.join("a2")).unwrap(), "u");
    assert!(!m.join("a").exists());
    // RENAME_WHITEOUT is refused with EINVAL, as kernel overlayfs does (checked below).
    assert_eq!(renameat2(&m.join("a2"), &m.join("a3"), libc::RENAME_WHITEOUT), libc::EINVAL);
    assert!(m.join("a2").exists());
    fx.g.unmount();
    let t2 = scratch();
    let k = build(t2.path());
    let _kg = k.mount_kernel();
    fs::write(k.mnt.join("u"), "u").unwrap();
    for f in ["a", "u"] {
        assert_eq!(renameat2(&k.mnt.join(f), &k.mnt.join("w"), libc::RENAME_WHITEOUT), libc::EINVAL);
    }
}

#[test]
fn paths_of_path_max_and_open_mode_3() {
    if !can_run() {
        return;
    }
    let fx = mounted("");
    let (s, m) = (&fx.s, &fx.s.mnt);
    // A merged path just under PATH_MAX: the upper path ("upper" vs "mnt") is longer than that.
    let mut dir = m.clone();
    while dir.as_os_str().len() + 201 < 3900 {
        dir.push("d".repeat(200));
        fs::create_dir(&dir).unwrap();
    }
    let name = "f".repeat(4094 - dir.as_os_str().len() - 1);
    let f = dir.join(&name);
    assert_eq!(f.as_os_str().len(), 4094);
    assert!(s.upper.join(f.strip_prefix(m).unwrap()).as_os_str().len() >= 4096);
    fs::write(&f, "long").unwrap();
    assert_eq!(fs::read_to_string(&f).unwrap(), "long");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
    std::os::unix::fs::chown(&f, Some(1), Some(1)).unwrap();
    set_xattr(&f, "user.k", b"v");
    assert_eq!(get_xattr(&f, "user.k").as_deref(), Some(&b"v"[..]));
    let g = dir.join(&name[1..]);
    fs::rename(&f, &g).unwrap();
    fs::hard_link(&g, &f).unwrap();
    assert_eq!(fs::metadata(&g).unwrap().nlink(), 2);
    fs::remove_file(&g).unwrap();
    std::os::unix::fs::symlink("target", &g).unwrap();
    assert_eq!(fs::read_link(&g).unwrap(), Path::new("target"));
    assert_eq!(names(&dir).len(), 2);
    fs::remove_file(&g).unwrap();
    fs::remove_file(&f).unwrap();
    fs::create_dir(&f).unwrap();
    fs::remove_dir(&f).unwrap();
    // Access mode 3 (O_WRONLY|O_RDWR) opens, as on the kernel: no EIO.
    let c = std::ffi::CString::new(m.join("a").to_str().unwrap()).unwrap();
    // SAFETY: valid C string; the descriptor is closed right away.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_RDWR) };
    assert!(fd >= 0, "open mode 3: {}", std::io::Error::last_os_error());
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
}

/// A lower file open read-only (in passthrough mode its backing is the lower copy) is copied up
/// by another open, for data and for metadata only: later opens must work on the copied-up file
/// (the kernel allows one passthrough backing per inode, so strata-fuse gives the name a new
/// node) and the earlier open must go on reading. The same without passthrough.
#[test]
fn copy_up_under_an_open_lower_file() {
    if !can_run() {
        return;
    }
    for extra in ["", "passthrough=off", "volatile"] {
        let fx = mounted(extra);
        let (s, m) = (&fx.s, &fx.s.mnt);
        let mut ro = File::open(m.join("a")).unwrap();
        {
            let mut w = OpenOptions::new().append(true).open(m.join("a")).unwrap();
            w.write_all(b"more\n").unwrap();
        }
        assert_eq!(fs::read_to_string(m.join("a")).unwrap(), "hello\nmore\n", "{extra}");
        let mut first = [0u8; 6];
        ro.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"hello\n");
        assert_eq!(fs::read_to_string(s.upper.join("a")).unwrap(), "hello\nmore\n");

        let ro2 = File::open(m.join("d/x")).unwrap();
        fs::set_permissions(m.join("d/x"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(fs::read_to_string(m.join("d/x")).unwrap(), "x\n", "{extra}");
        OpenOptions::new().write(true).truncate(true).open(m.join("d/x")).unwrap().write_all(b"new").unwrap();
        assert_eq!(fs::read_to_string(m.join("d/x")).unwrap(), "new");
        assert_eq!(fs::metadata(m.join("d/x")).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(fs::metadata(s.upper.join("d/x")).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(fs::read_to_string(s.upper.join("d/x")).unwrap(), "new");
        // The inode number of a path stays put across repeated opens after the copy-up.
        let ino = fs::metadata(m.join("d/x")).unwrap().ino();
        drop(File::open(m.join("d/x")).unwrap());
        assert_eq!(fs::metadata(m.join("d/x")).unwrap().ino(), ino);
        drop(ro2);
        drop(ro);
        // A hardlink made while the lower copy is held open: once a write open has moved the
        // file to a new inode, both names show that inode (the kernel is told to drop them).
        let held = File::open(m.join("y")).unwrap();
        fs::hard_link(m.join("y"), m.join("y-link")).unwrap();
        OpenOptions::new().append(true).open(m.join("y-link")).unwrap().write_all(b"z").unwrap();
        let (a, b) = (fs::metadata(m.join("y")).unwrap(), fs::metadata(m.join("y-link")).unwrap());
        assert_eq!((a.ino(), a.nlink(), a.len()), (b.ino(), 2, 3), "{extra}");
        assert_eq!(fs::read_to_string(m.join("y")).unwrap(), "y\nz");
        drop(held);
    }
}

/// ioctl as on kernel overlayfs: inode flags readable (lsattr), a terminal ioctl is ENOTTY.
#[test]
fn ioctl_flags_and_enotty() {
    if !can_run() {
        return;
    }
    let probe = |p: &Path| -> (i64, i32) {
        let f = File::open(p).unwrap();
        let mut flags: libc::c_long = 0;
        // SAFETY: valid fd and out pointer.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x8008_6601u32 as _, &mut flags) };
        assert_eq!(r, 0, "FS_IOC_GETFLAGS on {}: {}", p.display(), std::io::Error::last_os_error());
        let mut tio = [0u8; 64];
        // SAFETY: valid fd, buffer larger than struct termios.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TCGETS, tio.as_mut_ptr()) };
        assert_eq!(r, -1);
        (flags as i64, std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    };
    let t = scratch();
    let s = build(t.path());
    let fuse = {
        let _g = s.mount_fuse("");
        probe(&s.mnt.join("a"))
    };
    let t2 = scratch();
    let k = build(t2.path());
    let _kg = k.mount_kernel();
    assert_eq!(fuse, probe(&k.mnt.join("a")));
    assert_eq!(fuse.1, libc::ENOTTY);
}

/// Files hardlinked inside a lower layer: on a read-only mount all names are one inode (as on
/// kernel overlayfs); on a writable one each name is its own (see fuse/README.md), and copying
/// one up leaves the other's content alone, as kernel overlayfs with index=off does.
#[test]
fn lower_hardlinks() {
    if !can_run() {
        return;
    }
    let t = scratch();
    let s = build(t.path());
    let l2 = &s.lowers[1];
    fs::hard_link(l2.join("a"), l2.join("a-link")).unwrap();
    fs::hard_link(l2.join("a"), l2.join("d/a-link2")).unwrap();
    {
        let st = Command::new(BIN).arg("-o").arg(format!("lowerdir={}", s.lowerdir())).arg(&s.mnt).status();
        assert!(st.unwrap().success());
        let _g = MountGuard { mnt: s.mnt.clone(), active: true };
        let m = &s.mnt;
        let inos: Vec<u64> =
            ["a", "a-link", "d/a-link2"].iter().map(|n| fs::metadata(m.join(n)).unwrap().ino()).collect();
        assert_eq!(inos, [inos[0]; 3], "one inode on a read-only mount");
        assert_eq!(fs::metadata(m.join("a-link")).unwrap().nlink(), 3);
        // Still one after the kernel forgot and relooked the names.
        fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        assert_eq!(fs::metadata(m.join("d/a-link2")).unwrap().ino(), inos[0]);
    }
    let _g = s.mount_fuse("");
    let m = &s.mnt;
    fs::write(m.join("a-link"), "changed\n").unwrap();
    assert_eq!(fs::read_to_string(m.join("a-link")).unwrap(), "changed\n");
    assert_eq!(fs::read_to_string(m.join("a")).unwrap(), "hello\n");
    assert_eq!(fs::read_to_string(m.join("d/a-link2")).unwrap(), "hello\n");
    assert_eq!(fs::read_to_string(l2.join("a")).unwrap(), "hello\n", "lower untouched");
}

/// A daemon that ends (its mount is gone) must not unmount what is mounted at the same path by
/// then. Made deterministic with a lazy unmount: the connection lives while a file is open, a
/// tmpfs is mounted on the path, then the file is closed and the daemon exits.
#[test]
fn exiting_daemon_leaves_a_new_mount_alone() {
    if !can_run() {
        return;
    }
    let t = scratch();
    let s = build(t.path());
    let mut g = s.mount_fuse("");
    let canon = fs::canonicalize(&s.mnt).unwrap();
    let daemon = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .find(|e| {
            let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
            cmd.split(|b| *b == 0).any(|a| a == canon.as_os_str().as_encoded_bytes())
                && fs::read_link(e.path().join("exe")).map(|x| x.ends_with("strata-fuse")).unwrap_or(false)
        })
        .map(|e| e.path())
        .expect("daemon process");
    let held = File::open(s.mnt.join("a")).unwrap();
    let c = std::ffi::CString::new(canon.to_str().unwrap()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) }, 0);
    g.active = false;
    let st = Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&canon).status().unwrap();
    assert!(st.success());
    let _tmpfs = MountGuard { mnt: canon.clone(), active: true };
    assert!(daemon.exists(), "daemon still serving the detached mount");
    drop(held);
    assert!(wait_until(|| !daemon.exists(), 10), "daemon did not exit");
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mi.lines().find(|l| l.split(' ').nth(4) == canon.to_str()).expect("tmpfs still mounted");
    assert!(line.contains(" - tmpfs "), "{line}");
}

/// Copy-up of a lower file's data happens before the write lock is taken: several writers
/// opening the same big lower file at once each stage a copy, one installs it, and every append
/// lands in that one upper file, with the lower file's metadata.
#[test]
fn concurrent_copy_up_of_one_big_file() {
    if !can_run() {
        return;
    }
    let t = scratch();
    let s = build(t.path());
    let l2 = &s.lowers[1];
    let mut data = vec![0u8; (2 << 20) + 3];
    let mut x: u32 = 7;
    for b in data.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        *b = b'a' + ((x >> 24) % 26) as u8;
    }
    let big = l2.join("big");
    fs::write(&big, &data).unwrap();
    fs::set_permissions(&big, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::lchown(&big, Some(1000), Some(100)).unwrap();
    set_xattr(&big, "user.k", b"v");
    let _g = s.mount_fuse("");
    let m = &s.mnt;
    std::thread::scope(|sc| {
        for i in 0..4u8 {
            let p = m.join("big");
            sc.spawn(move || {
                let mut f = OpenOptions::new().append(true).open(p).unwrap();
                f.write_all(&[b'0' + i; 5]).unwrap();
            });
        }
    });
    let got = fs::read(m.join("big")).unwrap();
    assert_eq!(got.len(), data.len() + 20);
    assert!(got[..data.len()] == data[..], "lower data intact in the copy");
    let mut tail: Vec<u8> = got[data.len()..].to_vec();
    tail.sort_unstable();
    assert_eq!(tail, b"00000111112222233333");
    let up = s.upper.join("big");
    assert_eq!(fs::read(&up).unwrap(), got, "one upper file holds it all");
    let md = fs::metadata(&up).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o640, 1000, 100));
    assert_eq!(get_xattr(&up, "user.k").as_deref(), Some(&b"v"[..]));
    assert_eq!(fs::read(&big).unwrap(), data, "lower untouched");
    // Nothing staged is left behind in the workdir.
    let work = s.work.join("strata-fuse");
    assert_eq!(fs::read_dir(&work).unwrap().count(), 0, "leftovers in {}", work.display());
}

/// Issue 10 point 11: `mknod NAME c 0 0` (an overlay whiteout) is refused with EPERM, as kernel
/// overlayfs does, and creates nothing: no whiteout, no copy-up of the parent directory.
#[test]
fn mknod_of_a_whiteout_device_is_refused() {
    if !can_run() {
        return;
    }
    let t = scratch();
    for backend in ["kernel", "fuse"] {
        let s = build(&t.path().join(backend));
        let g = if backend == "kernel" { s.mount_kernel() } else { s.mount_fuse("") };
        let before = Tree::capture(&s.mnt).unwrap();
        for name in ["w", "d/w", "a"] {
            let c = std::ffi::CString::new(s.mnt.join(name).to_str().unwrap()).unwrap();
            // SAFETY: valid C string.
            let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, 0) };
            let e = std::io::Error::last_os_error().raw_os_error();
            let want = if name == "a" { libc::EEXIST } else { libc::EPERM };
            assert_eq!((r, e), (-1, Some(want)), "{backend}: mknod {name} c 0 0");
        }
        assert_trees_eq(&before, &Tree::capture(&s.mnt).unwrap(), &format!("{backend}: merged view"));
        drop(g);
        assert!(names(&s.upper).is_empty(), "{backend}: upper has {:?}", names(&s.upper));
    }
}
