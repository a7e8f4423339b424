//! Shared helpers for strata's integration tests: the strata binary, privileged-test gating, the
//! fixture images (built once per machine by scripts/make-fixtures.sh with umoci and skopeo), and
//! `umoci unpack` for reference trees.
#![allow(dead_code)]

pub mod estargz;
pub mod flaky;
pub mod layout;
pub mod registry;
pub mod tarw;
pub mod throttle;
pub mod user;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest, Sha256};
use strata_test_support::tree::{Options, Tree};

pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

pub fn repo() -> PathBuf {
    // This crate is `cli/` in the workspace; fixtures, scripts and target/ are the workspace's.
    let cli = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    cli.parent().map_or(cli.clone(), Path::to_path_buf)
}

#[allow(unused_imports)]
pub use strata_test_support::{mounts_under, privileged, Unmount};

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

    /// The upper dir of container `name`, as `container inspect` names it (its snapshot's tree),
    /// waiting up to 20 s for the container to exist (a `strata run` in the background creates it).
    pub fn upper(&self, name: &str) -> PathBuf {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let out = self.cmd(&["container", "inspect", name]);
            if out.status.success() {
                return upper_in(&String::from_utf8_lossy(&out.stdout));
            }
            assert!(
                std::time::Instant::now() < until,
                "container {name} never appeared: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
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
        strata_test_support::unmount_under(self.path());
    }
}

/// The `upper` path in `container inspect` output.
pub fn upper_in(inspect: &str) -> PathBuf {
    let v: Value = serde_json::from_str(inspect).expect("inspect json");
    PathBuf::from(v["upper"].as_str().expect("inspect names an upper dir"))
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
    let mut t = Tree::capture_with(path, &Options { mtime: true, skip_vanished: true, ..Options::default() })
        .expect("capture tree");
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

/// A reference tree (from `umoci unpack`) as an overlay stack can show it: a character device 0:0
/// in an image *is* a whiteout in overlayfs format, so such entries vanish from every overlay view
/// (kernel, containerd, podman, strata alike). The fixture `multi` holds one on purpose.
pub fn capture_reference(path: &Path) -> Tree {
    let mut t = capture(path);
    t.retain(|_, e| !(e.kind == strata_test_support::tree::Kind::Char && e.rdev == Some((0, 0))));
    t
}

// ---- OCI layout editing for tests ----

pub fn json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).expect("read json")).expect("parse json")
}

pub fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

pub fn manifest_of(layout: &Path, tag: &str) -> Value {
    let index = json(&layout.join("index.json"));
    let d = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("tag {tag} in {}", layout.display()))["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    json(&blob(layout, &d))
}

pub fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A copy of an OCI layout (blobs hardlinked) that tests may change.
pub fn copy_layout(src: &Path, dst: &Path) {
    fs::create_dir_all(dst.join("blobs/sha256")).expect("mkdir");
    for f in ["oci-layout", "index.json"] {
        fs::copy(src.join(f), dst.join(f)).expect("copy");
    }
    for e in fs::read_dir(src.join("blobs/sha256")).expect("blobs") {
        let e = e.expect("entry");
        fs::hard_link(e.path(), dst.join("blobs/sha256").join(e.file_name())).expect("link");
    }
}

pub fn put_blob(layout: &Path, data: &[u8]) -> (String, u64) {
    let d = sha(data);
    let p = blob(layout, &d);
    let _ = fs::remove_file(&p);
    fs::write(p, data).expect("write blob");
    (d, data.len() as u64)
}

/// Tag `new_tag` = the image `tag` truncated to its first `k` layers.
pub fn add_prefix_image(layout: &Path, tag: &str, k: usize, new_tag: &str) {
    let mut m = manifest_of(layout, tag);
    let mut config = json(&blob(layout, m["config"]["digest"].as_str().expect("config")));
    config["rootfs"]["diff_ids"].as_array_mut().expect("diff_ids").truncate(k);
    if let Some(h) = config.get_mut("history").and_then(|h| h.as_array_mut()) {
        h.clear();
    }
    let (cd, cs) = put_blob(layout, &serde_json::to_vec(&config).expect("config json"));
    m["config"]["digest"] = cd.into();
    m["config"]["size"] = cs.into();
    m["layers"].as_array_mut().expect("layers").truncate(k);
    set_tag(layout, new_tag, &serde_json::to_vec(&m).expect("manifest json"));
}

pub fn set_tag(layout: &Path, tag: &str, manifest: &[u8]) {
    let (md, ms) = put_blob(layout, manifest);
    let mut index = json(&layout.join("index.json"));
    let ms_arr = index["manifests"].as_array_mut().expect("manifests");
    ms_arr.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
    ms_arr.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": tag}
    }));
    fs::write(layout.join("index.json"), serde_json::to_vec(&index).expect("index")).expect("write index");
}

/// The runc id (and cgroup name) strata gives container `name` under `root`:
/// `strata-<8 hex of sha256(canonical root path)>-NAME`.
pub fn runc_id(root: &Path, name: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    let canonical = fs::canonicalize(root).expect("canonical root");
    let d = Sha256::digest(canonical.as_os_str().as_bytes());
    format!("strata-{}-{name}", hex::encode(&d[..4]))
}

/// The ids `runc --root ROOT/runc list` shows (none when runc has no state there).
pub fn runc_list(root: &Path) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(root.join("runc"))
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// The cgroup directories named `leaf` at the top of any hierarchy under /sys/fs/cgroup (each
/// v1 controller's, `systemd`, `unified`), those that exist.
pub fn cgroup_dirs(leaf: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                roots.push(e.path());
            }
        }
    }
    for r in roots {
        let d = r.join(leaf);
        if d.is_dir() {
            out.push(d);
        }
    }
    out
}

/// Kills (runc delete --force) the runc container of strata container `name` under `root` when
/// dropped, under its id and the legacy one, so a failing test leaves no container process
/// running after its root is gone.
pub struct RuncGuard {
    pub state: PathBuf,
    pub ids: Vec<String>,
}

impl RuncGuard {
    pub fn new(root: &Root, name: &str) -> RuncGuard {
        RuncGuard {
            state: root.path().join("runc"),
            ids: vec![runc_id(root.path(), name), format!("strata-{name}")],
        }
    }
}

impl Drop for RuncGuard {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ =
                Command::new("runc").arg("--root").arg(&self.state).args(["delete", "--force", id]).output();
        }
    }
}

/// A `strata run IMAGE --name NAME [ARGS...]` started in the background, output discarded. Dropped,
/// it deletes the runc container (RuncGuard) and reaps the strata process.
pub struct BackgroundRun {
    child: std::process::Child,
    _runc: RuncGuard,
}

impl BackgroundRun {
    /// `args` follow `strata run IMAGE --name NAME` (options, then `--` and the command).
    pub fn start(root: &Root, image: &str, name: &str, args: &[&str]) -> BackgroundRun {
        let child = Command::new(STRATA)
            .arg("--root")
            .arg(root.path())
            .args(["run", image, "--name", name])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn strata run");
        BackgroundRun { child, _runc: RuncGuard::new(root, name) }
    }

    /// Wait for the strata process to end (after the container was stopped).
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for strata run")
    }
}

impl Drop for BackgroundRun {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs podman with its store at `root` and its run root at `run` (vfs, cgroupfs, no events),
/// asserting success; its stdout.
pub fn podman_at(root: &Path, run: &Path, args: &[&str]) -> String {
    let out = Command::new("podman")
        .arg("--root")
        .arg(root)
        .arg("--runroot")
        .arg(run)
        .arg("--tmpdir")
        .arg(run.join("libpod"))
        .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"])
        .args(args)
        .output()
        .expect("run podman");
    assert!(
        out.status.success(),
        "podman {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a TCP connection from the host to 127.0.0.1:`port` reads after `request` is sent (when
/// not empty), retried every 100 ms for 10 s until `done` holds of it; the last read.
pub fn read_localhost(port: u16, request: &[u8], done: impl Fn(&str) -> bool) -> String {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let mut got = String::new();
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(
            &(std::net::Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_secs(2),
        ) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if !request.is_empty() {
                let _ = s.write_all(request);
            }
            let _ = s.read_to_string(&mut got);
        }
        if done(&got) || Instant::now() > until {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `f` holds within `secs` seconds, asked every 50 ms.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    f()
}

/// Stop a daemon the test started: SIGTERM, SIGKILL after 10 s, then reap it.
pub fn stop_child(c: &mut std::process::Child) {
    let _ = rustix::process::kill_process(rustix::process::Pid::from_child(c), rustix::process::Signal::TERM);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while c.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}
