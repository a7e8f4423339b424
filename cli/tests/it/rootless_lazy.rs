//! Rootless lazy pull (issues 26 and 27): an ordinary user pulls an eStargz image with `--lazy`
//! and runs it; strata-fuse, started inside the user's namespace, serves the remote layer's files
//! from the registry on first read, verified, and the layer stays remote.

use crate::common;

use common::registry::{Registry, RegistryOpts};
use common::user::{DevFuseOpen, TestUser};
use common::*;

use crate::lazy_run::{layers, noise, push_image, served, whole_gets};

/// A rootless user's `pull --lazy` fetches the TOCs only; `run` reads a small file and the
/// 3 MiB noise file (its sha256 equal to the bytes pushed) through strata-fuse in the user's
/// namespace; the noise layer is fetched by ranges, never whole; the layers stay remote; and
/// no strata-fuse or container process of the user is left after `run --rm`.
#[test]
fn rootless_run_reads_a_lazy_image_on_demand() {
    if !privileged("rootless_run_reads_a_lazy_image_on_demand") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let src = Root::new();
    let dest = format!("{}/lazy/rootless:esgz", reg.addr);
    let manifest = push_image(&src, &dest);
    let blobs = layers(&manifest);
    assert_eq!(blobs.len(), 2, "{manifest}");

    let user = TestUser::new(true);
    let _fuse = DevFuseOpen::new();
    user.ok(&["pull", "-q", "--lazy", &dest, "--tls-verify=false"]);
    let v: serde_json::Value =
        serde_json::from_str(&user.ok(&["image", "inspect", &dest])).expect("inspect json");
    let local = v["local"].as_array().expect("local");
    assert_eq!(local.len(), 2, "{v}");
    assert!(local.iter().all(|l| l["remote"] == true), "both layers remote after the pull: {v}");
    let pulled: Vec<u64> = blobs.iter().map(|(d, _)| served(&reg.log(), "lazy/rootless", d)).collect();

    assert_eq!(
        user.ok(&["run", "--rm", "--lazy-background=off", &dest, "--", "cat", "/etc/motd"]),
        "lazy motd\n"
    );
    let want = sha(&noise());
    let got = user.ok(&["run", "--rm", "--lazy-background=off", &dest, "--", "sha256sum", "/data/noise"]);
    assert_eq!(got.split_whitespace().next().map(|h| format!("sha256:{h}")), Some(want), "{got}");
    // The owners inside are the image's, shifted by the user's mapping: root's files are root's.
    let owners =
        user.ok(&["run", "--rm", "--lazy-background=off", &dest, "--", "stat", "-c", "%u:%g", "/etc/motd"]);
    assert_eq!(owners, "0:0\n");

    let log = reg.log();
    for (d, _) in &blobs {
        assert_eq!(whole_gets(&log, "lazy/rootless", d), 0, "a whole-blob GET of {d}");
    }
    // The noise file came by ranges: with the tail the pull kept, the registry served at least
    // its 3 MiB (it does not compress), and the run fetched most of it.
    let noise_layer = served(&log, "lazy/rootless", &blobs[1].0);
    assert!(noise_layer >= 3 << 20, "the noise layer: {noise_layer} bytes served");
    assert!(noise_layer - pulled[1] >= 2 << 20, "by the run: {} bytes", noise_layer - pulled[1]);
    let v: serde_json::Value =
        serde_json::from_str(&user.ok(&["image", "inspect", &dest])).expect("inspect json");
    assert!(
        v["local"].as_array().expect("local").iter().all(|l| l["remote"] == true),
        "background completion was off: the layers stay remote: {v}"
    );
    assert!(user.ok(&["ps", "-aq"]).trim().is_empty(), "run --rm left a container");
    let left = user.others_settle(&user.pause_pid().into_iter().collect::<Vec<_>>());
    assert!(left.is_empty(), "processes of the user left behind: {left:?}");
}
