//! Containers on kernel OverlayFS: merged views, deep stacks, runc, lifecycle and concurrency.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn import(root: &Root, layout: &Path, tag: &str) {
    root.ok(&["image", "import", &format!("{}:{tag}", layout.display())]);
}

fn mounted(root: &Root, name: &str) -> Option<String> {
    let ls: Value = serde_json::from_str(&root.ok(&["container", "ls", "--json"])).expect("ls json");
    ls.as_array()
        .expect("array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("container {name} listed"))["mounted"]
        .as_str()
        .map(str::to_string)
}

fn dirs_in(p: &Path) -> usize {
    fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

/// Images of 1, 2, 128 and 500 layers mount, writable and read-only, and show the right content;
/// 501 layers is refused by the kernel backend with a clear error, and `--backend auto` mounts it
/// with strata-fuse instead.
#[test]
fn deep_stacks_mount_with_the_right_content() {
    if !privileged("deep_stacks_mount_with_the_right_content") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let layout = root.path().join("layout");
    copy_layout(&fx.join("oci"), &layout);
    // many-N is the busybox layer plus N small layers; "stack-N" has exactly N layers in all.
    add_prefix_image(&layout, "many-500", 500, "stack-500");
    add_prefix_image(&layout, "many-128", 128, "stack-128");
    add_prefix_image(&layout, "many-2", 2, "stack-2");
    add_prefix_image(&layout, "many-1", 1, "stack-1");
    for n in [1usize, 2, 128, 500] {
        let img = format!("stack-{n}");
        import(&root, &layout, &img);
        for ro in [false, true] {
            let c = format!("s{n}-{ro}");
            let mut args = vec!["container", "create", &img, &c];
            if ro {
                args.push("--read-only");
            }
            root.ok(&args);
            let at = PathBuf::from(root.ok(&["container", "mount", &c, "--backend", "kernel"]).trim());
            assert!(at.join("bin/busybox").is_file(), "{c}: busybox visible");
            if n > 1 {
                // Layer i (1-based above the base) wrote /layer-i and overwrote /top: the topmost wins.
                assert_eq!(
                    fs::read_to_string(at.join("top")).expect("top").trim(),
                    (n - 1).to_string(),
                    "{c}"
                );
                for i in 1..n {
                    assert!(at.join(format!("layer-{i}")).exists(), "{c}: layer-{i}");
                }
                assert!(!at.join(format!("layer-{n}")).exists(), "{c}: no layer-{n}");
            }
            let w = fs::write(at.join("new-file"), "x");
            if ro {
                assert_eq!(w.expect_err("read-only").raw_os_error(), Some(libc::EROFS), "{c}");
            } else {
                w.expect("write");
                let upper = root.upper(&c).join("new-file");
                assert_eq!(fs::read_to_string(upper).expect("in upper"), "x");
            }
            assert_eq!(mounted(&root, &c).as_deref(), Some(at.to_str().expect("utf8")));
            root.ok(&["container", "umount", &c]);
            assert_eq!(mounted(&root, &c), None);
            root.ok(&["container", "rm", &c]);
        }
    }
    import(&root, &layout, "many-500");
    root.ok(&["container", "create", "many-500", "too-deep"]);
    let err = root.fails(&["container", "mount", "too-deep", "--backend", "kernel"]);
    assert!(err.contains("501") && err.contains("500"), "{err}");
    assert_eq!(mounted(&root, "too-deep"), None);
    // `auto` falls back to strata-fuse where the kernel refuses, and that view is complete.
    let at = PathBuf::from(root.ok(&["container", "mount", "too-deep", "--backend", "auto"]).trim());
    let fstype = fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .find(|l| l.split(' ').nth(4) == at.to_str())
        .and_then(|l| l.split(" - ").nth(1).and_then(|t| t.split(' ').next()).map(str::to_string));
    assert_eq!(fstype.as_deref(), Some("fuse.strata-fuse"));
    assert_eq!(fs::read_to_string(at.join("top")).expect("top").trim(), "500");
    assert!(at.join("layer-1").exists() && at.join("layer-500").exists() && at.join("bin/busybox").is_file());
    fs::write(at.join("new-file"), "x").expect("write through strata-fuse");
    root.ok(&["container", "umount", "too-deep"]);
    assert_eq!(mounted(&root, "too-deep"), None);
    let upper = root.upper("too-deep").join("new-file");
    assert_eq!(fs::read_to_string(upper).expect("in upper"), "x");
}

/// `strata run` of the busybox image: the command runs under runc, its exit code comes back, and
/// what it wrote lands in the container's upper directory.
#[test]
fn run_busybox_writes_to_upper() {
    if !privileged("run_busybox_writes_to_upper") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    import(&root, &fx.join("oci"), "busybox");
    let out = root.cmd(&[
        "run",
        "busybox",
        "--name",
        "r1",
        "--backend",
        "kernel",
        "--",
        "sh",
        "-c",
        "echo hello > /hello.txt; mkdir -p /var/data && echo 42 > /var/data/answer; rm /bin/vi; echo out; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "out");
    let upper = root.upper("r1");
    assert_eq!(fs::read_to_string(upper.join("hello.txt")).expect("hello"), "hello\n");
    assert_eq!(fs::read_to_string(upper.join("var/data/answer")).expect("answer"), "42\n");
    // Deleting a lower file left a whiteout: a 0:0 character device.
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = fs::symlink_metadata(upper.join("bin/vi")).expect("whiteout");
    assert!(md.file_type().is_char_device() && md.rdev() == 0);
    // Not mounted after run; --rm removes everything.
    assert_eq!(mounted(&root, "r1"), None);
    let out = root.cmd(&["run", "busybox", "--rm", "--name", "r2", "--", "cat", "/etc/passwd"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("root:x:0:0"));
    assert!(!root.path().join("containers/r2").exists());
    let ls: Value = serde_json::from_str(&root.ok(&["container", "ls", "--json"])).expect("json");
    assert_eq!(ls.as_array().expect("array").len(), 1);
}

/// The merged view of the multi-layer image (deletions, opaque dirs, hardlinks, symlinks, devices,
/// FIFOs) equals umoci's unpack, and the containerd-style mount description is what we mount.
#[test]
fn merged_view_matches_umoci_and_mounts_json() {
    if !privileged("merged_view_matches_umoci_and_mounts_json") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    import(&root, &fx.join("oci"), "multi-opaque");
    let (_keep, reference) = umoci_unpack(&fx.join("oci"), "multi-opaque");
    root.ok(&["container", "create", "multi-opaque", "m"]);
    let at = root.ok(&["container", "mount", "m"]);
    strata_test_support::tree::assert_trees_eq(
        &capture_reference(&reference),
        &capture(Path::new(at.trim())),
        "merged view",
    );
    root.ok(&["container", "umount", "m"]);
    // Mount it ourselves from `mounts --json`, as containerd's caller would.
    let spec: Value = serde_json::from_str(&root.ok(&["container", "mounts", "m", "--json"])).expect("json");
    let m = &spec[0];
    assert_eq!(m["type"], "overlay");
    let opts: Vec<&str> =
        m["options"].as_array().expect("options").iter().map(|o| o.as_str().expect("s")).collect();
    for want in ["index=off", "redirect_dir=nofollow", "metacopy=off"] {
        assert!(opts.contains(&want), "{opts:?}");
    }
    let target = root.path().join("manual");
    fs::create_dir(&target).expect("mkdir");
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts.join(",")])
        .arg(&target)
        .status()
        .expect("mount");
    assert!(st.success());
    strata_test_support::tree::assert_trees_eq(
        &capture_reference(&reference),
        &capture(&target),
        "manual mount",
    );
    assert_eq!(mounted(&root, "m").as_deref(), Some(target.to_str().expect("utf8")), "found by upperdir");
    let err = root.fails(&["container", "rm", "m"]);
    assert!(err.contains("is mounted at"), "{err}");
    root.ok(&["container", "rm", "m", "--force"]);
    assert!(!kernel_overlay::is_mounted(&target).expect("mountinfo"));
}

/// State survives a "reboot": mounts vanish behind strata's back, ls notices, mount works again.
#[test]
fn state_survives_lost_mounts() {
    if !privileged("state_survives_lost_mounts") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    import(&root, &fx.join("oci"), "busybox");
    root.ok(&["container", "create", "busybox", "c"]);
    let at = root.ok(&["container", "mount", "c"]);
    fs::write(Path::new(at.trim()).join("kept"), "yes").expect("write");
    let err = root.fails(&["container", "mount", "c"]);
    assert!(err.contains("already") || err.contains("is mounted"), "{err}");
    assert!(Command::new("umount").arg(at.trim()).status().expect("umount").success());
    assert_eq!(mounted(&root, "c"), None);
    let at2 = root.ok(&["container", "mount", "c"]);
    assert_eq!(fs::read_to_string(Path::new(at2.trim()).join("kept")).expect("kept"), "yes");
    let err = root.fails(&["container", "create", "busybox", "c"]);
    assert!(err.contains("already exists"), "{err}");
    let err = root.fails(&["container", "create", "busybox", "../evil"]);
    assert!(err.contains("bad container name"), "{err}");
    let err = root.fails(&["container", "create", "nope", "d"]);
    assert!(err.contains("image \"nope\" not found"), "{err}");
    root.ok(&["container", "rm", "--force", "c"]);
}

/// 100 create/mount/umount/rm cycles leave no mount, no directory and no row.
#[test]
fn hundred_cycles_leave_nothing() {
    if !privileged("hundred_cycles_leave_nothing") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    import(&root, &fx.join("oci"), "many-2");
    let script = format!(
        "set -e; for i in $(seq 100); do {s} container create many-2 c$i >/dev/null; \
         {s} container mount c$i >/dev/null; {s} container umount c$i; {s} container rm c$i >/dev/null; done",
        s = format!("{} --root {}", STRATA, root.path().display())
    );
    let st = Command::new("bash").arg("-c").arg(&script).status().expect("bash");
    assert!(st.success());
    assert_eq!(dirs_in(&root.path().join("containers")), 0);
    let ls: Value = serde_json::from_str(&root.ok(&["container", "ls", "--json"])).expect("json");
    assert!(ls.as_array().expect("array").is_empty());
    assert_eq!(mounts_under(root.path()), Vec::<PathBuf>::new());
}

/// Eight containers of one image, created and mounted concurrently, each see their own writes.
#[test]
fn eight_concurrent_containers() {
    if !privileged("eight_concurrent_containers") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    import(&root, &fx.join("oci"), "busybox");
    let children: Vec<_> = (0..8)
        .map(|i| {
            let s = format!("{} --root {}", STRATA, root.path().display());
            Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "set -e; {s} container create busybox k{i} >/dev/null; at=$({s} container mount k{i}); \
                     echo {i} > $at/mine; cat $at/mine"
                ))
                .output()
                .expect("spawn")
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        assert!(c.status.success(), "k{i}: {}", String::from_utf8_lossy(&c.stderr));
        assert_eq!(String::from_utf8_lossy(&c.stdout).trim(), i.to_string());
    }
    for i in 0..8 {
        let at = mounted(&root, &format!("k{i}")).expect("mounted");
        assert_eq!(fs::read_to_string(Path::new(&at).join("mine")).expect("mine").trim(), i.to_string());
        root.ok(&["container", "rm", "--force", &format!("k{i}")]);
    }
}
