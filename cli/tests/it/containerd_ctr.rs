//! strata-snapshotter under a private containerd (its own root, state and sockets; CRI off),
//! driven with `ctr`: images imported and unpacked through it, containers run on it, the rootfs
//! containerd mounts equal to `umoci unpack` entry by entry, and a kill -9 of the daemon that
//! existing containers survive.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// strata-snapshotter, built beside this test binary (scripts/test.sh builds the workspace).
fn snapshotter_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("strata-snapshotter");
    assert!(bin.is_file(), "{} not built: run `cargo build -p strata-snapshotter`", bin.display());
    bin
}

/// tests/containerd/pull, containerd's Go client pulling with unpack, built in GOPATH mode.
fn go_pull() -> PathBuf {
    let bin = common::repo().join("target/go-bin/containerd-pull");
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(common::repo().join("tests/containerd/pull"))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOFLAGS", "")
        .env("GOCACHE", common::repo().join("target/go-cache"))
        .output()
        .expect("run go build (golang-go installed? scripts/setup.sh installs it)");
    assert!(out.status.success(), "go build tests/containerd/pull: {}", String::from_utf8_lossy(&out.stderr));
    bin
}

/// A private containerd with strata-snapshotter as its proxy plugin `strata`.
pub(crate) struct Containerd {
    dir: tempfile::TempDir,
    backend: &'static str,
    containerd: Option<Child>,
    snapshotter: Option<Child>,
}

impl Containerd {
    /// Pull `image` with unpack into namespace `test` through containerd's Go client
    /// ([`go_pull`]) onto the `strata` snapshotter; `extra` is the helper's optional argument
    /// (`remote`: the CRI labels). Fails the test, with the snapshotter's log, if it fails.
    pub(crate) fn pull_with_go(&self, image: &str, extra: &[&str]) {
        self.pull_with_go_in("test", image, extra)
    }

    /// [`Containerd::pull_with_go`] into containerd namespace `ns`.
    pub(crate) fn pull_with_go_in(&self, ns: &str, image: &str, extra: &[&str]) {
        let out = Command::new(go_pull())
            .arg(self.path().join("c.sock"))
            .args([ns, "strata", image])
            .args(extra)
            .output()
            .expect("run the Go pull helper");
        assert!(
            out.status.success(),
            "pull through containerd's client: {}\n--- snapshotter log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log("snapshotter.log")
        );
    }

    fn start() -> Containerd {
        Containerd::start_with("kernel")
    }

    /// PATH with this build's binaries first: containerd's mount.fuse3 runs strata-fuse from it.
    fn path_env() -> std::ffi::OsString {
        let bin = snapshotter_bin();
        let mut p = bin.parent().expect("bin dir").as_os_str().to_owned();
        p.push(":");
        p.push(std::env::var_os("PATH").unwrap_or_default());
        p
    }

    pub(crate) fn start_with(backend: &'static str) -> Containerd {
        // Short paths: unix socket names are limited to 108 bytes.
        let dir = tempfile::Builder::new().prefix("strata-ctrd-").tempdir_in("/tmp").expect("tempdir");
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [proxy_plugins.strata]\n  type = \"snapshot\"\n  address = \"{snap}\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("c.sock").display(),
            snap = d.join("s.sock").display(),
        );
        fs::write(d.join("config.toml"), config).expect("config.toml");
        let mut c = Containerd { dir, backend, containerd: None, snapshotter: None };
        c.start_snapshotter();
        let log = fs::File::create(c.path().join("containerd.log")).expect("containerd log");
        c.containerd = Some(
            Command::new("containerd")
                .env("PATH", Containerd::path_env())
                .arg("--config")
                .arg(c.path().join("config.toml"))
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log)
                .spawn()
                .expect("start containerd (scripts/setup.sh installs it)"),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr_raw(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "containerd did not come up:\n{}", c.log("containerd.log"));
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn log(&self, name: &str) -> String {
        fs::read_to_string(self.path().join(name)).unwrap_or_default()
    }

    fn start_snapshotter(&mut self) {
        let sock = self.path().join("s.sock");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("snapshotter.log"))
            .expect("snapshotter log");
        let child = Command::new(snapshotter_bin())
            .arg("--root")
            .arg(self.path().join("strata"))
            .arg("--address")
            .arg(&sock)
            .args(["--backend", self.backend])
            // The strata-fuse mounts it answers over remote layers read on demand only: these
            // tests count what a run fetches, and background completion would fetch the rest.
            .env("STRATA_LAZY_BACKGROUND", "off")
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start strata-snapshotter");
        self.snapshotter = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                Instant::now() < deadline,
                "strata-snapshotter did not listen:\n{}",
                self.log("snapshotter.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9 of the daemon, then a new one on the same state root and socket.
    fn crash_and_restart_snapshotter(&mut self) {
        if let Some(mut s) = self.snapshotter.take() {
            s.kill().expect("kill -9 strata-snapshotter");
            let _ = s.wait();
        }
        self.start_snapshotter();
    }

    fn ctr_raw(&self, args: &[&str]) -> Output {
        self.ctr_raw_in("test", args)
    }

    /// `ctr -n NS ARGS`.
    fn ctr_raw_in(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ctr")
            .env("PATH", Containerd::path_env())
            .arg("-a")
            .arg(self.path().join("c.sock"))
            .args(["-n", ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// `ctr ARGS` that must succeed; its stdout.
    pub(crate) fn ctr(&self, args: &[&str]) -> String {
        self.ctr_in("test", args)
    }

    /// `ctr -n NS ARGS` that must succeed; its stdout.
    fn ctr_in(&self, ns: &str, args: &[&str]) -> String {
        let out = self.ctr_raw_in(ns, args);
        assert!(
            out.status.success(),
            "ctr -n {ns} {args:?} failed: {}\n{}\n--- snapshotter log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.log("snapshotter.log")
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The tree of the top of the image's chain as containerd mounts it from strata: a view
    /// made with `ctr snapshots view`, mounted with the command `ctr snapshots mounts` prints
    /// (`ctr images mount` of containerd 1.6 ignores --snapshotter), captured, then removed.
    /// Also the mount's filesystem type. The view is left to containerd's gc (ctr's lease on it
    /// ends with ctr).
    fn capture_top_view(&self) -> (strata_test_support::tree::Tree, String) {
        let ls = self.ctr(&["snapshots", "--snapshotter", "strata", "ls"]);
        let rows: Vec<Vec<&str>> = ls.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
        let tops: Vec<&str> = rows
            .iter()
            .filter(|r| r.last() == Some(&"Committed"))
            .map(|r| r[0])
            .filter(|k| !rows.iter().any(|r| r.len() == 3 && r[1] == *k))
            .collect();
        assert_eq!(tops.len(), 1, "one image chain expected:\n{ls}");
        let target = self.path().join("mnt");
        fs::create_dir_all(&target).expect("mount target");
        // The mounts come with the view (containerd's gc may take the view as soon as ctr exits;
        // a read-only overlay of its parents does not need its own directory).
        let t = target.to_string_lossy();
        let cmd = self.ctr(&["snapshots", "--snapshotter", "strata", "view", "-t", &t, "cmp-view", tops[0]]);
        // `mount -t fuse3.strata-fuse SRC DIR -o OPTS`, run the way containerd runs it
        // (mount(8) would hand the whole type to mount.fuse3).
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let cmd = match words.as_slice() {
            ["mount", "-t", t, src, dir, "-o", opts] if t.starts_with("fuse3.") => {
                format!("mount.fuse3 {src} {dir} -o {opts} -t {}", &t["fuse3.".len()..])
            }
            _ => cmd.trim().to_string(),
        };
        let out = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("PATH", Containerd::path_env())
            .output()
            .expect("run the mount command");
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        let fstype = fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .find(|l| l.split(' ').nth(1) == target.to_str())
            .and_then(|l| l.split(' ').nth(2).map(str::to_string))
            .unwrap_or_default();
        let tree = common::capture(&target);
        let st = Command::new("umount").arg(&target).status().expect("umount");
        assert!(st.success(), "umount {}", target.display());
        (tree, fstype)
    }

    /// Import fixture tag `tag` (an oci-archive made with skopeo) through strata; its image name.
    fn import(&self, tag: &str) -> String {
        self.import_from(&common::fixtures().join("oci"), tag)
    }

    /// `ctr images import` of image `tag` of the OCI layout `layout` (through an oci-archive).
    fn import_from(&self, layout: &Path, tag: &str) -> String {
        let archive = self.path().join(format!("{tag}.tar"));
        let out = Command::new("skopeo")
            .arg("copy")
            .arg("-q")
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("oci-archive:{}:{tag}", archive.display()))
            .output()
            .expect("run skopeo");
        assert!(out.status.success(), "skopeo copy {tag}: {}", String::from_utf8_lossy(&out.stderr));
        let name = format!("strata.test/{tag}:{tag}");
        self.ctr(&[
            "images",
            "import",
            "--snapshotter",
            "strata",
            "--index-name",
            &name,
            &archive.to_string_lossy(),
        ]);
        assert!(self.ctr(&["images", "ls", "-q"]).lines().any(|l| l == name), "image {name} not listed");
        name
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for m in common::mounts_under(self.dir.path()).iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        for mut c in [self.containerd.take(), self.snapshotter.take()].into_iter().flatten() {
            common::stop_child(&mut c);
        }
        for m in common::mounts_under(self.dir.path()).iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

#[test]
fn ctr_import_and_run_a_multi_layer_image_on_strata() {
    if !common::privileged("ctr_import_and_run_a_multi_layer_image_on_strata") {
        return;
    }
    let c = Containerd::start();
    let image = c.import("many-2");
    // Layers went through strata: one committed snapshot per layer (3), and nothing else.
    let snaps = c.ctr(&["snapshots", "--snapshotter", "strata", "ls"]);
    let committed = snaps.lines().filter(|l| l.trim_end().ends_with("Committed")).count();
    assert_eq!(committed, 3, "snapshots after import:\n{snaps}");
    assert!(!snaps.contains("Active"), "an active snapshot left after import:\n{snaps}");

    let out = c.ctr(&[
        "run",
        "--snapshotter",
        "strata",
        "--rm",
        &image,
        "run1",
        "/bin/sh",
        "-c",
        "echo hello-from-strata; id -u; test -d /usr && echo has-usr",
    ]);
    assert_eq!(
        out.lines().map(str::trim).collect::<Vec<_>>(),
        ["hello-from-strata", "0", "has-usr"],
        "{out}"
    );

    // The rootfs containerd mounts from strata's snapshots is umoci's, entry by entry.
    let (seen, fstype) = c.capture_top_view();
    assert_eq!(fstype, "overlay");
    let (_t, reference) = common::umoci_unpack(&common::fixtures().join("oci"), "many-2");
    let want = common::capture_reference(&reference);
    assert_eq!(seen, want, "rootfs through containerd differs from umoci unpack");
    assert!(common::mounts_under(c.path()).is_empty(), "{:?}", common::mounts_under(c.path()));
    // ctr run --rm removed its snapshot: the layers are left (and the view, unless containerd's
    // gc took it already: ctr's lease on it ends when ctr exits).
    let snaps = c.ctr(&["snapshots", "--snapshotter", "strata", "ls"]);
    let kinds: Vec<&str> = snaps.lines().skip(1).filter_map(|l| l.split_whitespace().last()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "Committed").count(), 3, "snapshots left:\n{snaps}");
    assert!(kinds.iter().all(|k| *k == "Committed" || *k == "View"), "snapshots left:\n{snaps}");
    // Its log goes to a file here: plain text, no colour codes.
    let log = c.log("snapshotter.log");
    assert!(!log.is_empty() && !log.contains('\x1b'), "colour codes in the snapshotter's log:\n{log}");
}

/// A 200-layer image (busybox and 199 layers over it, each adding a file): containerd performs
/// the mount of 200 lowers itself, from one option string, and the container sees every layer.
#[test]
fn ctr_runs_a_200_layer_image_on_strata() {
    if !common::privileged("ctr_runs_a_200_layer_image_on_strata") {
        return;
    }
    let c = Containerd::start();
    let layout = c.path().join("layout");
    common::copy_layout(&common::fixtures().join("oci"), &layout);
    let out = Command::new("python3")
        .arg(common::repo().join("scripts/fixtures/mklayers.py"))
        .arg("--layout")
        .arg(&layout)
        .args(["--base", "busybox", "--tag", "many-199", "--layers", "199"])
        .output()
        .expect("run mklayers.py");
    assert!(out.status.success(), "mklayers: {}", String::from_utf8_lossy(&out.stderr));
    let image = c.import_from(&layout, "many-199");
    let snaps = c.ctr(&["snapshots", "--snapshotter", "strata", "ls"]);
    assert!(snaps.lines().count() > 200, "one committed snapshot per layer:\n{snaps}");
    let out = c.ctr(&[
        "run",
        "--snapshotter",
        "strata",
        "--rm",
        &image,
        "big",
        "/bin/sh",
        "-c",
        // The pause at the end: ctr 1.6's `run --rm` can end before the shim has copied the
        // last write of a process that exits at once (seen once in CI: "ran-200" missing).
        "ls -d /layer-* | wc -l; cat /top; echo ran-200; sleep 0.5",
    ]);
    // Every layer's file, and the top layer's /top over the 198 below it.
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["199", "199", "ran-200"], "{out}");
}

#[test]
fn containers_survive_kill_9_of_the_snapshotter() {
    if !common::privileged("containers_survive_kill_9_of_the_snapshotter") {
        return;
    }
    let mut c = Containerd::start();
    let image = c.import("many-2");
    c.ctr(&[
        "containers",
        "create",
        "--snapshotter",
        "strata",
        &image,
        "keep",
        "--",
        "/bin/sh",
        "-c",
        "echo still-runs",
    ]);
    let before = c.ctr(&["snapshots", "--snapshotter", "strata", "ls"]);
    c.crash_and_restart_snapshotter();
    // containerd redials the proxy plugin with a backoff (at most 3 s apart in 1.6).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.ctr_raw(&["snapshots", "--snapshotter", "strata", "ls"]).status.success() {
        assert!(Instant::now() < deadline, "containerd did not reconnect to the restarted snapshotter");
        std::thread::sleep(Duration::from_millis(200));
    }
    // containerd's view and strata's agree after the restart.
    assert_eq!(c.ctr(&["snapshots", "--snapshotter", "strata", "ls"]), before);
    // The container's snapshot still mounts and the container runs.
    // (attached: ctr deletes the task when it exits)
    let out = c.ctr(&["task", "start", "keep"]);
    assert_eq!(out.trim(), "still-runs");
    c.ctr(&["containers", "delete", "keep"]);
    let out =
        c.ctr(&["run", "--snapshotter", "strata", "--rm", &image, "after", "/bin/sh", "-c", "echo new-runs"]);
    assert_eq!(out.trim(), "new-runs");
}

/// Under `snapshots/`: (snapshots whose tree is a link to a shared layer, those with a tree
/// of their own).
fn snapshot_trees(state: &Path) -> (usize, usize) {
    let (mut linked, mut own) = (0, 0);
    for e in fs::read_dir(state.join("snapshots")).expect("snapshots dir").flatten() {
        match fs::symlink_metadata(e.path().join("fs")) {
            Ok(m) if m.file_type().is_symlink() => linked += 1,
            Ok(_) => own += 1,
            Err(_) => {}
        }
    }
    (linked, own)
}

#[test]
fn containerd_pull_reuses_layers_strata_already_holds() {
    if !common::privileged("containerd_pull_reuses_layers_strata_already_holds") {
        return;
    }
    let registry = common::registry::Registry::start(common::registry::RegistryOpts::default());
    let layout = common::fixtures().join("oci");
    registry.push(&format!("oci:{}:many-2", layout.display()), "many:2", false);
    let c = Containerd::start();
    let state = c.path().join("strata");
    // The CLI imports the image into the store the daemon serves (while it serves it).
    let out = Command::new(common::STRATA)
        .arg("--root")
        .arg(&state)
        .args(["image", "import", &format!("{}:many-2", layout.display()), "--name", "many-2"])
        .output()
        .expect("run strata");
    assert!(out.status.success(), "strata image import: {}", String::from_utf8_lossy(&out.stderr));
    let held = snapshot_trees(&state);
    // containerd's pull with unpack through its Go client (the unpacker CRI uses, which names
    // each target chain; `ctr images pull` unpacks without those labels).
    let image = format!("{}/many:2", registry.addr);
    c.pull_with_go(&image, &[]);
    let log = c.log("snapshotter.log");
    assert_eq!(log.matches("layer already held").count(), 3, "every layer reused:\n{log}");
    let (linked, own) = snapshot_trees(&state);
    assert_eq!(own, held.1, "a layer was unpacked again (a snapshot with a tree of its own)");
    assert!(linked >= held.0, "{linked} linked trees, {} before", held.0);
    let snaps = c.ctr(&["snapshots", "--snapshotter", "strata", "ls"]);
    assert_eq!(snaps.lines().filter(|l| l.trim_end().ends_with("Committed")).count(), 3, "{snaps}");
    // And the image runs, on the CLI's layers.
    let out =
        c.ctr(&["run", "--snapshotter", "strata", "--rm", &image, "reuse", "/bin/sh", "-c", "echo reused"]);
    assert_eq!(out.trim(), "reused");
}

/// The entries under `snapshots/`: one directory per snapshot strata made.
fn snapshot_dirs(state: &Path) -> std::collections::BTreeSet<std::ffi::OsString> {
    fs::read_dir(state.join("snapshots")).expect("snapshots dir").flatten().map(|e| e.file_name()).collect()
}

/// `ctr content ls` of a namespace: (digest, labels) of each blob.
fn content(c: &Containerd, ns: &str) -> Vec<(String, String)> {
    c.ctr_in(ns, &["content", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Some((w.first()?.to_string(), w.last()?.to_string()))
        })
        .collect()
}

/// A layer containerd applied itself in one namespace serves another namespace's pull of the
/// same image: strata answers each of the second namespace's Prepares `already exists` (the
/// namespaces share the backend's snapshots), so no layer is fetched, unpacked or stored again,
/// and the first namespace's removal of the image leaves the second's working.
#[test]
fn containerd_reuses_layers_another_namespace_applied() {
    if !common::privileged("containerd_reuses_layers_another_namespace_applied") {
        return;
    }
    let registry = common::registry::Registry::start(common::registry::RegistryOpts::default());
    registry.push(&format!("oci:{}:many-2", common::fixtures().join("oci").display()), "many:2", false);
    let image = format!("{}/many:2", registry.addr);
    let c = Containerd::start();
    let state = c.path().join("strata");
    c.pull_with_go_in("ns-a", &image, &[]);
    assert_eq!(c.log("snapshotter.log").matches("layer already held").count(), 0, "nothing held before");
    // containerd applied the three layers into snapshots of their own.
    assert_eq!(snapshot_trees(&state), (0, 3));
    let dirs = snapshot_dirs(&state);
    let unpacked = |ns: &str| {
        content(&c, ns).into_iter().filter(|(_, l)| l.contains("containerd.io/uncompressed=")).count()
    };
    assert_eq!(unpacked("ns-a"), 3, "ns-a's layer blobs:\n{:?}", content(&c, "ns-a"));

    c.pull_with_go_in("ns-b", &image, &[]);
    let log = c.log("snapshotter.log");
    assert_eq!(log.matches("committed by another namespace").count(), 3, "every layer reused:\n{log}");
    assert_eq!(snapshot_dirs(&state), dirs, "a snapshot was made for ns-b's pull");
    // No layer fetched for ns-b: only its manifest and config are in its content.
    let b = content(&c, "ns-b");
    assert_eq!(b.len(), 2, "ns-b's blobs: {b:?}");
    assert_eq!(unpacked("ns-b"), 0, "a layer was fetched for ns-b: {b:?}");
    let snaps = c.ctr_in("ns-b", &["snapshots", "--snapshotter", "strata", "ls"]);
    assert_eq!(snaps.lines().filter(|l| l.trim_end().ends_with("Committed")).count(), 3, "{snaps}");

    // ns-a's image and its gc go; ns-b's snapshots are the same ones, and stay.
    c.ctr_in("ns-a", &["images", "rm", "--sync", &image]);
    assert!(c.ctr_in("ns-a", &["snapshots", "--snapshotter", "strata", "ls"]).lines().count() <= 1);
    assert_eq!(snapshot_trees(&state), (0, 3));
    let out = c.ctr_in(
        "ns-b",
        &[
            "run",
            "--snapshotter",
            "strata",
            "--rm",
            &image,
            "b1",
            "/bin/sh",
            "-c",
            "test -d /usr && echo in-b",
        ],
    );
    assert_eq!(out.trim(), "in-b");
}

#[test]
fn ctr_runs_on_the_fuse_backend() {
    if !common::privileged("ctr_runs_on_the_fuse_backend") {
        return;
    }
    let c = Containerd::start_with("fuse");
    // Layers are applied through strata-fuse mounts (fuse3.strata-fuse, run by mount.fuse3).
    let image = c.import("many-2");
    let out = c.ctr(&[
        "run",
        "--snapshotter",
        "strata",
        "--rm",
        &image,
        "fuse1",
        "/bin/sh",
        "-c",
        "echo written > /new && cat /new && grep -c . /proc/self/mounts >/dev/null && echo done",
    ]);
    assert_eq!(out.lines().map(str::trim).collect::<Vec<_>>(), ["written", "done"], "{out}");
    let (seen, fstype) = c.capture_top_view();
    assert_eq!(fstype, "fuse.strata-fuse", "the view is a strata-fuse mount");
    let (_t, reference) = common::umoci_unpack(&common::fixtures().join("oci"), "many-2");
    assert_eq!(seen, common::capture_reference(&reference), "rootfs through strata-fuse differs from umoci");
}

/// Bytes in blocks under `dir` (not following links; hard links once), as the snapshot core
/// measures a snapshot's usage.
fn disk_usage(dir: &Path) -> u64 {
    strata::snapshot::measure(dir).expect("measure disk usage").size
}

#[test]
fn containerd_garbage_collection_returns_the_disk() {
    if !common::privileged("containerd_garbage_collection_returns_the_disk") {
        return;
    }
    let c = Containerd::start();
    let snaps_dir = c.path().join("strata/snapshots");
    let empty = disk_usage(&snaps_dir);
    let image = c.import("many-2");
    let full = disk_usage(&snaps_dir);
    assert!(full > empty + 1024 * 1024, "the unpacked image takes space: {empty} -> {full}");
    // Removing the image and its content (containerd 1.6 keeps the blobs `ctr images import`
    // wrote, and they reference the snapshots) lets containerd's gc remove the snapshots
    // (Remove, then Cleanup).
    c.ctr(&["images", "rm", "--sync", &image]);
    let blobs = c.ctr(&["content", "ls", "-q"]);
    let mut args = vec!["content", "rm"];
    args.extend(blobs.lines().map(str::trim).filter(|l| !l.is_empty()));
    c.ctr(&args);
    // Removal is asynchronous (Remove moves a snapshot's directory to the trash, Cleanup empties
    // it), so the directories may outlive the rows briefly; both must be gone before the deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ls = c.ctr(&["snapshots", "--snapshotter", "strata", "ls"]);
        let entries: Vec<_> =
            fs::read_dir(&snaps_dir).expect("snapshots dir").flatten().map(|e| e.file_name()).collect();
        if ls.lines().count() <= 1 && entries.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after gc: snapshots:\n{ls}\ndirectories under snapshots/: {entries:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(disk_usage(&snaps_dir), empty, "disk returned");
}
