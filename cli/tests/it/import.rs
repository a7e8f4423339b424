//! Import: every source format, verified digests, layers unpacked once, trees equal to what
//! `umoci unpack` produces, and failures that leave nothing behind.

use crate::common;
use crate::common::layout;
use crate::common::tarw;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use layout::layout_with_layers;
use serde_json::Value;
use strata_test_support::tree::assert_trees_eq;

/// Mount image `name` read-only in `root` and compare with the umoci reference rootfs.
fn assert_image_matches(root: &Root, name: &str, reference: &Path) {
    let cname = format!("cmp-{}", name.replace(':', "-"));
    root.ok(&["container", "create", "--read-only", name, &cname]);
    let at = root.ok(&["container", "mount", &cname, "--backend", "kernel"]);
    let got = capture(Path::new(at.trim()));
    root.ok(&["container", "umount", &cname]);
    root.ok(&["container", "rm", &cname]);
    assert_trees_eq(&capture_reference(reference), &got, &format!("umoci unpack vs strata mount of {name}"));
}

fn layer_dirs(root: &Root) -> Vec<String> {
    let Ok(dir) = fs::read_dir(root.path().join("layers/sha256")) else { return Vec::new() };
    let mut v: Vec<String> =
        dir.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn staging_entries(root: &Root) -> Vec<String> {
    fs::read_dir(root.path().join("staging"))
        .expect("staging dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

fn db_count(root: &Root, table: &str) -> i64 {
    let c = rusqlite::Connection::open(root.path().join("strata.db")).expect("db");
    c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).expect("count")
}

/// Every layer in context: the image truncated to its first k layers, for each k, mounted by
/// strata, equals umoci's unpack of the same truncated image, entry by entry.
#[test]
fn each_layer_stack_matches_umoci() {
    if !privileged("each_layer_stack_matches_umoci") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let layout = root.path().join("layout");
    copy_layout(&fx.join("oci"), &layout);
    for tag in ["multi", "multi-opaque"] {
        let n = manifest_of(&layout, tag)["layers"].as_array().expect("layers").len();
        assert!(n >= 2, "{tag} has {n} layers");
        for k in 1..=n {
            let t = format!("{tag}-upto-{k}");
            add_prefix_image(&layout, tag, k, &t);
            root.ok(&["image", "import", &format!("{}:{t}", layout.display())]);
            let (_keep, reference) = umoci_unpack(&layout, &t);
            assert_image_matches(&root, &t, &reference);
        }
    }
    // The bottom layer's own directory is exactly umoci's one-layer tree.
    let (_keep, reference) = umoci_unpack(&layout, "multi-upto-1");
    let m = manifest_of(&layout, "multi-upto-1");
    let config = json(&blob(&layout, m["config"]["digest"].as_str().expect("config")));
    let diff_id = config["rootfs"]["diff_ids"][0].as_str().expect("diff_id").trim_start_matches("sha256:");
    assert_trees_eq(
        &capture_reference(&reference),
        &capture(&root.path().join("layers/sha256").join(diff_id)),
        "layer 1",
    );
}

/// One image in every format strata reads gives the same layers and the same tree.
#[test]
fn all_formats_import_the_same_image() {
    if !privileged("all_formats_import_the_same_image") {
        return;
    }
    let fx = fixtures();
    let (_keep, reference) = umoci_unpack(&fx.join("oci"), "multi");
    let sources = [
        ("oci", format!("{}:multi", fx.join("oci").display())),
        ("zstd", format!("{}:multi-zstd", fx.join("oci-zstd").display())),
        ("plain", format!("{}:multi-plain", fx.join("oci-plain").display())),
        ("ociarchive", fx.join("multi.oci.tar").display().to_string()),
        ("docker", fx.join("multi.docker.tar").display().to_string()),
        ("dockeroci", fx.join("multi.docker-oci.tar").display().to_string()),
    ];
    let root = Root::new();
    let mut diff_ids: Option<Vec<String>> = None;
    for (name, src) in &sources {
        let digest = root.ok(&["image", "import", src, "--name", name]);
        assert!(digest.trim().starts_with("sha256:") && digest.trim().len() == 71, "{name}: {digest}");
        let inspect: Value =
            serde_json::from_str(&root.ok(&["image", "inspect", name])).expect("inspect json");
        let ids: Vec<String> = inspect["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["diff_id"].as_str().expect("id").into())
            .collect();
        match &diff_ids {
            None => diff_ids = Some(ids),
            Some(first) => assert_eq!(first, &ids, "{name}: diff_ids differ from the OCI layout's"),
        }
        assert_image_matches(&root, name, &reference);
    }
    // Shared layers were unpacked once: one directory per distinct diff_id.
    let mut want: Vec<String> =
        diff_ids.expect("imported").iter().map(|d| d.trim_start_matches("sha256:").to_string()).collect();
    want.sort();
    want.dedup();
    assert_eq!(layer_dirs(&root), want);
    // ls shows all of them.
    let ls: Value = serde_json::from_str(&root.ok(&["image", "ls", "--json"])).expect("ls json");
    assert_eq!(ls.as_array().expect("array").len(), sources.len());
}

#[test]
fn multi_platform_index_picks_host_or_requested_platform() {
    if !privileged("multi_platform_index_picks_host_or_requested_platform") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let src = format!("{}:multi-arch", fx.join("oci-index").display());
    root.ok(&["image", "import", &src, "--name", "host"]);
    root.ok(&["image", "import", &src, "--name", "arm", "--platform", "linux/arm64"]);
    let arch = |n: &str| -> String {
        let v: Value = serde_json::from_str(&root.ok(&["image", "inspect", n])).expect("json");
        v["config"]["architecture"].as_str().expect("arch").to_string()
    };
    assert_eq!(arch("host"), "amd64");
    assert_eq!(arch("arm"), "arm64");
    let err = root.fails(&["image", "import", &src, "--name", "s390", "--platform", "linux/s390x"]);
    assert!(err.contains("no manifest for platform linux/s390x"), "{err}");
}

#[test]
fn name_defaults_to_the_layout_tag_and_rm_gc_clean_up() {
    if !privileged("name_defaults_to_the_layout_tag_and_rm_gc_clean_up") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display())]);
    root.ok(&["image", "import", &format!("{}:many-2", fx.join("oci").display())]);
    assert!(root.ok(&["image", "ls"]).contains("busybox"));
    root.ok(&["container", "create", "busybox", "c"]);
    let err = root.fails(&["image", "rm", "busybox"]);
    assert!(err.contains("used by container(s) c"), "{err}");
    root.ok(&["container", "rm", "c"]);
    root.ok(&["image", "rm", "busybox"]);
    // many-2 shares busybox's base layer: gc keeps it and removes nothing of many-2.
    let before = layer_dirs(&root).len();
    root.ok(&["gc"]);
    assert_eq!(layer_dirs(&root).len(), before);
    root.ok(&["image", "rm", "many-2"]);
    root.ok(&["gc"]);
    assert!(layer_dirs(&root).is_empty());
    assert_eq!(fs::read_dir(root.path().join("blobs/sha256")).expect("blobs").count(), 0);
    assert_eq!(db_count(&root, "layers"), 0);
    let err = root.fails(&["image", "rm", "nope"]);
    assert!(err.contains("image \"nope\" not found"), "{err}");
}

/// Importing many images that share layers at the same time unpacks each layer once.
#[test]
fn concurrent_imports_share_layers() {
    if !privileged("concurrent_imports_share_layers") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let layout = fx.join("oci");
    let mut children = Vec::new();
    for i in 0..6 {
        let tag = if i % 2 == 0 { "many-128" } else { "many-2" };
        children.push(
            Command::new(common::STRATA)
                .arg("--root")
                .arg(root.path())
                .args(["image", "import", &format!("{}:{tag}", layout.display()), "--name", &format!("i{i}")])
                .output()
                .expect("spawn"),
        );
    }
    // (The Commands above ran one after another; now really concurrently:)
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let tag = if i % 2 == 0 { "many-128" } else { "many-2" };
            Command::new(common::STRATA)
                .arg("--root")
                .arg(root.path())
                .args(["image", "import", &format!("{}:{tag}", layout.display()), "--name", &format!("j{i}")])
                .spawn()
                .expect("spawn")
        })
        .collect();
    for mut h in handles {
        assert!(h.wait().expect("wait").success());
    }
    for c in children {
        assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    }
    let m = manifest_of(&layout, "many-128");
    let config = json(&blob(&layout, m["config"]["digest"].as_str().expect("config")));
    let mut want: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|d| d.as_str().expect("str").trim_start_matches("sha256:").to_string())
        .collect();
    want.sort();
    want.dedup();
    assert_eq!(layer_dirs(&root), want, "one directory per distinct layer");
    assert_eq!(db_count(&root, "layers") as usize, want.len());
    assert_eq!(db_count(&root, "leases"), 0);
    assert!(staging_entries(&root).is_empty());
}

/// A broken import leaves no layer directory, no row and no staging debris.
fn assert_clean(root: &Root) {
    root.ok(&["image", "ls"]);
    assert!(layer_dirs(root).is_empty(), "layer dirs left: {:?}", layer_dirs(root));
    assert!(staging_entries(root).is_empty(), "staging left: {:?}", staging_entries(root));
    assert_eq!(db_count(root, "layers"), 0);
    assert_eq!(db_count(root, "images"), 0);
    assert_eq!(db_count(root, "leases"), 0);
}

/// Corrupt inputs: each fails naming the file or layer and the reason, and leaves nothing.
#[test]
fn corrupt_images_fail_cleanly() {
    if !privileged("corrupt_images_fail_cleanly") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let work = root.path().join("work");
    fs::create_dir_all(&work).expect("work");
    let base = fx.join("oci");
    let m = manifest_of(&base, "multi");
    let layers = m["layers"].as_array().expect("layers").clone();
    let top = layers.last().expect("layer")["digest"].as_str().expect("digest").to_string();
    let top_bytes = fs::read(blob(&base, &top)).expect("top blob");

    // (case name, how to break the layout, expected message fragment)
    type Breaker<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, Breaker<'_>, &str)> = vec![
        (
            "layer digest mismatch",
            Box::new(|l: &Path| {
                let p = blob(l, &top);
                let mut b = top_bytes.clone();
                let n = b.len();
                b[n - 10] ^= 0xff;
                let _ = fs::remove_file(&p);
                fs::write(p, b).expect("write");
            }),
            "",
        ),
        (
            "truncated layer",
            Box::new(|l: &Path| {
                let p = blob(l, &top);
                let _ = fs::remove_file(&p);
                fs::write(p, &top_bytes[..top_bytes.len() / 2]).expect("write");
            }),
            "",
        ),
        (
            "corrupt gzip",
            Box::new(|l: &Path| {
                let p = blob(l, &top);
                let mut b = top_bytes.clone();
                for x in b.iter_mut().skip(20).take(64) {
                    *x = 0x55;
                }
                let _ = fs::remove_file(&p);
                fs::write(p, b).expect("write");
            }),
            "",
        ),
        (
            "missing layer blob",
            Box::new(|l: &Path| fs::remove_file(blob(l, &top)).expect("rm")),
            "missing file blobs/sha256/",
        ),
        (
            "manifest digest mismatch",
            Box::new(|l: &Path| {
                let mut idx = json(&l.join("index.json"));
                for d in idx["manifests"].as_array_mut().expect("m") {
                    if d["annotations"]["org.opencontainers.image.ref.name"] == "multi" {
                        let p = blob(l, d["digest"].as_str().expect("d"));
                        let mut b = fs::read(&p).expect("read");
                        b.push(b' ');
                        let _ = fs::remove_file(&p);
                        fs::write(&p, &b).expect("write");
                        d["size"] = (b.len() as u64).into();
                    }
                }
                fs::write(l.join("index.json"), serde_json::to_vec(&idx).expect("j")).expect("w");
            }),
            "digest mismatch",
        ),
        (
            "malformed layer digest",
            Box::new(|l: &Path| {
                let mut mm = manifest_of(l, "multi");
                mm["layers"][0]["digest"] = "sha256:../../../../etc/passwd".into();
                set_tag(l, "multi", &serde_json::to_vec(&mm).expect("j"));
            }),
            "../../../../etc/passwd",
        ),
        (
            "uppercase digest",
            Box::new(|l: &Path| {
                let mut mm = manifest_of(l, "multi");
                let d =
                    mm["layers"][0]["digest"].as_str().expect("d").to_uppercase().replace("SHA256", "sha256");
                mm["layers"][0]["digest"] = d.into();
                set_tag(l, "multi", &serde_json::to_vec(&mm).expect("j"));
            }),
            "non-hexadecimal character",
        ),
        (
            "diff_id mismatch",
            Box::new(|l: &Path| {
                let mut mm = manifest_of(l, "multi");
                let mut config = json(&blob(l, mm["config"]["digest"].as_str().expect("c")));
                config["rootfs"]["diff_ids"][1] = format!("sha256:{}", "ab".repeat(32)).into();
                let (cd, cs) = put_blob(l, &serde_json::to_vec(&config).expect("j"));
                mm["config"]["digest"] = cd.into();
                mm["config"]["size"] = cs.into();
                set_tag(l, "multi", &serde_json::to_vec(&mm).expect("j"));
            }),
            "diff_id mismatch",
        ),
        (
            "layer size mismatch",
            Box::new(|l: &Path| {
                let mut mm = manifest_of(l, "multi");
                let s = mm["layers"][0]["size"].as_u64().expect("s");
                mm["layers"][0]["size"] = (s - 1).into();
                set_tag(l, "multi", &serde_json::to_vec(&mm).expect("j"));
            }),
            "larger than",
        ),
        (
            "unknown media type",
            Box::new(|l: &Path| {
                let mut mm = manifest_of(l, "multi");
                mm["layers"][0]["mediaType"] = "application/x-evil".into();
                set_tag(l, "multi", &serde_json::to_vec(&mm).expect("j"));
            }),
            "unsupported layer media type",
        ),
    ];
    for (i, (name, brk, want)) in cases.iter().enumerate() {
        let l = work.join(format!("l{i}"));
        copy_layout(&base, &l);
        brk(&l);
        let err = root.fails(&["image", "import", &format!("{}:multi", l.display())]);
        assert!(err.contains("strata: error: importing"), "{name}: {err}");
        assert!(err.contains(want), "{name}: expected {want:?} in: {err}");
        if *name != "missing layer blob" && !name.contains("media") && !name.contains("digest") {
            // Layer errors name the layer.
            assert!(err.contains("layer sha256:"), "{name}: {err}");
        }
        assert_clean(&root);
    }
    let err = root.fails(&["image", "import", "/nonexistent/layout:tag"]);
    assert!(err.contains("/nonexistent/layout"), "{err}");
    let err = root.fails(&["image", "import", &format!("{}:nosuchtag", base.display())]);
    assert!(err.contains("no image tagged \"nosuchtag\""), "{err}");
    assert_clean(&root);
}

/// kill -9 in the middle of an import: the next command removes the half-built layer, the
/// staging directory and the import's rows.
#[test]
fn killed_import_leaves_nothing_after_next_command() {
    if !privileged("killed_import_leaves_nothing_after_next_command") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let l = root.path().join("layout");
    copy_layout(&fx.join("oci"), &l);
    // Replace the second layer by an 8 GiB sparse blob of zeros declared as an uncompressed tar:
    // the import finishes layer 1, then spends a long time hashing layer 2 (its tar ends at once,
    // its digest can only fail at the very end) until killed. (A FIFO blob no longer blocks: it is
    // refused as not a regular file.)
    let mut m = manifest_of(&l, "many-2");
    let fake = format!("sha256:{}", "e".repeat(64));
    let f = fs::File::create(blob(&l, &fake)).expect("create");
    f.set_len(8 << 30).expect("sparse blob");
    m["layers"][1] = serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": fake, "size": 8u64 << 30,
    });
    set_tag(&l, "many-2", &serde_json::to_vec(&m).expect("manifest json"));
    let mut child = Command::new(common::STRATA)
        .arg("--root")
        .arg(root.path())
        .args(["image", "import", &format!("{}:many-2", l.display())])
        .spawn()
        .expect("spawn");
    // Wait until layer 1 is in place.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while layer_dirs(&root).is_empty() {
        assert!(std::time::Instant::now() < deadline, "layer 1 never appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert!(!staging_entries(&root).is_empty(), "the killed import had staging state");
    assert_clean(&root);
}

/// A full disk mid-import: the error names the layer and the cause, and nothing is left behind.
#[test]
fn full_disk_fails_cleanly() {
    if !privileged("full_disk_fails_cleanly") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    // A 4 MB filesystem as the state root: multi's 5 MB file does not fit.
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"])
        .arg(root.path())
        .status()
        .expect("mount tmpfs");
    assert!(st.success());
    let err = root.fails(&["image", "import", &format!("{}:multi", fx.join("oci").display())]);
    assert!(err.contains("layer sha256:"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_clean(&root);
    let st = Command::new("umount").arg(root.path()).status().expect("umount");
    assert!(st.success());
}

/// skopeo's transport-qualified references import the same image as the plain forms; a transport
/// that does not match what the path holds is refused, and a registry reference points to pull.
#[test]
fn transport_qualified_references() {
    if !privileged("transport_qualified_references") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let plain = root.ok(&["image", "import", &format!("{}:multi", fx.join("oci").display()), "--name", "p"]);
    let oci =
        root.ok(&["image", "import", &format!("oci:{}:multi", fx.join("oci").display()), "--name", "o"]);
    assert_eq!(plain, oci);
    let arch = fx.join("multi.oci.tar");
    let a = root.ok(&["image", "import", &format!("oci-archive:{}", arch.display()), "--name", "a"]);
    assert_eq!(a, plain, "the oci-archive holds the same manifest");
    let d = fx.join("multi.docker.tar");
    root.ok(&["image", "import", &format!("docker-archive:{}", d.display()), "--name", "d"]);
    let err = root.fails(&["image", "import", &format!("oci-archive:{}", d.display()), "--name", "x"]);
    assert!(err.contains("holds a docker-archive, not an oci-archive"), "{err}");
    let err = root.fails(&["image", "import", &format!("oci:{}", arch.display()), "--name", "x"]);
    assert!(err.contains("holds an oci-archive, not an OCI image layout"), "{err}");
    let err = root.fails(&["image", "import", "docker://busybox", "--name", "x"]);
    assert!(err.contains("docker.io/library/busybox:latest") && err.contains("strata pull"), "{err}");
}

/// Rows of `sql` in the root's database, each as its columns' text.
fn db_rows(root: &Root, sql: &str) -> Vec<Vec<String>> {
    let c = rusqlite::Connection::open(root.path().join("strata.db")).expect("db");
    let mut st = c.prepare(sql).expect("prepare");
    let n = st.column_count();
    let rows = st
        .query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        other => format!("{other:?}"),
                    })
                })
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .expect("query");
    rows.collect::<rusqlite::Result<Vec<_>>>().expect("rows")
}

fn blob_names(root: &Root) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root.path().join("blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `--jobs 4` builds the store `--jobs 1` builds, for layouts with whiteouts and opaque
/// directories, 128 layers (some shared) and a docker-archive (layers named by file, not digest):
/// the same manifest digests, the same layer directories, each the same tree entry by entry,
/// and the same layer, image and blob rows.
#[test]
fn parallel_import_builds_the_same_store_as_sequential() {
    if !privileged("parallel_import_builds_the_same_store_as_sequential") {
        return;
    }
    let fx = fixtures();
    let sources = [
        ("opaque", format!("{}:multi-opaque", fx.join("oci").display())),
        ("many", format!("{}:many-128", fx.join("oci").display())),
        ("docker", fx.join("multi.docker.tar").display().to_string()),
    ];
    let one = Root::new();
    let four = Root::new();
    for (name, src) in &sources {
        let d1 = one.ok(&["image", "import", "--jobs", "1", src, "--name", name]);
        let d4 = four.ok(&["image", "import", "--jobs", "4", src, "--name", name]);
        assert_eq!(d1.trim(), d4.trim(), "{name}: manifest digest");
        assert!(d1.trim().starts_with("sha256:"), "{name}: {d1}");
    }
    let dirs = layer_dirs(&one);
    assert!(dirs.len() > 10, "{} layer dirs", dirs.len());
    assert_eq!(layer_dirs(&four), dirs, "layer directories");
    for d in &dirs {
        // A whiteout made from a `.wh.` entry carries the time of the unpack, not a time from
        // the image (overlayfs never shows it): that is the one thing two imports may differ in.
        let at = |r: &Root| {
            let mut t = capture(&r.path().join("layers/sha256").join(d));
            t.retain(|_, e| {
                if e.kind == strata_test_support::tree::Kind::Char && e.rdev == Some((0, 0)) {
                    e.mtime = None;
                }
                true
            });
            t
        };
        assert_trees_eq(&at(&one), &at(&four), &format!("layer {d}, --jobs 1 vs --jobs 4"));
    }
    for sql in [
        "SELECT diff_id, size, entries FROM layers ORDER BY diff_id",
        "SELECT name, manifest_digest, config_digest FROM images ORDER BY name",
        "SELECT name, idx, diff_id, blob_digest, media_type, blob_size FROM image_layers ORDER BY name, idx",
        "SELECT digest, size, media_type FROM blobs ORDER BY digest",
    ] {
        assert_eq!(db_rows(&one, sql), db_rows(&four, sql), "{sql}");
    }
    assert_eq!(blob_names(&one), blob_names(&four), "blob files");
    for r in [&one, &four] {
        assert_eq!(db_count(r, "leases"), 0);
        assert!(staging_entries(r).is_empty(), "staging: {:?}", staging_entries(r));
    }
}

/// One bad layer of several under `--jobs 4` (its blob re-written with another gzip header, so
/// it unpacks but its digest is not the manifest's): the import fails naming that layer, and
/// leaves no layer directory, row or staging debris; the blobs of the layers that completed stay,
/// so a second import of the good image unpacks those from the store, without reading them from
/// the source again (here: they are gone from it), and a stored blob that does not verify is read
/// from the source after all.
#[test]
fn one_bad_layer_of_a_parallel_import_fails_it_cleanly() {
    if !privileged("one_bad_layer_of_a_parallel_import_fails_it_cleanly") {
        return;
    }
    let root = Root::new();
    let layout = root.path().join("layout");
    // Five small layers, then a big one (taken last, when some small ones are done).
    let mut files: Vec<(String, Vec<u8>)> =
        (0..5u8).map(|i| (format!("f{i}"), vec![b'a' + i; 4096 * (i as usize + 1)])).collect();
    let mut x: u64 = 1;
    let noise = (0..8 << 20)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect();
    files.push(("big".into(), noise));
    let layers: Vec<Vec<u8>> = files.iter().map(|(n, d)| tarw::tar([tarw::E::file(n, d)])).collect();
    layout_with_layers(&layout, "good", &layers);
    let digests: Vec<String> = manifest_of(&layout, "good")["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect();
    // The bad image: the same manifest, the big layer's file replaced by bytes that decompress to
    // the same tar (the gzip header's MTIME differs) but do not have the manifest's digest.
    let bad_layout = root.path().join("bad");
    copy_layout(&layout, &bad_layout);
    let bad = digests.last().expect("layer").clone();
    let p = blob(&bad_layout, &bad);
    let mut bytes = fs::read(&p).expect("blob");
    bytes[4] ^= 0x01;
    fs::remove_file(&p).expect("unlink the hard link");
    fs::write(&p, &bytes).expect("write");

    let err = root.fails(&["image", "import", "--jobs", "4", &format!("{}:good", bad_layout.display())]);
    assert!(err.contains(&format!("layer {bad}: digest mismatch: expected {bad}, blob is sha256:")), "{err}");
    assert_clean(&root);
    let stored = blob_names(&root);
    let completed: Vec<&String> =
        digests[..digests.len() - 1].iter().filter(|d| stored.contains(&d[7..].to_string())).collect();
    // Four workers take layers 0-3; layer 4 goes to the first that finishes, the big one to the
    // second: at least two layers were complete before it started.
    assert!(completed.len() >= 2, "{} layers completed before the failure: {stored:?}", completed.len());
    assert!(!stored.contains(&bad[7..].to_string()), "the bad blob was stored");

    // The completed layers' blobs are read from the store: the source no longer has them. One
    // stored blob is damaged: that one is read from the source after all, and repaired.
    let damaged = root.path().join("blobs/sha256").join(&completed[0][7..]);
    let mut b = fs::read(&damaged).expect("stored blob");
    b[4] ^= 0x01;
    fs::write(&damaged, &b).expect("damage the stored blob");
    for d in &completed[1..] {
        fs::remove_file(blob(&layout, d)).expect("rm blob");
    }
    let out =
        root.cmd(&["image", "import", "--jobs", "4", &format!("{}:good", layout.display()), "--name", "g"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(layer_dirs(&root).len(), layers.len());
    assert_eq!(sha(&fs::read(&damaged).expect("stored blob")), *completed[0], "the damaged blob is repaired");
    for (l, (name, data)) in layers.iter().zip(&files) {
        let at = root.path().join("layers/sha256").join(&sha(l)[7..]).join(name);
        assert!(fs::read(&at).expect("unpacked file") == *data, "{}: content differs", at.display());
    }
    assert_eq!(db_count(&root, "leases"), 0);
    assert!(staging_entries(&root).is_empty());
}
