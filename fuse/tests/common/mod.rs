//! Shared helpers for strata-fuse integration tests: mounts with unmount-on-drop guards.
#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_strata-fuse");

/// True when the tests can run; prints a loud skip notice otherwise (fails under CI).
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("strata-fuse tests need root (CI is set)");
    }
    eprintln!("SKIPPED (not root): strata-fuse tests need root, /dev/fuse and overlayfs");
    false
}

pub fn is_mounted(p: &Path) -> bool {
    let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mi.lines().any(|l| l.split(' ').nth(4) == Some(canon.to_str().unwrap_or("")))
}

pub fn umount(p: &Path) -> std::io::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: valid C string.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    // SAFETY: valid C string.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    Err(e)
}

/// A mounted filesystem, unmounted on drop.
pub struct MountGuard {
    pub mnt: PathBuf,
    pub active: bool,
}

impl MountGuard {
    pub fn unmount(&mut self) {
        if self.active {
            // Retry a few times: a daemon may still hold a reference briefly.
            for _ in 0..50 {
                if umount(&self.mnt).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.active = false;
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Layer directories of one stack.
pub struct Stack {
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
}

impl Stack {
    /// `root/{l1..ln,upper,work,mnt}` (l1 is the top lower layer).
    pub fn new(root: &Path, n_lowers: usize) -> Stack {
        let lowers: Vec<PathBuf> = (1..=n_lowers).map(|i| root.join(format!("l{i}"))).collect();
        for l in &lowers {
            std::fs::create_dir_all(l).expect("mkdir lower");
        }
        let s = Stack { lowers, upper: root.join("upper"), work: root.join("work"), mnt: root.join("mnt") };
        for d in [&s.upper, &s.work, &s.mnt] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        s
    }

    pub fn lowerdir(&self) -> String {
        self.lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":")
    }

    pub fn opts(&self) -> String {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            self.lowerdir(),
            self.upper.display(),
            self.work.display()
        )
    }

    /// Mount with strata-fuse (background mode: returns once the mount is live).
    pub fn mount_fuse(&self, extra: &str) -> MountGuard {
        let mut o = self.opts();
        if !extra.is_empty() {
            o.push(',');
            o.push_str(extra);
        }
        let st = Command::new(BIN).arg("-o").arg(&o).arg(&self.mnt).status().expect("run strata-fuse");
        assert!(st.success(), "strata-fuse failed: {st}");
        assert!(is_mounted(&self.mnt), "not mounted after strata-fuse returned");
        MountGuard { mnt: self.mnt.clone(), active: true }
    }

    /// Mount with kernel overlayfs.
    pub fn mount_kernel(&self) -> MountGuard {
        let o = format!("{},index=off,redirect_dir=off,metacopy=off", self.opts());
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &o])
            .arg(&self.mnt)
            .status()
            .expect("mount");
        assert!(st.success(), "kernel overlay mount failed");
        MountGuard { mnt: self.mnt.clone(), active: true }
    }
}

pub fn whiteout(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    // SAFETY: valid C string.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, 0) };
    assert_eq!(r, 0, "mknod whiteout {}", p.display());
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    let n = CString::new(name).expect("name");
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "setxattr {name} on {}", p.display());
}

pub fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    let n = CString::new(name).expect("name");
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        None
    } else {
        buf.truncate(r as usize);
        Some(buf)
    }
}

pub fn wait_until(mut f: impl FnMut() -> bool, secs: u64) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A scratch directory under /tmp removed on drop (after mounts inside are gone).
pub struct Scratch(pub tempfile::TempDir);

pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("strata-fuse-test").tempdir().expect("tempdir")
}

/// A seeded xorshift64* generator: the same seed gives the same sequence of operations.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
