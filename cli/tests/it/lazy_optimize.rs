//! `strata image optimize` (issue 27): a command runs over an image on strata-fuse with its
//! read log on, then each layer is rewritten with the files the command read first, then
//! `.prefetch.landmark`; pulled lazily, those files arrive in the mount's one prefetch request.
//! Against the real registry, whose access log lists each GET of a blob with its status and
//! size.

use crate::common;
use crate::{lazy_complete, lazy_run};

use std::collections::HashMap;
use std::path::Path;

use common::registry::{Registry, RegistryOpts};
use common::*;
use strata::seekable::{Locator, Toc};

/// `opt/data/a`: 64 KiB of text; read by the command.
fn text_a() -> Vec<u8> {
    (0..4096).flat_map(|i| format!("line {i:010}\n").into_bytes()).collect()
}

/// An image `app` in `root`: busybox, and over it a layer with `opt/data/{a,b,c}` and
/// `opt/other`, `c` 3 MiB of noise (so the blob's tail, which a lazy pull keeps with the TOC,
/// ends far from the files read).
fn make_app(root: &Root) {
    root.ok(&["image", "import", &format!("{}:busybox", fixtures().join("oci").display()), "--name", "bb"]);
    root.ok(&["container", "create", "bb", "c"]);
    let at = root.ok(&["container", "mount", "c"]);
    let at = Path::new(at.trim());
    std::fs::create_dir_all(at.join("opt/data")).expect("mkdir");
    std::fs::write(at.join("opt/data/a"), text_a()).expect("write a");
    std::fs::write(at.join("opt/data/b"), b"bee\n").expect("write b");
    std::fs::write(at.join("opt/data/c"), strata_test_support::noise(3 << 20, 0x0c)).expect("write c");
    std::fs::write(at.join("opt/other"), b"other\n").expect("write other");
    root.ok(&["container", "umount", "c"]);
    root.ok(&["container", "commit", "c", "app"]);
    root.ok(&["container", "rm", "c"]);
}

/// `image inspect`'s manifest and config of `image`.
fn inspect(root: &Root, image: &str) -> (serde_json::Value, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_str(&root.ok(&["image", "inspect", image])).expect("json");
    (v["manifest"].clone(), v["config"].clone())
}

/// The verified TOC of layer descriptor `d`, its blob read from `root`'s blob store.
fn toc_of(root: &Root, d: &serde_json::Value) -> Toc {
    let digest = d["digest"].as_str().expect("digest");
    let blob = std::fs::read(root.path().join("blobs/sha256").join(digest.trim_start_matches("sha256:")))
        .expect("layer blob");
    let annotations: HashMap<String, String> =
        serde_json::from_value(d["annotations"].clone()).expect("annotations");
    let media_type = d["mediaType"].as_str().expect("media type");
    match strata::seekable::locate(media_type, &annotations, blob.len() as u64).expect("locate") {
        Some(Locator::Estargz { toc_digest }) => {
            use strata::seekable::footer::{estargz_toc_range, parse_estargz_footer};
            let off = parse_estargz_footer(&blob[blob.len() - 51..]).expect("footer");
            let r = estargz_toc_range(blob.len() as u64, off).expect("toc range");
            Toc::from_estargz(&blob[r.start as usize..r.end as usize], off, &toc_digest).expect("toc")
        }
        Some(l @ Locator::ZstdChunked { offset, length, .. }) => {
            Toc::from_zstd_chunked(&blob[offset as usize..(offset + length) as usize], &l).expect("toc")
        }
        None => panic!("layer {digest} is not seekable"),
    }
}

/// stargz-snapshotter's own reader (`lazy::estargz_check`) reads layer descriptor `d`'s blob in
/// `root`: the TOC found through the footer is the one the annotations name, every chunk
/// verifies.
fn go_reads(root: &Root, d: &serde_json::Value) {
    let digest = d["digest"].as_str().expect("digest");
    let blob = root.path().join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let a = &d["annotations"];
    let mut cmd = std::process::Command::new(crate::lazy::estargz_check());
    match a["containerd.io/snapshot/stargz/toc.digest"].as_str() {
        Some(toc) => cmd.arg(&blob).arg(toc),
        None => cmd.arg("-zstd").arg(&blob).args([
            a["io.containers.zstd-chunked.manifest-checksum"].as_str().expect("checksum"),
            a["io.containers.zstd-chunked.manifest-position"].as_str().expect("position"),
        ]),
    };
    let out = cmd.output().expect("estargz-check");
    assert!(out.status.success(), "Go's reader refused {d}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A layer path as a TOC names it: no `./`, no trailing slash; the root is `""`.
fn clean(name: &str) -> String {
    let n = name.trim_start_matches("./").trim_end_matches('/');
    if n == "." {
        String::new()
    } else {
        n.to_string()
    }
}

/// A TOC's entries by name (a file's chunks are one entry).
fn names(toc: &Toc) -> Vec<String> {
    toc.entries.iter().map(|e| clean(&e.name)).collect()
}

/// The entry names of layer descriptor `d`'s blob in `root`, cleaned as a TOC's.
fn tar_names(root: &Root, d: &serde_json::Value) -> Vec<String> {
    let digest = d["digest"].as_str().expect("digest");
    let f = std::fs::File::open(root.path().join("blobs/sha256").join(digest.trim_start_matches("sha256:")))
        .expect("blob");
    let compression = strata::compression::Compression::of_media_type(d["mediaType"].as_str().expect("type"))
        .expect("a layer media type");
    let mut ar = tar::Archive::new(compression.decoder(f).expect("decoder"));
    ar.entries()
        .expect("entries")
        .map(|e| clean(&e.expect("entry").path().expect("path").to_string_lossy()))
        .collect()
}

/// The optimized image's last line of output: its manifest digest.
fn digest_line(out: &str) -> String {
    let last = out.trim_end().rsplit('\n').next().unwrap_or_default().to_string();
    assert!(last.starts_with("sha256:") && last.len() == 71, "{out:?}");
    last
}

/// The read files come first in each layer, in the order read, then the landmark, then the
/// rest in their old order; the optimized image's tree is the original's entry by entry; pushed
/// and pulled lazily, a run of the same command gets the files of the top layer from the
/// mount's prefetch alone: one Range request of that layer's blob, from its start to the
/// landmark.
#[test]
fn optimize_puts_the_files_read_first_and_a_lazy_run_prefetches_them() {
    if !privileged("optimize_puts_the_files_read_first_and_a_lazy_run_prefetches_them") {
        return;
    }
    let src = Root::new();
    make_app(&src);
    let out = src.ok(&["image", "optimize", "app", "app:opt", "--", "cat", "/opt/data/b", "/opt/data/a"]);
    let mut want_out = b"bee\n".to_vec();
    want_out.extend(text_a());
    assert!(out.as_bytes().starts_with(&want_out), "the command's output comes first");
    let digest = digest_line(&out);
    let (orig, _) = inspect(&src, "app");
    let (m, config) = inspect(&src, "app:opt");
    let stored = src.path().join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    assert_eq!(json(&stored), m, "the digest printed is the image's manifest");
    let layers = m["layers"].as_array().expect("layers").clone();
    assert_eq!(layers.len(), 2, "{m}");

    // The top layer: what `cat` read, after its parents (the root's entry too, when the layer
    // has one), then the landmark, then the rest in the original layer's order.
    let top = names(&toc_of(&src, &layers[1]));
    let orig_top = tar_names(&src, &orig["layers"][1]);
    let mut front: Vec<String> = orig_top.iter().filter(|n| n.is_empty()).cloned().collect();
    front.extend(["opt", "opt/data", "opt/data/b", "opt/data/a", ".prefetch.landmark"].map(String::from));
    assert_eq!(top[..front.len()], front[..], "{top:?}");
    let rest: Vec<String> = orig_top.iter().filter(|n| !front.contains(n)).cloned().collect();
    assert!(rest.iter().any(|n| n == "opt/data/c") && rest.iter().any(|n| n == "opt/other"), "{rest:?}");
    assert_eq!(top[front.len()..], rest[..]);
    // The bottom layer: busybox's binary (`bin/cat` is a link to it), after `bin`.
    let bottom = toc_of(&src, &layers[0]);
    let mark = bottom.prefetch_landmark().expect("a landmark in the bottom layer");
    let before: Vec<String> = names(&bottom)[..mark].to_vec();
    assert!(before.contains(&"bin/busybox".to_string()), "{before:?}");
    // `bin/cat` is a symlink, followed by a lookup, never opened; what starting the container
    // reads comes too (`etc/passwd`, `etc/group`), a few files of the layer's hundreds.
    assert!(!before.iter().any(|n| n == "bin/cat"), "{before:?}");
    assert!(before.len() < 10 && bottom.entries.len() > 200, "{before:?}");
    for l in &layers {
        go_reads(&src, l);
    }
    // The config names the new layers.
    let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    let (_, orig_config) = inspect(&src, "app");
    assert_ne!(diff_ids, orig_config["rootfs"]["diff_ids"].as_array().expect("diff_ids"));

    // The same tree, entry by entry, but for the TOC and landmarks a plain view shows.
    let want = lazy_run::view(&src, "app");
    let mut got = lazy_run::view(&src, "app:opt");
    for hidden in strata::seekable::HIDDEN_NAMES {
        got.entries.remove(Path::new(hidden));
    }
    strata_test_support::tree::assert_trees_eq(&want, &got, "optimized vs original");
    assert!(mounts_under(src.path()).is_empty(), "{:?}", mounts_under(src.path()));

    // Pushed, pulled lazily into a fresh store, the same command run: the top layer's blob is
    // asked for once after the pull, the prefetch region exactly.
    let reg = Registry::start(RegistryOpts::default());
    let dest = format!("{}/lazy/opt:esgz", reg.addr);
    src.ok(&["push", "-q", "app:opt", &dest, "--tls-verify=false"]);
    let top_blob = layers[1]["digest"].as_str().expect("digest");
    let top_toc = toc_of(&src, &layers[1]);
    let mark = top_toc.entries[top_toc.prefetch_landmark().expect("landmark")].chunks[0].blob_offset;
    let lazy = Root::new();
    lazy.ok(&["pull", "-q", "--lazy", &dest, "--tls-verify=false"]);
    let by_pull = lazy_complete::gets(&reg.log(), "lazy/opt", top_blob);
    assert!(!by_pull.is_empty() && by_pull.iter().all(|&(s, _)| s == 206), "{by_pull:?}");
    let run = lazy.cmd(&[
        "run",
        "--lazy-background=off",
        "--rm",
        "--network",
        "none",
        &dest,
        "--",
        "cat",
        "/opt/data/b",
        "/opt/data/a",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(run.stdout, want_out);
    let after = lazy_complete::gets(&reg.log(), "lazy/opt", top_blob)[by_pull.len()..].to_vec();
    assert_eq!(after, vec![(206, mark)], "one Range request of the prefetch region");
    for l in lazy_run::local(&lazy, &dest) {
        assert_eq!(l["remote"], true, "{l}");
    }
}

/// zstd:chunked, and a command stopped by its period (a server never ends): what it read until
/// then comes first in its layer; the layer it read nothing from keeps its diff_id and gets no
/// landmark (as `image convert` writes it); no container is left.
#[test]
fn optimize_stops_the_command_at_its_period_and_keeps_unread_zstd_layers() {
    if !privileged("optimize_stops_the_command_at_its_period_and_keeps_unread_zstd_layers") {
        return;
    }
    let root = Root::new();
    make_app(&root);
    let out = root.ok(&[
        "image",
        "optimize",
        "--compression",
        "zstd:chunked",
        "--period",
        "1",
        "app",
        "app:zc",
        "--",
        "sh",
        "-c",
        "cat /etc/passwd >/dev/null; echo started; sleep 600",
    ]);
    assert!(out.starts_with("started\n"), "{out:?}");
    digest_line(&out);
    let (m, config) = inspect(&root, "app:zc");
    let (_, orig_config) = inspect(&root, "app");
    let layers = m["layers"].as_array().expect("layers");
    let bottom = toc_of(&root, &layers[0]);
    let mark = bottom.prefetch_landmark().expect("a landmark in the layer read");
    let before = names(&bottom)[..mark].to_vec();
    for read in ["etc/passwd", "bin/busybox"] {
        assert!(before.iter().any(|n| n == read), "{read} not before the landmark: {before:?}");
    }
    for l in layers {
        go_reads(&root, l);
    }
    let top = toc_of(&root, &layers[1]);
    assert!(top.prefetch_landmark().is_none(), "{:?}", names(&top));
    assert!(!names(&top).iter().any(|n| n == ".no.prefetch.landmark"), "{:?}", names(&top));
    let ids = |c: &serde_json::Value| c["rootfs"]["diff_ids"].as_array().expect("diff_ids").clone();
    assert_ne!(ids(&config)[0], ids(&orig_config)[0], "the reordered layer is another tar");
    assert_eq!(ids(&config)[1], ids(&orig_config)[1], "the layer not read keeps its diff_id");
    assert_eq!(root.ok(&["ps", "-a", "--format", "{{.Names}}"]), "");
    assert!(mounts_under(root.path()).is_empty(), "{:?}", mounts_under(root.path()));
}

/// A missing image, a command that fails and one that cannot run: a clear error naming it, a
/// non-zero status, and nothing left behind (no image, no container, no mount, no staging).
#[test]
fn optimize_refuses_a_missing_image_and_a_failing_command() {
    if !privileged("optimize_refuses_a_missing_image_and_a_failing_command") {
        return;
    }
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fixtures().join("oci").display()), "--name", "bb"]);
    let images = || root.ok(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    let before = images();

    let out = root.cmd(&["image", "optimize", "nosuch", "nosuch:opt", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("\"nosuch\"") && err.contains("not found"), "{err}");

    let out = root.cmd(&["image", "optimize", "bb", "bb:opt", "--", "sh", "-c", "cat /etc/passwd; exit 3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("sh -c cat /etc/passwd; exit 3") && err.contains("exited with 3"), "{err}");

    let out = root.cmd(&["image", "optimize", "bb", "bb:opt", "--", "/no/such/cmd"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{err}");
    assert!(err.contains("/no/such/cmd"), "{err}");

    assert_eq!(images(), before);
    assert!(!root.cmd(&["image", "inspect", "bb:opt"]).status.success());
    assert_eq!(root.ok(&["ps", "-a", "--format", "{{.Names}}"]), "");
    assert!(mounts_under(root.path()).is_empty(), "{:?}", mounts_under(root.path()));
    let staging: Vec<_> = std::fs::read_dir(root.path().join("staging"))
        .map(|d| d.map(|e| e.expect("entry").file_name()).collect())
        .unwrap_or_default();
    assert!(staging.is_empty(), "{staging:?}");
}
