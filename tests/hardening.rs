//! Paths an attacker can plant: mount targets reached through symlinks, inside the state root or
//! inside another container.

mod common;

use std::fs;

use common::*;

/// `container mount NAME TARGET` refuses a TARGET reached through a symlink (it would redirect the
/// mount, over /etc say), inside the state root, or inside another container's mounted rootfs; a
/// plain new directory works.
#[test]
fn mount_targets_are_checked() {
    if !privileged("mount_targets_are_checked") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display())]);
    root.ok(&["container", "create", "busybox", "a"]);
    root.ok(&["container", "create", "busybox", "b"]);
    let outside = Root::new();
    let decoy = outside.path().join("decoy");
    fs::create_dir(&decoy).expect("mkdir");
    fs::write(decoy.join("keep"), b"x").expect("write");
    std::os::unix::fs::symlink(&decoy, outside.path().join("link")).expect("symlink");
    let via_link = outside.path().join("link");
    let err = root.fails(&["container", "mount", "a", via_link.to_str().expect("utf8")]);
    assert!(err.contains("is reached through a symlink"), "{err}");
    let below_link = via_link.join("sub");
    let err = root.fails(&["container", "mount", "a", below_link.to_str().expect("utf8")]);
    assert!(err.contains("is reached through a symlink"), "{err}");
    assert!(mounts_under(outside.path()).is_empty() && !decoy.join("sub").exists());

    let inside = root.path().join("layers/x");
    let err = root.fails(&["container", "mount", "a", inside.to_str().expect("utf8")]);
    assert!(err.contains("is inside the state root"), "{err}");
    assert!(!inside.exists());

    let b_at = outside.path().join("b");
    root.ok(&["container", "mount", "b", b_at.to_str().expect("utf8")]);
    let in_b = b_at.join("mnt");
    let err = root.fails(&["container", "mount", "a", in_b.to_str().expect("utf8")]);
    assert!(err.contains("is inside container \"b\""), "{err}");

    let fine = outside.path().join("new/a");
    let at = root.ok(&["container", "mount", "a", fine.to_str().expect("utf8")]);
    assert_eq!(at.trim(), fine.to_str().expect("utf8"));
    assert!(fine.join("bin/busybox").is_file());
    root.ok(&["container", "umount", "a"]);
    root.ok(&["container", "umount", "b"]);
    assert_eq!(fs::read(decoy.join("keep")).expect("decoy intact"), b"x");
}
