//! Seekable layers (issue 27): strata's eStargz output read back by stargz-snapshotter's own Go
//! reader (`estargz.Open`, Debian's golang-github-containerd-stargz-snapshotter-dev, built
//! offline in GOPATH mode) and pulled as an ordinary image by skopeo + umoci and by strata.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::registry::{Registry, RegistryOpts};
use common::*;

/// tests/estargz/check, built in GOPATH mode.
pub(crate) fn estargz_check() -> PathBuf {
    let bin = repo().join("target/go-bin/estargz-check");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(repo().join("tests/estargz/check"))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOFLAGS", "")
        .env("GOCACHE", repo().join("target/go-cache"))
        .output()
        .expect(
            "run go build (golang-go and golang-github-containerd-stargz-snapshotter-dev: scripts/setup.sh)",
        );
    assert!(out.status.success(), "go build tests/estargz/check: {}", String::from_utf8_lossy(&out.stderr));
    bin
}

/// The manifest the registry serves for `reference` (skopeo).
pub(crate) fn remote_manifest(reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("manifest json")
}

/// Regular files of a tree by path: their content's sha256 (what Go's reader printed).
fn file_sums(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let t = e.file_type().expect("type");
            let rel = e.path().strip_prefix(root).expect("prefix").display().to_string();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.insert(rel, sha(&std::fs::read(e.path()).expect("read")));
            }
        }
    }
    out
}

/// `strata push --compression estargz` writes layers Go's estargz reader opens, whose TOC
/// matches the descriptor's annotation and whose every chunk verifies; the same image pulled
/// plainly (skopeo + umoci, and strata) is the original image plus the landmark and TOC files.
#[test]
fn estargz_push_is_read_by_go_and_pulled_plainly() {
    if !privileged("estargz_push_is_read_by_go_and_pulled_plainly") {
        return;
    }
    let check = estargz_check();
    let oci = fixtures().join("oci");
    let reg = Registry::start(RegistryOpts::default());
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:multi", oci.display()), "--name", "multi"]);
    let dest = format!("{}/lazy/multi:esgz", reg.addr);
    root.ok(&["push", "-q", "multi", &dest, "--compression", "estargz", "--tls-verify=false"]);

    let manifest = remote_manifest(&dest);
    let layers = manifest["layers"].as_array().expect("layers");
    assert!(layers.len() > 1, "{manifest}");
    let mut go_files = BTreeMap::new();
    for l in layers {
        assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip", "{l}");
        let toc = l["annotations"]["containerd.io/snapshot/stargz/toc.digest"].as_str().expect("toc digest");
        let size: u64 = l["annotations"]["io.containers.estargz.uncompressed-size"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("uncompressed size");
        assert!(size > 0);
        let blob = reg.blob_data(l["digest"].as_str().expect("digest"));
        let out = Command::new(&check).arg(&blob).arg(toc).output().expect("estargz-check");
        assert!(
            out.status.success(),
            "Go's estargz reader refused {l}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Upper layers' files replace lower ones'.
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.splitn(7, ' ').collect();
            if f[0] == "reg" {
                go_files.insert(f[6].to_string(), f[5].to_string());
            }
        }
        // A wrong TOC digest is refused by Go as well.
        let wrong = format!("sha256:{}", "0".repeat(64));
        let out = Command::new(&check).arg(&blob).arg(&wrong).output().expect("estargz-check");
        assert!(!out.status.success());
    }
    assert!(go_files.contains_key(".no.prefetch.landmark"), "{go_files:?}");

    // skopeo pulls it as any image; umoci unpacks the original plus the two added files.
    let copy = tempfile::tempdir_in(root.path()).expect("tempdir");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{dest}"))
        .arg(format!("oci:{}:esgz", copy.path().display()))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
    let (_a, theirs) = umoci_unpack(copy.path(), "esgz");
    let (_b, original) = umoci_unpack(&oci, "multi");
    let mut t = capture_reference(&theirs);
    for added in [".no.prefetch.landmark", "stargz.index.json"] {
        assert!(t.entries.remove(Path::new(added)).is_some(), "{added} missing from the plain pull");
    }
    strata_test_support::tree::assert_trees_eq(&capture_reference(&original), &t, "estargz via skopeo+umoci");

    // Go's reader saw the same content as umoci's unpack, file by file.
    let sums = file_sums(&theirs);
    assert!(go_files.keys().filter(|n| sums.contains_key(*n)).count() > 1, "{go_files:?}");
    for (name, sum) in &go_files {
        if let Some(s) = sums.get(name) {
            assert_eq!(s.trim_start_matches("sha256:"), sum, "{name}");
        }
    }

    // strata pulls it plainly too (a fresh root), into the same tree.
    let fresh = Root::new();
    fresh.ok(&["pull", "-q", &dest, "--tls-verify=false"]);
    fresh.ok(&["container", "create", "--read-only", &dest, "v"]);
    let at = fresh.ok(&["container", "mount", "v"]);
    let mut mine = capture(Path::new(at.trim()));
    for added in [".no.prefetch.landmark", "stargz.index.json"] {
        mine.entries.remove(Path::new(added));
    }
    strata_test_support::tree::assert_trees_eq(
        &capture_reference(&original),
        &mine,
        "estargz pulled by strata",
    );
    fresh.ok(&["container", "rm", "--force", "v"]);
}

/// `image inspect`'s `local` entries of `image`.
fn inspect_local(root: &Root, image: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&root.ok(&["image", "inspect", image])).expect("json");
    v["local"].as_array().expect("local").clone()
}

/// 3 MiB that do not compress.
fn noise() -> Vec<u8> {
    strata_test_support::noise(3 << 20, 0x9e37_79b9_7f4a_7c15)
}

/// An image of one layer: a 3 MiB file that does not compress, and a few small ones.
fn big_image(root: &Root, name: &str) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, data).expect("tar");
    };
    add("data/noise", &noise());
    add("etc/motd", b"lazy\n");
    add("etc/hostname", b"strata\n");
    let tar = root.path().join("big.tar");
    std::fs::write(&tar, b.into_inner().expect("tar")).expect("write tar");
    root.ok(&["image", "import-rootfs", tar.to_str().expect("utf8"), name]);
}

/// A lazy pull's first step against the real registry: each eStargz layer's footer and TOC
/// come by Range requests (a few hundred KiB of a 3 MiB layer), verified against the
/// descriptor; a descriptor naming another TOC digest is refused.
#[test]
fn estargz_toc_is_fetched_by_ranges_and_verified() {
    if !privileged("estargz_toc_is_fetched_by_ranges_and_verified") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let root = Root::new();
    big_image(&root, "big");
    let dest = format!("{}/lazy/big:esgz", reg.addr);
    root.ok(&["push", "-q", "big", &dest, "--compression", "estargz", "--tls-verify=false"]);
    let manifest = remote_manifest(&dest);
    let l = &manifest["layers"][0];
    let digest = l["digest"].as_str().expect("digest");
    let size = l["size"].as_u64().expect("size");
    let mut annotations: std::collections::HashMap<String, String> =
        serde_json::from_value(l["annotations"].clone()).expect("annotations");
    let opts = strata::registry::ClientOptions { tls_verify: false, ..Default::default() };
    let client = strata::registry::Client::connect(&reg.addr, "lazy/big", &opts, "pull").expect("connect");
    let mt = l["mediaType"].as_str().expect("media type");
    let got = strata::registry::lazy::fetch_toc(&client, digest, size, mt, &annotations)
        .expect("toc")
        .expect("seekable");
    assert!(size > 3 << 20, "{size}");
    assert!(got.fetched <= strata::registry::lazy::TAIL_GUESS, "fetched {} of {size}", got.fetched);
    let names: Vec<&str> = got.toc.entries.iter().map(|e| e.name.as_str()).collect();
    for n in [".no.prefetch.landmark", "data/noise", "etc/motd", "etc/hostname"] {
        assert!(names.contains(&n), "{n} not in {names:?}");
    }
    let noise_entry = got.toc.entries.iter().find(|e| e.name == "data/noise").expect("noise");
    assert_eq!((noise_entry.size, noise_entry.chunks.len()), (3 << 20, 1), "4 MiB chunks");
    // One chunk fetched by its range decodes and verifies.
    let motd = got.toc.entries.iter().find(|e| e.name == "etc/motd").expect("motd");
    let c = &motd.chunks[0];
    let bytes = client.blob_range(digest, c.blob_offset..c.blob_end).expect("chunk range");
    let content =
        strata::seekable::chunk::decode_chunk_to_vec(got.toc.format, &bytes, "etc/motd", c).expect("chunk");
    assert_eq!(content, b"lazy\n");

    // Files read on demand through the registry: only the chunks asked for, verified, cached.
    let cache = tempfile::tempdir().expect("tempdir");
    let source = strata::registry::chunks::RegistryBlob { client: &client, digest: digest.to_string() };
    let files = strata::registry::chunks::RemoteFiles::new(got.toc.clone(), source, cache.path(), digest)
        .expect("remote files");
    let mut buf = vec![0u8; 4096];
    assert_eq!(files.read_at("data/noise", 1 << 20, &mut buf).expect("read"), 4096);
    assert_eq!(buf, noise()[1 << 20..(1 << 20) + 4096]);
    assert_eq!(files.read_at("etc/hostname", 0, &mut buf).expect("read"), 7);
    assert_eq!(&buf[..7], b"strata\n");

    // The registry's log shows no whole-blob GET of the layer.
    assert!(
        !reg.log().contains(&format!("\"GET /v2/lazy/big/blobs/{digest} HTTP/1.1\" 200")),
        "a whole-blob GET"
    );
    annotations
        .insert("containerd.io/snapshot/stargz/toc.digest".into(), format!("sha256:{}", "1".repeat(64)));
    let err =
        strata::registry::lazy::fetch_toc(&client, digest, size, mt, &annotations).expect_err("wrong TOC");
    assert!(strata::error::report(&err).contains("TOC digest mismatch"), "{}", strata::error::report(&err));
}

/// `strata pull --lazy` of an eStargz image fetches each layer's footer and TOC only (no
/// whole-blob GET in the registry's log), records the layers as remote (`image inspect` says how
/// much of each is local); `run` over it leaves them remote (lazy_run.rs has what it reads), and
/// `image export` completes them first (whole blobs, verified): the merged view is then a plain
/// pull's.
#[test]
fn lazy_pull_records_remote_layers_and_export_completes_them() {
    if !privileged("lazy_pull_records_remote_layers_and_export_completes_them") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let src = Root::new();
    src.ok(&["image", "import", &format!("{}:busybox", fixtures().join("oci").display()), "--name", "bb"]);
    let dest = format!("{}/lazy/bb:esgz", reg.addr);
    src.ok(&["push", "-q", "bb", &dest, "--compression", "estargz", "--tls-verify=false"]);
    let manifest = remote_manifest(&dest);
    let digests: Vec<String> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect();
    let whole_gets = |log: &str| {
        digests
            .iter()
            .map(|d| log.matches(&format!("\"GET /v2/lazy/bb/blobs/{d} HTTP/1.1\" 200")).count())
            .sum::<usize>()
    };
    assert_eq!(whole_gets(&reg.log()), 0, "nothing pulled yet");

    let lazy = Root::new();
    lazy.ok(&["pull", "-q", "--lazy", &dest, "--tls-verify=false"]);
    assert_eq!(whole_gets(&reg.log()), 0, "a lazy pull fetched a whole layer");
    let inspect: serde_json::Value =
        serde_json::from_str(&lazy.ok(&["image", "inspect", &dest])).expect("json");
    let local = inspect["local"].as_array().expect("local");
    assert_eq!(local.len(), digests.len(), "{inspect}");
    for l in local {
        assert_eq!(l["remote"], true, "{l}");
        let (have, size) = (l["bytes_local"].as_u64().expect("n"), l["blob_size"].as_u64().expect("n"));
        assert!(have > 0 && have <= strata::registry::lazy::TAIL_GUESS && have <= size, "{l}");
    }
    let listed = lazy.ok(&["image", "ls", "--json"]);
    assert!(listed.contains("\"remote\": true"), "{listed}");

    // run reads over them; an export completes the layers (whole blobs, verified).
    let plain = Root::new();
    plain.ok(&["pull", "-q", &dest, "--tls-verify=false"]);
    let want = plain.ok(&["run", "--rm", &dest, "--", "cat", "/etc/passwd"]);
    assert!(!want.is_empty());
    let by_plain = whole_gets(&reg.log());
    assert_eq!(by_plain, digests.len(), "the plain pull");
    assert_eq!(lazy.ok(&["run", "--lazy-background=off", "--rm", &dest, "--", "cat", "/etc/passwd"]), want);
    for l in inspect_local(&lazy, &dest) {
        assert_eq!(l["remote"], true, "{l}");
    }
    assert_eq!(whole_gets(&reg.log()), by_plain, "run fetched a whole layer");
    let out = tempfile::tempdir_in(lazy.path()).expect("tempdir");
    lazy.ok(&["image", "export", &dest, &format!("{}:x", out.path().join("layout").display())]);
    // Each blob assembled once: from the bytes the lazy root kept (the TOC's tail, the run's
    // chunks) and Range requests for the rest, when it kept at least half of it; else fetched
    // whole. Either way no byte twice.
    let log = reg.log();
    for l in manifest["layers"].as_array().expect("layers") {
        let (d, size) = (l["digest"].as_str().expect("digest"), l["size"].as_u64().expect("size"));
        let request = format!("\"GET /v2/lazy/bb/blobs/{d} HTTP/1.1\" 206 ");
        let ranged: u64 = log
            .lines()
            .filter_map(|l| l.split(&request).nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        let whole = log.matches(&format!("\"GET /v2/lazy/bb/blobs/{d} HTTP/1.1\" 200")).count() - 1;
        assert!(
            (whole == 0 && ranged == size) || (whole == 1 && ranged * 2 < size),
            "{d} ({size} bytes): {whole} whole GETs by the lazy root, {ranged} bytes by ranges"
        );
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&lazy.ok(&["image", "inspect", &dest])).expect("json");
    for l in inspect["local"].as_array().expect("local") {
        assert_eq!(
            (l["remote"].as_bool(), l["bytes_local"].as_u64()),
            (Some(false), l["blob_size"].as_u64())
        );
    }

    // The merged view equals a plain pull's.
    let view = |root: &Root| {
        root.ok(&["container", "create", "--read-only", &dest, "v"]);
        let at = root.ok(&["container", "mount", "v"]);
        let tree = capture(Path::new(at.trim()));
        root.ok(&["container", "rm", "--force", "v"]);
        tree
    };
    strata_test_support::tree::assert_trees_eq(&view(&plain), &view(&lazy), "lazy pull vs plain pull");

    // A plain pull over a lazy one makes its layers local; a lazy pull over a plain one changes
    // nothing.
    let again = Root::new();
    again.ok(&["pull", "-q", "--lazy", &dest, "--tls-verify=false"]);
    again.ok(&["pull", "-q", &dest, "--tls-verify=false"]);
    again.ok(&["pull", "-q", "--lazy", &dest, "--tls-verify=false"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&again.ok(&["image", "inspect", &dest])).expect("json");
    for l in inspect["local"].as_array().expect("local") {
        assert_eq!(l["remote"], false, "{l}");
    }
    strata_test_support::tree::assert_trees_eq(&view(&plain), &view(&again), "plain pull over a lazy one");
}
