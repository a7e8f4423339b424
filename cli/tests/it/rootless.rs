//! Rootless mode: strata run by an ordinary user (made for each test, removed after it), in the
//! user namespace its pause process holds (docs/rootless.md).

use crate::common::privileged;
use crate::common::user::TestUser;

/// Each id map line as (inside, outside, count).
fn id_map(text: &str) -> Vec<(u32, u32, u32)> {
    text.lines()
        .map(|l| {
            let f: Vec<u32> = l.split_whitespace().map(|x| x.parse().expect("number")).collect();
            (f[0], f[1], f[2])
        })
        .collect()
}

/// The user's subordinate range in `file`.
fn subid(file: &str, user: &str) -> (u32, u32) {
    let text = std::fs::read_to_string(file).expect("read subid file");
    let line = text.lines().find(|l| l.starts_with(&format!("{user}:"))).expect("the user's range");
    let f: Vec<u32> = line.split(':').skip(1).map(|x| x.parse().expect("number")).collect();
    (f[0], f[1])
}

/// `strata unshare` runs in one namespace per user: the user's uid as 0, its subordinate range
/// from 1; the second command joins the first one's namespace (same namespace, its mounts seen).
#[test]
fn unshare_joins_one_namespace_per_user() {
    if !privileged("unshare_joins_one_namespace_per_user") {
        return;
    }
    let user = TestUser::new(true);
    let (start, count) = subid("/etc/subuid", &user.name);
    let (gstart, gcount) = subid("/etc/subgid", &user.name);
    assert_eq!(
        id_map(&user.ok(&["unshare", "cat", "/proc/self/uid_map"])),
        [(0, user.uid, 1), (1, start, count)]
    );
    assert_eq!(
        id_map(&user.ok(&["unshare", "cat", "/proc/self/gid_map"])),
        [(0, user.gid, 1), (1, gstart, gcount)]
    );
    assert_eq!(user.ok(&["unshare", "id", "-u"]).trim(), "0");
    let pause = user.pause_pid().expect("a pause process");
    let theirs = std::fs::read_link(format!("/proc/{pause}/ns/user")).expect("pause ns");
    let ns = user.ok(&["unshare", "readlink", "/proc/self/ns/user"]);
    assert_eq!(ns.trim(), theirs.to_string_lossy(), "joined the pause process's namespace");
    // A mount made by one command is there for the next.
    let m = user.home.join("m");
    let script = format!("mkdir -p {0} && mount -t tmpfs none {0} && echo hi > {0}/f", m.display());
    user.ok(&["unshare", "sh", "-c", &script]);
    assert_eq!(user.ok(&["unshare", "cat", &m.join("f").to_string_lossy()]), "hi\n");
    assert!(!m.join("f").exists(), "the mount is in the namespace only");
    // The working directory is kept.
    assert_eq!(user.ok(&["unshare", "pwd"]).trim(), user.home.to_string_lossy());
    user.stop_pause();
    drop(user);
}

/// Without subordinate ids: a warning naming /etc/subuid and the line to add, and the user's
/// own ids alone mapped.
#[test]
fn no_subordinate_ids_single_mapping_with_warning() {
    if !privileged("no_subordinate_ids_single_mapping_with_warning") {
        return;
    }
    let user = TestUser::new(false);
    let out = user.cmd(&["unshare", "cat", "/proc/self/uid_map"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(id_map(&String::from_utf8_lossy(&out.stdout)), [(0, user.uid, 1)]);
    assert!(err.contains("/etc/subuid") && err.contains(&format!("`{}:", user.name)), "{err}");
    assert!(err.contains("/etc/subgid") && err.contains("usermod --add-subuids"), "{err}");
}

/// Root has no namespace to enter; a user without XDG_RUNTIME_DIR is told what to set.
#[test]
fn unshare_refusals() {
    if !privileged("unshare_refusals") {
        return;
    }
    let out =
        std::process::Command::new(crate::common::STRATA).args(["unshare", "true"]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rootless mode"), "{out:?}");
    let user = TestUser::new(true);
    let out =
        user.command(crate::common::STRATA, &["images"]).env_remove("XDG_RUNTIME_DIR").output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("XDG_RUNTIME_DIR is not set"), "{err}");
    let out = user
        .command(crate::common::STRATA, &["images"])
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("XDG_RUNTIME_DIR=/tmp"), "{err}");
    assert!(user.pause_pid().is_none(), "nothing started");
}

/// A user's store is `$XDG_DATA_HOME/strata` (else `~/.local/share/strata`), marked rootless;
/// root's and a user's stores never mix: each refuses the other with a clear error.
#[test]
fn rootless_store_is_its_own() {
    if !privileged("rootless_store_is_its_own") {
        return;
    }
    let user = TestUser::new(true);
    user.ok(&["images"]);
    let store = user.home.join(".local/share/strata");
    assert!(store.join("strata.db").is_file() && store.join("rootless").is_file(), "{}", store.display());
    let data = user.home.join("data");
    let out =
        user.command(crate::common::STRATA, &["images"]).env("XDG_DATA_HOME", &data).output().expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(data.join("strata/rootless").is_file(), "XDG_DATA_HOME/strata");
    // Root at the user's store.
    let out = std::process::Command::new(crate::common::STRATA)
        .arg("--root")
        .arg(&store)
        .arg("images")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is a rootless store"), "{err}");
    // The user at a store root made (and gave to the user).
    let root_store = user.base().join("rootstore");
    let out = std::process::Command::new(crate::common::STRATA)
        .arg("--root")
        .arg(&root_store)
        .arg("images")
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    user.chown_tree(&root_store);
    let err = user.fails(&["--root", &root_store.to_string_lossy(), "images"]);
    assert!(err.contains("is root's store"), "{err}");
}

/// Host id of namespace id `id` under `map` (the user namespace's map lines).
fn to_host(map: &[(u32, u32, u32)], id: u32) -> u32 {
    map.iter()
        .find(|(inside, _, count)| id >= *inside && id - inside < *count)
        .map(|(inside, outside, _)| outside + (id - inside))
        .expect("a mapped id")
}

/// The layers of the test image: owners inside the range, an opaque directory, a whiteout, a
/// device node (skipped rootless), a FIFO, xattrs.
fn owner_layers() -> Vec<Vec<u8>> {
    use crate::common::tarw::{tar, E};
    let one = tar([
        E::dir("a/").owner(0, 0),
        E::file("a/f", "f").owner(1000, 1000).mode(0o640),
        E::dir("d/").owner(33, 33).mode(0o750),
        E::file("d/x", "x"),
        E::file("gone", "g"),
        E::symlink("l", "a/f").owner(7, 8),
        E::dev(b'3', "null", 1, 3),
        E::new(b'6', "fifo").owner(5, 5),
        E::file("attr", "y").pax("SCHILY.xattr.user.note", "kept"),
    ]);
    let two =
        tar([E::file("d/.wh..wh..opq", ""), E::file("d/y", "y").owner(65535, 1), E::file(".wh.gone", "")]);
    vec![one, two]
}

/// Unpacked rootless: every owner shifted by the user's mapping, opaque markers as
/// `user.overlay.opaque`, whiteouts as 0:0 devices, device nodes skipped; otherwise entry by
/// entry what root-mode strata unpacks. An owner outside the range fails, naming the file, the
/// owner and /etc/subuid; nothing of that layer is left.
#[test]
fn unpack_shifts_owners_and_writes_user_markers() {
    if !privileged("unpack_shifts_owners_and_writes_user_markers") {
        return;
    }
    use crate::common::{capture, layout::layout_with_layers, sha, Root};
    use strata_test_support::tree::{assert_trees_eq, Kind};
    let user = TestUser::new(true);
    let layers = owner_layers();
    let layout = user.home.join("img");
    layout_with_layers(&layout, "t", &layers);
    let bad = crate::common::tarw::tar([crate::common::tarw::E::file("etc/far", "x").owner(70000, 0)]);
    layout_with_layers(&layout, "far", std::slice::from_ref(&bad));
    user.chown_tree(&layout);
    let src = format!("{}:t", layout.display());
    user.ok(&["image", "import", &src]);
    let root = Root::new();
    root.ok(&["image", "import", &src]);
    let uid_map = id_map(&user.ok(&["unshare", "cat", "/proc/self/uid_map"]));
    let gid_map = id_map(&user.ok(&["unshare", "cat", "/proc/self/gid_map"]));
    let store = user.home.join(".local/share/strata");
    for (i, layer) in layers.iter().enumerate() {
        let rel = format!("layers/sha256/{}", sha(layer).trim_start_matches("sha256:"));
        // A whiteout is made when unpacked: its time is not the layer's.
        let no_whiteout_time = |_: &std::path::Path, e: &mut strata_test_support::tree::Entry| {
            if e.kind == Kind::Char && e.rdev == Some((0, 0)) {
                e.mtime = None;
            }
            true
        };
        let mut want = capture(&root.path().join(&rel));
        let mut got = capture(&store.join(&rel));
        want.retain(no_whiteout_time);
        got.retain(no_whiteout_time);
        want.retain(|p, e| {
            // Devices other than whiteouts are not made in a user namespace.
            if e.kind == Kind::Char && e.rdev != Some((0, 0)) {
                return false;
            }
            e.uid = to_host(&uid_map, e.uid);
            e.gid = to_host(&gid_map, e.gid);
            if let Some(v) = e.xattrs.remove("trusted.overlay.opaque") {
                e.xattrs.insert("user.overlay.opaque".into(), v);
            }
            p != std::path::Path::new("null")
        });
        assert_trees_eq(&want, &got, &format!("layer {i} unpacked rootless vs root"));
    }
    let d = store.join("layers/sha256").join(sha(&layers[1]).trim_start_matches("sha256:")).join("d");
    let opaque = strata_test_support::tree::read_xattrs(&d, |n| n.contains("overlay")).expect("xattrs");
    assert_eq!(opaque.get("user.overlay.opaque").map(Vec::as_slice), Some(&b"y"[..]), "{opaque:?}");
    // An owner beyond the range.
    let err = user.fails(&["image", "import", &format!("{}:far", layout.display())]);
    assert!(err.contains("etc/far") && err.contains("70000") && err.contains("/etc/subuid"), "{err}");
    assert!(err.contains("insufficient UIDs or GIDs"), "{err}");
    let far = store.join("layers/sha256").join(sha(&bad).trim_start_matches("sha256:"));
    assert!(!far.exists(), "a failed layer leaves nothing");
}

/// Every entry under `dir` as `find` shows it (path, type, mode, owners, size, link target)
/// and every file's content hash, sorted. `run` runs a shell script (as root, or as the user in
/// its namespace).
fn listing(run: impl Fn(&str) -> String, dir: &std::path::Path) -> Vec<String> {
    let script = format!(
        "cd {} && find . -mindepth 1 -printf '%p %y %m %U:%G %s %l\\n' | grep -v ' d [0-7]* [0-9:]* [0-9]* $' ; \
         find . -mindepth 1 -printf '%p %y %m %U:%G %l\\n' -type d; find . -type f -exec sha256sum {{}} +",
        dir.display()
    );
    let mut lines: Vec<String> = run(&script).lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// A rootless container mounted by kernel overlay (`userxattr`) and by strata-fuse shows the
/// same tree, which is what root-mode strata shows (owners as the namespace sees them); what one
/// backend writes (whiteouts, `user.overlay.opaque`) the other reads.
#[test]
fn kernel_userxattr_and_fuse_agree() {
    if !privileged("kernel_userxattr_and_fuse_agree") {
        return;
    }
    use crate::common::{layout::layout_with_layers, Root};
    let user = TestUser::new(true);
    let _fuse = crate::common::user::DevFuseOpen::new();
    let layout = user.home.join("img");
    layout_with_layers(&layout, "t", &owner_layers());
    user.chown_tree(&layout);
    let src = format!("{}:t", layout.display());
    user.ok(&["image", "import", &src]);
    user.ok(&["container", "create", "t", "c"]);
    let as_user = |script: &str| user.ok(&["unshare", "sh", "-c", script]);
    let at = std::path::PathBuf::from(user.ok(&["container", "mount", "c", "--backend", "kernel"]).trim());
    let kernel = listing(as_user, &at);
    // Root-mode strata's view of the same image (the device node, skipped rootless, aside).
    let root = Root::new();
    root.ok(&["image", "import", &src]);
    root.ok(&["container", "create", "t", "c"]);
    let rat = std::path::PathBuf::from(root.ok(&["container", "mount", "c", "--backend", "kernel"]).trim());
    let as_root = |script: &str| {
        let out = std::process::Command::new("sh").args(["-c", script]).output().expect("sh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut want = listing(as_root, &rat);
    want.retain(|l| !l.starts_with("./null "));
    root.ok(&["container", "umount", "c"]);
    assert_eq!(kernel, want, "rootless kernel view vs root's");
    assert!(kernel.iter().any(|l| l.starts_with("./a/f f 640 1000:1000 1 ")), "{kernel:#?}");
    // Changes through the kernel mount, then read by strata-fuse.
    as_user(&format!(
        "cd {} && rm -rf a && mkdir a && echo new > a/n && rm d/y && echo more > attr && mkdir -p z/z",
        at.display()
    ));
    let kernel = listing(as_user, &at);
    user.ok(&["container", "umount", "c"]);
    let at = std::path::PathBuf::from(user.ok(&["container", "mount", "c", "--backend", "fuse"]).trim());
    assert!(as_user("cat /proc/self/mountinfo").contains("fuse.strata-fuse"), "mounted by strata-fuse");
    assert_eq!(listing(as_user, &at), kernel, "strata-fuse reads what kernel overlay wrote");
    // And the other way round.
    as_user(&format!(
        "cd {} && rm -rf z && mkdir z && touch z/fresh && rm gone 2>/dev/null; rm l",
        at.display()
    ));
    let fuse = listing(as_user, &at);
    user.ok(&["container", "umount", "c"]);
    let at = std::path::PathBuf::from(user.ok(&["container", "mount", "c", "--backend", "kernel"]).trim());
    assert_eq!(listing(as_user, &at), fuse, "kernel overlay reads what strata-fuse wrote");
    assert!(fuse.iter().any(|l| l.starts_with("./z/fresh ")) && !fuse.iter().any(|l| l.starts_with("./z/z")));
    user.ok(&["container", "umount", "c"]);
    user.ok(&["container", "rm", "c"]);
    let mounts = as_user("cat /proc/self/mountinfo");
    assert!(!mounts.contains(&user.home.to_string_lossy().into_owned()), "nothing left mounted: {mounts}");
}

/// The change made in a container by `exec`, rootless and as root alike.
const CHANGE: &str = "echo changed > /etc/motd && chown 1000:1000 /etc/motd && rm /bin/ls && rm -rf /home \
    && mkdir /home && touch /home/new && mkdir -p /srv/d && chown 33:44 /srv/d && mknod /srv/fifo p";

/// The last layer of image `tag` exported to a fresh OCI layout, unpacked by GNU tar as root:
/// its tree (no times: the two runs made their changes at different moments).
fn committed_layer(export: impl Fn(&str), dir: &std::path::Path) -> strata_test_support::tree::Tree {
    let layout = dir.join("layout");
    export(&format!("{}:snap", layout.display()));
    let manifest = crate::common::manifest_of(&layout, "snap");
    let layers = manifest["layers"].as_array().expect("layers");
    let digest = layers.last().expect("a layer")["digest"].as_str().expect("digest").to_string();
    let tree = dir.join("tree");
    std::fs::create_dir(&tree).expect("mkdir");
    let blob = crate::common::blob(&layout, &digest);
    let st = std::process::Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "-xpf"])
        .arg(&blob)
        .arg("-C")
        .arg(&tree)
        .status()
        .expect("tar");
    assert!(st.success());
    let opts = strata_test_support::tree::Options { mtime: false, ..Default::default() };
    strata_test_support::tree::Tree::capture_with(&tree, &opts).expect("capture")
}

/// A rootless user runs a command (output checked), runs one detached, changes it with `exec`,
/// stops it, commits and exports it: the committed layer is, entry by entry, what root-mode
/// strata commits for the same change (owners mapped back, whiteouts and the opaque marker as
/// `.wh.` names). Nothing is left mounted or running afterwards.
#[test]
fn run_exec_stop_commit_as_root_does() {
    if !privileged("run_exec_stop_commit_as_root_does") {
        return;
    }
    use crate::common::{fixtures, Root};
    let user = TestUser::new(true);
    let layout = user.home.join("oci");
    // A copy the user owns (not hard links: chown would change the fixture's files).
    let cp = std::process::Command::new("cp")
        .arg("-r")
        .arg(fixtures().join("oci"))
        .arg(&layout)
        .status()
        .expect("cp");
    assert!(cp.success());
    user.chown_tree(&layout);
    let src = format!("{}:busybox", layout.display());
    user.ok(&["image", "import", &src]);
    let out = user.ok(&[
        "run",
        "--rm",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo hello from $(id -u); wc -l < /proc/self/uid_map",
    ]);
    assert_eq!(out, "hello from 0\n2\n");
    // Networks: none (only lo) and host; no bridge (slirp4netns: rootless_network.rs).
    let lo = user.ok(&["run", "--rm", "--network", "none", "busybox", "--", "cat", "/proc/net/dev"]);
    assert!(lo.lines().skip(2).all(|l| l.trim_start().starts_with("lo:")), "only lo: {lo}");
    user.ok(&["run", "--rm", "--network", "host", "busybox", "--", "true"]);
    let err = user.fails(&["run", "--rm", "--network", "bridge", "busybox", "--", "true"]);
    assert!(err.contains("rootless mode has no bridge"), "{err}");
    user.ok(&["run", "-d", "--name", "web", "busybox", "--", "sh", "-c", "echo started; sleep 1000"]);
    user.ok(&["exec", "web", "--", "sh", "-c", CHANGE]);
    assert_eq!(user.ok(&["exec", "web", "--", "stat", "-c", "%u:%g", "/etc/motd"]), "1000:1000\n");
    user.ok(&["stop", "--time", "1", "web"]);
    assert!(user.ok(&["logs", "web"]).contains("started"));
    user.ok(&["container", "commit", "web", "snap"]);
    let udir = tempfile::tempdir_in(&user.home).expect("tempdir");
    std::os::unix::fs::chown(udir.path(), Some(user.uid), Some(user.gid)).expect("chown");
    let got = committed_layer(|to| drop(user.ok(&["image", "export", "snap", to])), udir.path());
    // Root mode, the same change.
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fixtures().join("oci").display())]);
    root.ok(&["run", "-d", "--name", "web", "busybox", "--", "sh", "-c", "echo started; sleep 1000"]);
    root.ok(&["exec", "web", "--", "sh", "-c", CHANGE]);
    root.ok(&["stop", "--time", "1", "web"]);
    root.ok(&["container", "commit", "web", "snap"]);
    let rdir = tempfile::tempdir().expect("tempdir");
    let want = committed_layer(|to| drop(root.ok(&["image", "export", "snap", to])), rdir.path());
    root.ok(&["rm", "web"]);
    strata_test_support::tree::assert_trees_eq(&want, &got, "the committed layer, rootless vs root");
    for p in ["etc/motd", "bin/.wh.ls", "home/.wh..wh..opq", "srv/fifo"] {
        assert!(got.entries.contains_key(std::path::Path::new(p)), "{p} in {:?}", got.entries.keys());
    }
    let motd = &got.entries[std::path::Path::new("etc/motd")];
    assert_eq!((motd.uid, motd.gid), (1000, 1000), "ids mapped back");
    // Nothing left mounted or running but the pause process.
    user.ok(&["rm", "web"]);
    assert!(!user.ok(&["ps", "-a"]).contains("web"), "container removed");
    let mounts = user.ok(&["unshare", "cat", "/proc/self/mountinfo"]);
    assert!(!mounts.contains(&user.home.to_string_lossy().into_owned()), "{mounts}");
    let pause = user.pause_pid().expect("pause");
    // A detached run's monitor may take a moment to see its container go.
    let others = || -> Vec<String> {
        let cmdline = |p: i32| std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let procs = user.processes().into_iter().filter(|p| *p != pause);
        procs.map(|p| String::from_utf8_lossy(&cmdline(p)).replace('\0', " ")).collect()
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !others().is_empty() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(others().is_empty(), "only the pause process runs: {:?}", others());
}
