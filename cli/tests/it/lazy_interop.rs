//! Seekable layers and the real tools (issue 27, "Interop with the real tools"), each merged
//! view compared entry by entry with `umoci unpack` of the same image:
//! - made by the tools, pulled lazily by strata: zstd:chunked by skopeo (containers/storage's
//!   compressor), eStargz by stargz-snapshotter's Go writer (`estargz.Build`, tests/estargz/
//!   build), eStargz and zstd:chunked by `ctr-remote image convert`;
//! - made by strata, read by the tools: zstd:chunked by Go's `estargz.Open`, skopeo, podman
//!   (normal and partial pulls) and strata lazily; eStargz by podman (Go and skopeo: lazy.rs).

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
    // Background completion off: these tests are about serving a layer lazily, and a small
    // layer would otherwise be completed (and stop being remote) before the checks.
    let at = root.ok(&["--lazy-background=off", "container", "mount", "v"]);
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
    let sum = lazy.ok(&["run", "--lazy-background=off", "--rm", &dest, "--", "sha256sum", "/data/big.bin"]);
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

    assert_podman_pulls(&root, &reg, "interop/own", &dest, &want);

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

/// podman 4.3 (containers/storage 1.43, overlay driver; its vfs driver cannot apply the
/// `multi` fixture's layers whatever their compression: "unlinkat /data/replace/d2f/inner: not
/// a directory") pulls `dest` (of `repo` on `reg`), a seekable image of the `multi` fixture
/// (`want`, without the TOC and landmarks):
/// - a normal pull fetches each layer whole and decompresses it: `want` entry by entry (but for
///   the TOC and landmark entries an eStargz tar holds, which podman shows as files);
/// - its partial pull (`enable_partial_images`) takes the TOC from the annotations, fetches the
///   files' data by ranges (no whole blob) and checks their digests. Only contents are
///   compared: this reader drops owners, device nodes and times for any producer's layers
///   (skopeo's too), and turns the fixture's file-over-directory into a directory.
fn assert_podman_pulls(
    root: &Root,
    reg: &Registry,
    repo: &str,
    dest: &str,
    want: &strata_test_support::tree::Tree,
) {
    if !Command::new("podman").arg("--version").output().map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("!!! podman cannot run here: podman's pulls of {dest} SKIPPED");
        return;
    }
    let digests: Vec<String> = crate::lazy::remote_manifest(dest)["layers"]
        .as_array()
        .map(|ls| ls.iter().filter_map(|l| l["digest"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let p = Podman::new(root.path(), "whole", false);
    let before = whole_gets(&reg.log(), repo, &digests);
    p.ok(&["pull", "-q", "--tls-verify=false", dest]);
    assert_eq!(whole_gets(&reg.log(), repo, &digests) - before, digests.len(), "a normal pull");
    let at = p.ok(&["image", "mount", dest]);
    let mut seen = capture_reference(Path::new(at.trim()));
    p.ok(&["image", "unmount", dest]);
    without_hidden(&mut seen);
    // containers/storage sets times before 1970 to the epoch (pkg/system.Chtimes), whatever
    // the layer's format: the fixture's one such file is expected so.
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
    strata_test_support::tree::assert_trees_eq(&want_podman, &seen, &format!("{dest} pulled by podman"));

    let p = Podman::new(root.path(), "partial", true);
    let before = whole_gets(&reg.log(), repo, &digests);
    p.ok(&["pull", "-q", "--tls-verify=false", dest]);
    assert_eq!(whole_gets(&reg.log(), repo, &digests), before, "podman's partial pull fetched a whole blob");
    let at = p.ok(&["image", "mount", dest]);
    let partial = capture(Path::new(at.trim()));
    p.ok(&["image", "unmount", dest]);
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
}

/// `strata push --compression estargz` of the `multi` fixture pulled by podman, normally and
/// partially (containers/storage reads eStargz too); Go's reader and skopeo read strata's
/// eStargz in `lazy::estargz_push_is_read_by_go_and_pulled_plainly`.
#[test]
fn estargz_push_is_pulled_by_podman() {
    if !privileged("estargz_push_is_pulled_by_podman") {
        return;
    }
    let oci = fixtures().join("oci");
    let reg = Registry::start(RegistryOpts::default());
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:multi", oci.display()), "--name", "multi"]);
    let dest = format!("{}/interop/own:esgz", reg.addr);
    root.ok(&["push", "-q", "multi", &dest, "--compression", "estargz", "--tls-verify=false"]);
    let (_u, original) = umoci_unpack(&oci, "multi");
    assert_podman_pulls(&root, &reg, "interop/own", &dest, &capture_reference(&original));
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

/// A Go program of tests/estargz (`dir`), built in GOPATH mode against Debian's Go sources,
/// offline, into target/go-bin/`name`.
fn go_bin(dir: &str, name: &str) -> std::path::PathBuf {
    let bin = repo().join("target/go-bin").join(name);
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(repo().join("tests/estargz").join(dir))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOFLAGS", "")
        .env("GOCACHE", repo().join("target/go-cache"))
        .output()
        .expect(
            "run go build (golang-go, golang-github-containerd-stargz-snapshotter-dev: scripts/setup.sh)",
        );
    assert!(out.status.success(), "go build tests/estargz/{dir}: {}", String::from_utf8_lossy(&out.stderr));
    bin
}

/// `tree` without the entries a lazy view hides (stargz-snapshotter hides them too): the TOC
/// and the landmarks. Returns how many were there.
fn without_hidden(tree: &mut strata_test_support::tree::Tree) -> usize {
    strata::seekable::HIDDEN_NAMES.iter().filter(|n| tree.entries.remove(Path::new(n)).is_some()).count()
}

/// `pull --lazy` of `dest` into a fresh root: every layer remote, `data/big.bin` read in a
/// container equal to `big`, no blob of `repo` fetched whole, and the merged view, every file
/// read through strata-fuse, equal to `want` entry by entry.
fn assert_served_lazily(
    reg: &Registry,
    repo: &str,
    dest: &str,
    big: &[u8],
    want: &strata_test_support::tree::Tree,
) {
    let digests: Vec<String> = crate::lazy::remote_manifest(dest)["layers"]
        .as_array()
        .map(|ls| ls.iter().filter_map(|l| l["digest"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let before = whole_gets(&reg.log(), repo, &digests);
    let lazy = Root::new();
    lazy.ok(&["pull", "-q", "--lazy", dest, "--tls-verify=false"]);
    let local = local(&lazy, dest);
    assert!(!local.is_empty() && local.iter().all(|l| l["remote"] == true), "{local:?}");
    let sum = lazy.ok(&["run", "--lazy-background=off", "--rm", dest, "--", "sha256sum", "/data/big.bin"]);
    assert_eq!(sum.split_whitespace().next(), Some(sha(big).trim_start_matches("sha256:")), "{sum}");
    strata_test_support::tree::assert_trees_eq(want, &view(&lazy, dest), &format!("{dest} served lazily"));
    assert_eq!(whole_gets(&reg.log(), repo, &digests), before, "a whole-blob GET of {dest}");
}

/// An eStargz image made by stargz-snapshotter's own Go writer (`estargz.Build`, 1 MiB chunks,
/// `bin/busybox` prioritized: every layer gets a `.prefetch.landmark`, after the prioritized
/// files where it has them) from the `multi` fixture's layers, pushed by skopeo, pulled lazily:
/// the merged view equals `umoci unpack` of the same image, but for the TOC and landmark.
/// (`ctr-remote`'s layers below have `.no.prefetch.landmark`.)
#[test]
fn estargz_built_by_go_is_served_lazily() {
    if !privileged("estargz_built_by_go_is_served_lazily") {
        return;
    }
    let build = go_bin("build", "estargz-build");
    let oci = fixtures().join("oci");
    let work = Root::new();
    let layout = work.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("layout");
    std::fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    std::fs::write(layout.join("index.json"), br#"{"schemaVersion":2,"manifests":[]}"#).expect("index");
    let mut manifest = manifest_of(&oci, "multi");
    let mut config = json(&blob(&oci, manifest["config"]["digest"].as_str().expect("config")));
    let mut diff_ids = Vec::new();
    for l in manifest["layers"].as_array_mut().expect("layers") {
        let src = blob(&oci, l["digest"].as_str().expect("digest"));
        let out = layout.join("new.blob");
        let run = Command::new(&build)
            .arg(&src)
            .arg(&out)
            .arg("1048576")
            .arg("bin/busybox")
            .output()
            .expect("estargz-build");
        assert!(run.status.success(), "estargz-build: {}", String::from_utf8_lossy(&run.stderr));
        let line = String::from_utf8_lossy(&run.stdout).into_owned();
        let f: Vec<&str> = line.split_whitespace().collect();
        let [digest, size, diff_id, toc, plain] = f[..] else { panic!("estargz-build printed {line:?}") };
        std::fs::rename(&out, blob(&layout, digest)).expect("blob into place");
        *l = serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": size.parse::<u64>().expect("size"),
            "annotations": {
                "containerd.io/snapshot/stargz/toc.digest": toc,
                "io.containers.estargz.uncompressed-size": plain,
            },
        });
        diff_ids.push(diff_id.to_string());
    }
    config["rootfs"]["diff_ids"] = serde_json::json!(diff_ids);
    let (cd, cs) = put_blob(&layout, &serde_json::to_vec(&config).expect("config"));
    manifest["config"]["digest"] = cd.into();
    manifest["config"]["size"] = cs.into();
    set_tag(&layout, "esgz", &serde_json::to_vec(&manifest).expect("manifest"));

    let reg = Registry::start(RegistryOpts::default());
    reg.push(&format!("oci:{}:esgz", layout.display()), "interop/go:esgz", false);
    let dest = format!("{}/interop/go:esgz", reg.addr);
    let pushed = crate::lazy::remote_manifest(&dest);
    assert_eq!(pushed["layers"], manifest["layers"], "skopeo kept the layers and their annotations");

    let (_u, theirs) = umoci_unpack(&layout, "esgz");
    let big = std::fs::read(theirs.join("data/big.bin")).expect("big.bin");
    let mut want = capture_reference(&theirs);
    assert_eq!(without_hidden(&mut want), 2, "the TOC and the landmark in umoci's view");
    assert_served_lazily(&reg, "interop/go", &dest, &big, &want);
}

/// A private containerd (its own root, state and socket; CRI off; its default snapshotter,
/// which nothing here unpacks into) for `ctr-remote`, stopped when dropped.
struct Ctrd {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Ctrd {
    fn start() -> Ctrd {
        // Short paths: unix socket names are limited to 108 bytes.
        let dir = tempfile::Builder::new().prefix("strata-cr-").tempdir_in("/tmp").expect("tempdir");
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("c.sock").display(),
        );
        std::fs::write(d.join("config.toml"), config).expect("config.toml");
        let log = std::fs::File::create(d.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start containerd (scripts/setup.sh installs it)");
        let c = Ctrd { dir, child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !c.raw(&["version"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "containerd did not come up:\n{}",
                std::fs::read_to_string(c.dir.path().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        c
    }

    fn raw(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr-remote")
            .arg("-a")
            .arg(self.dir.path().join("c.sock"))
            .args(["-n", "test"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run ctr-remote (Debian package stargz-snapshotter: scripts/setup.sh)")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.raw(args);
        assert!(out.status.success(), "ctr-remote {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Ctrd {
    fn drop(&mut self) {
        stop_child(&mut self.child);
        for m in mounts_under(self.dir.path()).iter().rev() {
            let _ = kernel_overlay::unmount(m, kernel_overlay::UnmountMode::Detach);
        }
    }
}

/// `ctr-remote image convert --estargz --oci` and `--zstdchunked --oci` (Debian's
/// stargz-snapshotter 0.12, against a private containerd) of the `multi` fixture, pushed by
/// ctr-remote, pulled lazily: each merged view equals `umoci unpack` of the same image (copied
/// out by skopeo, as gzip: umoci reads no zstd), but for the TOC and landmark.
#[test]
fn estargz_and_zstd_chunked_by_ctr_remote_are_served_lazily() {
    if !privileged("estargz_and_zstd_chunked_by_ctr_remote_are_served_lazily") {
        return;
    }
    let oci = fixtures().join("oci");
    let ctrd = Ctrd::start();
    let archive = ctrd.dir.path().join("multi.tar");
    skopeo_copy(
        &[],
        &format!("oci:{}:multi", oci.display()),
        &format!("oci-archive:{}:multi", archive.display()),
    );
    ctrd.ok(&[
        "images",
        "import",
        "--no-unpack",
        "--index-name",
        "strata.test/multi:1",
        &archive.to_string_lossy(),
    ]);
    let reg = Registry::start(RegistryOpts::default());
    let work = Root::new();
    for (flag, tag, media_type, hidden) in [
        ("--estargz", "esgz", "application/vnd.oci.image.layer.v1.tar+gzip", 2),
        ("--zstdchunked", "zc", "application/vnd.oci.image.layer.v1.tar+zstd", 1),
    ] {
        let converted = format!("strata.test/multi:{tag}");
        ctrd.ok(&["image", "convert", flag, "--oci", "strata.test/multi:1", &converted]);
        let dest = format!("{}/interop/ctr:{tag}", reg.addr);
        ctrd.ok(&["images", "push", "--plain-http", &dest, &converted]);
        let manifest = crate::lazy::remote_manifest(&dest);
        let manifest = if manifest["manifests"].is_array() {
            // An index (the import kept one): its one manifest.
            let d = manifest["manifests"][0]["digest"].as_str().expect("digest").to_string();
            crate::lazy::remote_manifest(&format!("{}/interop/ctr@{d}", reg.addr))
        } else {
            manifest
        };
        for l in manifest["layers"].as_array().expect("layers") {
            assert_eq!(l["mediaType"], media_type, "{l}");
        }

        let copy = work.path().join(tag);
        skopeo_copy(
            &["--dest-compress-format", "gzip"],
            &format!("docker://{dest}"),
            &format!("oci:{}:{tag}", copy.display()),
        );
        let (_u, theirs) = umoci_unpack(&copy, tag);
        let big = std::fs::read(theirs.join("data/big.bin")).expect("big.bin");
        let mut want = capture_reference(&theirs);
        assert_eq!(without_hidden(&mut want), hidden, "{tag}: the TOC and landmark in umoci's view");
        assert_served_lazily(&reg, "interop/ctr", &dest, &big, &want);
    }
}
