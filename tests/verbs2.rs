//! The docker/podman verbs, second part: container export, image import-rootfs, save/load.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// GNU tar extraction as root, keeping owners, modes, xattrs (all namespaces) and devices.
fn untar(tar: &Path, into: &Path) {
    fs::create_dir_all(into).expect("mkdir");
    let out = Command::new("tar")
        .args(["-xpf"])
        .arg(tar)
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-C"])
        .arg(into)
        .output()
        .expect("run tar");
    assert!(out.status.success(), "tar -x {}: {}", tar.display(), String::from_utf8_lossy(&out.stderr));
}

fn tar_names(tar: &Path) -> Vec<String> {
    let out = Command::new("tar").arg("-tf").arg(tar).output().expect("tar -t");
    assert!(out.status.success(), "tar -t: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn sh(script: &str) {
    let out = Command::new("sh").arg("-c").arg(script).output().expect("sh");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `container export` of a container with deletions, an opaque dir (from the image) and a
/// replaced dir (from the container) is the merged view, entry by entry, with no `.wh.` name;
/// the export of the mounted container (read where it is mounted, to stdout) is the same bytes.
#[test]
fn container_export_is_the_merged_view() {
    if !privileged("container_export_is_the_merged_view") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:multi-opaque", fx.join("oci").display()), "--name", "m"]);
    root.ok(&["container", "create", "m", "c"]);
    let at = root.ok(&["container", "mount", "c"]);
    let at = Path::new(at.trim());
    // A deletion, a new file, a directory deleted and recreated (opaque in the upper dir).
    sh(&format!(
        "cd {} && rm -f bin/ls && rm -rf etc && mkdir etc && echo new > etc/fresh && \
         echo added > added && touch -h -d @1700000000 etc/fresh added",
        at.display()
    ));
    let mut merged = capture(at);
    // The layer writer stores pre-1970 mtimes as 0 (see strata::commit::layer).
    merged.retain(|_, e| {
        e.mtime = e.mtime.map(|t| t.max(0));
        true
    });
    root.ok(&["container", "umount", "c"]);

    let work = tempfile::Builder::new().prefix("exp-").tempdir_in(root.path()).expect("tempdir");
    let tar = work.path().join("c.tar");
    root.ok(&["container", "export", "c", "-o", tar.to_str().expect("utf8")]);
    assert!(mounts_under(root.path()).is_empty(), "the export's view is unmounted");
    let names = tar_names(&tar);
    assert!(names.iter().any(|n| n == "etc/fresh") && names.iter().any(|n| n == "added"), "{names:?}");
    assert!(!names.iter().any(|n| n == "bin/ls"), "deleted file exported");
    let wh: Vec<_> = names.iter().filter(|n| n.rsplit('/').any(|c| c.starts_with(".wh."))).collect();
    assert!(wh.is_empty(), "whiteouts in the export: {wh:?}");
    let x = work.path().join("x");
    untar(&tar, &x);
    strata::tree::assert_trees_eq(&merged, &capture(&x), "export vs merged view");

    // Mounted: read in place, to stdout; the same bytes.
    root.ok(&["container", "mount", "c"]);
    let out = root.cmd(&["container", "export", "c"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == fs::read(&tar).expect("read tar"), "export of the mounted container differs");
    root.ok(&["container", "umount", "c"]);

    let err = root.fails(&["container", "export", "nope", "-o", tar.to_str().expect("utf8")]);
    assert!(err.contains("container \"nope\" not found"), "{err}");
}
