//! Rootless containerd with strata-snapshotter (docs/rootless.md): containerd in rootlesskit's
//! user and mount namespaces, started as nerdctl's containerd-rootless.sh starts it (that script
//! is not packaged in Debian; the invocation is written out here), with strata as its proxy
//! snapshotter; strata-snapshotter started in those namespaces with `nsenter -U
//! --preserve-credentials -m -t PID` (as the fuse-overlayfs snapshotter is), or by the user as
//! such (it then joins rootless strata's own namespace). Each test is a user of its own
//! (common::user); afterwards nothing of it runs, its namespaces and their mounts are gone and
//! the user is removed.
//!
//! Containers run too: runc inside rootlesskit, without cgroups (`ctr run --cgroup ""`, and
//! `--cpu-shares 0`: ctr asks for 1024 shares by default, which needs a cgroup), since nothing
//! is delegated to the user on these hybrid-cgroup machines.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_test_support::tree::{assert_trees_eq, Kind};

use crate::common::tarw::{tar, E};
use crate::common::user::TestUser;
use crate::common::{self, privileged};
use crate::containerd_suite::{check_suite_output, snapshotter_bin, suite_binary};

/// How strata-snapshotter is started.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// In rootlesskit's user and mount namespaces, through nsenter.
    Nsenter,
    /// By the user as such, outside any namespace.
    AsUser,
}

/// containerd in rootlesskit, strata-snapshotter beside it, as one test user.
struct RootlessContainerd {
    rootlesskit: Option<Child>,
    snapshotter: Option<Child>,
    /// rootlesskit's child: the process whose namespaces containerd runs in.
    child: i32,
    /// Last: dropped (its processes killed, the user removed) after the daemons are stopped.
    user: TestUser,
}

impl RootlessContainerd {
    fn start(how: Start) -> RootlessContainerd {
        let user = TestUser::new(true);
        let base = user.base().to_path_buf();
        let data = user.home.join(".local/share/containerd");
        let state = user.runtime.join("containerd");
        // Paths as containerd-rootless.sh sets them, opt's too (its default, /opt/containerd,
        // is not the user's); the proxy plugin at strata-snapshotter's rootless default.
        let config = format!(
            "version = 2\nroot = \"{data}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{state}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{state}/containerd.sock.ttrpc\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{data}/opt\"\n\
             [proxy_plugins.strata]\n  type = \"snapshot\"\n  address = \"{snap}\"\n",
            data = data.display(),
            state = state.display(),
            snap = user.runtime.join("strata/snapshotter.sock").display(),
        );
        let config_path = base.join("containerd.toml");
        fs::write(&config_path, config).expect("containerd config");
        let log = fs::File::create(base.join("rootlesskit.log")).expect("rootlesskit log");
        // `rm -f /run/containerd`: in the copied-up /run that is a link to the host's directory
        // (root's containerd), which the user cannot write; shims put their sockets there.
        let script = format!("rm -f /run/containerd; exec containerd --config {}", config_path.display());
        let state_dir = user.runtime.join("rootlesskit-containerd");
        let rootlesskit = user
            .command(
                "rootlesskit",
                &["--net=host", "--copy-up=/run", &format!("--state-dir={}", state_dir.display())],
            )
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start rootlesskit (scripts/setup.sh installs it)");
        let mut c = RootlessContainerd { rootlesskit: Some(rootlesskit), snapshotter: None, child: 0, user };
        let deadline = Instant::now() + Duration::from_secs(30);
        c.child = loop {
            if let Some(pid) =
                fs::read_to_string(state_dir.join("child_pid")).ok().and_then(|t| t.trim().parse().ok())
            {
                break pid;
            }
            c.assert_running("rootlesskit did not write child_pid");
            assert!(Instant::now() < deadline, "rootlesskit did not start:\n{}", c.log("rootlesskit.log"));
            std::thread::sleep(Duration::from_millis(50));
        };
        while !c.ctr_cmd(&["version"]).output().expect("run ctr").status.success() {
            c.assert_running("containerd did not come up");
            assert!(Instant::now() < deadline, "containerd did not come up:\n{}", c.log("rootlesskit.log"));
            std::thread::sleep(Duration::from_millis(100));
        }
        c.start_snapshotter(how);
        c
    }

    fn start_snapshotter(&mut self, how: Start) {
        let bin = snapshotter_bin();
        let bin = bin.to_str().expect("utf-8 path");
        let log = fs::File::create(self.user.base().join("snapshotter.log")).expect("snapshotter log");
        // Defaults only: the store and the socket are where rootless mode puts them.
        let mut cmd = match how {
            Start::Nsenter => self.ns_cmd(bin, &[]),
            Start::AsUser => self.user.command(bin, &[]),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start strata-snapshotter");
        self.snapshotter = Some(child);
        let sock = self.user.runtime.join("strata/snapshotter.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            let exited = self.snapshotter.as_mut().and_then(|s| s.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "strata-snapshotter exited ({exited:?}):\n{}",
                self.log("snapshotter.log")
            );
            assert!(
                Instant::now() < deadline,
                "strata-snapshotter did not listen:\n{}",
                self.log("snapshotter.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_running(&mut self, what: &str) {
        let exited = self.rootlesskit.as_mut().and_then(|r| r.try_wait().ok().flatten());
        assert!(
            exited.is_none(),
            "{what}: rootlesskit exited ({exited:?}):\n{}",
            self.log("rootlesskit.log")
        );
    }

    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.user.base().join(name)).unwrap_or_default()
    }

    /// `PROGRAM ARGS` as the user in containerd's user and mount namespaces.
    fn ns_cmd(&self, program: &str, args: &[&str]) -> Command {
        let pid = self.child.to_string();
        let mut c =
            self.user.command("nsenter", &["-U", "--preserve-credentials", "-m", "-t", &pid, program]);
        c.args(args);
        c
    }

    fn ctr_cmd(&self, args: &[&str]) -> Command {
        let sock = self.user.runtime.join("containerd/containerd.sock");
        let mut c = self.ns_cmd("ctr", &["-a", sock.to_str().expect("utf-8 path"), "-n", "test"]);
        c.args(args).stdin(Stdio::null());
        c
    }

    /// `ctr ARGS` in the namespaces, which must succeed; its stdout.
    fn ctr(&self, args: &[&str]) -> String {
        let out = self.ctr_cmd(args).output().expect("run ctr");
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}\n{}\n--- snapshotter log:\n{}\n--- rootlesskit/containerd log (tail):\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.log("snapshotter.log"),
            tail(&self.log("rootlesskit.log"), 30),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sh -c SCRIPT` in the namespaces, which must succeed; its stdout.
    fn sh(&self, script: &str) -> String {
        let out = self.ns_cmd("sh", &["-c", script]).output().expect("run sh");
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Import `archive` (an oci-archive) as image `name` through strata.
    fn import(&self, archive: &Path, name: &str) {
        let a = archive.to_str().expect("utf-8 path");
        self.ctr(&["images", "import", "--snapshotter", "strata", "--index-name", name, a]);
    }

    /// `ctr snapshots ls` of strata's snapshots: (key, kind) rows, and the key of the one
    /// committed snapshot no other stands on (the top of the one image chain).
    fn top_snapshot(&self) -> (Vec<(String, String)>, String) {
        let ls = self.ctr(&["snapshots", "--snapshotter", "strata", "ls"]);
        let rows: Vec<Vec<&str>> = ls.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
        let tops: Vec<&str> = rows
            .iter()
            .filter(|r| r.last() == Some(&"Committed"))
            .map(|r| r[0])
            .filter(|k| !rows.iter().any(|r| r.len() == 3 && r[1] == *k))
            .collect();
        assert_eq!(tops.len(), 1, "one image chain expected:\n{ls}");
        let kinds = rows.iter().map(|r| (r[0].to_string(), r.last().unwrap_or(&"").to_string())).collect();
        (kinds, tops[0].to_string())
    }

    /// Stop strata-snapshotter, then rootlesskit (which stops containerd), each with SIGTERM, then
    /// SIGKILL after 10 s. The pids that ran: (rootlesskit, its child, containerd, snapshotter).
    fn stop(&mut self) -> Vec<i32> {
        let mut pids = vec![self.child];
        pids.extend(children(self.child));
        for mut c in [self.snapshotter.take(), self.rootlesskit.take()].into_iter().flatten() {
            pids.push(c.id() as i32);
            common::stop_child(&mut c);
        }
        pids
    }

    /// Stop everything, then check that nothing is left: none of `pids` (and of what ran) alive,
    /// no process of the user, no process in containerd's mount namespace, no mount of the
    /// user's on the host; then remove the user and check it is gone.
    fn stop_and_check_gone(mut self) {
        let mnt_ns =
            fs::metadata(format!("/proc/{}/ns/mnt", self.child)).expect("containerd's mount ns").ino();
        let user_ns =
            fs::metadata(format!("/proc/{}/ns/user", self.child)).expect("containerd's user ns").ino();
        // Host uids the namespace maps: a process in it runs as one of them.
        let uid_map = fs::read_to_string(format!("/proc/{}/uid_map", self.child)).expect("uid_map");
        let ranges: Vec<(u32, u32)> = uid_map
            .lines()
            .filter_map(|l| {
                let f: Vec<u32> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                (f.len() == 3).then(|| (f[1], f[2]))
            })
            .collect();
        let mapped = |uid: u32| ranges.iter().any(|(start, n)| uid >= *start && uid - start < *n);
        let pids = self.stop();
        // Rootless strata's own namespace, when the snapshotter started one.
        let pause = self.user.pause_pid();
        self.user.stop_pause();
        let left = self.user.others_settle(&[]);
        assert!(left.is_empty(), "the user's processes left: {left:?}");
        for pid in pids.iter().chain(pause.iter()) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process {pid} still there");
        }
        // (A namespace's inode number may be reused once it is gone: only a process running as
        // one of the namespace's ids counts.)
        for e in fs::read_dir("/proc").expect("/proc").flatten() {
            let ns = |n: &str| fs::metadata(e.path().join("ns").join(n)).map(|m| m.ino()).ok();
            let owner = fs::metadata(e.path()).map(|m| m.uid());
            assert!(
                !owner.is_ok_and(mapped) || (ns("mnt") != Some(mnt_ns) && ns("user") != Some(user_ns)),
                "process {:?} is still in containerd's namespaces",
                e.file_name()
            );
        }
        let base = self.user.base().to_path_buf();
        let mounts = common::mounts_under(&base);
        assert!(mounts.is_empty(), "mounts left on the host: {mounts:?}");
        let name = self.user.name.clone();
        drop(self);
        let id = Command::new("id").arg(&name).output().expect("run id");
        assert!(!id.status.success(), "user {name} not removed");
        assert!(!base.exists(), "{} not removed", base.display());
    }
}

impl Drop for RootlessContainerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Pids whose parent is `pid`.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...: comm may hold spaces, so read after its closing parenthesis.
        let ppid =
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Host id of namespace id `id` under `/proc/PID/{uid,gid}_map` text.
fn to_host(map: &str, id: u32) -> u32 {
    map.lines()
        .filter_map(|l| {
            let f: Vec<u32> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            (f.len() == 3).then(|| (f[0], f[1], f[2]))
        })
        .find(|(inside, _, count)| id >= *inside && id - inside < *count)
        .map(|(inside, outside, _)| outside + (id - inside))
        .unwrap_or_else(|| panic!("id {id} is not mapped: {map}"))
}

/// An OCI layout at `dir` with image `tag`: busybox, then a layer of files with owners other
/// than root's, then one that deletes a file (`.wh.`) and makes a directory opaque
/// (`.wh..wh..opq`).
fn make_image(dir: &Path, tag: &str) {
    use std::io::Read;
    let fixtures = common::fixtures().join("oci");
    let m = common::manifest_of(&fixtures, "busybox");
    let digest = m["layers"][0]["digest"].as_str().expect("busybox layer");
    let gz = fs::File::open(common::blob(&fixtures, digest)).expect("busybox layer blob");
    let mut busybox = Vec::new();
    flate2::read::MultiGzDecoder::new(gz).read_to_end(&mut busybox).expect("gunzip busybox layer");
    let a = tar([
        E::dir("data/"),
        E::file("data/keep", "kept\n").owner(1000, 1000).mode(0o640),
        E::file("data/gone", "deleted above\n"),
        E::dir("data/opq/").owner(2, 3),
        E::file("data/opq/old", "hidden above\n"),
    ]);
    let b = tar([
        E::dir("data/"),
        E::file("data/.wh.gone", ""),
        E::dir("data/opq/").owner(2, 3),
        E::file("data/opq/.wh..wh..opq", ""),
        E::file("data/opq/new", "new\n").owner(65534, 65534),
    ]);
    common::layout::layout_with_layers(dir, tag, &[busybox, a, b]);
}

/// `make_image`'s image as an oci-archive in the user's home (the user's to read); also the
/// layout it was made from.
fn image_archive(user: &TestUser, tag: &str) -> (PathBuf, PathBuf) {
    let layout = user.base().join("layout");
    make_image(&layout, tag);
    let archive = user.home.join(format!("{tag}.tar"));
    let out = Command::new("skopeo")
        .arg("copy")
        .arg("-q")
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("oci-archive:{}:{tag}", archive.display()))
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "skopeo copy {tag}: {}", String::from_utf8_lossy(&out.stderr));
    user.chown_tree(&archive);
    (archive, layout)
}

/// The value of option `key=` in a mount command's `-o` list.
fn option<'a>(cmd: &'a str, key: &str) -> Option<&'a str> {
    let opts = cmd.split_whitespace().skip_while(|w| *w != "-o").nth(1)?;
    opts.split(',').find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
}

/// containerd's snapshotter conformance suite, run as the user inside rootlesskit's namespaces
/// (`nsenter`), where each case's strata-snapshotter runs rootless (uid 0 of the namespace).
#[test]
fn conformance_suite_passes_rootless() {
    if !privileged("conformance_suite_passes_rootless") {
        return;
    }
    let bin = suite_binary();
    let c = RootlessContainerd::start(Start::Nsenter);
    // The cases keep their daemons' state under TMPDIR: a short path, since a unix socket's name
    // is at most 108 bytes; the user's own.
    let tmp = tempfile::Builder::new().prefix("strl-suite-").tempdir_in("/tmp").expect("tempdir");
    c.user.chown_tree(tmp.path());
    let started = Instant::now();
    let out = c
        .ns_cmd(bin.to_str().expect("utf-8 path"), &["-test.v", "-test.count=1"])
        .env("TMPDIR", tmp.path())
        .env("STRATA_SNAPSHOTTER", snapshotter_bin())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run the suite binary in rootlesskit's namespaces");
    let passed = check_suite_output(&out, started);
    // Every case's daemon said it served rootless; none served as root.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let serving: Vec<&str> =
        stderr.lines().filter(|l| l.contains("serving containerd snapshots API")).collect();
    assert!(
        serving.len() >= passed.len() - 1,
        "{} daemons for {} cases:\n{stderr}",
        serving.len(),
        passed.len()
    );
    assert!(
        serving.iter().all(|l| l.contains("rootless=true")),
        "a daemon not in rootless mode:\n{serving:#?}"
    );
    let left: Vec<_> = fs::read_dir(tmp.path()).expect("tmp").flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "the suite left {left:?}");
    c.stop_and_check_gone();
}

/// `ctr` in rootless containerd's namespaces: an image imported and unpacked through
/// strata-snapshotter (started with nsenter, with its rootless defaults), a snapshot prepared
/// and mounted by the mount command containerd takes from strata (overlay with userxattr), its
/// merged tree that of `umoci unpack` with owners shifted into the user's range, a change made
/// in it written in the rootless format (`user.overlay.opaque`, 0:0 whiteouts), a container run.
#[test]
fn ctr_imports_mounts_and_runs_on_rootless_strata() {
    if !privileged("ctr_imports_mounts_and_runs_on_rootless_strata") {
        return;
    }
    let c = RootlessContainerd::start(Start::Nsenter);
    let log = c.log("snapshotter.log");
    assert!(log.contains("rootless=true") && !log.contains("joined"), "{log}");
    let store = c.user.home.join(".local/share/strata");
    assert!(store.join("rootless").is_file(), "the rootless store at its default place: {log}");
    let (archive, layout) = image_archive(&c.user, "rl");
    c.import(&archive, "strata.test/rl:1");
    let (rows, top) = c.top_snapshot();
    assert_eq!(rows.len(), 3, "one committed snapshot per layer: {rows:?}");
    assert!(rows.iter().all(|(_, k)| k == "Committed"), "{rows:?}");

    // Layers as containerd wrote them through strata's overlay mounts: the rootless format.
    let mnt = c.user.home.join("mnt");
    c.sh(&format!("mkdir {}", mnt.display()));
    let m = mnt.to_str().expect("utf-8 path");
    let cmd = c.ctr(&["snapshots", "--snapshotter", "strata", "prepare", "-t", m, "rw-1", &top]);
    assert!(cmd.starts_with("mount -t overlay overlay "), "{cmd}");
    assert!(cmd.split_whitespace().last().is_some_and(|o| o.split(',').any(|o| o == "userxattr")), "{cmd}");
    let lowers: Vec<PathBuf> =
        option(&cmd, "lowerdir").expect("lowerdir").split(':').map(PathBuf::from).collect();
    assert_eq!(lowers.len(), 3, "{cmd}");
    assert!(lowers.iter().all(|l| l.starts_with(&store)), "lowers in the store: {cmd}");
    // In a user namespace containerd applies a layer through a mount of the overlay strata
    // describes (it cannot mknod whiteouts itself), so the kernel writes the deletions: 0:0
    // whiteouts, one for each entry an opaque directory hides, owned by the user.
    let top_layer = &lowers[0];
    for gone in ["data/gone", "data/opq/old"] {
        let md = fs::symlink_metadata(top_layer.join(gone)).expect("whiteout in the top layer");
        assert!(
            md.file_type().is_char_device() && md.rdev() == 0 && md.uid() == c.user.uid,
            "{gone}: {md:?}"
        );
    }

    // Mounted in containerd's mount namespace only.
    c.sh(cmd.trim());
    let ns_mounts = fs::read_to_string(format!("/proc/{}/mountinfo", c.child)).expect("namespace mountinfo");
    let mounted = kernel_overlay::mountinfo::parse(&ns_mounts).into_iter().find(|i| i.mount_point == mnt);
    let mounted = mounted.expect("the snapshot is mounted in containerd's namespace");
    assert_eq!(mounted.fs_type, "overlay");
    assert!(mounted.super_options.split(',').any(|o| o == "userxattr"), "{}", mounted.super_options);
    assert!(common::mounts_under(c.user.base()).is_empty(), "not mounted on the host");

    // The merged tree, seen from the host: umoci's, owners shifted by the user's mapping.
    let (_t, reference) = common::umoci_unpack(&layout, "rl");
    let mut want = common::capture_reference(&reference);
    let uid_map = fs::read_to_string(format!("/proc/{}/uid_map", c.child)).expect("uid_map");
    let gid_map = fs::read_to_string(format!("/proc/{}/gid_map", c.child)).expect("gid_map");
    let mut devices = 0;
    want.retain(|_, e| {
        if matches!(e.kind, Kind::Char | Kind::Block) {
            devices += 1;
            return false;
        }
        e.uid = to_host(&uid_map, e.uid);
        e.gid = to_host(&gid_map, e.gid);
        true
    });
    let seen = common::capture(&PathBuf::from(format!("/proc/{}/root{}", c.child, mnt.display())));
    assert!(seen.entries.len() > 100, "a whole rootfs: {}", seen.entries.len());
    let keep = &seen.entries[Path::new("data/keep")];
    assert_eq!((keep.uid, keep.mode), (to_host(&uid_map, 1000), 0o640), "{keep:?}");
    assert!(!seen.entries.contains_key(Path::new("data/gone")), "whiteout applied");
    assert!(!seen.entries.contains_key(Path::new("data/opq/old")), "opaque directory applied");
    assert_trees_eq(&want, &seen, "merged view through rootless containerd vs umoci unpack, owners shifted");
    eprintln!("{} entries compared, {devices} device nodes left out", seen.entries.len());

    // A change made in the mount: a lower file deleted, a lower directory replaced.
    c.sh(&format!("cd {m} && rm data/keep && rm -r data/opq && mkdir data/opq && echo x > data/opq/fresh"));
    let upper = PathBuf::from(option(&cmd, "upperdir").expect("upperdir"));
    let md = fs::symlink_metadata(upper.join("data/keep")).expect("whiteout in the upper dir");
    assert!(md.file_type().is_char_device() && md.rdev() == 0 && md.uid() == c.user.uid, "{md:?}");
    let xattrs = strata_test_support::tree::read_xattrs(&upper.join("data/opq"), |_| true).expect("xattrs");
    assert_eq!(xattrs.get("user.overlay.opaque").map(Vec::as_slice), Some(&b"y"[..]), "{xattrs:?}");
    assert!(!xattrs.keys().any(|k| k.starts_with("trusted.")), "{xattrs:?}");
    c.sh(&format!("umount {m}"));
    c.ctr(&["snapshots", "--snapshotter", "strata", "rm", "rw-1"]);

    // A container on it, through containerd's runc shim inside rootlesskit.
    let out = c.ctr(&[
        "run",
        "--cgroup",
        "",
        "--cpu-shares",
        "0",
        "--snapshotter",
        "strata",
        "--rm",
        "strata.test/rl:1",
        "rl-run",
        "/bin/sh",
        "-c",
        "echo $(id -u) $(stat -c %u:%g:%a /data/keep) $(ls /data/opq); test -e /data/gone || echo gone",
    ]);
    assert_eq!(out.lines().map(str::trim).collect::<Vec<_>>(), ["0 1000:1000:640 new", "gone"], "{out}");
    let (rows, _) = c.top_snapshot();
    assert_eq!(rows.len(), 3, "ctr run --rm removed its snapshot: {rows:?}");
    c.stop_and_check_gone();
}

/// strata-snapshotter as a user refuses to start, saying why, without a runtime directory, and
/// when the kernel refuses overlay in the user namespace (the overlay probe's kept answer says
/// so here: this kernel mounts it), rather than leave containerd's first mount to fail.
#[test]
fn snapshotter_refusals_say_why() {
    if !privileged("snapshotter_refusals_say_why") {
        return;
    }
    let user = TestUser::new(true);
    let bin = snapshotter_bin();
    let bin = bin.to_str().expect("utf-8 path");
    let out = user.command(bin, &[]).env_remove("XDG_RUNTIME_DIR").output().expect("run strata-snapshotter");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("XDG_RUNTIME_DIR is not set"), "{err}");
    assert!(user.pause_pid().is_none(), "nothing started");

    let run = user.runtime.join("strata");
    fs::create_dir(&run).expect("mkdir");
    fs::write(run.join("overlay-probe"), "fuse: overlay refused for this test\n").expect("probe answer");
    user.chown_tree(&run);
    let out = user.command(bin, &[]).output().expect("run strata-snapshotter");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(
            "kernel overlay cannot be mounted in this user namespace (overlay refused for this test)"
        ) && err.contains("--backend fuse"),
        "{err}"
    );
    assert!(!run.join("snapshotter.sock").exists(), "no socket");
}

/// strata-snapshotter started by the user as such (no nsenter) joins rootless strata's own
/// namespace, whose mappings are rootlesskit's: containerd, in rootlesskit's, sees the owners
/// its layers carry.
#[test]
fn snapshotter_started_as_the_user_joins_strata_namespace() {
    if !privileged("snapshotter_started_as_the_user_joins_strata_namespace") {
        return;
    }
    let c = RootlessContainerd::start(Start::AsUser);
    let log = c.log("snapshotter.log");
    assert!(
        log.contains("joined rootless strata's user namespace") && log.contains("rootless=true"),
        "{log}"
    );
    let pause = c.user.pause_pid().expect("the pause process it started");
    let snap = c.snapshotter.as_ref().expect("snapshotter").id();
    let ns = |pid: u32, n: &str| fs::metadata(format!("/proc/{pid}/ns/{n}")).expect("ns").ino();
    assert_eq!(ns(snap, "user"), ns(pause as u32, "user"), "in strata's namespace");
    assert_ne!(ns(snap, "user"), ns(c.child as u32, "user"), "not containerd's");
    let map = |pid: u32| fs::read_to_string(format!("/proc/{pid}/uid_map")).expect("uid_map");
    assert_eq!(map(snap), map(c.child as u32), "the same mappings as rootlesskit's");
    let (archive, _) = image_archive(&c.user, "rl");
    c.import(&archive, "strata.test/rl:1");
    let out = c.ctr(&[
        "run",
        "--cgroup",
        "",
        "--cpu-shares",
        "0",
        "--snapshotter",
        "strata",
        "--rm",
        "strata.test/rl:1",
        "rl-user",
        "/bin/sh",
        "-c",
        "stat -c %u:%g /data/keep /data/opq/new; ls /data/opq",
    ]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["1000:1000", "65534:65534", "new"], "{out}");
    c.stop_and_check_gone();
}
