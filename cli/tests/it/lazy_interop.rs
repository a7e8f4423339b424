//! Seekable layers made by the real tools, pulled lazily by strata (issue 27, "Interop with the
//! real tools"): zstd:chunked by skopeo (containers/storage's compressor). Each merged view is
//! compared entry by entry with `umoci unpack` of the same image.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::registry::{Registry, RegistryOpts};
use common::*;

/// `image inspect`'s `local` entries of `image`.
fn local(root: &Root, image: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&root.ok(&["image", "inspect", image])).expect("json");
    v["local"].as_array().expect("local").clone()
}

/// A read-only view of `image` in `root` as `container mount` shows it, captured.
fn view(root: &Root, image: &str) -> strata_test_support::tree::Tree {
    root.ok(&["container", "create", "--read-only", image, "v"]);
    let at = root.ok(&["container", "mount", "v"]);
    let tree = capture(Path::new(at.trim()));
    root.ok(&["container", "rm", "--force", "v"]);
    tree
}

/// Whole-blob GETs (status 200) of any of `digests` of `repo` in the registry's log.
fn whole_gets(log: &str, repo: &str, digests: &[String]) -> usize {
    digests.iter().map(|d| log.matches(&format!("\"GET /v2/{repo}/blobs/{d} HTTP/1.1\" 200")).count()).sum()
}

/// `skopeo copy` of `src` to `dest` (both transports given), with extra flags.
fn skopeo_copy(flags: &[&str], src: &str, dest: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .args(flags)
        .arg(src)
        .arg(dest)
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "skopeo copy {src} {dest}: {}", String::from_utf8_lossy(&out.stderr));
}

/// skopeo's zstd:chunked (Debian's skopeo 1.9, containers/storage 1.43's compressor) of the
/// `multi` fixture, pulled lazily: every layer is remote, `run` reads a file, and the merged
/// view (every file read through strata-fuse, each chunk a zstd frame verified against its
/// digest) is `umoci unpack`'s of the fixture, entry by entry.
#[test]
fn zstd_chunked_by_skopeo_is_served_lazily() {
    if !privileged("zstd_chunked_by_skopeo_is_served_lazily") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let oci = fixtures().join("oci");
    let dest = format!("{}/interop/zc:multi", reg.addr);
    skopeo_copy(
        &["--dest-compress-format", "zstd:chunked"],
        &format!("oci:{}:multi", oci.display()),
        &format!("docker://{dest}"),
    );
    let manifest = crate::lazy::remote_manifest(&dest);
    let digests: Vec<String> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd", "{l}");
            assert!(l["annotations"]["io.containers.zstd-chunked.manifest-position"].is_string(), "{l}");
            l["digest"].as_str().expect("digest").to_string()
        })
        .collect();

    let lazy = Root::new();
    lazy.ok(&["pull", "-q", "--lazy", &dest, "--tls-verify=false"]);
    for l in local(&lazy, &dest) {
        assert_eq!(l["remote"], true, "{l}");
    }
    let (_u, reference) = umoci_unpack(&oci, "multi");
    // The 5 MiB file: several chunks (containers/storage cuts by a rolling checksum), each a
    // zstd frame fetched by range and verified.
    let big = std::fs::read(reference.join("data/big.bin")).expect("big.bin");
    let sum = lazy.ok(&["run", "--rm", &dest, "--", "sha256sum", "/data/big.bin"]);
    assert_eq!(sum.split_whitespace().next(), Some(sha(&big).trim_start_matches("sha256:")), "{sum}");
    assert_eq!(whole_gets(&reg.log(), "interop/zc", &digests), 0, "a whole-blob GET");

    strata_test_support::tree::assert_trees_eq(
        &capture_reference(&reference),
        &view(&lazy, &dest),
        "zstd:chunked (skopeo) served lazily vs umoci unpack",
    );
    assert_eq!(whole_gets(&reg.log(), "interop/zc", &digests), 0, "a whole-blob GET");
    for l in local(&lazy, &dest) {
        assert_eq!(l["remote"], true, "{l}");
    }
}
