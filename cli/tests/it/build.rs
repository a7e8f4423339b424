//! `strata build`: Containerfiles written for the test, built over the busybox sample image.

use crate::common;

use std::fs;
use std::path::Path;

use common::*;

fn busybox(root: &Root) {
    let fx = fixtures();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display()), "--name", "busybox"]);
}

fn build(root: &Root, ctx: &Path, extra: &[&str]) -> String {
    let c = ctx.to_string_lossy().into_owned();
    let mut args = vec!["build", "-q"];
    args.extend_from_slice(extra);
    args.push(&c);
    root.ok(&args).trim().to_string()
}

fn cache_images(root: &Root) -> usize {
    root.ok(&["images", "-a"]).lines().filter(|l| l.contains("strata-build-cache")).count()
}

/// The cache: a second build makes nothing; a changed COPY source rebuilds from its step on;
/// --no-cache rebuilds all; a failing RUN exits with its status and names its line.
#[test]
fn cache_and_failures() {
    if !privileged("build cache_and_failures") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path();
    fs::write(ctx.join("a.txt"), "a").unwrap();
    fs::write(ctx.join("b.txt"), "b").unwrap();
    fs::write(
        ctx.join("Containerfile"),
        "FROM busybox\nARG V=1\nENV A=$V\nCOPY a.txt /a\nRUN echo $A > /x && rm /bin/ls\nCOPY b.txt /b\nCMD [\"sh\"]\n",
    )
    .unwrap();
    let id1 = build(&root, ctx, &["-t", "out"]);
    assert!(id1.starts_with("sha256:"), "{id1}");
    let made = cache_images(&root);
    assert!(made >= 5, "{made} cached steps");
    // Cached steps are intermediate images: out of the default listing, shown with -a.
    let listed = root.ok(&["images"]);
    assert!(!listed.contains("strata-build-cache") && listed.contains("out"), "{listed}");
    let out =
        root.ok(&["run", "--rm", "out", "--", "sh", "-c", "cat /x /a /b; test -e /bin/ls || echo gone"]);
    assert_eq!(out, "1\nabgone\n");
    // Unchanged: the same image, no new step.
    assert_eq!(build(&root, ctx, &["-t", "out"]), id1);
    assert_eq!(cache_images(&root), made);
    // A touched but unchanged source keeps the cache.
    let f = fs::File::options().write(true).open(ctx.join("b.txt")).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    assert_eq!(build(&root, ctx, &[]), id1);
    // The last COPY's source changed: its step and the CMD after it run again.
    fs::write(ctx.join("b.txt"), "B").unwrap();
    let id2 = build(&root, ctx, &[]);
    assert_ne!(id2, id1);
    assert_eq!(cache_images(&root), made + 2);
    // A build arg changes the ENV step and all after it.
    let id3 = build(&root, ctx, &["--build-arg", "V=2", "-t", "v2"]);
    assert_eq!(root.ok(&["run", "--rm", "v2", "--", "cat", "/x"]), "2\n");
    assert_ne!(id3, id2);
    // --no-cache: every step again.
    let before = cache_images(&root);
    let id4 = build(&root, ctx, &["--no-cache"]);
    assert_ne!(id4, id2);
    assert!(cache_images(&root) >= before, "steps replaced under their keys");
    // image prune removes the cache (as podman's removes intermediate images), not named images.
    root.ok(&["image", "prune"]);
    assert_eq!(cache_images(&root), 0);
    assert_eq!(root.ok(&["run", "--rm", "v2", "--", "cat", "/x"]), "2\n");
    // A failing RUN: its status, its line.
    fs::write(ctx.join("Containerfile"), "FROM busybox\n\nRUN exit 3\n").unwrap();
    let out = root.cmd(&["build", &ctx.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Containerfile:3") && err.contains("step 2/2"), "{err}");
}

/// A build killed with SIGKILL in the middle of a RUN leaves its complete cached steps and
/// nothing else: the next build removes the killed one's container (its runc container, mount
/// and snapshot), reuses the steps before the RUN and succeeds.
#[test]
fn killed_build_leaves_only_complete_steps() {
    if !privileged("build killed_build_leaves_only_complete_steps") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path();
    fs::write(ctx.join("a.txt"), "a").unwrap();
    fs::write(
        ctx.join("Containerfile"),
        "FROM busybox\nARG S=0\nCOPY a.txt /a\nRUN sleep $S; echo done > /r\n",
    )
    .unwrap();
    let c = ctx.to_string_lossy().into_owned();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--root", &root.path().to_string_lossy(), "build", "-q", "--build-arg", "S=60", &c])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let in_run = (0..300).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        !runc_list(root.path()).is_empty()
    });
    assert!(in_run, "the RUN never started");
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let cached = cache_images(&root);
    assert!(cached >= 2, "ARG and COPY were cached before the RUN: {cached}");

    let out = root.ok(&["build", "-q", "-t", "after", &c]);
    assert!(out.trim().starts_with("sha256:"), "{out}");
    assert_eq!(root.ok(&["run", "--rm", "after", "--", "cat", "/a", "/r"]), "adone\n");
    let ps = root.ok(&["ps", "-a"]);
    assert_eq!(ps.lines().count(), 1, "no container left:\n{ps}");
    assert!(runc_list(root.path()).is_empty(), "no runc container left");
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let r = root.path().to_string_lossy().into_owned();
    assert!(!mounts.contains(&r), "a mount under the root is left: {mounts}");
}
