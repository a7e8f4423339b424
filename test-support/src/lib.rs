//! What every test suite of strata's workspace shares, written once: the root check that gates
//! privileged tests, tree snapshots for entry-by-entry comparison ([`tree`]), and mount helpers.

pub mod tree;

use std::io::Write;
use std::path::{Path, PathBuf};

/// True when a privileged test may run (root). Without root it is skipped, loudly (on stderr
/// and the terminal, which the test harness does not capture), unless `CI` is set: then it
/// fails, because CI runs as root and a skip there would hide a broken test.
pub fn privileged(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root, and CI is set: privileged tests must run in CI");
    }
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED (not root): {test}");
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/tty")
        .and_then(|mut t| writeln!(t, "SKIPPED (not root): {test}"));
    false
}

/// Mount points at or below `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    kernel_overlay::mountinfo::parse(&text)
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Detach every mount at or below `dir`, innermost first.
pub fn unmount_under(dir: &Path) {
    for p in mounts_under(dir).into_iter().rev() {
        let _ = kernel_overlay::unmount(&p, kernel_overlay::UnmountMode::Detach);
    }
}

/// Unmounts (detached) whatever is mounted at its path when dropped, so a failing test does not
/// leak its mount.
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = kernel_overlay::unmount(&self.0, kernel_overlay::UnmountMode::Detach);
    }
}

/// `n` bytes that do not compress: xorshift output from `seed` (made odd, never zero).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
