//! `strata run` as podman users drive it: `-v` bind mounts, `-i` and `-t`, `logs -f`.

use crate::common;

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn busybox(root: &Root) {
    let fx = fixtures();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display()), "--name", "busybox"]);
}

#[test]
fn volumes_bind_host_paths() {
    if !privileged("volumes_bind_host_paths") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let host = root.path().join("host");
    fs::create_dir_all(host.join("sub")).expect("mkdir");
    fs::write(host.join("sub/in"), "from the host\n").expect("write");
    let spec = format!("{}:/data", host.display());
    // Read and written through, at a path the image does not have.
    let out = root.ok(&[
        "run",
        "--name",
        "v",
        "-v",
        &spec,
        "busybox",
        "--",
        "sh",
        "-c",
        "cat /data/sub/in; echo back > /data/out; echo kept > /in-upper",
    ]);
    assert_eq!(out, "from the host\n");
    assert_eq!(fs::read_to_string(host.join("out")).expect("written through"), "back\n");
    // The volume's content is not the container's: a commit has the mount point, not the files.
    let upper = root.upper("v");
    assert_eq!(fs::read_to_string(upper.join("in-upper")).expect("upper"), "kept\n");
    assert!(!upper.join("data/out").exists() && !upper.join("data/sub").exists(), "volume content in upper");
    root.ok(&["container", "commit", "v", "v-img"]);
    let out = root.ok(&["run", "--rm", "v-img", "--", "sh", "-c", "ls -A /data | wc -l; cat /in-upper"]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "kept"]);
    // :ro refuses writes, in the container and so on the host.
    let ro = format!("{}:/data:ro", host.display());
    let out = root.cmd(&["run", "--rm", "-v", &ro, "busybox", "--", "sh", "-c", "echo x > /data/new"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"), "{out:?}");
    assert!(!host.join("new").exists());
    // Two volumes, one of them a single file.
    let file = format!("{}:/etc/greeting:ro", host.join("sub/in").display());
    let out = root.ok(&["run", "--rm", "-v", &spec, "-v", &file, "busybox", "--", "cat", "/etc/greeting"]);
    assert_eq!(out, "from the host\n");
    // Bad specs fail before anything is created, naming the value and the reason.
    for (v, want) in [
        ("relative:/data", "not absolute (named volumes are not supported)"),
        ("/no/such/host/dir:/data", "host path /no/such/host/dir"),
        (&format!("{}:data", host.display()) as &str, "container path \"data\" is not absolute"),
        (&format!("{}:/data:bogus", host.display()) as &str, "unknown option \"bogus\""),
        ("/a", "expected HOST:CONTAINER[:OPTIONS]"),
    ] {
        let err = root.fails(&["run", "--rm", "--name", "bad", "-v", v, "busybox", "--", "true"]);
        assert!(err.contains(want) && err.contains(v), "-v {v}: {err}");
    }
    assert!(root.fails(&["container", "inspect", "bad"]).contains("not found"));
}

#[test]
fn interactive_and_tty_as_podman() {
    if !privileged("interactive_and_tty_as_podman") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let run = |args: &[&str], input: &str| {
        let mut child = Command::new(STRATA)
            .arg("--root")
            .arg(root.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("feed stdin");
        child.wait_with_output().expect("wait")
    };
    // -i: the container reads our stdin; without it, /dev/null.
    let out = run(&["run", "--rm", "-i", "busybox", "--", "sh", "-c", "cat; echo end"], "typed\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "typed\nend\n", "{out:?}");
    let out = run(&["run", "--rm", "busybox", "--", "sh", "-c", "cat; echo end"], "typed\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "end\n", "{out:?}");
    // -t: a terminal (script(1) gives strata one); without -t, none even on a terminal.
    let script = |args: &str| {
        let cmd = format!("{STRATA} --root {} {args}", root.path().display());
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .expect("script");
        String::from_utf8_lossy(&out.stdout).replace('\r', "")
    };
    let with = script("run --rm -t busybox -- sh -c 'tty; echo $TERM'");
    assert!(with.lines().next().is_some_and(|l| l.starts_with("/dev/pts/")), "{with:?}");
    assert!(with.contains("xterm"), "{with:?}");
    let without = script("run --rm busybox -- sh -c 'tty; true'");
    assert!(without.contains("not a tty"), "{without:?}");
}

#[test]
fn logs_follow_until_the_container_stops() {
    if !privileged("logs_follow_until_the_container_stops") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let _runc = RuncGuard::new(&root, "ticker");
    root.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "busybox",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo $i; sleep 0.3; done",
    ]);
    let t = Instant::now();
    let out = root.ok(&["logs", "-f", "ticker"]);
    assert_eq!(out, "1\n2\n3\n4\n5\n", "every line, including those written after -f started");
    assert!(t.elapsed() > Duration::from_millis(600), "it followed, not just read: {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(15), "it stopped when the container did: {:?}", t.elapsed());
    // A stopped container's log is printed at once.
    assert_eq!(root.ok(&["logs", "-f", "ticker"]), "1\n2\n3\n4\n5\n");
    root.ok(&["stop", "ticker"]);
    assert!(root.fails(&["logs", "-f", "nope"]).contains("not found"));
}
