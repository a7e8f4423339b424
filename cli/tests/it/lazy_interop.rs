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

/// The config of `reference` in the registry (skopeo).
fn remote_config(reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--config", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo inspect --config: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("config json")
}

/// `strata push --compression zstd:chunked` of the `multi` fixture: each layer a zstd tar
/// whose diff_id is the original's, with both spellings of the TOC annotations; Go's
/// `estargz.Open` (stargz-snapshotter's zstdchunked decompressor) finds the TOC through the
/// footer, the same one the annotations name, and verifies every chunk; skopeo + umoci and
/// podman pull it as an ordinary image, and strata pulls it lazily: every view is the fixture's,
/// entry by entry. `image convert` makes the same manifest.
#[test]
fn zstd_chunked_push_is_read_by_go_skopeo_podman_and_lazily() {
    if !privileged("zstd_chunked_push_is_read_by_go_skopeo_podman_and_lazily") {
        return;
    }
    let check = crate::lazy::estargz_check();
    let oci = fixtures().join("oci");
    let reg = Registry::start(RegistryOpts::default());
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:multi", oci.display()), "--name", "multi"]);
    let dest = format!("{}/interop/own:zc", reg.addr);
    let pushed =
        root.ok(&["push", "-q", "multi", &dest, "--compression", "zstd:chunked", "--tls-verify=false"]);
    let converted = root.ok(&["image", "convert", "multi", "multi:zc", "--compression", "zstd:chunked"]);
    assert_eq!(converted.trim(), pushed.trim(), "image convert and push --compression make one manifest");

    // zstd:chunked keeps each layer's tar: the diff_ids are the fixture's.
    let fixture_config =
        json(&blob(&oci, manifest_of(&oci, "multi")["config"]["digest"].as_str().expect("config")));
    assert_eq!(remote_config(&dest)["rootfs"]["diff_ids"], fixture_config["rootfs"]["diff_ids"]);
    let manifest = crate::lazy::remote_manifest(&dest);
    let layers = manifest["layers"].as_array().expect("layers");
    assert!(layers.len() > 1, "{manifest}");
    let mut digests = Vec::new();
    let mut go_files = std::collections::BTreeMap::new();
    for l in layers {
        assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd", "{l}");
        let a = &l["annotations"];
        let (pos, sum) = (
            a["io.containers.zstd-chunked.manifest-position"].as_str().expect("position"),
            a["io.containers.zstd-chunked.manifest-checksum"].as_str().expect("checksum"),
        );
        assert_eq!(a["io.github.containers.zstd-chunked.manifest-position"], pos, "{l}");
        assert_eq!(a["io.github.containers.zstd-chunked.manifest-checksum"], sum, "{l}");
        let digest = l["digest"].as_str().expect("digest").to_string();
        let data = reg.blob_data(&digest);
        let out =
            Command::new(&check).arg("-zstd").arg(&data).arg(sum).arg(pos).output().expect("estargz-check");
        assert!(out.status.success(), "Go's reader refused {l}: {}", String::from_utf8_lossy(&out.stderr));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.splitn(7, ' ').collect();
            if f[0] == "reg" {
                go_files.insert(f[6].to_string(), f[5].to_string());
            }
        }
        // A checksum that is not the TOC's is refused by Go as well.
        let wrong = format!("sha256:{}", "0".repeat(64));
        let out = Command::new(&check)
            .arg("-zstd")
            .arg(&data)
            .arg(&wrong)
            .arg(pos)
            .output()
            .expect("estargz-check");
        assert!(!out.status.success(), "a wrong checksum was accepted");
        digests.push(digest);
    }
    let (_u, original) = umoci_unpack(&oci, "multi");
    let want = capture_reference(&original);
    let big = std::fs::read(original.join("data/big.bin")).expect("big.bin");
    assert_eq!(
        go_files.get("data/big.bin").map(String::as_str),
        Some(sha(&big).trim_start_matches("sha256:"))
    );

    // skopeo + umoci: an ordinary zstd image, which skopeo decompresses (umoci 0.4.7 reads no
    // zstd layers: skopeo writes them as gzip).
    let copy = tempfile::tempdir_in(root.path()).expect("tempdir");
    skopeo_copy(
        &["--dest-compress-format", "gzip"],
        &format!("docker://{dest}"),
        &format!("oci:{}:zc", copy.path().display()),
    );
    let (_c, theirs) = umoci_unpack(copy.path(), "zc");
    strata_test_support::tree::assert_trees_eq(
        &want,
        &capture_reference(&theirs),
        "zstd:chunked via skopeo+umoci",
    );

    // podman 4.3 (containers/storage 1.43), overlay driver. (Its vfs driver cannot apply the
    // fixture's layers whatever their compression: "unlinkat /data/replace/d2f/inner: not a
    // directory".) A normal pull fetches each layer whole and decompresses it: the fixture's
    // tree, entry by entry.
    let podman_ok =
        Command::new("podman").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if podman_ok {
        let p = Podman::new(root.path(), "whole", false);
        let before = whole_gets(&reg.log(), "interop/own", &digests);
        p.ok(&["pull", "-q", "--tls-verify=false", &dest]);
        assert_eq!(whole_gets(&reg.log(), "interop/own", &digests) - before, digests.len(), "a normal pull");
        let at = p.ok(&["image", "mount", &dest]);
        let seen = capture_reference(Path::new(at.trim()));
        p.ok(&["image", "unmount", &dest]);
        // containers/storage sets times before 1970 to the epoch (pkg/system.Chtimes), whatever
        // the layer's compression: the fixture's one such file is expected so.
        let mut want_podman = want.clone();
        let mut pre1970 = 0;
        want_podman.retain(|_, e| {
            if e.mtime.is_some_and(|t| t < 0) {
                e.mtime = Some(0);
                pre1970 += 1;
            }
            true
        });
        assert_eq!(pre1970, 1);
        strata_test_support::tree::assert_trees_eq(&want_podman, &seen, "zstd:chunked pulled by podman");

        // Its partial pull (enable_partial_images): containers/storage's own zstd:chunked
        // reader takes strata's TOC from the annotations, fetches the files' frames by ranges
        // (no whole blob) and checks their digests. Only contents are compared: this reader
        // drops owners, device nodes and times for any producer's layers (skopeo's too), and
        // turns the fixture's file-over-directory into a directory.
        let p = Podman::new(root.path(), "partial", true);
        let before = whole_gets(&reg.log(), "interop/own", &digests);
        p.ok(&["pull", "-q", "--tls-verify=false", &dest]);
        assert_eq!(
            whole_gets(&reg.log(), "interop/own", &digests),
            before,
            "a partial pull fetched a whole blob"
        );
        let at = p.ok(&["image", "mount", &dest]);
        let partial = capture(Path::new(at.trim()));
        p.ok(&["image", "unmount", &dest]);
        let mut compared = 0;
        for (path, e) in &want.entries {
            if let (Some(h), Some(got)) = (&e.hash, partial.entries.get(path)) {
                if got.hash.is_some() {
                    assert_eq!(got.hash.as_ref(), Some(h), "{} by podman's partial pull", path.display());
                    compared += 1;
                }
            }
        }
        assert!(partial.entries.contains_key(Path::new("data/big.bin")) && compared > 20, "{compared} files");
    } else {
        eprintln!("!!! zstd_chunked_push_is_read_by_go_skopeo_podman_and_lazily: podman part SKIPPED: podman cannot run here");
    }

    // strata, lazily: the layers stay remote, no blob is fetched whole.
    let before = whole_gets(&reg.log(), "interop/own", &digests);
    let lazy = Root::new();
    lazy.ok(&["pull", "-q", "--lazy", &dest, "--tls-verify=false"]);
    strata_test_support::tree::assert_trees_eq(
        &want,
        &view(&lazy, &dest),
        "strata's zstd:chunked served lazily",
    );
    assert_eq!(whole_gets(&reg.log(), "interop/own", &digests), before, "a whole-blob GET");
    for l in local(&lazy, &dest) {
        assert_eq!(l["remote"], true, "{l}");
    }
}

/// podman with a storage of its own under `base` (overlay driver; `partial` turns on
/// containers/storage's partial pulls of zstd:chunked layers), its run root under /run (short,
/// as containers/storage wants). Everything it mounted is unmounted when dropped.
struct Podman {
    conf: std::path::PathBuf,
    run: tempfile::TempDir,
    graph: std::path::PathBuf,
}

impl Podman {
    fn new(base: &Path, name: &str, partial: bool) -> Podman {
        let run = tempfile::Builder::new().prefix("strata-zc-").tempdir_in("/run").expect("runroot in /run");
        let graph = base.join(format!("podman-{name}"));
        let conf = base.join(format!("podman-{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n[storage.options]\n\
                 pull_options = {{enable_partial_images = \"{partial}\", use_hard_links = \"false\"}}\n",
                graph.display(),
                run.path().display()
            ),
        )
        .expect("storage.conf");
        Podman { conf, run, graph }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = Command::new("podman")
            .env("CONTAINERS_STORAGE_CONF", &self.conf)
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .args(args)
            .output()
            .expect("run podman");
        assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for dir in [self.run.path(), self.graph.as_path()] {
            for p in mounts_under(dir).into_iter().rev() {
                let _ = kernel_overlay::unmount(&p, kernel_overlay::UnmountMode::Detach);
            }
        }
    }
}
