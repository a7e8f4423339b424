//! Paths an attacker can plant: mount targets reached through symlinks, inside the state root or
//! inside another container.

mod common;

use std::fs;
use std::process::Command;

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

/// A state root owned by another user, writable by others, given as a symlink, or with a planted
/// link or foreign directory inside, is refused before anything in it is touched.
#[test]
fn untrusted_state_roots_are_refused() {
    if !privileged("untrusted_state_roots_are_refused") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let base = Root::new();
    let strata = |root: &std::path::Path| {
        Command::new(STRATA).arg("--root").arg(root).args(["image", "ls"]).output().expect("run strata")
    };
    let fails = |root: &std::path::Path, want: &str| {
        let out = strata(root);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success() && err.contains(want), "{}: {err}", root.display());
    };
    // Owned by nobody.
    let foreign = base.path().join("foreign");
    fs::create_dir(&foreign).expect("mkdir");
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("chown");
    fails(&foreign, "is owned by uid 65534, not by uid 0");
    assert_eq!(fs::read_dir(&foreign).expect("ls").count(), 0, "nothing created in a refused root");
    // World-writable.
    let open = base.path().join("open");
    fs::create_dir(&open).expect("mkdir");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
    fails(&open, "is writable by group or others (mode 777)");
    // A symlink to a good root.
    let good = base.path().join("good");
    assert!(strata(&good).status.success());
    let link = base.path().join("link");
    std::os::unix::fs::symlink(&good, &link).expect("symlink");
    fails(&link, "is a symbolic link");
    // A planted link inside: containers/ -> a decoy.
    let decoy = base.path().join("decoy");
    fs::create_dir(&decoy).expect("mkdir");
    fs::write(decoy.join("passwd"), b"keep").expect("write");
    fs::rename(good.join("containers"), base.path().join("old-containers")).expect("move");
    std::os::unix::fs::symlink(&decoy, good.join("containers")).expect("plant");
    fails(&good, "containers is not a directory (planted?)");
    let out = Command::new(STRATA)
        .arg("--root")
        .arg(&good)
        .args(["container", "create", "x", "passwd"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert_eq!(fs::read(decoy.join("passwd")).expect("decoy"), b"keep");
    // A directory inside owned by another user.
    fs::remove_file(good.join("containers")).expect("rm link");
    fs::rename(base.path().join("old-containers"), good.join("containers")).expect("restore");
    std::os::unix::fs::chown(good.join("locks"), Some(65534), None).expect("chown");
    fails(&good, "locks is owned by uid 65534");
    std::os::unix::fs::chown(good.join("locks"), Some(0), None).expect("chown back");
    assert!(strata(&good).status.success());
}
