//! Rootless mode's image verbs: import of a source the user cannot read, `push`/`pull`
//! against a loopback registry (digests equal to root mode's for the same change), `save`/`load`
//! and `gc`.

use std::os::unix::fs::PermissionsExt;

use crate::common::privileged;
use crate::common::user::TestUser;

/// A layout the user cannot read fails naming the directory, then the file, and saying why.
#[test]
fn unreadable_source_is_named() {
    if !privileged("unreadable_source_is_named") {
        return;
    }
    let user = TestUser::new(true);
    // Root's copy (not hard links: modes change below), in a directory only root reads.
    let layout = user.home.join("roots");
    let cp = std::process::Command::new("cp")
        .arg("-r")
        .arg(crate::common::fixtures().join("oci"))
        .arg(&layout)
        .status()
        .expect("cp");
    assert!(cp.success());
    std::fs::set_permissions(&layout, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let src = format!("{}:busybox", layout.display());
    let err = user.fails(&["image", "import", &src]);
    let why = "this user cannot read it (rootless strata reads image sources with the user's own rights";
    assert!(err.contains(&format!("{}: {why}", layout.display())), "{err}");
    std::fs::set_permissions(&layout, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(layout.join("index.json"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let err = user.fails(&["image", "import", &src]);
    assert!(err.contains(&format!("{}: {why}", layout.join("index.json").display())), "{err}");
    std::fs::set_permissions(layout.join("index.json"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let blobs = layout.join("blobs/sha256");
    for e in std::fs::read_dir(&blobs).expect("blobs").flatten() {
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let err = user.fails(&["image", "import", &src]);
    assert!(err.contains(&blobs.display().to_string()) && err.contains(why), "{err}");
    assert!(user.ok(&["images"]).lines().count() <= 1, "nothing imported");
}

/// The change made in the container, rootless and as root alike: owners the mapping shifts, a
/// whiteout, a new directory.
const CHANGE: &str = "echo changed > /etc/motd && chown 1000:1000 /etc/motd && rm /bin/ls \
    && mkdir -p /srv/d && chown 33:44 /srv/d && echo x > /srv/d/f";

/// Commit times and later mtimes clamped, so that two commits of the same change agree.
const EPOCH: &str = "1700000000";

/// A rootless user commits a change and pushes it to a loopback registry; a pull into a fresh
/// store gives the same digest and runs; root-mode strata's commit of the same change has the
/// same digest. `save` then `load` into another store keeps it; `gc` after `rmi` removes the
/// committed layer and its blobs.
#[test]
fn push_pull_save_load_gc_round_trip() {
    if !privileged("push_pull_save_load_gc_round_trip") {
        return;
    }
    use crate::common::registry::{Registry, RegistryOpts};
    use crate::common::{fixtures, Root, STRATA};
    let reg = Registry::start(RegistryOpts::default());
    let user = TestUser::new(true);
    user.import_busybox();
    // The user's strata, on the default store or on $XDG_DATA_HOME/strata.
    let strata = |args: &[&str], data: Option<&std::path::Path>| -> String {
        let mut c = user.command(STRATA, args);
        c.env("SOURCE_DATE_EPOCH", EPOCH);
        if let Some(d) = data {
            c.env("XDG_DATA_HOME", d);
        }
        let out = c.output().expect("strata");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "strata {args:?} as {}: {err}", user.name);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    strata(&["run", "--name", "c", "busybox", "--", "sh", "-c", CHANGE], None);
    let committed = strata(&["container", "commit", "c", "snap"], None).trim().to_string();
    let dest = format!("{}/rootless/snap:1", reg.addr);
    let digest = strata(&["push", "-q", "snap", &dest, "--tls-verify=false"], None).trim().to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    let fresh = user.home.join("fresh");
    assert_eq!(strata(&["pull", "-q", &dest, "--tls-verify=false"], Some(&fresh)).trim(), digest);
    assert!(fresh.join("strata/rootless").is_file(), "pulled into the fresh store");
    let out = strata(
        &["run", "--rm", &dest, "--", "sh", "-c", "cat /etc/motd; stat -c %u:%g /srv/d"],
        Some(&fresh),
    );
    assert_eq!(out, "changed\n33:44\n");
    // Pushed again from the fresh store: nothing new, the same digest.
    let again = format!("{}/rootless/again:1", reg.addr);
    assert_eq!(strata(&["push", "-q", &dest, &again, "--tls-verify=false"], Some(&fresh)).trim(), digest);

    // Root mode, the same change: the same image.
    let root = Root::new();
    let as_root = |args: &[&str]| -> String {
        let out = std::process::Command::new(STRATA)
            .arg("--root")
            .arg(root.path())
            .args(args)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .output()
            .expect("strata");
        assert!(out.status.success(), "strata {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    as_root(&["image", "import", &format!("{}:busybox", fixtures().join("oci").display())]);
    as_root(&["run", "--name", "c", "busybox", "--", "sh", "-c", CHANGE]);
    assert_eq!(
        as_root(&["container", "commit", "c", "snap"]).trim(),
        committed,
        "the config, root vs rootless"
    );
    let rdest = format!("{}/root/snap:1", reg.addr);
    assert_eq!(
        as_root(&["push", "-q", "snap", &rdest, "--tls-verify=false"]).trim(),
        digest,
        "root vs rootless"
    );

    // save, then load into another store.
    let archive = user.home.join("snap.tar");
    let archive_s = archive.to_string_lossy().into_owned();
    strata(&["save", "snap", "-o", &archive_s, "--format", "oci-archive"], None);
    let other = user.home.join("other");
    let loaded = strata(&["load", "-i", &archive_s], Some(&other));
    assert!(loaded.contains("Loaded image"), "{loaded}");
    let inspect: serde_json::Value =
        serde_json::from_str(&strata(&["image", "inspect", "snap"], Some(&other))).expect("inspect json");
    assert_eq!(inspect["digest"], digest.as_str(), "{inspect}");
    assert_eq!(strata(&["run", "--rm", "snap", "--", "cat", "/etc/motd"], Some(&other)), "changed\n");

    // gc: the committed image's blobs (its config, manifest, layer) and its layer go once
    // nothing holds them; busybox's stay.
    let store = user.home.join(".local/share/strata");
    let config = store.join("blobs/sha256").join(committed.trim_start_matches("sha256:"));
    assert!(config.is_file(), "{}", config.display());
    strata(&["rm", "c"], None);
    strata(&["rmi", "snap"], None);
    assert_eq!(strata(&["gc"], None).trim(), "removed 3 blobs, 1 layers");
    assert!(!config.exists(), "the committed config removed");
    assert_eq!(strata(&["run", "--rm", "busybox", "--", "echo", "ok"], None), "ok\n", "busybox kept");
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

/// A six-layer image (an opaque directory, whiteouts) pulled rootless from a loopback registry
/// and mounted with kernel overlay: seen from the host (through the pause process's mount
/// namespace), its merged view is root-mode strata's with every owner shifted by the user's
/// mapping (device nodes, which a user namespace cannot make, aside).
#[test]
fn multi_layer_view_is_roots_with_owners_shifted() {
    if !privileged("multi_layer_view_is_roots_with_owners_shifted") {
        return;
    }
    use crate::common::registry::{Registry, RegistryOpts};
    use crate::common::{fixtures, Root};
    use strata_test_support::tree::{assert_trees_eq, Kind, Options, Tree};
    let reg = Registry::start(RegistryOpts::default());
    reg.push(&format!("oci:{}:multi-opaque", fixtures().join("oci").display()), "lib/multi:1", false);
    let r = format!("{}/lib/multi:1", reg.addr);
    let user = TestUser::new(true);
    let root = Root::new();
    // Directories a layer implies without an entry of their own are made at unpack time.
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
    let unpack_time = |e: &mut strata_test_support::tree::Entry| {
        if e.mtime.is_some_and(|m| m >= start as i64 - 5) {
            e.mtime = None;
        }
    };
    assert_eq!(user.ok(&["pull", "-q", &r]), root.ok(&["pull", "-q", &r]), "the same manifest");
    user.ok(&["container", "create", &r, "c"]);
    root.ok(&["container", "create", &r, "c"]);
    let at = user.ok(&["container", "mount", "c", "--backend", "kernel"]).trim().to_string();
    let rat = root.ok(&["container", "mount", "c", "--backend", "kernel"]).trim().to_string();
    let pause = user.pause_pid().expect("pause process");
    let opts = Options { mtime: true, ..Default::default() };
    let mut got = Tree::capture_with(&std::path::PathBuf::from(format!("/proc/{pause}/root{at}")), &opts)
        .expect("capture the rootless view");
    let mut want = Tree::capture_with(std::path::Path::new(&rat), &opts).expect("capture root's view");
    root.ok(&["container", "umount", "c"]);
    user.ok(&["container", "umount", "c"]);
    let uid_map = std::fs::read_to_string(format!("/proc/{pause}/uid_map")).expect("uid_map");
    let gid_map = std::fs::read_to_string(format!("/proc/{pause}/gid_map")).expect("gid_map");
    let mut devices = 0;
    want.retain(|_, e| {
        if matches!(e.kind, Kind::Char | Kind::Block) {
            devices += 1;
            return false;
        }
        e.uid = to_host(&uid_map, e.uid);
        e.gid = to_host(&gid_map, e.gid);
        unpack_time(e);
        true
    });
    got.retain(|_, e| {
        unpack_time(e);
        true
    });
    assert!(got.entries.len() > 100, "a whole rootfs: {}", got.entries.len());
    assert!(got.entries.values().any(|e| e.uid != user.uid), "owners other than the user's own");
    assert_trees_eq(&want, &got, "merged view, rootless (host ids) vs root with owners shifted");
    eprintln!("{} entries compared, {devices} device nodes left out", got.entries.len());
}
