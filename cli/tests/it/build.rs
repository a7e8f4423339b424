//! `strata build`: Containerfiles written for the test, built over the busybox sample image.

use crate::common;

use std::fs;
use std::path::Path;

use common::*;

/// When the test `name` may run (privileged): a root with busybox imported and a temporary
/// build context directory.
fn busybox_build(name: &str) -> Option<(Root, tempfile::TempDir)> {
    if !privileged(name) {
        return None;
    }
    let root = Root::new();
    busybox(&root);
    Some((root, tempfile::tempdir().unwrap()))
}

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
    let Some((root, t)) = busybox_build("build cache_and_failures") else {
        return;
    };
    let ctx = t.path();
    fs::write(ctx.join("a.txt"), "a").unwrap();
    fs::write(ctx.join("b.txt"), "b").unwrap();
    fs::write(
        ctx.join("Containerfile"),
        // /run-id differs each time the RUN runs (a cached step does not run); the config's times
        // are whole seconds, so a fast rebuild's id would not tell.
        "FROM busybox\nARG V=1\nENV A=$V\nCOPY a.txt /a\nRUN echo $A > /x && rm /bin/ls && cat /proc/sys/kernel/random/uuid > /run-id\nCOPY b.txt /b\nCMD [\"sh\"]\n",
    )
    .unwrap();
    let id1 = build(&root, ctx, &["-t", "out"]);
    assert!(id1.starts_with("sha256:"), "{id1}");
    let made = cache_images(&root);
    assert!(made >= 5, "{made} cached steps");
    // Cached steps are intermediate images: out of the default listing, shown with -a.
    let listed = root.ok(&["images"]);
    assert!(!listed.contains("strata-build-cache") && listed.contains("out"), "{listed}");
    let out = root.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "out",
        "--",
        "sh",
        "-c",
        "cat /x /a /b; test -e /bin/ls || echo gone",
    ]);
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
    assert_eq!(root.ok(&["run", "--rm", "--network", "none", "v2", "--", "cat", "/x"]), "2\n");
    assert_ne!(id3, id2);
    // --no-cache: every step again.
    let before = cache_images(&root);
    let id4 = build(&root, ctx, &["--no-cache"]);
    assert_ne!(id4, id2);
    assert!(cache_images(&root) >= before, "steps replaced under their keys");
    // image prune removes the cache (as podman's removes intermediate images), not named images.
    root.ok(&["image", "prune"]);
    assert_eq!(cache_images(&root), 0);
    assert_eq!(root.ok(&["run", "--rm", "--network", "none", "v2", "--", "cat", "/x"]), "2\n");
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
    let Some((root, t)) = busybox_build("build killed_build_leaves_only_complete_steps") else {
        return;
    };
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
    assert_eq!(root.ok(&["run", "--rm", "--network", "none", "after", "--", "cat", "/a", "/r"]), "adone\n");
    let ps = root.ok(&["ps", "-a"]);
    assert_eq!(ps.lines().count(), 1, "no container left:\n{ps}");
    assert!(runc_list(root.path()).is_empty(), "no runc container left");
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let r = root.path().to_string_lossy().into_owned();
    assert!(!mounts.contains(&r), "a mount under the root is left: {mounts}");
}

/// Serves `body` to every GET on 127.0.0.1 (a thread, until the test ends) with a fixed
/// `Last-Modified`; returns the base URL and the number of requests served so far.
fn serve(
    body: &'static [u8],
    last_modified: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut r = BufReader::new(conn.try_clone().expect("clone"));
            let mut first = String::new();
            if r.read_line(&mut first).is_err() {
                continue;
            }
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: {last_modified}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            if first.starts_with("GET ") {
                let _ = conn.write_all(body);
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    (url, served)
}

/// ADD of a URL, by buildah's rules: the file is downloaded as it is (a tar is not extracted),
/// named after the URL's last segment under a directory destination or as a file destination,
/// owned by root, mode 0600, its mtime the server's Last-Modified.
#[test]
fn add_url() {
    if !privileged("build add_url") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let (url, served) = serve(b"served over http\n", "Wed, 21 Oct 2015 07:28:00 GMT");
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path();
    fs::write(
        ctx.join("Containerfile"),
        format!("FROM busybox\nADD {url}/files/hello.txt /dl/\nADD {url}/files/hello.txt?x=1 /named\n"),
    )
    .unwrap();
    build(&root, ctx, &["-t", "fetched"]);
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 2, "one GET per ADD");
    let out = root.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "fetched",
        "--",
        "sh",
        "-c",
        "cat /dl/hello.txt /named; stat -c '%a %u:%g %Y' /dl/hello.txt /named",
    ]);
    // 2015-10-21T07:28:00Z
    assert_eq!(out, "served over http\nserved over http\n600 0:0 1445412480\n600 0:0 1445412480\n");
}

/// `--compress=false`: the image's new layers are plain tars (digest = diff_id), and it is a
/// normal image: saved and loaded into a fresh root it gives the same tree and runs.
#[test]
fn uncompressed_build_saves_and_loads() {
    let Some((root, t)) = busybox_build("build uncompressed_build_saves_and_loads") else {
        return;
    };
    let ctx = t.path();
    fs::write(ctx.join("a.txt"), "a\n").unwrap();
    fs::write(ctx.join("Containerfile"), "FROM busybox\nCOPY a.txt /a\nRUN echo r > /r && rm /bin/ls\n")
        .unwrap();
    build(&root, ctx, &["--compress=false", "-t", "plain"]);
    let base: serde_json::Value = serde_json::from_str(&root.ok(&["image", "inspect", "busybox"])).unwrap();
    let img: serde_json::Value = serde_json::from_str(&root.ok(&["image", "inspect", "plain"])).unwrap();
    let nbase = base["manifest"]["layers"].as_array().map(Vec::len).unwrap();
    let layers = img["manifest"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), nbase + 2, "{img}");
    let diff_ids = img["config"]["rootfs"]["diff_ids"].as_array().unwrap();
    for (l, d) in layers.iter().zip(diff_ids).skip(nbase) {
        assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar", "{l}");
        assert_eq!(&l["digest"], d, "an uncompressed layer's digest is its diff_id");
    }

    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("plain.tar");
    root.ok(&["save", "plain", "--format", "oci-archive", "-o", &archive.to_string_lossy()]);
    let fresh = Root::new();
    fresh.ok(&["load", "-i", &archive.to_string_lossy()]);
    let loaded: serde_json::Value = serde_json::from_str(&fresh.ok(&["image", "inspect", "plain"])).unwrap();
    assert_eq!(loaded["digest"], img["digest"], "same manifest digest after save | load");
    strata_test_support::tree::assert_trees_eq(
        &tree_of(&root, "plain", "p1"),
        &tree_of(&fresh, "plain", "p2"),
        "loaded uncompressed image",
    );
    assert_eq!(
        fresh.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "plain",
            "--",
            "sh",
            "-c",
            "cat /a /r; test -e /bin/ls || echo gone"
        ]),
        "a\nr\ngone\n"
    );
}

/// An image's merged view (a container's mount), mtimes left out.
fn tree_of(root: &Root, image: &str, container: &str) -> strata_test_support::tree::Tree {
    root.ok(&["container", "create", image, container]);
    let at = root.ok(&["container", "mount", container]);
    let mut t = capture(Path::new(at.trim()));
    root.ok(&["container", "umount", container]);
    root.ok(&["container", "rm", container]);
    t.retain(|_, e| {
        e.mtime = None;
        true
    });
    t
}

/// `--layers=false`: each stage's steps make one layer over its base, whose merged view equals
/// the layered build's (whiteouts and opaque directories included).
#[test]
fn unlayered_build_makes_one_layer() {
    let Some((root, t)) = busybox_build("build unlayered_build_makes_one_layer") else {
        return;
    };
    let ctx = t.path();
    fs::write(ctx.join("a.txt"), "a\n").unwrap();
    fs::write(
        ctx.join("Containerfile"),
        "FROM busybox AS first\nRUN mkdir -p /o/old && echo 1 > /o/old/f\n\
         FROM busybox\nCOPY a.txt /a\nCOPY --from=first /o /o\nENV E=1\n\
         RUN rm /bin/ls && rm -rf /o && mkdir /o && echo new > /o/new\nRUN echo $E > /e\n",
    )
    .unwrap();
    build(&root, ctx, &["-t", "layered"]);
    build(&root, ctx, &["--layers=false", "-t", "flat"]);
    let count = |name: &str| {
        let v: serde_json::Value = serde_json::from_str(&root.ok(&["image", "inspect", name])).unwrap();
        v["manifest"]["layers"].as_array().map(Vec::len).unwrap()
    };
    let base = count("busybox");
    assert_eq!(count("layered"), base + 4);
    assert_eq!(count("flat"), base + 1);
    strata_test_support::tree::assert_trees_eq(
        &tree_of(&root, "layered", "l"),
        &tree_of(&root, "flat", "f"),
        "--layers=false against the layered build",
    );
    assert_eq!(
        root.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "flat",
            "--",
            "sh",
            "-c",
            "ls /o; cat /e; test -e /bin/ls || echo gone"
        ]),
        "new\n1\ngone\n"
    );
}

/// A build without `-t` is listed as podman lists it, `<none>   <none>` with its id, and its
/// cached steps are not; once the same image gets a name, the `<none>` row goes.
#[test]
fn untagged_build_is_listed_as_none() {
    let Some((root, t)) = busybox_build("build untagged_build_is_listed_as_none") else {
        return;
    };
    let ctx = t.path();
    fs::write(ctx.join("a.txt"), "a\n").unwrap();
    fs::write(ctx.join("Containerfile"), "FROM busybox\nCOPY a.txt /a\nRUN echo r > /r\nENV E=1\n").unwrap();
    let id = build(&root, ctx, &[]);
    let short = &id.trim_start_matches("sha256:")[..12];
    let listed = root.ok(&["images"]);
    let none: Vec<&str> = listed.lines().filter(|l| l.starts_with("<none>")).collect();
    assert_eq!(none.len(), 1, "{listed}");
    let cols: Vec<&str> = none[0].split_whitespace().collect();
    assert_eq!(&cols[..3], ["<none>", "<none>", short], "{listed}");
    assert!(!listed.contains("strata-build-cache"), "{listed}");
    assert_eq!(listed.lines().count(), 3, "header, busybox and the build:\n{listed}");
    let ids = root.ok(&["images", "-q"]);
    assert!(ids.lines().any(|l| l == short), "{ids}");
    // -a still shows the steps by their cache names.
    assert!(cache_images(&root) >= 3);
    // Named, it is listed by its name only.
    assert_eq!(build(&root, ctx, &["-t", "named"]), id);
    let listed = root.ok(&["images"]);
    assert!(!listed.contains("<none>") && listed.contains("named"), "{listed}");
}

/// `--platform` names the platform of `FROM scratch` in the config (and of FROM images pulled
/// from an index); a bad one is refused before anything is built.
#[test]
fn platform_names_the_config() {
    if !privileged("build platform_names_the_config") {
        return;
    }
    let root = Root::new();
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path();
    fs::write(ctx.join("a.txt"), "a\n").unwrap();
    fs::write(ctx.join("Containerfile"), "FROM scratch\nCOPY a.txt /a\n").unwrap();
    build(&root, ctx, &["-t", "arm", "--platform", "linux/arm64/v8"]);
    let cfg: serde_json::Value = serde_json::from_str(&root.ok(&["image", "inspect", "arm"])).unwrap();
    let one = if cfg.is_array() { &cfg[0] } else { &cfg };
    let config = &one["config"];
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some("arm64")),
        "{cfg}"
    );
    assert_eq!(config["variant"].as_str(), Some("v8"), "{cfg}");
    let err = root.fails(&["build", "--platform", "nonsense", ctx.to_str().unwrap()]);
    assert!(err.contains("--platform"), "{err}");
}
