//! Rootless mode: strata run by an ordinary user (made for each test, removed after it), in the
//! user namespace its pause process holds (docs/rootless.md).

use crate::common::privileged;
use crate::common::user::TestUser;

/// Each id map line as (inside, outside, count).
fn id_map(text: &str) -> Vec<(u32, u32, u32)> {
    text.lines()
        .map(|l| {
            let f: Vec<u32> = l.split_whitespace().map(|x| x.parse().expect("number")).collect();
            (f[0], f[1], f[2])
        })
        .collect()
}

/// The user's subordinate range in `file`.
fn subid(file: &str, user: &str) -> (u32, u32) {
    let text = std::fs::read_to_string(file).expect("read subid file");
    let line = text.lines().find(|l| l.starts_with(&format!("{user}:"))).expect("the user's range");
    let f: Vec<u32> = line.split(':').skip(1).map(|x| x.parse().expect("number")).collect();
    (f[0], f[1])
}

/// `strata unshare` runs in one namespace per user: the user's uid as 0, its subordinate range
/// from 1; the second command joins the first one's namespace (same namespace, its mounts seen).
#[test]
fn unshare_joins_one_namespace_per_user() {
    if !privileged("unshare_joins_one_namespace_per_user") {
        return;
    }
    let user = TestUser::new(true);
    let (start, count) = subid("/etc/subuid", &user.name);
    let (gstart, gcount) = subid("/etc/subgid", &user.name);
    assert_eq!(
        id_map(&user.ok(&["unshare", "cat", "/proc/self/uid_map"])),
        [(0, user.uid, 1), (1, start, count)]
    );
    assert_eq!(
        id_map(&user.ok(&["unshare", "cat", "/proc/self/gid_map"])),
        [(0, user.gid, 1), (1, gstart, gcount)]
    );
    assert_eq!(user.ok(&["unshare", "id", "-u"]).trim(), "0");
    let pause = user.pause_pid().expect("a pause process");
    let theirs = std::fs::read_link(format!("/proc/{pause}/ns/user")).expect("pause ns");
    let ns = user.ok(&["unshare", "readlink", "/proc/self/ns/user"]);
    assert_eq!(ns.trim(), theirs.to_string_lossy(), "joined the pause process's namespace");
    // A mount made by one command is there for the next.
    let m = user.home.join("m");
    let script = format!("mkdir -p {0} && mount -t tmpfs none {0} && echo hi > {0}/f", m.display());
    user.ok(&["unshare", "sh", "-c", &script]);
    assert_eq!(user.ok(&["unshare", "cat", &m.join("f").to_string_lossy()]), "hi\n");
    assert!(!m.join("f").exists(), "the mount is in the namespace only");
    // The working directory is kept.
    assert_eq!(user.ok(&["unshare", "pwd"]).trim(), user.home.to_string_lossy());
    user.stop_pause();
    drop(user);
}

/// Without subordinate ids: a warning naming /etc/subuid and the line to add, and the user's
/// own ids alone mapped.
#[test]
fn no_subordinate_ids_single_mapping_with_warning() {
    if !privileged("no_subordinate_ids_single_mapping_with_warning") {
        return;
    }
    let user = TestUser::new(false);
    let out = user.cmd(&["unshare", "cat", "/proc/self/uid_map"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(id_map(&String::from_utf8_lossy(&out.stdout)), [(0, user.uid, 1)]);
    assert!(err.contains("/etc/subuid") && err.contains(&format!("`{}:", user.name)), "{err}");
    assert!(err.contains("/etc/subgid") && err.contains("usermod --add-subuids"), "{err}");
}

/// Root has no namespace to enter; a user without XDG_RUNTIME_DIR is told what to set.
#[test]
fn unshare_refusals() {
    if !privileged("unshare_refusals") {
        return;
    }
    let out =
        std::process::Command::new(crate::common::STRATA).args(["unshare", "true"]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rootless mode"), "{out:?}");
    let user = TestUser::new(true);
    let out =
        user.command(crate::common::STRATA, &["images"]).env_remove("XDG_RUNTIME_DIR").output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("XDG_RUNTIME_DIR is not set"), "{err}");
    let out = user
        .command(crate::common::STRATA, &["images"])
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("XDG_RUNTIME_DIR=/tmp"), "{err}");
    assert!(user.pause_pid().is_none(), "nothing started");
}

/// A user's store is `$XDG_DATA_HOME/strata` (else `~/.local/share/strata`), marked rootless;
/// root's and a user's stores never mix: each refuses the other with a clear error.
#[test]
fn rootless_store_is_its_own() {
    if !privileged("rootless_store_is_its_own") {
        return;
    }
    let user = TestUser::new(true);
    user.ok(&["images"]);
    let store = user.home.join(".local/share/strata");
    assert!(store.join("strata.db").is_file() && store.join("rootless").is_file(), "{}", store.display());
    let data = user.home.join("data");
    let out =
        user.command(crate::common::STRATA, &["images"]).env("XDG_DATA_HOME", &data).output().expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(data.join("strata/rootless").is_file(), "XDG_DATA_HOME/strata");
    // Root at the user's store.
    let out = std::process::Command::new(crate::common::STRATA)
        .arg("--root")
        .arg(&store)
        .arg("images")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is a rootless store"), "{err}");
    // The user at a store root made (and gave to the user).
    let root_store = user.base().join("rootstore");
    let out = std::process::Command::new(crate::common::STRATA)
        .arg("--root")
        .arg(&root_store)
        .arg("images")
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let chown = std::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.uid, user.gid))
        .arg(&root_store)
        .status()
        .expect("chown");
    assert!(chown.success());
    let err = user.fails(&["--root", &root_store.to_string_lossy(), "images"]);
    assert!(err.contains("is root's store"), "{err}");
}
