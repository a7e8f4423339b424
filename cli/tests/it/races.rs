//! Many strata processes at once: every race ends in a consistent store and a message a user
//! understands. Each race is run many rounds.

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn strata(root: &Path, args: &[&str]) -> Output {
    Command::new(STRATA).arg("--root").arg(root).args(args).output().expect("run strata")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Two `container mount` of one container at once: exactly one mounts, the other says it is
/// mounted already, and the upper dir is under one overlay mount.
#[test]
fn concurrent_mounts_of_one_container_mount_it_once() {
    if !privileged("concurrent_mounts_of_one_container_mount_it_once") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display())]);
    root.ok(&["container", "create", "busybox", "c"]);
    let upper = format!("upperdir={}", root.upper("c").display());
    for round in 0..20 {
        let outs: Vec<Output> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| s.spawn(|| strata(root.path(), &["container", "mount", "c", "--backend", "kernel"])))
                .collect();
            hs.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        let ok = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(ok, 1, "round {round}: {:?}", outs.iter().map(stderr).collect::<Vec<_>>());
        let loser = outs.iter().find(|o| !o.status.success()).expect("one failed");
        assert!(stderr(loser).contains("is already mounted at"), "round {round}: {}", stderr(loser));
        let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let n = kernel_overlay::mountinfo::parse(&text)
            .iter()
            .filter(|m| m.fs_type == "overlay" && m.super_options.split(',').any(|o| o == upper))
            .count();
        assert_eq!(n, 1, "round {round}: overlay mounts of the upper dir");
        root.ok(&["container", "umount", "c"]);
    }
}

/// `image rm` racing `container create` over the same image: either the container exists (and the
/// image stays, in use) or the image is gone (and create says so); the messages are the user's.
#[test]
fn image_rm_racing_container_create_ends_in_a_clear_message() {
    if !privileged("image_rm_racing_container_create_ends_in_a_clear_message") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let src = format!("{}:busybox", fx.join("oci").display());
    for round in 0..20 {
        root.ok(&["image", "import", &src, "--name", "img"]);
        let c = format!("c{round}");
        let (rm, create) = std::thread::scope(|s| {
            let a = s.spawn(|| strata(root.path(), &["image", "rm", "img"]));
            let b = s.spawn(|| strata(root.path(), &["container", "create", "img", &c]));
            (a.join().expect("rm"), b.join().expect("create"))
        });
        match (rm.status.success(), create.status.success()) {
            (true, false) => {
                assert!(
                    stderr(&create).contains("image \"img\" not found"),
                    "round {round}: {}",
                    stderr(&create)
                )
            }
            (false, true) => {
                assert!(
                    stderr(&rm).contains(&format!("used by container(s) {c}")),
                    "round {round}: {}",
                    stderr(&rm)
                );
                root.ok(&["container", "rm", &c]);
                root.ok(&["image", "rm", "img"]);
            }
            other => panic!("round {round}: {other:?}: rm: {} create: {}", stderr(&rm), stderr(&create)),
        }
    }
}

/// gc racing imports: each round plants 3,000 garbage blobs (so gc's sweep takes a while), starts
/// gc, and imports an image of 131 blobs while it sweeps. Every import that succeeds leaves an
/// image whose manifest, config and layer blobs are all in the store.
#[test]
fn gc_racing_import_keeps_what_the_import_wrote() {
    if !privileged("gc_racing_import_keeps_what_the_import_wrote") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let src = format!("{}:many-128", fx.join("oci").display());
    let blobs = root.path().join("blobs/sha256");
    root.ok(&["image", "ls"]);
    for round in 0..3u64 {
        let planted: Vec<_> =
            (0..3000u64).map(|i| blobs.join(format!("{:064x}", (round << 32) | i))).collect();
        for p in &planted {
            std::fs::write(p, b"garbage").expect("plant");
        }
        let mut gc = Command::new(STRATA)
            .arg("--root")
            .arg(root.path())
            .arg("gc")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gc");
        // Import once gc has begun its sweep.
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while planted.iter().filter(|p| p.exists()).count() > 2990 {
            assert!(std::time::Instant::now() < until, "round {round}: gc did not start sweeping");
            if gc.try_wait().expect("gc").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        root.ok(&["image", "import", &src, "--name", "m"]);
        let gc = gc.wait_with_output().expect("gc");
        assert!(gc.status.success(), "gc: {}", stderr(&gc));
        let inspect: Value = serde_json::from_str(&root.ok(&["image", "inspect", "m"])).expect("inspect");
        let mut want = vec![inspect["digest"].as_str().expect("digest").to_string()];
        want.push(inspect["manifest"]["config"]["digest"].as_str().expect("config").to_string());
        for l in inspect["layers"].as_array().expect("layers") {
            want.push(l["blob_digest"].as_str().expect("blob").to_string());
        }
        let missing: Vec<&String> =
            want.iter().filter(|d| !blobs.join(d.trim_start_matches("sha256:")).is_file()).collect();
        assert!(missing.is_empty(), "round {round}: {} of {} blobs missing", missing.len(), want.len());
        root.ok(&["container", "create", "m", "v", "--read-only"]);
        root.ok(&["container", "rm", "v"]);
        root.ok(&["image", "rm", "m"]);
        root.ok(&["gc"]);
    }
}

/// 20 processes opening a fresh state root at once all succeed (creation and migration of the
/// database take turns).
#[test]
fn twenty_first_opens_of_a_fresh_root_all_succeed() {
    if !privileged("twenty_first_opens_of_a_fresh_root_all_succeed") {
        return;
    }
    let base = Root::new();
    for round in 0..20 {
        let root = base.path().join(format!("r{round}"));
        let children: Vec<_> = (0..20)
            .map(|i| {
                let args: &[&str] =
                    if i % 2 == 0 { &["image", "ls"] } else { &["container", "ls", "--json"] };
                Command::new(STRATA)
                    .arg("--root")
                    .arg(&root)
                    .args(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().expect("wait");
            assert!(out.status.success(), "round {round}: {}", stderr(&out));
        }
    }
}

/// `container commit` while `strata run` keeps creating and deleting files in the container:
/// every commit succeeds (the container is paused while its upper dir is read).
#[test]
fn commits_while_the_container_writes_all_succeed() {
    if !privileged("commits_while_the_container_writes_all_succeed") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display())]);
    let script =
        "mkdir /d; i=0; while :; do echo $i > /d/f$((i%100)); rm -f /d/f$(((i+50)%100)); i=$((i+1)); done";
    let run = BackgroundRun::start(&root, "busybox", "w", &["--backend", "kernel", "--", "sh", "-c", script]);
    let upper = root.upper("w").join("d");
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&upper).map(|d| d.count()).unwrap_or(0) < 10 {
        assert!(std::time::Instant::now() < until, "the container did not start writing");
        std::thread::sleep(Duration::from_millis(20));
    }
    for round in 0..25 {
        let out = strata(root.path(), &["container", "commit", "w", &format!("snap{round}")]);
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
    }
    root.ok(&["container", "rm", "--force", "w"]);
    run.wait();
}
