//! The hostile-input corpus (`hostile.rs`) run rootless: each hand-made layer imported by an
//! unprivileged user through `strata image import`, beside a sentinel tree *the user can write*
//! (so only strata's confinement keeps it whole, not permissions): nothing outside the store
//! changes, and each case ends as it does as root (refused naming the entry, or confined).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::layout::layout_with_layers;
use crate::common::privileged;
use crate::common::tarw::{tar, E};
use crate::common::user::TestUser;
use strata_test_support::tree::{assert_trees_eq, Options, Tree};

/// What a case must end with: refused with every one of these in the message, or imported.
enum Want {
    Refused(&'static [&'static str]),
    Imported,
}

fn all_xattrs(_: &str) -> bool {
    true
}

/// The user's home as the cases could reach it: everything but the store and the layout.
fn outside(home: &Path) -> Tree {
    let opts = Options {
        mtime: true,
        xattr_filter: all_xattrs,
        skip: vec![PathBuf::from(".local"), PathBuf::from("img")],
        ..Options::default()
    };
    Tree::capture_with(home, &opts).expect("capture the user's home")
}

/// The cases: (tag, layer, outcome). `s` is the sentinel directory's absolute path.
fn cases(s: &str) -> Vec<(&'static str, Vec<u8>, Want)> {
    use Want::*;
    vec![
        ("dotdot", tar([E::file("../x", "pwned")]), Refused(&["\"../x\"", "invalid path"])),
        ("dotdot-mid", tar([E::dir("a"), E::file("a/../../x", "pwned")]), Refused(&["a/../../x"])),
        ("absolute", tar([E::file(format!("{s}/a"), "inside")]), Imported),
        ("abs-dotdot", tar([E::file("/../x", "pwned")]), Refused(&["/../x"])),
        ("through-abs-link", tar([E::symlink("l", s), E::file("l/a", "pwned")]), Refused(&["l/a"])),
        ("link-to-root", tar([E::symlink("d", "/"), E::file("d/etc/passwd", "inside")]), Imported),
        (
            "through-dotdot-link",
            tar([E::symlink("l", "../../../../sentinel"), E::file("l/a", "pwned")]),
            Refused(&["l/a"]),
        ),
        (
            "chained-links",
            tar([E::symlink("p", "q"), E::symlink("q", s), E::file("p/y", "pwned")]),
            Refused(&["p/y"]),
        ),
        (
            "link-dir-file",
            tar([E::symlink("d", format!("{s}/sub")), E::file("d/b", "pwned")]),
            Refused(&["d/b"]),
        ),
        ("hardlink-dotdot", tar([E::hardlink("x", "../sentinel/a")]), Refused(&["\"x\"", "'..'"])),
        ("hardlink-abs", tar([E::hardlink("x", format!("{s}/a"))]), Refused(&["\"x\"", "does not exist"])),
        (
            "hardlink-through-link",
            tar([E::symlink("l", s), E::hardlink("x", "l/a")]),
            Refused(&["\"x\"", "does not exist"]),
        ),
        (
            "hardlink-to-outside-link",
            tar([E::symlink("t", format!("{s}/a")), E::hardlink("h", "t"), E::file("h", "replaced")]),
            Imported,
        ),
        ("whiteout-through-link", tar([E::symlink("l", s), E::file("l/.wh.a", "")]), Refused(&["l/.wh.a"])),
        ("whiteout-dotdot", tar([E::file("../.wh.sentinel", "")]), Refused(&["../.wh.sentinel"])),
        (
            "opaque-through-link",
            tar([E::symlink("l", s), E::file("l/.wh..wh..opq", "")]),
            Refused(&["l/.wh..wh..opq"]),
        ),
        (
            "dir-then-link",
            tar([E::dir("d"), E::file("d/x", "1"), E::symlink("d", s), E::file("d/a", "pwned")]),
            Refused(&["d/a"]),
        ),
        ("chmod-via-link", tar([E::symlink("l", s), E::dir("l/").mode(0o777).owner(4321, 4321)]), Imported),
        (
            "link-then-file",
            tar([E::symlink("f", format!("{s}/a")), E::file("f", "new").mode(0o777)]),
            Imported,
        ),
        ("device-via-link", tar([E::symlink("l", s), E::dev(b'3', "l/null", 1, 3)]), Imported),
        (
            "far-owner",
            tar([E::file("f", "x").owner(4_000_000, 0)]),
            Refused(&["\"f\"", "insufficient UIDs or GIDs"]),
        ),
    ]
}

#[test]
fn hostile_corpus_rootless_changes_nothing_outside_the_store() {
    if !privileged("hostile_corpus_rootless_changes_nothing_outside_the_store") {
        return;
    }
    let user = TestUser::new(true);
    let home = &user.home;
    let sentinel = home.join("sentinel");
    std::fs::create_dir_all(sentinel.join("sub")).expect("mkdir");
    std::fs::write(sentinel.join("a"), "sentinel a").expect("write");
    std::fs::write(sentinel.join("sub/b"), "sentinel b").expect("write");
    std::fs::write(home.join("passwd"), "root:x:0:0").expect("write");
    std::fs::set_permissions(sentinel.join("a"), std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let s = sentinel.to_string_lossy().into_owned();
    let layout = home.join("img");
    let cases = cases(&s);
    for (tag, layer, _) in &cases {
        layout_with_layers(&layout, tag, std::slice::from_ref(layer));
    }
    let chown = std::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.uid, user.gid))
        .arg(&sentinel)
        .arg(home.join("passwd"))
        .arg(&layout)
        .status()
        .expect("chown");
    assert!(chown.success());
    // Old times, so that any touch shows.
    for p in ["sentinel/a", "sentinel/sub/b", "sentinel/sub", "sentinel", "passwd"] {
        let t = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec { tv_sec: 1_000_000, tv_nsec: 0 },
            last_modification: rustix::fs::Timespec { tv_sec: 1_000_000, tv_nsec: 0 },
        };
        rustix::fs::utimensat(rustix::fs::CWD, home.join(p), &t, rustix::fs::AtFlags::empty())
            .expect("utimes");
    }
    user.ok(&["images"]);
    let before = outside(home);
    let mut wrong = Vec::new();
    for (tag, _, want) in &cases {
        let out = user.cmd(&["image", "import", &format!("{}:{tag}", layout.display())]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        match (want, out.status.success()) {
            (Want::Imported, true) => {}
            (Want::Refused(words), false) if words.iter().all(|w| err.contains(w)) => {}
            _ => wrong.push(format!("{tag}: exit {}: {err}", out.status)),
        }
        assert_trees_eq(&before, &outside(home), &format!("outside the store after case {tag}"));
    }
    assert!(wrong.is_empty(), "cases that did not end as designed:\n{}", wrong.join("\n"));
    // What was imported stayed in the store's layers, as the user's namespace sees them.
    let store = home.join(".local/share/strata");
    let images = user.ok(&["images", "-q"]);
    assert_eq!(
        images.lines().count(),
        cases.iter().filter(|c| matches!(c.2, Want::Imported)).count(),
        "{images}"
    );
    user.ok(&["container", "create", "absolute", "c"]);
    let at = user.ok(&["container", "mount", "c"]).trim().to_string();
    let inside = user.ok(&["unshare", "cat", &format!("{at}/{}/a", s.trim_start_matches('/'))]);
    assert_eq!(inside, "inside", "the absolute path landed inside the layer");
    user.ok(&["container", "umount", "c"]);
    assert!(store.join("layers").is_dir());
}
