//! Containers over lazily pulled images (issue 27): `strata run` starts before the layers have
//! arrived, its rootfs mounted by strata-fuse over the layers' skeletons, each file's chunks
//! fetched from the registry when read, verified, cached. Against the real registry
//! (docker-registry), whose access log says how many bytes of each blob it served, and the
//! fault proxy in front of it for corrupted chunks and a registry that is gone.

use crate::common;

use std::path::Path;

use common::registry::{Registry, RegistryOpts};
use common::*;

/// `data/noise`: 3 MiB that do not compress.
fn noise() -> Vec<u8> {
    strata_test_support::noise(3 << 20, 0x5eed)
}

/// An eStargz image at `dest` on `reg` pushed from `src`: busybox, and over it a layer with
/// 3 MiB of noise, a small `etc/motd` and `etc/issue`. Returns the manifest.
fn push_image(src: &Root, dest: &str) -> serde_json::Value {
    src.ok(&["image", "import", &format!("{}:busybox", fixtures().join("oci").display()), "--name", "bb"]);
    src.ok(&["container", "create", "bb", "c"]);
    let at = src.ok(&["container", "mount", "c"]);
    let at = Path::new(at.trim());
    std::fs::create_dir_all(at.join("data")).expect("mkdir");
    std::fs::write(at.join("data/noise"), noise()).expect("write noise");
    std::fs::write(at.join("etc/motd"), b"lazy motd\n").expect("write motd");
    std::fs::write(at.join("etc/issue"), b"lazy issue\n").expect("write issue");
    src.ok(&["container", "umount", "c"]);
    src.ok(&["container", "commit", "c", "big"]);
    src.ok(&["push", "-q", "big", dest, "--compression", "estargz", "--tls-verify=false"]);
    crate::lazy::remote_manifest(dest)
}

/// Bytes the registry served of blob `digest` of `repo` (its access log: each GET's status and
/// size).
fn served(log: &str, repo: &str, digest: &str) -> u64 {
    let request = format!("\"GET /v2/{repo}/blobs/{digest} HTTP/1.1\" ");
    log.lines()
        .filter_map(|l| {
            let mut rest = l.split(&request).nth(1)?.split_whitespace();
            let _status = rest.next()?;
            rest.next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Whole-blob GETs (status 200) of `digest` in the registry's log.
fn whole_gets(log: &str, repo: &str, digest: &str) -> usize {
    log.matches(&format!("\"GET /v2/{repo}/blobs/{digest} HTTP/1.1\" 200")).count()
}

/// The layers of `manifest`: (digest, size), bottom first.
fn layers(manifest: &serde_json::Value) -> Vec<(String, u64)> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| (l["digest"].as_str().expect("digest").to_string(), l["size"].as_u64().expect("size")))
        .collect()
}

/// `image inspect`'s `local` entries of `image`.
fn local(root: &Root, image: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&root.ok(&["image", "inspect", image])).expect("json");
    v["local"].as_array().expect("local").clone()
}

/// A read-only view of `image` in `root`, mounted as `container mount` does (strata-fuse over
/// remote layers, the kernel otherwise), captured entry by entry.
fn view(root: &Root, image: &str) -> strata_test_support::tree::Tree {
    root.ok(&["container", "create", "--read-only", image, "v"]);
    let at = root.ok(&["container", "mount", "v"]);
    let tree = capture(Path::new(at.trim()));
    root.ok(&["container", "rm", "--force", "v"]);
    tree
}

/// `run` over a lazily pulled image starts at once: the command reads its file, the registry
/// serves a small part of the layer blobs (no whole-blob GET), the layers stay remote, and
/// the container's merged view is a plain pull's, entry by entry.
#[test]
fn run_reads_a_lazy_image_on_demand() {
    if !privileged("run_reads_a_lazy_image_on_demand") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let src = Root::new();
    let dest = format!("{}/lazy/run:esgz", reg.addr);
    let manifest = push_image(&src, &dest);
    let blobs = layers(&manifest);
    assert_eq!(blobs.len(), 2, "{manifest}");
    let (noise_blob, noise_size) = blobs[1].clone();
    assert!(noise_size > 3 << 20, "{noise_size}");

    let lazy = Root::new();
    lazy.ok(&["pull", "-q", "--lazy", &dest, "--tls-verify=false"]);
    let pulled = served(&reg.log(), "lazy/run", &noise_blob);
    assert!(pulled > 0, "the TOC was fetched");

    // (a) The command sees its file.
    assert_eq!(lazy.ok(&["run", "--rm", &dest, "--", "cat", "/etc/motd"]), "lazy motd\n");
    // (b) Of the noise layer, the run fetched the chunk it read: far less than the blob (the
    // 3 MiB file stays in the registry); no blob was fetched whole.
    let log = reg.log();
    let by_run = served(&log, "lazy/run", &noise_blob) - pulled;
    assert!(by_run > 0 && by_run < noise_size / 20, "the run fetched {by_run} bytes of {noise_size}");
    for (d, _) in &blobs {
        assert_eq!(whole_gets(&log, "lazy/run", d), 0, "a whole-blob GET of {d}");
    }
    let total: u64 = blobs.iter().map(|(d, _)| served(&log, "lazy/run", d)).sum();
    let sizes: u64 = blobs.iter().map(|(_, s)| s).sum();
    assert!(total < sizes / 2, "served {total} of {sizes} bytes");
    // The layers are still remote: nothing was completed.
    for l in local(&lazy, &dest) {
        assert_eq!(l["remote"], true, "{l}");
    }

    // (c) The merged view equals a plain pull's, entry by entry (read through strata-fuse,
    // every chunk fetched and verified), but for the TOC and landmark the lazy view hides (as
    // stargz-snapshotter does).
    let plain = Root::new();
    plain.ok(&["pull", "-q", &dest, "--tls-verify=false"]);
    let mut want = view(&plain, &dest);
    for hidden in ["stargz.index.json", ".no.prefetch.landmark"] {
        assert!(want.entries.remove(Path::new(hidden)).is_some(), "{hidden} not in the plain pull");
    }
    strata_test_support::tree::assert_trees_eq(&want, &view(&lazy, &dest), "lazy vs plain pull");

    // A container over a lazy image cannot be mounted by the kernel: it says why.
    lazy.ok(&["container", "create", &dest, "k"]);
    let err = lazy.fails(&["container", "mount", "--backend", "kernel", "k"]);
    assert!(err.contains("remote layer") && err.contains("--backend fuse"), "{err}");
    lazy.ok(&["container", "rm", "--force", "k"]);
}
