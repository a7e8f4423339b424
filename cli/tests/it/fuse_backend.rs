//! The FUSE backend through strata: the same views as the kernel backend, containers moved between
//! backends, runc on a strata-fuse rootfs, and commits of what strata-fuse wrote.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use strata_test_support::tree::assert_trees_eq;

/// Trees compared across backends: everything but hardlink groups. On a writable mount
/// strata-fuse gives every path of a file hardlinked *inside a lower layer* a node of its own
/// (fuser reports the FUSE node id as st_ino, and with index=off the kernel breaks such links on
/// copy-up, so one shared node cannot follow both names); the kernel reports the lower inode for
/// each. Content, modes, owners, times and xattrs still match; hardlinks made in the upper dir
/// and all hardlinks of a read-only mount are shared nodes (`full_view`; tests in fuse/ too).
fn view(path: &Path) -> strata_test_support::tree::Tree {
    let mut t = capture(path);
    t.retain(|_, e| {
        e.link_group = None;
        true
    });
    t
}

/// Everything, hardlink groups included.
fn full_view(path: &Path) -> strata_test_support::tree::Tree {
    capture(path)
}

fn mount(root: &Root, name: &str, backend: &str) -> PathBuf {
    PathBuf::from(root.ok(&["container", "mount", name, "--backend", backend]).trim())
}

/// strata-fuse is built next to the strata binary by `cargo build --workspace`.
fn have_fuse_binary() -> bool {
    let p = Path::new(STRATA).with_file_name("strata-fuse");
    assert!(p.is_file(), "{} missing: build the workspace (cargo build --workspace)", p.display());
    true
}

#[test]
fn fuse_view_equals_kernel_view_and_umoci() {
    if !privileged("fuse_view_equals_kernel_view_and_umoci") || !have_fuse_binary() {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:multi-opaque", fx.join("oci").display())]);
    let (_keep, reference) = umoci_unpack(&fx.join("oci"), "multi-opaque");
    for (name, ro) in [("rw", false), ("ro", true)] {
        let mut args = vec!["container", "create", "multi-opaque", name];
        if ro {
            args.push("--read-only");
        }
        root.ok(&args);
        let at = mount(&root, name, "fuse");
        let ls = root.ok(&["container", "ls"]);
        assert!(ls.lines().any(|l| l.starts_with(name) && l.contains(at.to_str().expect("utf8"))), "{ls}");
        let pick = if ro { full_view } else { view };
        let fuse_view = pick(&at);
        root.ok(&["container", "umount", name]);
        let at = mount(&root, name, "kernel");
        let kernel_view = pick(&at);
        root.ok(&["container", "umount", name]);
        assert_trees_eq(&kernel_view, &fuse_view, &format!("{name}: kernel vs fuse"));
        let mut reference = capture_reference(&reference);
        reference.retain(|_, e| {
            if !ro {
                e.link_group = None;
            }
            true
        });
        assert_trees_eq(&reference, &fuse_view, &format!("{name}: umoci vs fuse"));
        root.ok(&["container", "rm", name]);
    }
}

#[test]
fn container_moves_between_backends() {
    if !privileged("container_moves_between_backends") || !have_fuse_binary() {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:multi", fx.join("oci").display())]);
    root.ok(&["container", "create", "multi", "c"]);
    // Change through strata-fuse...
    let at = mount(&root, "c", "fuse");
    fs::write(at.join("fuse-new"), "from fuse").expect("create");
    fs::remove_file(at.join("bin/busybox")).expect("unlink lower file");
    fs::create_dir_all(at.join("data/fuse-dir/sub")).expect("mkdir");
    fs::rename(at.join("etc"), at.join("etc-moved")).expect("rename a lower directory");
    let fuse_view = view(&at);
    root.ok(&["container", "umount", "c"]);
    // ...the kernel shows the same...
    let at = mount(&root, "c", "kernel");
    assert_trees_eq(&fuse_view, &view(&at), "fuse-written upper under the kernel");
    // ...changes through the kernel...
    fs::write(at.join("kernel-new"), "from kernel").expect("create");
    fs::remove_dir_all(at.join("data/fuse-dir")).expect("rmdir");
    let kernel_view = view(&at);
    root.ok(&["container", "umount", "c"]);
    // ...and strata-fuse shows them.
    let at = mount(&root, "c", "fuse");
    assert_trees_eq(&kernel_view, &view(&at), "kernel-written upper under fuse");
    root.ok(&["container", "umount", "c"]);
    // What strata-fuse wrote commits like anything else.
    root.ok(&["container", "commit", "c", "from-fuse"]);
    root.ok(&["container", "create", "from-fuse", "check"]);
    let at = mount(&root, "check", "kernel");
    assert_trees_eq(&kernel_view, &view(&at), "committed image of the fuse container");
    root.ok(&["container", "rm", "--force", "check"]);
    root.ok(&["container", "rm", "c"]);
}

#[test]
fn run_on_fuse_backend() {
    if !privileged("run_on_fuse_backend") || !have_fuse_binary() {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display())]);
    let out = root.cmd(&[
        "run",
        "busybox",
        "--name",
        "f",
        "--backend",
        "fuse",
        "--",
        "sh",
        "-c",
        "echo hi > /hi; cat /hi; rm /bin/vi; mkdir -p /a/b; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi");
    let upper = root.upper("f");
    assert_eq!(fs::read_to_string(upper.join("hi")).expect("hi"), "hi\n");
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = fs::symlink_metadata(upper.join("bin/vi")).expect("whiteout");
    assert!(md.file_type().is_char_device() && md.rdev() == 0);
    assert!(mounts_under(root.path()).is_empty(), "nothing left mounted");
}

/// `mount -t fuse.strata-fuse` through the helper scripts/setup.sh installs.
#[test]
fn mount_t_fuse_strata_fuse() {
    if !privileged("mount_t_fuse_strata_fuse") || !have_fuse_binary() {
        return;
    }
    let helper = Path::new("/sbin/mount.fuse.strata-fuse");
    if !helper.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} missing: scripts/setup.sh installs it",
            helper.display()
        );
        eprintln!("SKIPPED (run scripts/setup.sh): mount_t_fuse_strata_fuse");
        return;
    }
    let root = Root::new();
    let d = root.path();
    for sub in ["l1", "l2", "u", "w", "m"] {
        fs::create_dir(d.join(sub)).expect("mkdir");
    }
    fs::write(d.join("l1/top"), "1").expect("write");
    fs::write(d.join("l2/top"), "2").expect("write");
    fs::write(d.join("l2/low"), "2").expect("write");
    let bin_dir = Path::new(STRATA).parent().expect("bin dir").to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        d.join("l1").display(),
        d.join("l2").display(),
        d.join("u").display(),
        d.join("w").display()
    );
    let st = std::process::Command::new("mount")
        .args(["-t", "fuse.strata-fuse", "strata", d.join("m").to_str().expect("utf8"), "-o", &opts])
        .env("PATH", path)
        .status()
        .expect("mount");
    assert!(st.success());
    assert_eq!(fs::read_to_string(d.join("m/top")).expect("top"), "1", "leftmost lowerdir is the top");
    assert_eq!(fs::read_to_string(d.join("m/low")).expect("low"), "2");
    fs::write(d.join("m/new"), "n").expect("write");
    assert!(std::process::Command::new("umount").arg(d.join("m")).status().expect("umount").success());
    assert_eq!(fs::read_to_string(d.join("u/new")).expect("upper"), "n");
}

/// A container mounted with strata-fuse exports hardlinks as links, like a kernel-mounted one
/// (strata-fuse shows one inode per name; the export reads a kernel view instead), and both
/// exports hold the same entries.
#[test]
fn export_of_a_fuse_mount_keeps_hardlinks() {
    if !privileged("export_of_a_fuse_mount_keeps_hardlinks") || !have_fuse_binary() {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display()), "--name", "busybox"]);
    // Hardlinks in a lower layer: strata-fuse shows each name as its own inode there.
    root.ok(&["container", "create", "busybox", "base"]);
    let at = mount(&root, "base", "kernel");
    fs::write(at.join("first"), "linked\n").expect("write");
    fs::hard_link(at.join("first"), at.join("second")).expect("link");
    root.ok(&["container", "umount", "base"]);
    root.ok(&["container", "commit", "base", "linked"]);
    root.ok(&["container", "create", "linked", "h"]);
    let at = mount(&root, "h", "fuse");
    fs::write(at.join("third"), "upper\n").expect("write");
    fs::hard_link(at.join("third"), at.join("fourth")).expect("link in the upper dir");
    let listing = |tar: &Path| -> Vec<(String, String)> {
        let mut a = tar::Archive::new(fs::File::open(tar).expect("open tar"));
        let mut out = Vec::new();
        for e in a.entries().expect("entries") {
            let e = e.expect("entry");
            let link = e.link_name().ok().flatten().map(|l| l.display().to_string()).unwrap_or_default();
            let kind = format!("{:?}", e.header().entry_type());
            out.push((format!("{} {kind}", e.path().expect("path").display()), link));
        }
        out
    };
    let fuse_tar = root.path().join("fuse.tar");
    root.ok(&["container", "export", "h", "-o", fuse_tar.to_str().expect("utf8")]);
    let fuse_entries = listing(&fuse_tar);
    for pair in [["first", "second"], ["third", "fourth"]] {
        let linked: Vec<_> = fuse_entries
            .iter()
            .filter(|(p, _)| pair.iter().any(|n| p.starts_with(&format!("{n} "))))
            .collect();
        assert_eq!(linked.len(), 2, "{linked:?}");
        assert!(
            linked.iter().any(|(p, l)| p.contains("Link") && !l.is_empty()),
            "one of {pair:?} is a hardlink entry: {linked:?}"
        );
    }
    root.ok(&["container", "umount", "h"]);
    let _ = mount(&root, "h", "kernel");
    let kernel_tar = root.path().join("kernel.tar");
    root.ok(&["container", "export", "h", "-o", kernel_tar.to_str().expect("utf8")]);
    assert_eq!(fuse_entries, listing(&kernel_tar), "same entries from either backend");
    root.ok(&["container", "umount", "h"]);
}

/// A state root whose path holds `,` and `:` (the separators of overlayfs's options): strata-fuse
/// takes its paths escaped as the kernel does, so the mount shows the image (as umoci unpacks
/// it), writes land in the upper dir, and the mount is found again to be listed and unmounted.
#[test]
fn fuse_mount_under_a_root_with_separators_in_its_path() {
    if !privileged("fuse_mount_under_a_root_with_separators_in_its_path") || !have_fuse_binary() {
        return;
    }
    let fx = fixtures();
    let base = repo().join("target/test-roots");
    fs::create_dir_all(&base).expect("test roots");
    let root =
        Root { dir: tempfile::Builder::new().prefix("root-a,b:c-").tempdir_in(base).expect("tempdir") };
    assert!(root.path().to_str().is_some_and(|p| p.contains(',') && p.contains(':')));
    root.ok(&["image", "import", &format!("{}:multi-opaque", fx.join("oci").display())]);
    let (_keep, reference) = umoci_unpack(&fx.join("oci"), "multi-opaque");
    root.ok(&["container", "create", "multi-opaque", "c"]);
    let at = mount(&root, "c", "fuse");
    let inspect = root.ok(&["container", "inspect", "c"]);
    assert!(inspect.contains("\"backend\": \"fuse\""), "{inspect}");
    let mut reference = capture_reference(&reference);
    reference.retain(|_, e| {
        e.link_group = None;
        true
    });
    assert_trees_eq(&reference, &view(&at), "umoci vs fuse under a root with , and :");
    fs::write(at.join("written"), "through fuse").expect("write through the mount");
    assert_eq!(fs::read_to_string(at.join("written")).expect("read back"), "through fuse");
    let ls = root.ok(&["container", "ls"]);
    assert!(ls.lines().any(|l| l.starts_with('c') && l.contains(at.to_str().expect("utf8"))), "{ls}");
    root.ok(&["container", "umount", "c"]);
    assert_eq!(
        fs::read_to_string(root.upper("c").join("written")).expect("in the upper dir"),
        "through fuse"
    );
    root.ok(&["container", "rm", "c"]);
}
