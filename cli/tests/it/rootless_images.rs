//! Rootless mode's image verbs: import of a source the user cannot read, `push`/`pull`
//! against a loopback registry (digests equal to root mode's for the same change), `save`/`load`
//! and `gc`.

use std::os::unix::fs::PermissionsExt;

use crate::common::privileged;
use crate::common::user::TestUser;

/// A layout the user cannot read fails naming the directory, then the file, and saying why.
#[test]
fn unreadable_source_is_named() {
    if !privileged("unreadable_source_is_named") {
        return;
    }
    let user = TestUser::new(true);
    // Root's copy (not hard links: modes change below), in a directory only root reads.
    let layout = user.home.join("roots");
    let cp = std::process::Command::new("cp")
        .arg("-r")
        .arg(crate::common::fixtures().join("oci"))
        .arg(&layout)
        .status()
        .expect("cp");
    assert!(cp.success());
    std::fs::set_permissions(&layout, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let src = format!("{}:busybox", layout.display());
    let err = user.fails(&["image", "import", &src]);
    let why = "this user cannot read it (rootless strata reads image sources with the user's own rights";
    assert!(err.contains(&format!("{}: {why}", layout.display())), "{err}");
    std::fs::set_permissions(&layout, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(layout.join("index.json"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let err = user.fails(&["image", "import", &src]);
    assert!(err.contains(&format!("{}: {why}", layout.join("index.json").display())), "{err}");
    std::fs::set_permissions(layout.join("index.json"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let blobs = layout.join("blobs/sha256");
    for e in std::fs::read_dir(&blobs).expect("blobs").flatten() {
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let err = user.fails(&["image", "import", &src]);
    assert!(err.contains(&blobs.display().to_string()) && err.contains(why), "{err}");
    assert!(user.ok(&["images"]).lines().count() <= 1, "nothing imported");
}
