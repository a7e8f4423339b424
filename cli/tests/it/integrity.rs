//! A container's world never changes under it: containers are bound to the manifest they were
//! created from, a running container is not unmounted or removed from under its process, a commit
//! of a running container is taken paused, removals survive kill -9 at any point, and a full
//! filesystem does not lock the user out.

use crate::common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use strata_test_support::tree::assert_trees_eq;

fn import(root: &Root, layout: &Path, tag: &str, name: &str) -> String {
    root.ok(&["image", "import", &format!("{}:{tag}", layout.display()), "--name", name]).trim().to_string()
}

fn container_json(root: &Root, name: &str) -> Option<Value> {
    let ls: Value = serde_json::from_str(&root.ok(&["container", "ls", "--json"])).expect("ls json");
    ls.as_array().expect("array").iter().find(|c| c["name"] == name).cloned()
}

fn mount(root: &Root, name: &str) -> PathBuf {
    PathBuf::from(root.ok(&["container", "mount", name, "--backend", "kernel"]).trim())
}

/// The whole merged view of a container, mounted for the occasion.
fn view(root: &Root, name: &str) -> strata_test_support::tree::Tree {
    let at = mount(root, name);
    let t = capture(&at);
    root.ok(&["container", "umount", name]);
    t
}

fn layer_dirs(root: &Root) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root.path().join("layers/sha256"))
        .expect("layers")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn staging_entries(root: &Root) -> Vec<String> {
    fs::read_dir(root.path().join("staging"))
        .expect("staging")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// Re-importing another image under the name a container was created from, then gc, changes
/// nothing the container sees, mounted or not; `image rm` of the name still refuses, and the old
/// layers go only with the last container that stands on them.
#[test]
fn a_container_keeps_its_manifest_when_the_name_moves() {
    if !privileged("a_container_keeps_its_manifest_when_the_name_moves") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let oci = fx.join("oci");
    let first = import(&root, &oci, "multi", "app");
    root.ok(&["container", "create", "app", "c"]);
    root.ok(&["container", "create", "app", "live"]);
    let before = view(&root, "c");
    let (_ref, reference) = umoci_unpack(&oci, "multi");
    assert_trees_eq(&before, &capture_reference(&reference), "container c vs umoci unpack of multi");
    let live = mount(&root, "live");
    let live_before = capture(&live);

    // The name moves to another manifest (busybox shares no layer beyond the base with multi's top).
    let second = import(&root, &oci, "busybox", "app");
    assert_ne!(first, second);
    root.ok(&["gc"]);
    assert_trees_eq(&capture(&live), &live_before, "mounted container after the name moved and gc");
    root.ok(&["container", "umount", "live"]);
    assert_trees_eq(&view(&root, "c"), &before, "container c after the name moved and gc");
    assert_trees_eq(&view(&root, "live"), &live_before, "remounted container after the name moved");
    let c = container_json(&root, "c").expect("c listed");
    assert_eq!(c["digest"], first, "c stays bound to the manifest it was created from");
    assert_eq!(c["image"], "app:latest");

    // A new container over the name gets what it names now.
    root.ok(&["container", "create", "app", "new"]);
    // The name is in use by what it names now, not by what it named before (as docker rmi).
    let err = root.fails(&["image", "rm", "app"]);
    assert!(err.contains("used by container(s) new"), "{err}");
    let (_ref2, busybox) = umoci_unpack(&oci, "busybox");
    assert_trees_eq(&view(&root, "new"), &capture_reference(&busybox), "new container over the moved name");

    // multi's own layers live only as long as c and live do.
    let with_both = layer_dirs(&root);
    root.ok(&["container", "rm", "c"]);
    root.ok(&["gc"]);
    assert_eq!(layer_dirs(&root), with_both, "live still holds multi's layers");
    root.ok(&["container", "rm", "live"]);
    root.ok(&["gc"]);
    assert!(layer_dirs(&root).len() < with_both.len(), "multi's layers went with its last container");
    assert_trees_eq(&view(&root, "new"), &capture_reference(&busybox), "busybox container after gc");
}

/// A background `strata run` that prints "ready" once its command started.
struct Run {
    child: Child,
    _runc: RuncGuard,
}

impl Run {
    fn start(root: &Root, name: &str, script: &str) -> Run {
        let mut child = Command::new(STRATA)
            .arg("--root")
            .arg(root.path())
            .args(["run", "busybox", "--name", name, "--backend", "kernel", "--", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strata run");
        // Wait for the container's first line.
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = [0u8; 6];
        use std::io::Read;
        out.read_exact(&mut buf).expect("container printed ready");
        assert_eq!(&buf, b"ready\n");
        child.stdout = Some(out);
        Run { child, _runc: RuncGuard::new(root, name) }
    }

    fn wait(mut self) -> std::process::ExitStatus {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < until, "strata run did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runc_state(root: &Root, name: &str) -> Option<Value> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(root.path().join("runc"))
        .args(["state", &runc_id(root.path(), name)])
        .output()
        .expect("runc state");
    out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("state json"))
}

/// While `strata run` executes in a container, umount, rm and a second run refuse with a clear
/// message, and the container keeps running; `rm --force` stops it (SIGKILL through runc) and
/// removes it, as `podman rm -f` does.
#[test]
fn a_running_container_is_not_pulled_from_under_its_process() {
    if !privileged("a_running_container_is_not_pulled_from_under_its_process") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    import(&root, &fx.join("oci"), "busybox", "busybox");
    let run = Run::start(&root, "r", "echo ready; while :; do date > /tick; sleep 0.05; done");
    for args in [
        &["container", "umount", "r"][..],
        &["container", "rm", "r"],
        &["container", "umount", "r", "--force"],
    ] {
        let err = root.fails(args);
        assert!(err.contains("container \"r\" is running (strata run, pid"), "{args:?}: {err}");
    }
    let err = root.fails(&["run", "busybox", "--name", "r", "--", "true"]);
    assert!(err.contains("container \"r\" is running"), "second run: {err}");
    // Still running, still mounted, its writes still land.
    let upper = root.upper("r").join("tick");
    let t0 = fs::read_to_string(&upper).expect("tick");
    std::thread::sleep(Duration::from_millis(1200));
    assert_ne!(fs::read_to_string(&upper).expect("tick"), t0, "container kept running");
    assert!(container_json(&root, "r").expect("listed")["mounted"].is_string());

    root.ok(&["container", "rm", "--force", "r"]);
    let st = run.wait();
    assert_eq!(st.code(), Some(137), "killed by SIGKILL");
    assert!(container_json(&root, "r").is_none());
    assert!(!root.path().join("containers/r").exists());
    assert!(mounts_under(root.path()).is_empty(), "nothing left mounted");
    assert!(runc_state(&root, "r").is_none(), "runc forgot it");
}

/// A `strata run` killed with SIGKILL leaves its runc container running: strata still knows the
/// container runs (from runc's state), refuses to unmount it, and `rm --force` kills and deletes it.
#[test]
fn a_container_whose_strata_run_died_is_still_known_to_run() {
    if !privileged("a_container_whose_strata_run_died_is_still_known_to_run") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    import(&root, &fx.join("oci"), "busybox", "busybox");
    let mut run = Run::start(&root, "orphan", "echo ready; exec sleep 600");
    run.child.kill().expect("kill strata run");
    run.child.wait().expect("reap");
    assert_eq!(runc_state(&root, "orphan").expect("runc knows it")["status"], "running");
    let err = root.fails(&["container", "umount", "orphan"]);
    let id = runc_id(root.path(), "orphan");
    assert!(err.contains(&format!("is running (runc {id}: running)")), "{err}");
    root.ok(&["container", "rm", "--force", "orphan"]);
    assert!(container_json(&root, "orphan").is_none());
    assert!(mounts_under(root.path()).is_empty());
    let until = Instant::now() + Duration::from_secs(10);
    while runc_state(&root, "orphan").is_some() {
        assert!(Instant::now() < until, "runc still has the container");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cgroup v1 freezer state (or v2 `frozen`) of the container's init process.
fn frozen(pid: i64) -> Option<bool> {
    let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cg.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
        if ctrl.split(',').any(|c| c == "freezer") {
            let s = fs::read_to_string(format!("/sys/fs/cgroup/freezer{path}/freezer.state")).ok()?;
            return Some(s.trim() == "FROZEN");
        }
    }
    let path = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let ev = fs::read_to_string(format!("/sys/fs/cgroup{path}/cgroup.events")).ok()?;
    Some(ev.lines().any(|l| l == "frozen 1"))
}

/// `container commit` of a running container pauses it (the freezer holds it while the upper dir is
/// read) and resumes it; what it wrote before the commit is in the new image; `--pause=false`
/// commits it live, unfrozen.
#[test]
fn commit_of_a_running_container_is_taken_paused() {
    if !privileged("commit_of_a_running_container_is_taken_paused") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    import(&root, &fx.join("oci"), "busybox", "busybox");
    // Enough files that reading the upper dir takes a while, then a counter that keeps moving.
    let run = Run::start(
        &root,
        "busy",
        "mkdir /data; i=0; while [ $i -lt 3000 ]; do echo $i > /data/f$i; i=$((i+1)); done; \
         echo before-commit > /marker; echo ready; n=0; while :; do n=$((n+1)); echo $n > /dev/shm/counter; done",
    );
    let pid = runc_state(&root, "busy").expect("runc state")["pid"].as_i64().expect("pid");
    assert_eq!(frozen(pid), Some(false), "running, not frozen");
    for (pause, want_frozen) in [(None, true), (Some("--pause=false"), false)] {
        let image = format!("snap-{want_frozen}");
        let mut args = vec!["container", "commit", "busy", image.as_str()];
        args.extend(pause);
        let mut commit = Command::new(STRATA)
            .arg("--root")
            .arg(root.path())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn commit");
        let mut saw_frozen = false;
        let status = loop {
            if let Some(st) = commit.try_wait().expect("wait commit") {
                break st;
            }
            saw_frozen |= frozen(pid) == Some(true);
            std::thread::sleep(Duration::from_micros(500));
        };
        let out = commit.wait_with_output().expect("commit output");
        assert!(status.success(), "commit {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(saw_frozen, want_frozen, "frozen during commit {args:?}");
        assert_eq!(frozen(pid), Some(false), "resumed after commit {args:?}");
        assert_eq!(runc_state(&root, "busy").expect("state")["status"], "running");
        let out = root.ok(&["run", &image, "--rm", "--", "sh", "-c", "cat /marker; ls /data | wc -l"]);
        assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["before-commit", "3000"], "{image}");
    }
    // Still counting after both commits (the file is rewritten in place: read until not empty).
    // It lives in the container's /dev/shm, not its upper dir: a live (--pause=false) commit of
    // a file being truncated and rewritten fails by design, and that is not what this tests.
    let counter = PathBuf::from(format!("/proc/{pid}/root/dev/shm/counter"));
    let read = || {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let v = fs::read_to_string(&counter).unwrap_or_default();
            if v.ends_with('\n') || Instant::now() > until {
                return v;
            }
        }
    };
    let a = read();
    std::thread::sleep(Duration::from_millis(200));
    assert_ne!(read(), a, "counter moves after the commits");
    root.ok(&["container", "rm", "--force", "busy"]);
    drop(run);
}

/// Committing a read-only view says it has nothing to commit; mounting a mounted container says
/// where it is mounted and how to unmount it (not a --force that mount lacks).
#[test]
fn read_only_commit_and_double_mount_say_what_is_going_on() {
    if !privileged("read_only_commit_and_double_mount_say_what_is_going_on") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    import(&root, &fx.join("oci"), "busybox", "busybox");
    root.ok(&["container", "create", "busybox", "view", "--read-only"]);
    let err = root.fails(&["container", "commit", "view", "x"]);
    assert!(err.contains("container \"view\" is a read-only view: it has no changes to commit"), "{err}");
    assert!(root.ok(&["image", "ls", "--json"]).find("\"x\"").is_none());
    let at = mount(&root, "view");
    let err = root.fails(&["container", "mount", "view"]);
    assert!(
        err.contains(&format!(
            "container \"view\" is already mounted at {} (strata container umount view unmounts it)",
            at.display()
        )),
        "{err}"
    );
    assert!(!err.contains("--force"), "{err}");
    root.ok(&["container", "umount", "view"]);
}

/// Tiny deterministic generator for kill delays.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Run strata with `args` and SIGKILL it after `delay` (if it is still running then).
fn kill_after(root: &Root, args: &[&str], delay: Duration) {
    let mut child = Command::new(STRATA)
        .arg("--root")
        .arg(root.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(delay);
    let _ = child.kill();
    let _ = child.wait();
}

/// An OCI layout holding `big`: busybox plus a layer of 4,000 files, made by strata itself and
/// checked by umoci (which unpacks the reference tree).
fn big_layout(root: &Root, dir: &Path) {
    let fx = fixtures();
    import(root, &fx.join("oci"), "busybox", "busybox");
    root.ok(&[
        "run",
        "busybox",
        "--name",
        "w",
        "--backend",
        "kernel",
        "--",
        "sh",
        "-c",
        "mkdir /d; i=0; while [ $i -lt 4000 ]; do echo file $i > /d/f$i; i=$((i+1)); done",
    ]);
    root.ok(&["container", "commit", "w", "big"]);
    root.ok(&["container", "rm", "w"]);
    root.ok(&["image", "export", "big", &format!("{}:big", dir.display())]);
}

/// kill -9 at many points of `gc`, `image rm` and `container rm`; after each, the next command
/// finds every layer, image and container either whole or gone: never a half-deleted layer
/// directory taken for the layer (which an import would reuse), never a listed container with a
/// half-deleted upper dir.
#[test]
fn removals_survive_kill_9_anywhere() {
    if !privileged("removals_survive_kill_9_anywhere") {
        return;
    }
    let maker = Root::new();
    let layout = maker.path().join("layout");
    big_layout(&maker, &layout);
    let (_ref, reference) = umoci_unpack(&layout, "big");
    let reference = capture_reference(&reference);

    let root = Root::new();
    let mut rng = Lcg(9);
    let big_top = || -> Option<PathBuf> {
        let inspect: Value = serde_json::from_str(&root.ok(&["image", "inspect", "big"])).ok()?;
        let diff_id = inspect["layers"].as_array()?.last()?["diff_id"].as_str()?.to_string();
        Some(root.path().join("layers/sha256").join(diff_id.trim_start_matches("sha256:")))
    };
    for round in 0..6 {
        // gc killed while it removes the unreferenced big layer, then a re-import.
        import(&root, &layout, "big", "big");
        root.ok(&["image", "rm", "big"]);
        kill_after(&root, &["gc"], Duration::from_millis(rng.below(80)));
        import(&root, &layout, "big", "big");
        let top = big_top().expect("big's top layer");
        let n = fs::read_dir(top.join("d")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(n, 4000, "round {round}: the re-imported layer directory is whole");

        // image rm killed: the image is listed and whole, or gone.
        kill_after(&root, &["image", "rm", "big"], Duration::from_millis(rng.below(15)));
        if root.cmd(&["image", "inspect", "big"]).status.success() {
            assert!(big_top().is_some_and(|t| t.join("d/f3999").is_file()), "round {round}");
        } else {
            import(&root, &layout, "big", "big");
        }

        // container rm killed while it deletes an upper dir of 2,000 files.
        let c = format!("c{round}");
        root.ok(&["container", "create", "big", &c]);
        let upper = root.upper(&c);
        fs::create_dir(upper.join("u")).expect("mkdir");
        for i in 0..2000 {
            fs::write(upper.join(format!("u/{i}")), b"x").expect("write");
        }
        kill_after(&root, &["container", "rm", &c], Duration::from_millis(rng.below(60)));
        match container_json(&root, &c) {
            Some(_) => {
                let n = fs::read_dir(upper.join("u")).map(|d| d.count()).unwrap_or(0);
                assert_eq!(n, 2000, "round {round}: a listed container has its whole upper dir");
                root.ok(&["container", "rm", &c]);
            }
            None => {
                assert!(!root.path().join("containers").join(&c).exists(), "round {round}: debris");
                assert!(!upper.exists(), "round {round}: the snapshot's upper dir is left");
            }
        }
        assert!(
            staging_entries(&root).is_empty(),
            "round {round}: staging left {:?}",
            staging_entries(&root)
        );
    }
    // And the end result is the image, entry by entry.
    root.ok(&["container", "create", "big", "final", "--read-only"]);
    assert_trees_eq(&view(&root, "final"), &reference, "big after the kill rounds vs umoci unpack");
}

/// Fill `dir`'s filesystem to the last block; returns the filler files.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = fs::File::create(&p).expect("filler");
    let big = vec![0xa5u8; 1 << 20];
    while f.write_all(&big).is_ok() {}
    for chunk in [4096usize, 512, 1] {
        while f.write_all(&big[..chunk]).is_ok() {}
    }
    let _ = f.sync_all();
    p
}

fn free_bytes(dir: &Path) -> u64 {
    let st = rustix::fs::statvfs(dir).expect("statvfs");
    st.f_bavail * st.f_frsize
}

/// With the state root's filesystem full to the last block, the commands that read or free space
/// work: image ls, container ls, container rm, image rm, gc.
#[test]
fn a_full_filesystem_does_not_lock_the_user_out() {
    if !privileged("a_full_filesystem_does_not_lock_the_user_out") {
        return;
    }
    let fx = fixtures();
    let base = Root::new();
    let mnt = base.path().join("small");
    fs::create_dir(&mnt).expect("mkdir");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=40m,mode=0700", "strata-full", mnt.to_str().expect("utf8")])
        .status()
        .expect("mount tmpfs");
    assert!(st.success());
    let _u = common::Unmount(mnt.clone());
    let state = mnt.join("root");
    let strata = |args: &[&str]| {
        Command::new(STRATA).arg("--root").arg(&state).args(args).output().expect("run strata")
    };
    let ok = |args: &[&str]| {
        let out = strata(args);
        assert!(
            out.status.success(),
            "strata {args:?} on a full disk: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display())]);
    ok(&["container", "create", "busybox", "c"]);
    fs::write(common::upper_in(&ok(&["container", "inspect", "c"])).join("x"), b"x").expect("write");
    fill(&mnt);
    assert!(free_bytes(&mnt) < 4096, "filled: {} bytes free", free_bytes(&mnt));
    assert!(ok(&["image", "ls"]).contains("busybox"));
    assert!(ok(&["container", "ls"]).contains("busybox"));
    ok(&["container", "rm", "c"]);
    ok(&["image", "rm", "busybox"]);
    let before = free_bytes(&mnt);
    assert!(ok(&["gc"]).contains("1 layers"));
    assert!(free_bytes(&mnt) > before + (1 << 20), "gc freed the busybox layer");
    assert!(!ok(&["image", "ls"]).contains("busybox"));
}
