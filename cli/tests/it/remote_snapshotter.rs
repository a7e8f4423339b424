//! strata-snapshotter over lazily pulled layers (issue 27 item 5): containerd's snapshots over a
//! chain that holds remote layers mount through strata-fuse (`fuse3.strata-fuse`, run by
//! containerd through mount.fuse3), whose files come from the registry on demand. Against the
//! harness's registry and a private containerd (containerd_ctr.rs's).

use crate::common;
use crate::containerd_ctr::Containerd;
use crate::lazy_run::{layers, push_image, served, whole_gets};

use std::path::Path;
use std::process::Command;

use common::registry::{Registry, RegistryOpts};
use common::Root;

/// `strata --root ROOT ARGS` that must succeed; its stdout.
fn strata_at(root: &Path, args: &[&str]) -> String {
    let out = Command::new(common::STRATA).arg("--root").arg(root).args(args).output().expect("run strata");
    assert!(out.status.success(), "strata {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An image `strata pull --lazy` recorded in the store the snapshotter serves: containerd's pull
/// (its Go client's unpacker) reuses the remote chain without fetching a layer, and `ctr run`
/// over it reads its file through the fuse3.strata-fuse mount the snapshotter answers (before
/// the fix: a mount of layer directories that do not exist). The layers stay remote and no
/// blob is fetched whole.
#[test]
fn containerd_runs_over_a_lazily_pulled_chain() {
    if !common::privileged("containerd_runs_over_a_lazily_pulled_chain") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let src = Root::new();
    let dest = format!("{}/lazy/ctrd:esgz", reg.addr);
    let blobs = layers(&push_image(&src, &dest));
    assert_eq!(blobs.len(), 2);
    let c = Containerd::start_with("kernel");
    let state = c.path().join("strata");
    strata_at(&state, &["pull", "-q", "--lazy", &dest, "--tls-verify=false"]);
    let log = reg.log();
    let pulled: u64 = blobs.iter().map(|(d, _)| served(&log, "lazy/ctrd", d)).sum();

    c.pull_with_go(&dest, &[]);
    let slog = c.log("snapshotter.log");
    assert_eq!(slog.matches("layer already held").count(), 2, "every layer reused:\n{slog}");

    let out = c.ctr(&["run", "--snapshotter", "strata", "--rm", &dest, "lazy1", "cat", "/etc/motd"]);
    assert_eq!(out, "lazy motd\n", "--- snapshotter log:\n{}", c.log("snapshotter.log"));

    // containerd fetched no layer; the run read a small part of the data layer.
    let log = reg.log();
    for (d, _) in &blobs {
        assert_eq!(whole_gets(&log, "lazy/ctrd", d), 0, "a whole-blob GET of {d}");
    }
    let total: u64 = blobs.iter().map(|(d, _)| served(&log, "lazy/ctrd", d)).sum();
    let (noise_blob, noise_size) = &blobs[1];
    assert!(total > pulled, "the run read nothing from the registry");
    assert!(served(&log, "lazy/ctrd", noise_blob) < noise_size / 4, "the noise layer was read");
    let v: serde_json::Value =
        serde_json::from_str(&strata_at(&state, &["image", "inspect", &dest])).expect("inspect json");
    for l in v["local"].as_array().expect("local") {
        assert_eq!(l["remote"], true, "{l}");
    }
}

/// containerd's pull with the labels CRI sets for remote snapshotters (its Go client with
/// `pkg/snapshotters.AppendInfoHandlerWrapper`), into a store that has nothing: each eStargz
/// layer's Prepare is answered by fetching its TOC by ranges and committing the target as a
/// remote layer (`already exists`), so containerd downloads no layer; `ctr run` then reads a
/// file through strata-fuse. A plain pull's Prepare (no CRI labels) still unpacks.
#[test]
fn containerd_cri_labels_make_remote_snapshots() {
    if !common::privileged("containerd_cri_labels_make_remote_snapshots") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let src = Root::new();
    let dest = format!("{}/lazy/cri:esgz", reg.addr);
    let blobs = layers(&push_image(&src, &dest));
    assert_eq!(blobs.len(), 2);
    let c = Containerd::start_with("kernel");
    let state = c.path().join("strata");

    c.pull_with_go(&dest, &["remote"]);
    let slog = c.log("snapshotter.log");
    assert_eq!(slog.matches("remote snapshot: layer recorded").count(), 2, "every layer remote:\n{slog}");
    let log = reg.log();
    for (d, _) in &blobs {
        assert_eq!(whole_gets(&log, "lazy/cri", d), 0, "containerd or strata fetched {d} whole");
    }

    let out = c.ctr(&["run", "--snapshotter", "strata", "--rm", &dest, "cri1", "cat", "/etc/motd"]);
    assert_eq!(out, "lazy motd\n", "--- snapshotter log:\n{}", c.log("snapshotter.log"));
    let log = reg.log();
    let (noise_blob, noise_size) = &blobs[1];
    assert!(served(&log, "lazy/cri", noise_blob) < noise_size / 4, "the noise layer was read");
    for (d, _) in &blobs {
        assert_eq!(whole_gets(&log, "lazy/cri", d), 0, "a whole-blob GET of {d}");
    }
    // strata's own view: the layers are remote layers of its store.
    let db = rusqlite::Connection::open(state.join("strata.db")).expect("open the store's database");
    let n: i64 = db.query_row("SELECT COUNT(*) FROM remote_layers", [], |r| r.get(0)).expect("count");
    assert_eq!(n, 2);
}
