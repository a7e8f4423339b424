//! Lazily pulled layers arriving ahead of the reads (issue 27): the files before an eStargz
//! layer's `.prefetch.landmark` fetched first, in one request, as strata-fuse mounts it; then
//! the background completion that makes each layer whole, verified, and ordinary. Against the
//! real registry, whose access log lists each GET of a blob with its status and size.

use crate::common;

use std::path::Path;

use common::registry::{Registry, RegistryOpts};
use common::*;

/// GETs of blob `digest` of `repo` in the registry's access log: (status, bytes).
fn gets(log: &str, repo: &str, digest: &str) -> Vec<(u16, u64)> {
    let request = format!("\"GET /v2/{repo}/blobs/{digest} HTTP/1.1\" ");
    log.lines()
        .filter_map(|l| {
            let mut rest = l.split(&request).nth(1)?.split_whitespace();
            Some((rest.next()?.parse().ok()?, rest.next()?.parse().ok()?))
        })
        .collect()
}

/// Whether `f` becomes true within `secs` seconds (a deadline, never an assertion on time).
fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// A one-layer eStargz image with a prefetch landmark, pushed to `reg` as `repo:esgz`: the layer
/// holds `pf/` with `pf/a` (200 KiB of noise) and `pf/b` before `.prefetch.landmark`, then
/// `data/noise` (3 MiB) and `etc/motd`. Returns the layer's blob digest and where the landmark
/// starts in it (the prefetch region is the blob up to there).
fn push_prefetch_image(reg: &Registry, repo: &str) -> (String, u64) {
    use strata::seekable::footer::{estargz_toc_range, parse_estargz_footer};
    use strata::seekable::write::{write_estargz, EstargzOptions, Landmark};
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        let dir = path.ends_with('/');
        h.set_entry_type(if dir { tar::EntryType::Directory } else { tar::EntryType::Regular });
        h.set_size(data.len() as u64);
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, data).expect("tar");
    };
    add("pf/", b"");
    add("pf/a", &strata_test_support::noise(200 << 10, 11));
    add("pf/b", b"prefetched\n");
    add("data/", b"");
    add("data/noise", &strata_test_support::noise(3 << 20, 12));
    add("etc/", b"");
    add("etc/motd", b"after the landmark\n");
    let tar = b.into_inner().expect("tar");
    let opts = EstargzOptions { landmark: Landmark::PrefetchAfter(3), ..Default::default() };
    let (info, blob) = write_estargz(&tar[..], Vec::new(), &opts).expect("estargz");
    let off = parse_estargz_footer(&blob[blob.len() - 51..]).expect("footer");
    let r = estargz_toc_range(blob.len() as u64, off).expect("toc range");
    let toc =
        strata::seekable::Toc::from_estargz(&blob[r.start as usize..r.end as usize], off, &info.toc_digest)
            .expect("toc");
    let mark = toc.entries[toc.prefetch_landmark().expect("landmark")].chunks[0].blob_offset;

    let layout = tempfile::tempdir_in(reg.dir.path()).expect("tempdir");
    let dir = layout.path();
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    std::fs::write(dir.join("index.json"), br#"{"schemaVersion":2,"manifests":[]}"#).expect("index");
    let (ld, ls) = put_blob(dir, &blob);
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]}, "rootfs": {"type": "layers", "diff_ids": [info.diff_id.to_string()]}});
    let (cd, cs) = put_blob(dir, &serde_json::to_vec(&config).expect("json"));
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls,
            "annotations": {"containerd.io/snapshot/stargz/toc.digest": info.toc_digest.to_string(),
                "io.containers.estargz.uncompressed-size": info.uncompressed_size.to_string()}}]});
    set_tag(dir, "esgz", &serde_json::to_vec(&manifest).expect("json"));
    reg.push(&format!("oci:{}:esgz", dir.display()), &format!("{repo}:esgz"), false);
    (ld, mark)
}

/// Files before the landmark arrive first: once strata-fuse has mounted the layer, the
/// registry serves one Range request of the blob covering exactly the prefetch region (its
/// start to the landmark), reads of those files wait for it rather than fetching their own
/// chunks, and read again they cost no request.
#[test]
fn prefetch_fetches_the_files_before_the_landmark_in_one_request() {
    if !privileged("prefetch_fetches_the_files_before_the_landmark_in_one_request") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let (blob, mark) = push_prefetch_image(&reg, "lazy/pf");
    let image = format!("{}/lazy/pf:esgz", reg.addr);
    let lazy = Root::new();
    lazy.ok(&["pull", "-q", "--lazy", &image, "--tls-verify=false"]);
    let by_pull = gets(&reg.log(), "lazy/pf", &blob);
    assert!(!by_pull.is_empty() && by_pull.iter().all(|&(s, _)| s == 206), "{by_pull:?}");

    lazy.ok(&["container", "create", "--read-only", &image, "v"]);
    // Background completion off: only the prefetch and the reads fetch.
    let at = lazy.ok(&["--lazy-background=off", "container", "mount", "v"]);
    let at = Path::new(at.trim());
    assert_eq!(std::fs::read(at.join("pf/a")).expect("read pf/a"), strata_test_support::noise(200 << 10, 11));
    assert_eq!(std::fs::read(at.join("pf/b")).expect("read pf/b"), b"prefetched\n");
    let mount_gets = || gets(&reg.log(), "lazy/pf", &blob)[by_pull.len()..].to_vec();
    assert!(wait_for(10, || !mount_gets().is_empty()), "no request since the pull");
    assert_eq!(mount_gets(), vec![(206, mark)], "one Range request of the prefetch region");
    // Read again: from the cache.
    assert_eq!(std::fs::read(at.join("pf/b")).expect("read pf/b"), b"prefetched\n");
    assert_eq!(std::fs::read(at.join("pf/a")).expect("read pf/a").len(), 200 << 10);
    // A file at the blob's end came with the TOC's tail (the pull kept those bytes): no request.
    assert_eq!(std::fs::read(at.join("etc/motd")).expect("read etc/motd"), b"after the landmark\n");
    // One after the landmark is fetched when read, by a request of its own.
    assert_eq!(
        std::fs::read(at.join("data/noise")).expect("read data/noise"),
        strata_test_support::noise(3 << 20, 12)
    );
    assert!(wait_for(10, || mount_gets().len() == 2), "{:?}", mount_gets());
    assert_eq!(mount_gets()[1].0, 206);
    // (Its chunk's end lies in the kept tail: only the rest is asked for.)
    assert!(mount_gets()[1].1 > 2 << 20, "{:?}", mount_gets());
    lazy.ok(&["container", "rm", "--force", "v"]);
}
