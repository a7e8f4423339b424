//! Archives in and out, as docker and podman users type them: container export (a flat tar of a
//! container's tree), image import-rootfs (such a tar as an image), save/load.

use crate::common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// GNU tar extraction as root, keeping owners, modes, xattrs (all namespaces) and devices.
fn untar(tar: &Path, into: &Path) {
    fs::create_dir_all(into).expect("mkdir");
    let out = Command::new("tar")
        .args(["-xpf"])
        .arg(tar)
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-C"])
        .arg(into)
        .output()
        .expect("run tar");
    assert!(out.status.success(), "tar -x {}: {}", tar.display(), String::from_utf8_lossy(&out.stderr));
}

fn tar_names(tar: &Path) -> Vec<String> {
    let out = Command::new("tar").arg("-tf").arg(tar).output().expect("tar -t");
    assert!(out.status.success(), "tar -t: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn sh(script: &str) {
    let out = Command::new("sh").arg("-c").arg(script).output().expect("sh");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `container export` of a container with deletions, an opaque dir (from the image) and a
/// replaced dir (from the container) is the merged view, entry by entry, with no `.wh.` name;
/// the export of the mounted container (read where it is mounted, to stdout) is the same bytes.
#[test]
fn container_export_is_the_merged_view() {
    if !privileged("container_export_is_the_merged_view") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:multi-opaque", fx.join("oci").display()), "--name", "m"]);
    root.ok(&["container", "create", "m", "c"]);
    let at = root.ok(&["container", "mount", "c"]);
    let at = Path::new(at.trim());
    // A deletion, a new file, a directory deleted and recreated (opaque in the upper dir).
    sh(&format!(
        "cd {} && rm -f bin/ls && rm -rf etc && mkdir etc && echo new > etc/fresh && \
         echo added > added && touch -h -d @1700000000 etc/fresh added",
        at.display()
    ));
    let mut merged = capture(at);
    // The layer writer stores pre-1970 mtimes as 0 (see strata::commit::layer).
    merged.retain(|_, e| {
        e.mtime = e.mtime.map(|t| t.max(0));
        true
    });
    root.ok(&["container", "umount", "c"]);

    let work = tempfile::Builder::new().prefix("exp-").tempdir_in(root.path()).expect("tempdir");
    let tar = work.path().join("c.tar");
    root.ok(&["container", "export", "c", "-o", tar.to_str().expect("utf8")]);
    assert!(mounts_under(root.path()).is_empty(), "the export's view is unmounted");
    let names = tar_names(&tar);
    assert!(names.iter().any(|n| n == "etc/fresh") && names.iter().any(|n| n == "added"), "{names:?}");
    assert!(!names.iter().any(|n| n == "bin/ls"), "deleted file exported");
    let wh: Vec<_> = names.iter().filter(|n| n.rsplit('/').any(|c| c.starts_with(".wh."))).collect();
    assert!(wh.is_empty(), "whiteouts in the export: {wh:?}");
    let x = work.path().join("x");
    untar(&tar, &x);
    strata_test_support::tree::assert_trees_eq(&merged, &capture(&x), "export vs merged view");

    // Mounted: read in place, to stdout; the same bytes.
    root.ok(&["container", "mount", "c"]);
    let out = root.cmd(&["container", "export", "c"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == fs::read(&tar).expect("read tar"), "export of the mounted container differs");
    root.ok(&["container", "umount", "c"]);

    let err = root.fails(&["container", "export", "nope", "-o", tar.to_str().expect("utf8")]);
    assert!(err.contains("container \"nope\" not found"), "{err}");
}

/// strata with `root`, stdin from `input` (a file).
fn strata_in(root: &Root, args: &[&str], input: &Path) -> std::process::Output {
    Command::new(STRATA)
        .arg("--root")
        .arg(root.path())
        .args(args)
        .stdin(fs::File::open(input).expect("open input"))
        .output()
        .expect("run strata")
}

/// The tree of image `image` in `root`, through a container mounted for the purpose.
fn image_tree(root: &Root, image: &str, container: &str) -> strata_test_support::tree::Tree {
    root.ok(&["container", "create", image, container]);
    let at = root.ok(&["container", "mount", container]);
    let t = capture(Path::new(at.trim()));
    root.ok(&["container", "umount", container]);
    t
}

/// `image import-rootfs` of a flat tar gives the tree `podman import` of the same tar gives,
/// entry by entry; its config has the host platform, one diff_id, one history entry and the
/// `-c` change; stdin gives the same layer; the image runs; a corrupt tar fails naming the file
/// and leaves no image and nothing in staging.
#[test]
fn import_rootfs_matches_podman_import() {
    if !privileged("import_rootfs_matches_podman_import") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:multi-opaque", fx.join("oci").display()), "--name", "m"]);
    root.ok(&["container", "create", "m", "c"]);
    let work = tempfile::Builder::new().prefix("imp-").tempdir_in(root.path()).expect("tempdir");
    let tar = work.path().join("flat.tar");
    let tar_s = tar.to_str().expect("utf8");
    root.ok(&["container", "export", "c", "-o", tar_s]);

    let args = ["image", "import-rootfs", tar_s, "flat", "-c", "CMD [\"/bin/sh\"]", "-m", "flat"];
    let out = strata_in(&root, &args, Path::new("/dev/null"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let args = ["image", "import-rootfs", "-", "flat2", "-c", "CMD [\"/bin/sh\"]", "-m", "flat"];
    let out = strata_in(&root, &args, &tar);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let inspect: serde_json::Value =
        serde_json::from_str(&root.ok(&["image", "inspect", "flat"])).expect("json");
    let inspect2: serde_json::Value =
        serde_json::from_str(&root.ok(&["image", "inspect", "flat2"])).expect("json");
    assert!(inspect["manifest"]["layers"].as_array().is_some_and(|l| l.len() == 1), "{inspect}");
    assert_eq!(inspect["manifest"]["layers"], inspect2["manifest"]["layers"], "stdin gives the same layer");
    let cfg = &inspect["config"];
    assert_eq!(cfg["os"], "linux");
    assert_eq!(cfg["architecture"], strata::image::Platform::host().arch.as_str());
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(1), "{cfg}");
    assert_eq!(cfg["history"].as_array().map(Vec::len), Some(1), "{cfg}");
    assert_eq!(cfg["history"][0]["comment"], "flat");
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["/bin/sh"]));

    // podman import of the same tar, saved and imported here.
    let run = tempfile::Builder::new().prefix("strata-pi-").tempdir_in("/run").expect("runroot");
    let store = work.path().join("podman");
    podman_at(&store, run.path(), &["import", tar_s, "localhost/podflat:latest"]);
    let saved = work.path().join("pod.tar");
    podman_at(
        &store,
        run.path(),
        &["save", "--format", "oci-archive", "-o", saved.to_str().expect("utf8"), "localhost/podflat:latest"],
    );
    root.ok(&["image", "import", saved.to_str().expect("utf8"), "--name", "pod"]);
    let ours = image_tree(&root, "flat", "t1");
    let theirs = image_tree(&root, "pod", "t2");
    strata_test_support::tree::assert_trees_eq(&ours, &theirs, "import-rootfs vs podman import");
    assert!(ours.entries.len() > 100, "a real tree: {} entries", ours.entries.len());

    let out = root.cmd(&["run", "flat", "--rm", "--", "cat", "/etc/passwd"]);
    assert!(out.status.success(), "run: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("root:"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A corrupt tar: the error names the file; no image, nothing left in staging.
    let bad = work.path().join("bad.tar");
    let mut bytes = fs::read(&tar).expect("read");
    bytes.truncate(bytes.len() / 2);
    bytes[148..156].copy_from_slice(b"garbage!");
    fs::write(&bad, &bytes).expect("write");
    let err = root.fails(&["image", "import-rootfs", bad.to_str().expect("utf8"), "bad"]);
    assert!(err.contains(bad.to_str().expect("utf8")), "{err}");
    let ls = root.ok(&["image", "ls", "-q"]);
    assert!(!root.ok(&["image", "ls"]).lines().any(|l| l.starts_with("bad ")), "{ls}");
    let left: Vec<_> = fs::read_dir(root.path().join("staging"))
        .expect("staging")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in staging: {left:?}");
}

/// `strata save NAME | strata load` into another root gives the same manifest digest (oci-archive)
/// and the same tree; skopeo reads a saved docker-archive; a spooled stdin leaves nothing in
/// staging; garbage on stdin fails and leaves no image.
#[test]
fn save_pipe_load() {
    if !privileged("save_pipe_load") {
        return;
    }
    let fx = fixtures();
    let a = Root::new();
    let b = Root::new();
    let digest =
        a.ok(&["image", "import", &format!("{}:multi", fx.join("oci").display()), "--name", "multi"]);
    let work = tempfile::Builder::new().prefix("save-").tempdir_in(a.path()).expect("tempdir");

    // Through a real pipe: save writes stdout, load reads stdin.
    let mut save = Command::new(STRATA)
        .arg("--root")
        .arg(a.path())
        .args(["save", "multi", "--format", "oci-archive"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("save");
    let pipe = save.stdout.take().expect("stdout");
    let load =
        Command::new(STRATA).arg("--root").arg(b.path()).args(["load"]).stdin(pipe).output().expect("load");
    assert!(save.wait().expect("wait save").success());
    assert!(load.status.success(), "load: {}", String::from_utf8_lossy(&load.stderr));
    assert_eq!(String::from_utf8_lossy(&load.stdout).trim(), "Loaded image: multi:latest");
    let loaded: serde_json::Value =
        serde_json::from_str(&b.ok(&["image", "inspect", "multi"])).expect("json");
    assert_eq!(loaded["digest"].as_str(), Some(digest.trim()), "same manifest digest");
    let left: Vec<_> =
        fs::read_dir(b.path().join("staging")).expect("staging").flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left in staging: {left:?}");
    strata_test_support::tree::assert_trees_eq(
        &image_tree(&a, "multi", "ca"),
        &image_tree(&b, "multi", "cb"),
        "loaded tree",
    );

    // docker-archive (the default) to a file, read by skopeo, loaded back by -i.
    let da = work.path().join("multi.docker.tar");
    a.ok(&["save", "multi", "-o", da.to_str().expect("utf8")]);
    let out = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("docker-archive:{}", da.display()))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("manifest json");
    let n = m["layers"].as_array().map(Vec::len).expect("layers");
    let want: serde_json::Value = serde_json::from_str(&a.ok(&["image", "inspect", "multi"])).expect("json");
    assert_eq!(n, want["manifest"]["layers"].as_array().map(Vec::len).expect("layers"));
    let c = Root::new();
    c.ok(&["load", "-i", da.to_str().expect("utf8"), "--name", "again"]);
    strata_test_support::tree::assert_trees_eq(
        &image_tree(&a, "multi", "cc"),
        &image_tree(&c, "again", "cd"),
        "docker-archive",
    );

    // Garbage on stdin: an error, no image, nothing in staging.
    let junk = work.path().join("junk");
    fs::write(&junk, b"not an archive at all").expect("write");
    let out = strata_in(&c, &["load"], &junk);
    assert!(!out.status.success(), "loading junk succeeded");
    assert_eq!(c.ok(&["image", "ls", "-q"]).lines().count(), 1, "only the earlier image");
    let left: Vec<_> =
        fs::read_dir(c.path().join("staging")).expect("staging").flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left in staging: {left:?}");
}

/// `run -e`, `-w`, `--user` reach the process (runc): a new variable, one replacing the image's
/// PATH, the working directory and the user's uid/gid from the image's /etc/passwd; a relative
/// `-w` and an unknown user are refused by name.
#[test]
fn run_env_workdir_user() {
    if !privileged("run_env_workdir_user") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display()), "--name", "busybox"]);
    let script = "echo \"$GREETING|$PATH\"; pwd; id -u; id -g";
    let out = root.ok(&[
        "run",
        "busybox",
        "--rm",
        "-e",
        "GREETING=hi there",
        "-e",
        "PATH=/bin",
        "-w",
        "/tmp",
        "--user",
        "nobody",
        "--",
        "/bin/sh",
        "-c",
        script,
    ]);
    let passwd = capture_passwd(&root);
    assert_eq!(out, format!("hi there|/bin\n/tmp\n{passwd}\n"));
    let err = root.fails(&["run", "busybox", "--rm", "-w", "tmp", "--", "true"]);
    assert!(err.contains("-w \"tmp\": the working directory must be an absolute path"), "{err}");
    let err = root.fails(&["run", "busybox", "--rm", "--user", "nosuchuser", "--", "true"]);
    assert!(err.contains("user \"nosuchuser\": no such user"), "{err}");
    let err = root.fails(&["run", "busybox", "--rm", "-e", "=x", "--", "true"]);
    assert!(err.contains("-e \"=x\": empty variable name"), "{err}");
}

/// nobody's uid and gid lines, as the image's /etc/passwd gives them.
fn capture_passwd(root: &Root) -> String {
    let out = root.ok(&["run", "busybox", "--rm", "--", "grep", "^nobody:", "/etc/passwd"]);
    let f: Vec<&str> = out.trim().split(':').collect();
    assert!(f.len() > 3, "{out}");
    format!("{}\n{}", f[2], f[3])
}

/// `exec` runs in the running container (runc exec): its environment and cwd overrides, its
/// user by name from the container's /etc/passwd, its exit status, and a file it writes lands in
/// the container's upper dir; exec on a container that is not running is refused by name.
#[test]
fn exec_in_running_container() {
    if !privileged("exec_in_running_container") {
        return;
    }
    use std::time::{Duration, Instant};
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display()), "--name", "busybox"]);
    root.ok(&["container", "create", "busybox", "idle"]);
    let err = root.fails(&["exec", "idle", "--", "true"]);
    assert!(err.contains("container \"idle\" is not running"), "{err}");

    let run = BackgroundRun::start(&root, "busybox", "busy", &["--", "sleep", "30"]);
    let until = Instant::now() + Duration::from_secs(20);
    while !root.cmd(&["exec", "busy", "--", "true"]).status.success() {
        assert!(Instant::now() < until, "busy never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = root.ok(&[
        "exec",
        "-e",
        "X=one",
        "-w",
        "/tmp",
        "--user",
        "nobody",
        "busy",
        "--",
        "sh",
        "-c",
        "echo $X; pwd; id -un; echo hi > /tmp/from-exec",
    ]);
    assert_eq!(out, "one\n/tmp\nnobody\n");
    let out = root.cmd(&["exec", "busy", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    let i: serde_json::Value =
        serde_json::from_str(&root.ok(&["container", "inspect", "busy"])).expect("json");
    let upper = Path::new(i["upper"].as_str().expect("upper")).join("tmp/from-exec");
    assert_eq!(fs::read_to_string(&upper).expect("written by exec"), "hi\n");
    root.ok(&["container", "rm", "--force", "busy"]);
    run.wait();
}

/// `run -d` returns with the container running under runc, its output in `logs`; it is
/// committed while it runs (what it wrote is in the new image); `stop` ends it with SIGTERM when
/// it handles that (and its TERM handler's output is logged), else with SIGKILL after `-t`;
/// stopped containers are unmounted and `stop` again succeeds doing nothing (as docker).
#[test]
fn detached_run_logs_commit_stop() {
    if !privileged("detached_run_logs_commit_stop") {
        return;
    }
    use std::time::{Duration, Instant};
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display()), "--name", "busybox"]);
    let _runc = RuncGuard::new(&root, "web");
    let script = "trap 'echo bye; exit 0' TERM; echo started; echo served > /srv.txt; echo err >&2; \
                  while true; do sleep 0.1; done";
    let out = root.ok(&["run", "-d", "--name", "web", "busybox", "--", "sh", "-c", script]);
    assert_eq!(out.trim(), "web");
    let until = Instant::now() + Duration::from_secs(20);
    while !root.ok(&["logs", "web"]).contains("err") {
        assert!(Instant::now() < until, "no output logged: {:?}", root.ok(&["logs", "web"]));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(root.ok(&["logs", "web"]), "started\nerr\n");
    let i: serde_json::Value =
        serde_json::from_str(&root.ok(&["container", "inspect", "web"])).expect("json");
    assert!(i["running"] == true && i["status"] == "running", "{i}");
    assert!(i["mounted"].is_string(), "{i}");

    root.ok(&["container", "commit", "web", "served"]);
    let out = root.ok(&["run", "served", "--rm", "--", "cat", "/srv.txt"]);
    assert_eq!(out, "served\n");

    let t = Instant::now();
    root.ok(&["stop", "web"]);
    assert!(t.elapsed() < Duration::from_secs(5), "SIGTERM was enough: {:?}", t.elapsed());
    assert_eq!(root.ok(&["logs", "web"]), "started\nerr\nbye\n");
    let i: serde_json::Value =
        serde_json::from_str(&root.ok(&["container", "inspect", "web"])).expect("json");
    assert!(i["running"] == false && i["mounted"].is_null(), "{i}");
    // Stopping a stopped container is no error, as in docker.
    assert_eq!(root.ok(&["stop", "web"]), "web\n");

    // PID 1 without a TERM handler ignores SIGTERM: SIGKILL after -t.
    let _runc2 = RuncGuard::new(&root, "stubborn");
    root.ok(&["run", "-d", "--name", "stubborn", "busybox", "--", "sleep", "60"]);
    let t = Instant::now();
    root.ok(&["stop", "-t", "1", "stubborn"]);
    let took = t.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(8), "{took:?}");
    assert!(mounts_under(root.path()).is_empty(), "{:?}", mounts_under(root.path()));
    let err = root.fails(&["run", "-d", "--rm", "busybox", "--", "true"]);
    assert!(err.contains("--rm with -d is not supported"), "{err}");
}

/// `save` of several images: one archive, each image under its name, shared blobs once; skopeo
/// reads each image out of it, podman loads them all, strata imports each by name.
#[test]
fn save_several_images() {
    if !privileged("save_several_images") {
        return;
    }
    let fx = fixtures();
    let a = Root::new();
    a.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display()), "--name", "busybox"]);
    a.ok(&["image", "import", &format!("{}:multi", fx.join("oci").display()), "--name", "multi"]);
    a.ok(&["image", "tag", "busybox", "localhost/again:v2"]);
    let work = tempfile::Builder::new().prefix("save-").tempdir_in(a.path()).expect("tempdir");
    let names = ["busybox", "multi", "localhost/again:v2"];
    for format in ["docker-archive", "oci-archive"] {
        let file = work.path().join(format!("all.{format}.tar"));
        let f = file.to_str().expect("utf8");
        let mut args = vec!["save", "--format", format, "-o", f];
        args.extend(names);
        a.ok(&args);
        let members = tar_names(&file);
        let mut unique = members.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), members.len(), "{format}: a member twice: {members:?}");
        for (name, tag) in [
            ("busybox", "busybox:latest"),
            ("multi", "multi:latest"),
            ("localhost/again:v2", "localhost/again:v2"),
        ] {
            let reference = match format {
                "docker-archive" => format!("docker-archive:{f}:{tag}"),
                _ => format!("oci-archive:{f}:{name}"),
            };
            let out = Command::new("skopeo").args(["inspect", "--raw", &reference]).output().expect("skopeo");
            assert!(out.status.success(), "skopeo {reference}: {}", String::from_utf8_lossy(&out.stderr));
            let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("manifest");
            let want: serde_json::Value =
                serde_json::from_str(&a.ok(&["image", "inspect", name])).expect("json");
            let layers = |v: &serde_json::Value| v["layers"].as_array().map(Vec::len).expect("layers");
            assert_eq!(layers(&m), layers(&want["manifest"]), "{reference}");
            if format == "oci-archive" {
                assert_eq!(sha(&out.stdout), want["digest"].as_str().expect("digest"), "{reference}");
            }
            // strata reads it back by name.
            let b = Root::new();
            let src = match format {
                "docker-archive" => format!("docker-archive:{f}:{tag}"),
                _ => format!("oci-archive:{f}:{name}"),
            };
            b.ok(&["image", "import", &src, "--name", "back"]);
            let c = format!("c-{}", &sha(reference.as_bytes())[7..19]);
            strata_test_support::tree::assert_trees_eq(
                &image_tree(&a, name, &c),
                &image_tree(&b, "back", &c),
                &format!("{format} {name}"),
            );
        }
    }
    // podman loads every image of a docker-archive (not multi's: podman's vfs driver fails on one
    // of that fixture's replacements, whatever wrote the archive).
    a.ok(&["run", "--name", "p", "busybox", "--", "sh", "-c", "echo plus > /plus"]);
    a.ok(&["container", "commit", "p", "plus"]);
    let f = work.path().join("for-podman.tar");
    a.ok(&["save", "-o", f.to_str().expect("utf8"), "busybox", "plus", "localhost/again:v2"]);
    let pstore = work.path().join("podman");
    // podman wants a short runroot.
    let prun = tempfile::Builder::new().prefix("strata-ps-").tempdir_in("/run").expect("runroot");
    let prun = prun.path();
    podman_at(&pstore, prun, &["load", "-i", f.to_str().expect("utf8")]);
    let listed = podman_at(&pstore, prun, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    for want in ["localhost/busybox:latest", "localhost/plus:latest", "localhost/again:v2"] {
        assert!(listed.lines().any(|l| l == want), "podman images lacks {want}: {listed}");
    }
    // strata load takes every image of such an archive too, from a file and from stdin; with
    // --name (one name for several images) it refuses.
    for format in ["docker-archive", "oci-archive"] {
        let file = work.path().join(format!("all.{format}.tar"));
        let c = Root::new();
        let out = c.ok(&["load", "-i", file.to_str().expect("utf8")]);
        assert_eq!(out.lines().count(), 3, "{format}: one digest per image: {out}");
        let d = Root::new();
        let out = strata_in(&d, &["load"], &file);
        assert!(out.status.success(), "{format} from stdin: {}", String::from_utf8_lossy(&out.stderr));
        for r in [&c, &d] {
            let listed: serde_json::Value =
                serde_json::from_str(&r.ok(&["image", "ls", "--json"])).expect("json");
            let mut names: Vec<String> = listed
                .as_array()
                .expect("array")
                .iter()
                .map(|i| i["name"].as_str().expect("name").to_string())
                .collect();
            names.sort();
            // docker-archive names images by their RepoTags, OCI archives by their ref names;
            // both are stored in the canonical form (`:latest` when untagged).
            let want: &[&str] = &["busybox:latest", "localhost/again:v2", "multi:latest"];
            assert_eq!(names, want, "{format}");
        }
        let err = c.fails(&["load", "-i", file.to_str().expect("utf8"), "--name", "one"]);
        assert!(err.contains("holds several images"), "{format}: {err}");
    }
    let err = a.fails(&["save", "busybox", "nope", "-o", work.path().join("x.tar").to_str().expect("utf8")]);
    assert!(err.contains("nope") && err.contains("not found"), "{err}");
    assert!(!work.path().join("x.tar").exists(), "nothing written for a missing image");
}
