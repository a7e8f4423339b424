//! Containers over lazily pulled images (issue 27): `strata run` starts before the layers have
//! arrived, its rootfs mounted by strata-fuse over the layers' skeletons, each file's chunks
//! fetched from the registry when read, verified, cached. Against the real registry
//! (docker-registry), whose access log says how many bytes of each blob it served, and the
//! fault proxy in front of it for corrupted chunks and a registry that is gone.

use crate::common;

use std::path::Path;

use common::registry::{FaultProxy, Registry, RegistryOpts, CORRUPT};
use common::*;

/// `data/noise`: 3 MiB that do not compress.
pub(crate) fn noise() -> Vec<u8> {
    strata_test_support::noise(3 << 20, 0x5eed)
}

/// An eStargz image at `dest` on `reg` pushed from `src`: busybox, and over it a layer with
/// 3 MiB of noise, a small `etc/motd` and `etc/issue`. Returns the manifest.
pub(crate) fn push_image(src: &Root, dest: &str) -> serde_json::Value {
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
pub(crate) fn served(log: &str, repo: &str, digest: &str) -> u64 {
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
pub(crate) fn whole_gets(log: &str, repo: &str, digest: &str) -> usize {
    log.matches(&format!("\"GET /v2/{repo}/blobs/{digest} HTTP/1.1\" 200")).count()
}

/// The layers of `manifest`: (digest, size), bottom first.
pub(crate) fn layers(manifest: &serde_json::Value) -> Vec<(String, u64)> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| (l["digest"].as_str().expect("digest").to_string(), l["size"].as_u64().expect("size")))
        .collect()
}

/// `image inspect`'s `local` entries of `image`.
pub(crate) fn local(root: &Root, image: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&root.ok(&["image", "inspect", image])).expect("json");
    v["local"].as_array().expect("local").clone()
}

/// A read-only view of `image` in `root`, mounted as `container mount` does (strata-fuse over
/// remote layers, the kernel otherwise), captured entry by entry.
pub(crate) fn view(root: &Root, image: &str) -> strata_test_support::tree::Tree {
    root.ok(&["container", "create", "--read-only", image, "v"]);
    let at = root.ok(&["--lazy-background=off", "container", "mount", "v"]);
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
    let noise_size = blobs[1].1;
    assert!(noise_size > 3 << 20, "{noise_size}");

    let lazy = Root::new();
    lazy.ok(&["pull", "-q", "--lazy", &dest, "--tls-verify=false"]);
    let pulled: Vec<u64> = blobs.iter().map(|(d, _)| served(&reg.log(), "lazy/run", d)).collect();
    assert!(pulled.iter().all(|&n| n > 0), "the TOCs were fetched: {pulled:?}");
    let local_bytes = |root: &Root| -> u64 {
        local(root, &dest).iter().map(|l| l["bytes_local"].as_u64().expect("bytes_local")).sum()
    };
    let toc_only = local_bytes(&lazy);

    // (a) The command sees its file.
    assert_eq!(
        lazy.ok(&["run", "--lazy-background=off", "--rm", &dest, "--", "cat", "/etc/motd"]),
        "lazy motd\n"
    );
    // (b) The run fetched what it read: busybox's binary from the lower layer; of the noise
    // layer at most a chunk (`etc/motd` lies in the blob's tail, which the pull fetched with the
    // TOC and kept), far less than the blob (the 3 MiB file stays in the registry). No blob was
    // fetched whole.
    let log = reg.log();
    let by_run: Vec<u64> =
        blobs.iter().zip(&pulled).map(|((d, _), p)| served(&log, "lazy/run", d) - p).collect();
    assert!(by_run[0] > 0, "the run fetched nothing of the busybox layer");
    assert!(by_run[1] < noise_size / 20, "the run fetched {} bytes of {noise_size}", by_run[1]);
    for (d, _) in &blobs {
        assert_eq!(whole_gets(&log, "lazy/run", d), 0, "a whole-blob GET of {d}");
    }
    let total: u64 = blobs.iter().map(|(d, _)| served(&log, "lazy/run", d)).sum();
    let sizes: u64 = blobs.iter().map(|(_, s)| s).sum();
    assert!(total < sizes / 2, "served {total} of {sizes} bytes");
    // The layers are still remote: nothing was completed; the chunks fetched count as local
    // (recorded by strata-fuse as it ends, after the run has unmounted it).
    for l in local(&lazy, &dest) {
        assert_eq!(l["remote"], true, "{l}");
    }
    let by_run: u64 = by_run.iter().sum();
    assert!(wait_for(10, || local_bytes(&lazy) > toc_only), "bytes_local stayed {toc_only}");
    assert!(local_bytes(&lazy) - toc_only <= by_run, "more local than fetched");

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

/// Every file of the chunk cache of remote layer `diff_id` in `root` is a verified chunk named
/// by its digest; returns how many there are.
pub(crate) fn verified_chunks(root: &Root, diff_id: &str) -> usize {
    let dir = root.path().join("remote").join(diff_id.trim_start_matches("sha256:")).join("chunks");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("chunk cache") {
        let e = e.expect("entry");
        let data = std::fs::read(e.path()).expect("read chunk");
        assert_eq!(
            sha(&data).trim_start_matches("sha256:"),
            e.file_name().to_string_lossy(),
            "an unverified chunk"
        );
        n += 1;
    }
    n
}

/// A read the container's process gets EIO for: `cat` fails and says so.
fn assert_eio(out: &std::process::Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: succeeded");
    assert!(err.contains("I/O error") || err.contains("Input/output error"), "{what}: {err}");
}

/// Requests for `digest`'s blob the proxy saw.
fn seen(proxy: &FaultProxy, digest: &str) -> usize {
    proxy.seen.lock().expect("seen").iter().filter(|r| r.contains(digest)).count()
}

/// (d) A chunk whose bytes were changed on the way is never served: the reading process gets
/// EIO, strata-fuse's log names the layer and the file, nothing unverified is cached, the layer
/// is marked bad (`image inspect` says why) and nothing more is fetched for it, while what was
/// cached still reads.
#[test]
fn a_corrupted_chunk_is_eio_and_marks_the_layer_bad() {
    if !privileged("a_corrupted_chunk_is_eio_and_marks_the_layer_bad") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let proxy = FaultProxy::start(&reg.addr, vec![]);
    let src = Root::new();
    let manifest = push_image(&src, &format!("{}/lazy/bad:esgz", reg.addr));
    let noise_blob = layers(&manifest)[1].0.clone();
    let image = format!("{}/lazy/bad:esgz", proxy.addr);
    let lazy = Root::new();
    lazy.ok(&["pull", "-q", "--lazy", &image, "--tls-verify=false"]);
    let diff_id = local(&lazy, &image)[1]["diff_id"].as_str().expect("diff_id").to_string();
    assert_eq!(
        lazy.ok(&["run", "--lazy-background=off", "--rm", &image, "--", "cat", "/etc/motd"]),
        "lazy motd\n"
    );

    proxy.arm("GET", &noise_blob, CORRUPT);
    let out =
        lazy.cmd(&["run", "--lazy-background=off", "--name", "reader", &image, "--", "cat", "/data/noise"]);
    assert_eio(&out, "reading a corrupted chunk");
    let log = std::fs::read_to_string(lazy.path().join("containers/reader/fuse.log")).expect("fuse.log");
    assert!(log.contains(&diff_id) && log.contains("data/noise") && log.contains("does not match"), "{log}");
    lazy.ok(&["container", "rm", "--force", "reader"]);
    assert!(verified_chunks(&lazy, &diff_id) >= 1, "the motd's chunk is cached");
    let l = &local(&lazy, &image)[1];
    assert!(l["bad"].as_str().is_some_and(|b| b.contains("data/noise")), "{l}");

    // Bad for good: an uncached file of the layer is EIO without a request, a cached one reads.
    let before = seen(&proxy, &noise_blob);
    assert_eio(
        &lazy.cmd(&["run", "--lazy-background=off", "--rm", &image, "--", "cat", "/etc/issue"]),
        "a bad layer's file",
    );
    assert_eq!(seen(&proxy, &noise_blob), before, "a bad layer was fetched from");
    assert_eq!(
        lazy.ok(&["run", "--lazy-background=off", "--rm", &image, "--", "cat", "/etc/motd"]),
        "lazy motd\n"
    );
}

/// (e) The registry gone: files whose chunks are cached still read, an uncached read fails
/// with EIO (the reader gives up within its deadline: a refused connection fails at once);
/// once it is back, the file reads.
#[test]
fn with_the_registry_gone_cached_files_read_and_others_fail() {
    if !privileged("with_the_registry_gone_cached_files_read_and_others_fail") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let proxy = FaultProxy::start(&reg.addr, vec![]);
    let src = Root::new();
    push_image(&src, &format!("{}/lazy/gone:esgz", reg.addr));
    let image = format!("{}/lazy/gone:esgz", proxy.addr);
    let lazy = Root::new();
    lazy.ok(&["pull", "-q", "--lazy", &image, "--tls-verify=false"]);
    assert_eq!(
        lazy.ok(&["run", "--lazy-background=off", "--rm", &image, "--", "cat", "/etc/motd"]),
        "lazy motd\n"
    );

    let addr = proxy.addr.clone();
    drop(proxy);
    assert!(
        wait_for(10, || std::net::TcpStream::connect(&addr).is_err()),
        "the proxy still accepts connections"
    );
    assert_eq!(
        lazy.ok(&["run", "--lazy-background=off", "--rm", &image, "--", "cat", "/etc/motd"]),
        "lazy motd\n"
    );
    // `data/noise` is not in the blob's tail (which the pull kept with the TOC).
    assert_eio(
        &lazy.cmd(&["run", "--lazy-background=off", "--rm", &image, "--", "cat", "/data/noise"]),
        "an uncached file",
    );
    // Not marked bad: the registry is only away.
    for l in local(&lazy, &image) {
        assert!(l.get("bad").is_none(), "{l}");
    }
    // Back at its address: work resumes, the file reads whole.
    let _back = FaultProxy::start_at(&addr, &reg.addr, vec![]);
    let sum = lazy.ok(&["run", "--lazy-background=off", "--rm", &image, "--", "sha256sum", "/data/noise"]);
    assert_eq!(sum.split_whitespace().next(), Some(sha(&noise()).trim_start_matches("sha256:")), "{sum}");
}
