//! Shared helpers for strata's integration tests: the strata binary, privileged-test gating, the
//! fixture images (built once per machine by scripts/make-fixtures.sh with umoci and skopeo), and
//! `umoci unpack` for reference trees.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use strata::tree::{Options, Tree};

pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True when privileged tests may run. Without root they skip, loudly, unless CI is set: then they
/// fail, because CI runs as root and a skip there would hide a broken test.
pub fn privileged(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root, and CI is set: privileged tests must run in CI");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED (not root): {test}");
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/tty")
        .and_then(|mut t| writeln!(t, "SKIPPED (not root): {test}"));
    false
}

/// The fixture directory, built on first use (shared by all test binaries via a lock file).
pub fn fixtures() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo().join("target/strata-fixtures");
        fs::create_dir_all(&dir).expect("fixture dir");
        let lock = fs::File::create(dir.with_extension("lock")).expect("fixture lock");
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("lock fixtures");
        let stamp = dir.join(".complete");
        let script = repo().join("scripts/make-fixtures.sh");
        let fresh = stamp.exists()
            && fs::metadata(&stamp).and_then(|s| s.modified()).ok()
                >= fs::metadata(&script).and_then(|s| s.modified()).ok();
        if !fresh {
            let out = Command::new("bash").arg(&script).arg(&dir).output().expect("run make-fixtures.sh");
            assert!(
                out.status.success(),
                "make-fixtures.sh failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            fs::write(&stamp, b"").expect("stamp");
        }
        dir
    })
    .clone()
}

/// A throw-away state root.
pub struct Root {
    pub dir: tempfile::TempDir,
}

impl Root {
    pub fn new() -> Root {
        // Under target/ rather than /tmp: /tmp may be a tmpfs without trusted xattrs or mknod.
        let base = repo().join("target/test-roots");
        fs::create_dir_all(&base).expect("test roots");
        Root { dir: tempfile::Builder::new().prefix("root-").tempdir_in(base).expect("tempdir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run strata with this root; returns the output.
    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(STRATA).arg("--root").arg(self.path()).args(args).output().expect("run strata")
    }

    /// Run strata and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run strata and require failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(!out.status.success(), "strata {args:?} unexpectedly succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        // Unmount anything a failed test left mounted under this root before the tempdir goes.
        let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = self.path().to_path_buf();
        let mut points: Vec<PathBuf> = kernel_overlay::mountinfo::parse(&text)
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&root))
            .collect();
        points.reverse();
        for p in points {
            let _ = kernel_overlay::unmount(&p, kernel_overlay::UnmountMode::Detach);
        }
    }
}

/// `umoci unpack --image LAYOUT:TAG` into a temp bundle; returns (tempdir, rootfs path).
pub fn umoci_unpack(layout: &Path, tag: &str) -> (tempfile::TempDir, PathBuf) {
    let base = repo().join("target/test-roots");
    fs::create_dir_all(&base).expect("test roots");
    let t = tempfile::Builder::new().prefix("umoci-").tempdir_in(base).expect("tempdir");
    let bundle = t.path().join("bundle");
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle)
        .output()
        .expect("run umoci");
    assert!(out.status.success(), "umoci unpack {tag} failed: {}", String::from_utf8_lossy(&out.stderr));
    (t, bundle.join("rootfs"))
}

/// The comparison used between strata's trees and reference trees: everything but directory
/// mtimes (overlayfs and umoci legitimately differ there) and the root directory's own metadata.
pub fn capture(path: &Path) -> Tree {
    let mut t = Tree::capture_with(path, &Options { mtime: true, ..Options::default() }).expect("capture tree");
    t.retain(|p, e| {
        if e.kind == strata::tree::Kind::Dir || e.kind == strata::tree::Kind::Symlink {
            e.mtime = None;
        }
        p != Path::new(".")
    });
    t
}
