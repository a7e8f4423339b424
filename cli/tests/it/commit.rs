//! Commit and export round trips: a container changed by a real `strata run`, committed, exported,
//! and read back by umoci and skopeo; determinism; re-import into a fresh root.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;
use strata_test_support::tree::assert_trees_eq;

/// What the container does: every kind of change the issue names (xattrs are set from the host
/// through the mount, busybox has no setfattr).
const SCRIPT: &str = r#"
set -e
echo new > /new-file
mkdir -p /new-dir/sub && echo deep > /new-dir/sub/f
echo changed >> /etc/passwd
rm /bin/vi
rm -r /home
mkdir /tmp/was-dir && echo x > /tmp/was-dir/f
echo plain > /etc/was-file
chmod 0700 /etc/group
mv /usr /usr-renamed
ln /new-file /new-file-link
mkfifo /fifo
mknod /dev/null2 c 1 3
mknod /dev/blk b 7 0
ln -s ../new-file /etc/sym
chown 1000:1000 /new-file
"#;

fn import_busybox(root: &Root) {
    root.ok(&["image", "import", &format!("{}:busybox", fixtures().join("oci").display())]);
}

/// Run SCRIPT in container `name`, then replace a directory by a file and a file by a directory
/// and set xattrs through the mount.
fn make_changes(root: &Root, name: &str) {
    let out = root.cmd(&["run", "busybox", "--name", name, "--backend", "kernel", "--", "sh", "-c", SCRIPT]);
    assert!(out.status.success(), "run: {}", String::from_utf8_lossy(&out.stderr));
    let at = PathBuf::from(root.ok(&["container", "mount", name]).trim());
    fs::remove_dir_all(at.join("tmp/was-dir")).expect("rm dir");
    fs::write(at.join("tmp/was-dir"), "now a file").expect("dir -> file");
    fs::remove_file(at.join("etc/was-file")).expect("rm file");
    fs::create_dir(at.join("etc/was-file")).expect("file -> dir");
    fs::write(at.join("etc/was-file/inside"), "in").expect("write");
    rustix::fs::setxattr(
        at.join("new-file"),
        "user.note",
        b"hello\nbinary\x00\xff",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("xattr");
    rustix::fs::setxattr(
        at.join("etc/hostname"),
        "user.other",
        b"on a copied-up file",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap_or_else(|_| {
        fs::write(at.join("etc/hostname"), "h").expect("write");
        rustix::fs::setxattr(at.join("etc/hostname"), "user.other", b"v", rustix::fs::XattrFlags::empty())
            .expect("xattr")
    });
    root.ok(&["container", "umount", name]);
}

fn merged_view(root: &Root, name: &str) -> strata_test_support::tree::Tree {
    let at = root.ok(&["container", "mount", name]);
    let t = capture(Path::new(at.trim()));
    root.ok(&["container", "umount", name]);
    t
}

fn blobs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(dir.join("blobs/sha256"))
        .expect("blobs")
        .map(|e| {
            let e = e.expect("entry");
            (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).expect("read"))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn commit_export_round_trip_with_umoci_and_skopeo() {
    if !privileged("commit_export_round_trip_with_umoci_and_skopeo") {
        return;
    }
    let root = Root::new();
    import_busybox(&root);
    make_changes(&root, "c");
    let diff = root.ok(&["container", "diff", "c"]);
    for line in [
        "A /new-file",
        "C /etc/passwd",
        "D /bin/vi",
        "D /home",
        "A /usr-renamed",
        "D /usr",
        "A /fifo",
        "C /etc/group",
    ] {
        assert!(diff.lines().any(|l| l == line), "diff lacks {line:?}:\n{diff}");
    }
    let digest = root.ok(&[
        "container",
        "commit",
        "c",
        "committed",
        "-m",
        "round trip",
        "-a",
        "tester",
        "-c",
        "ENV FOO=bar",
        "-c",
        "CMD [\"/bin/sh\", \"-c\", \"echo hi\"]",
    ]);
    assert!(digest.trim().starts_with("sha256:"));
    let view = merged_view(&root, "c");

    // The committed image is usable at once and shows the container's view.
    root.ok(&["container", "create", "committed", "from-commit"]);
    assert_trees_eq(&view, &merged_view(&root, "from-commit"), "container vs committed image");
    let out = root.cmd(&["run", "committed", "--rm"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi", "CMD change applied");

    // Export to every format; umoci and skopeo read them.
    let ex = root.path().join("export");
    root.ok(&["image", "export", "committed", &format!("{}:v1", ex.display())]);
    root.ok(&["image", "export", "busybox", &format!("{}:base", ex.display())]);
    let oa = root.path().join("committed.oci.tar");
    let da = root.path().join("committed.docker.tar");
    root.ok(&["image", "export", "committed", oa.to_str().expect("utf8"), "--format", "oci-archive"]);
    root.ok(&["image", "export", "committed", da.to_str().expect("utf8"), "--format", "docker-archive"]);
    let (_keep, reference) = umoci_unpack(&ex, "v1");
    assert_trees_eq(&capture_reference(&reference), &view, "umoci unpack of the export vs strata's view");
    let (_keep2, _) = umoci_unpack(&ex, "base");
    for src in [
        format!("oci:{}:v1", ex.display()),
        format!("oci-archive:{}", oa.display()),
        format!("docker-archive:{}", da.display()),
    ] {
        let out = Command::new("skopeo").args(["inspect", &src]).output().expect("skopeo");
        assert!(out.status.success(), "skopeo inspect {src}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["Layers"].as_array().expect("layers").len(), 2, "{src}");
    }
    let copy = root.path().join("skopeo-copy");
    let st = Command::new("skopeo")
        .args(["copy", &format!("oci:{}:v1", ex.display()), &format!("oci:{}:copied", copy.display())])
        .output()
        .expect("skopeo copy");
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let config: Value = serde_json::from_str(&root.ok(&["image", "inspect", "committed"])).expect("json");
    let hist = config["config"]["history"].as_array().expect("history");
    let last = hist.last().expect("entry");
    assert_eq!(last["comment"], "round trip");
    assert_eq!(last["author"], "tester");
    assert!(config["config"]["config"]["Env"].as_array().expect("env").iter().any(|e| e == "FOO=bar"));

    // Import of the export into a fresh root: same digests, same tree.
    let fresh = Root::new();
    for src in [format!("{}:v1", ex.display()), oa.display().to_string()] {
        let d = fresh.ok(&["image", "import", &src, "--name", "again"]);
        assert_eq!(d.trim(), digest.trim(), "re-import of {src}");
    }
    let d = fresh.ok(&["image", "import", da.to_str().expect("utf8"), "--name", "from-docker"]);
    assert!(d.trim().starts_with("sha256:"));
    fresh.ok(&["container", "create", "again", "v"]);
    assert_trees_eq(&view, &merged_view(&fresh, "v"), "fresh import of the export");
    // The committed layer directory equals the one an import of the export unpacks.
    let layers: Value = serde_json::from_str(&root.ok(&["image", "inspect", "committed"])).expect("json");
    let top =
        layers["layers"][1]["diff_id"].as_str().expect("diff_id").trim_start_matches("sha256:").to_string();
    let opts = strata_test_support::tree::Options { mtime: true, ..Default::default() };
    // Whiteout devices and the layer root get the time of unpacking: neither is ever visible.
    let invisible_times = |t: &mut strata_test_support::tree::Tree| {
        t.retain(|p, e| {
            if p == Path::new(".") || e.rdev == Some((0, 0)) {
                e.mtime = None;
            }
            true
        })
    };
    let mut a =
        strata_test_support::tree::Tree::capture_with(&root.path().join("layers/sha256").join(&top), &opts)
            .expect("a");
    let mut b =
        strata_test_support::tree::Tree::capture_with(&fresh.path().join("layers/sha256").join(&top), &opts)
            .expect("b");
    invisible_times(&mut a);
    invisible_times(&mut b);
    assert_trees_eq(&a, &b, "committed layer dir vs imported layer dir");
}

#[test]
fn committing_twice_is_byte_identical() {
    if !privileged("committing_twice_is_byte_identical") {
        return;
    }
    let root = Root::new();
    import_busybox(&root);
    make_changes(&root, "c");
    let run = |name: &str, ex: &Path| {
        let out = Command::new(STRATA)
            .arg("--root")
            .arg(root.path())
            .args(["container", "commit", "c", name])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .expect("commit");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        root.ok(&["image", "export", name, &format!("{}:t", ex.display())]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (e1, e2) = (root.path().join("e1"), root.path().join("e2"));
    let d1 = run("one", &e1);
    let d2 = run("two", &e2);
    assert_eq!(d1, d2, "same upper dir, same manifest digest");
    assert_eq!(blobs(&e1), blobs(&e2), "byte-identical blobs");
}
