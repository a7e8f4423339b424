//! podman with strata-fuse as its overlay `mount_program` (the fuse-overlayfs interface): it runs
//! containers and builds images.

use crate::common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// podman's run root (locks, container state) and libpod's tmpdir. containers/storage refuses a
/// run root longer than 50 characters, so it cannot live under the checkout, whose path may be any
/// length: it gets a short unique name in /run (where podman's own default is), removed with
/// anything mounted under it.
struct RunRoot(tempfile::TempDir);

impl RunRoot {
    fn new() -> RunRoot {
        let dir =
            tempfile::Builder::new().prefix("strata-podman-").tempdir_in("/run").expect("runroot in /run");
        assert!(dir.path().as_os_str().len() <= 50, "runroot {} too long for podman", dir.path().display());
        RunRoot(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for RunRoot {
    fn drop(&mut self) {
        for p in mounts_under(self.path()).into_iter().rev() {
            let _ = kernel_overlay::unmount(&p, kernel_overlay::UnmountMode::Detach);
        }
    }
}

/// podman with its storage under `root` (any length), its run root and tmpdir in `run`.
fn podman(root: &Path, run: &RunRoot, fuse: &Path, args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .arg("--root")
        .arg(root.join("storage"))
        .arg("--runroot")
        .arg(run.path())
        .arg("--tmpdir")
        .arg(run.path().join("libpod"))
        .args(["--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "none"])
        .arg("--storage-opt")
        .arg(format!("overlay.mount_program={}", fuse.display()))
        .args(args)
        .output()
        .expect("run podman")
}

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "podman {what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn podman_runs_and_builds_on_strata_fuse() {
    if !privileged("podman_runs_and_builds_on_strata_fuse") {
        return;
    }
    let fuse = Path::new(STRATA).with_file_name("strata-fuse");
    assert!(fuse.is_file(), "{} missing: build the workspace", fuse.display());
    let fx = fixtures();
    let root = Root::new();
    let r = root.path();
    let run_root = RunRoot::new();
    let rr = &run_root;
    // The VMs lack CAP_SYS_RESOURCE: keep rlimits at or below the hard limits.
    let limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "none"];
    let id = ok(
        podman(r, rr, &fuse, &["pull", "-q", &format!("oci:{}:busybox", fx.join("oci").display())]),
        "pull",
    );
    let id = id.trim();
    let mut run = vec!["run", "--rm"];
    run.extend(limits);
    run.extend([id, "sh", "-c", "echo x > /new && cat /new && rm /bin/vi && grep ' / ' /proc/mounts"]);
    let out = ok(podman(r, rr, &fuse, &run), "run");
    assert!(out.starts_with("x\n"), "{out}");
    assert!(out.contains("strata-fuse / fuse"), "the rootfs is a strata-fuse mount: {out}");
    fs::write(r.join("Containerfile"), format!("FROM {id}\nRUN echo built > /built && rm /bin/vi\n"))
        .expect("write");
    let mut build = vec!["build", "-q", "-t", "localhost/built", "-f"];
    let cf = r.join("Containerfile");
    let ctx = r.to_str().expect("utf8").to_string();
    build.push(cf.to_str().expect("utf8"));
    build.extend(limits);
    build.push(&ctx);
    ok(podman(r, rr, &fuse, &build), "build");
    let mut run = vec!["run", "--rm"];
    run.extend(limits);
    run.extend(["localhost/built", "sh", "-c", "cat /built; test ! -e /bin/vi && echo vi-gone"]);
    assert_eq!(ok(podman(r, rr, &fuse, &run), "run built"), "built\nvi-gone\n");
    assert!(mounts_under(r).is_empty(), "podman left mounts: {:?}", mounts_under(r));
    assert!(mounts_under(rr.path()).is_empty(), "podman left mounts: {:?}", mounts_under(rr.path()));
}
