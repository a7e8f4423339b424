//! The front door: what a docker or podman user types first works as it does there. Image names
//! as docker resolves them, a closed pipe, `load` from a terminal, `run IMAGE CMD ARGS...`.

use crate::common;

use std::process::{Command, Stdio};

use common::registry::{Registry, RegistryOpts};
use common::*;

fn busybox(root: &Root, name: &str) {
    root.ok(&["image", "import", &format!("{}:busybox", fixtures().join("oci").display()), "--name", name]);
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// One normalisation for every command that takes an image name: a name without a tag is
/// `:latest`, Docker Hub's prefixes are optional, and an image is also found by a unique prefix
/// of its ID (the config digest), as in docker.
#[test]
fn image_names_resolve_as_docker() {
    if !privileged("image_names_resolve_as_docker") {
        return;
    }
    let root = Root::new();
    // import --name fx/app, then run fx/app:latest.
    busybox(&root, "fx/app");
    let listed = json(&root.ok(&["image", "ls", "--json"]));
    assert_eq!(listed[0]["name"], "fx/app:latest", "stored as docker shows it: {listed}");
    let out = root.ok(&["run", "--rm", "fx/app:latest", "echo", "tagged"]);
    assert_eq!(out, "tagged\n");
    let out = root.ok(&["run", "--rm", "docker.io/fx/app", "echo", "qualified"]);
    assert_eq!(out, "qualified\n");
    // image tag X foo, then run foo:latest and library/foo.
    assert_eq!(root.ok(&["image", "tag", "fx/app", "foo"]).trim(), "foo:latest");
    assert_eq!(root.ok(&["run", "--rm", "foo:latest", "echo", "foo"]), "foo\n");
    assert_eq!(root.ok(&["run", "--rm", "docker.io/library/foo", "echo", "lib"]), "lib\n");
    // An ID prefix (the config digest, as `image inspect` shows it).
    let config = json(&root.ok(&["image", "inspect", "foo"]))["manifest"]["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string();
    let hex = config.strip_prefix("sha256:").expect("sha256");
    for id in [&hex[..12], &hex[..5], &config[..20]] {
        assert_eq!(root.ok(&["run", "--rm", id, "echo", "by-id"]), "by-id\n", "{id}");
    }
    // Names that are no image stay errors, named as typed.
    let err = root.fails(&["run", "--rm", "nosuch", "true"]);
    assert!(err.contains("image \"nosuch\" not found"), "{err}");
    // save X | load: the archive's name runs as X.
    let other = Root::new();
    let mut save = Command::new(STRATA)
        .arg("--root")
        .arg(root.path())
        .args(["save", "foo"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("save");
    let pipe = save.stdout.take().expect("stdout");
    let load =
        Command::new(STRATA).arg("--root").arg(other.path()).arg("load").stdin(pipe).output().expect("load");
    assert!(save.wait().expect("save").success());
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    assert_eq!(String::from_utf8_lossy(&load.stdout), "Loaded image: foo:latest\n");
    assert_eq!(other.ok(&["run", "--rm", "foo", "echo", "loaded"]), "loaded\n");
    // Removing by the short name removes the stored one.
    assert_eq!(root.ok(&["image", "rm", "foo"]), "Untagged: foo:latest\n");
    assert!(root.fails(&["image", "inspect", "foo:latest"]).contains("not found"));
    assert!(mounts_under(root.path()).is_empty() && mounts_under(other.path()).is_empty());
}

/// `pull HOST/REPO` stores `HOST/REPO:latest`, and `run HOST/REPO` finds it.
#[test]
fn pulled_names_run_as_typed() {
    if !privileged("pulled_names_run_as_typed") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let root = Root::new();
    busybox(&root, "local");
    let dest = format!("{}/team/app", reg.addr);
    root.ok(&["push", "-q", "local", &dest]);
    let fresh = Root::new();
    fresh.ok(&["pull", "-q", &dest]);
    let listed = json(&fresh.ok(&["image", "ls", "--json"]));
    assert_eq!(listed[0]["name"].as_str(), Some(format!("{dest}:latest").as_str()), "{listed}");
    assert_eq!(fresh.ok(&["run", "--rm", &dest, "echo", "pulled"]), "pulled\n");
    assert_eq!(fresh.ok(&["run", "--rm", &format!("{dest}:latest"), "echo", "tagged"]), "tagged\n");
}

/// Two images whose IDs share a prefix: the prefix is refused as ambiguous, by name.
#[test]
fn ambiguous_id_prefix_is_an_error() {
    if !privileged("ambiguous_id_prefix_is_an_error") {
        return;
    }
    let root = Root::new();
    busybox(&root, "a");
    root.ok(&["image", "import", &format!("{}:many-2", fixtures().join("oci").display()), "--name", "b"]);
    // Every sha256 ID starts with "sha256:": as a prefix it fits both.
    let err = root.fails(&["run", "--rm", "sha256:", "true"]);
    assert!(err.contains("not found"), "an empty hex prefix is no ID: {err}");
    let ids: Vec<String> = ["a", "b"]
        .iter()
        .map(|n| {
            json(&root.ok(&["image", "inspect", n]))["manifest"]["config"]["digest"].as_str().unwrap().into()
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
    // The longest common prefix of the two IDs' hex fits both.
    let common_len = ids[0].bytes().zip(ids[1].bytes()).take_while(|(x, y)| x == y).count();
    if common_len > "sha256:".len() {
        let err = root.fails(&["image", "inspect", &ids[0][..common_len]]);
        assert!(err.contains("ambiguous"), "{err}");
    }
    // Tags of one image share an ID: not ambiguous.
    root.ok(&["image", "tag", "a", "a2"]);
    let hex = &ids[0]["sha256:".len()..];
    let found = json(&root.ok(&["image", "inspect", &hex[..10]]));
    assert_eq!(found["manifest"]["config"]["digest"].as_str(), Some(ids[0].as_str()));
}

/// After `image import other --name app` moves the name, `image rm app` removes it even though
/// a container stands on app's old manifest; the last name of an image a container stands on is
/// still refused.
#[test]
fn moved_name_is_free_to_remove() {
    if !privileged("moved_name_is_free_to_remove") {
        return;
    }
    let root = Root::new();
    busybox(&root, "app");
    root.ok(&["container", "create", "app", "c"]);
    let err = root.fails(&["image", "rm", "app"]);
    assert!(err.contains("used by container(s) c"), "{err}");
    root.ok(&["image", "import", &format!("{}:many-2", fixtures().join("oci").display()), "--name", "app"]);
    assert_eq!(root.ok(&["image", "rm", "app"]), "Untagged: app:latest\n");
    // The container still stands on its own manifest and mounts.
    let at = root.ok(&["container", "mount", "c"]);
    assert!(std::path::Path::new(at.trim()).join("bin/busybox").exists());
    root.ok(&["container", "umount", "c"]);
    root.ok(&["container", "rm", "c"]);
}

/// Output to a closed pipe ends the command quietly (status 141, as a shell reports a tool that
/// SIGPIPE ended), after its clean-up, never with a panic.
#[test]
fn closed_pipe_ends_quietly() {
    if !privileged("closed_pipe_ends_quietly") {
        return;
    }
    let root = Root::new();
    busybox(&root, "app");
    for n in 0..40 {
        root.ok(&["image", "tag", "app", &format!("app:t{n}")]);
    }
    root.ok(&["container", "create", "app", "c"]);
    let at = root.ok(&["container", "mount", "c"]);
    std::fs::write(std::path::Path::new(at.trim()).join("big"), vec![b'x'; 1 << 20]).expect("write");
    for i in 0..300 {
        std::fs::write(std::path::Path::new(at.trim()).join(format!("f{i}")), b"x").expect("write");
    }
    root.ok(&["container", "umount", "c"]);
    for args in [
        &["image", "inspect", "app"][..],
        &["image", "ls", "--json"],
        &["image", "ls"],
        &["container", "diff", "c", "--json"],
        &["container", "diff", "c"],
        &["container", "export", "c"],
        &["save", "app"],
    ] {
        // A reader that closes the pipe at once.
        let mut child = Command::new(STRATA)
            .arg("--root")
            .arg(root.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?} panicked");
        // 141 = 128 + SIGPIPE, as a shell reports a tool that SIGPIPE ended.
        assert!(
            out.status.code() == Some(141) || out.status.success(),
            "{args:?}: {:?} {stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "{args:?}: quietly: {stderr}");
        assert!(mounts_under(root.path()).is_empty(), "{args:?} left a mount");
    }
    // Nothing half-written stays behind: the store still works.
    root.ok(&["container", "rm", "c"]);
    assert!(mounts_under(root.path()).is_empty());
}

/// `load` from a terminal refuses (as `save` to a terminal does); junk on stdin is named
/// "standard input", not the spool file.
#[test]
fn load_refuses_a_terminal_and_names_stdin() {
    if !privileged("load_refuses_a_terminal_and_names_stdin") {
        return;
    }
    let root = Root::new();
    // script(1) gives the command a terminal as stdin.
    let cmd = format!("{} --root {} load", STRATA, root.path().display());
    let out = Command::new("timeout")
        .args(["20", "script", "-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("refusing to read an archive from a terminal"), "{text}");
    assert_ne!(out.status.code(), Some(124), "load waited on the terminal");
    let junk = root.path().join("junk");
    std::fs::write(&junk, b"not an archive at all").expect("write");
    let out = Command::new(STRATA)
        .arg("--root")
        .arg(root.path())
        .arg("load")
        .stdin(std::fs::File::open(&junk).expect("open"))
        .output()
        .expect("load");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("standard input") && !err.contains("staging"), "{err}");
}

/// `run IMAGE CMD ARGS...` without `--`, as docker: the options after the command are its own;
/// the same for `exec`. `--` before the command still works.
#[test]
fn run_takes_the_command_after_the_image() {
    if !privileged("run_takes_the_command_after_the_image") {
        return;
    }
    let root = Root::new();
    busybox(&root, "busybox");
    assert_eq!(root.ok(&["run", "--rm", "busybox", "echo", "-n", "no newline"]), "no newline");
    assert_eq!(root.ok(&["run", "--rm", "busybox", "sh", "-c", "echo $0 $1", "a", "--rm"]), "a --rm\n");
    assert_eq!(root.ok(&["run", "busybox", "--rm", "--", "echo", "--", "x"]), "-- x\n");
    root.ok(&["run", "-d", "--name", "web", "busybox", "sleep", "60"]);
    assert_eq!(root.ok(&["exec", "web", "ls", "-d", "/etc"]), "/etc\n");
    assert_eq!(root.ok(&["exec", "-e", "A=1", "web", "sh", "-c", "echo $A"]), "1\n");
    root.ok(&["stop", "-t", "0", "web"]);
    root.ok(&["container", "rm", "web"]);
    assert!(mounts_under(root.path()).is_empty());
}

/// Fill the filesystem of `dir` with a new file `name` until it is full.
fn fill(dir: &std::path::Path, name: &str) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join(name)).expect("filler");
    let chunk = vec![0x5a_u8; 64 << 10];
    loop {
        match f.write_all(&chunk).and_then(|_| f.sync_data()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
}

/// The full-disk reserve works every time: on a 64 MB filesystem filled again and again,
/// listing and the commands that free space (`container rm`, `image rm`, `gc`) keep working.
#[test]
fn full_disk_reserve_works_every_time() {
    if !privileged("full_disk_reserve_works_every_time") {
        return;
    }
    let root = Root::new();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs"])
        .arg(root.path())
        .status()
        .expect("mount tmpfs");
    assert!(st.success());
    struct Umount<'a>(&'a std::path::Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _umount = Umount(root.path());
    busybox(&root, "app");
    busybox(&root, "other");
    root.ok(&["container", "create", "app", "c"]);
    root.ok(&["container", "create", "other", "d"]);
    for round in 0..3 {
        fill(root.path(), &format!("filler-{round}"));
        let ls = root.ok(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
        assert_eq!(ls, "app:latest\nother:latest\n", "round {round}: image ls");
        assert!(root.ok(&["image", "ls"]).starts_with("REPOSITORY"), "round {round}: image ls");
        assert!(root.ok(&["container", "ls"]).contains("c "), "round {round}: container ls");
    }
    // Whatever took the space the listing freed, strata can still free space.
    fill(root.path(), "filler-again");
    root.ok(&["container", "rm", "c"]);
    fill(root.path(), "filler-after-rm");
    root.ok(&["image", "rm", "app"]);
    fill(root.path(), "filler-after-rmi");
    root.ok(&["container", "rm", "d"]);
    root.ok(&["image", "rm", "other"]);
    root.ok(&["gc"]);
    assert!(root.ok(&["image", "ls", "-q"]).trim().is_empty());
}

/// Output shaped like docker's: `image ls` columns sized to their content with IMAGE ID the
/// config digest and CREATED as "... ago"; `--digests`, `-q`, `--format`; one JSON schema across
/// `image ls`, `image inspect`, `container ls`, `container inspect` and `ps`.
#[test]
fn output_is_shaped_like_docker() {
    if !privileged("output_is_shaped_like_docker") {
        return;
    }
    let root = Root::new();
    busybox(&root, "busybox");
    root.ok(&["image", "tag", "busybox", "localhost:5000/team/app:v1"]);
    let inspect = json(&root.ok(&["image", "inspect", "busybox"]));
    let id = inspect["manifest"]["config"]["digest"].as_str().expect("config digest").to_string();
    let short = &id[7..19];
    let table = root.ok(&["image", "ls"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let cols: Vec<&str> = lines[0].split("   ").filter(|c| !c.is_empty()).map(str::trim).collect();
    assert_eq!(cols, ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], "{table}");
    // Columns start where their header does.
    let at = lines[0].find("IMAGE ID").expect("IMAGE ID");
    for l in &lines[1..] {
        assert_eq!(&l[at..at + 12], short, "{table}");
        assert!(l.contains(" ago "), "CREATED as docker: {l}");
    }
    assert!(lines.iter().any(|l| l.starts_with("localhost:5000/team/app   v1 ")), "{table}");
    assert!(root.ok(&["image", "ls", "--digests"]).lines().next().expect("header").contains("DIGEST"));
    assert_eq!(root.ok(&["image", "ls", "-q"]), format!("{short}\n"), "one ID for both names");
    assert_eq!(
        root.ok(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]),
        format!("busybox:latest {short}\nlocalhost:5000/team/app:v1 {short}\n")
    );
    let err = root.fails(&["image", "ls", "--format", "{{.Nope}}"]);
    assert!(err.contains("{{.Nope}}") && err.contains("{{.Repository}}"), "{err}");

    // One schema: the same names and types for the same thing.
    let listed = json(&root.ok(&["image", "ls", "--json"]));
    let img = &listed[0];
    for (k, v) in [("id", &id), ("digest", &inspect["digest"].as_str().expect("digest").to_string())] {
        assert_eq!(img[k].as_str(), Some(v.as_str()), "{k}");
        assert_eq!(inspect[k].as_str(), Some(v.as_str()), "{k}");
    }
    assert_eq!(img["created"], inspect["created"]);
    assert!(img["created"].as_str().is_some_and(|c| c.len() == 20 && c.ends_with('Z')), "{img}");
    assert_eq!(img["layers"], inspect["layers"]);
    assert!(img["layers"][0]["diff_id"].is_string());

    root.ok(&["container", "create", "busybox", "c"]);
    root.ok(&["run", "-d", "--name", "r", "busybox", "sleep", "60"]);
    let c = json(&root.ok(&["container", "inspect", "r"]));
    let ls = json(&root.ok(&["container", "ls", "--json"]));
    let ps = json(&root.ok(&["ps", "--json"]));
    assert_eq!(ps.as_array().map(Vec::len), Some(1), "ps: running only: {ps}");
    for (what, v) in [("ls", &ls[1]), ("ps", &ps[0])] {
        for k in ["name", "image", "image_id", "digest", "created", "layers", "running", "status"] {
            assert_eq!(v[k], c[k], "{what}: {k}");
        }
    }
    assert_eq!(c["running"], true);
    assert_eq!(c["image_id"].as_str(), Some(id.as_str()));
    assert_eq!(c["digest"], inspect["digest"]);
    assert_eq!(c["layers"], inspect["layers"]);
    assert!(c["created"].as_str().is_some_and(|t| t.len() == 20 && t.ends_with('Z')));
    assert_eq!(ls[0]["running"], false);
    let names = root.ok(&["container", "ls", "--format", "{{.Names}} {{.Status}}"]);
    assert_eq!(names, "c created\nr running\n");
    let header = root.ok(&["ps"]);
    assert!(header.starts_with("NAME   IMAGE "), "{header}");
    root.ok(&["stop", "-t", "0", "r"]);
    assert!(mounts_under(root.path()).is_empty());
}

/// `push` reports each blob as `pull` does (the CLI draws them as bars on a terminal): its start
/// and size, positions up to its size while it uploads, and how it went (`pushed`, then
/// `already present` on a second push).
#[test]
fn push_reports_progress_per_blob() {
    if !privileged("push_reports_progress_per_blob") {
        return;
    }
    use std::sync::{Arc, Mutex};
    use strata::import::{ImportEvent, Progress};
    let reg = Registry::start(RegistryOpts::default());
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:many-2", fixtures().join("oci").display()), "--name", "app"]);
    let store = strata::store::Store::open(root.path()).expect("store");
    let dest = strata::reference::normalize(&format!("{}/app:v1", reg.addr)).expect("dest");
    for want in ["pushed", "already present"] {
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let opts = strata::registry::push::PushOptions {
            chunk_size: 4096,
            progress: Some(Progress::new(move |e| seen.lock().expect("lock").push(e.clone()))),
            ..Default::default()
        };
        strata::registry::push::push(&store, "app", &dest, &opts).expect("push");
        let events = events.lock().expect("lock").clone();
        let ImportEvent::Start { layers, bytes } = events[0] else { panic!("{events:?}") };
        assert_eq!(layers, 4, "three layers and the config");
        let mut sizes = std::collections::HashMap::new();
        let mut last = std::collections::HashMap::new();
        let mut done = 0;
        for e in &events[1..] {
            match e {
                ImportEvent::LayerStarted { index, size, .. } => {
                    sizes.insert(*index, size.expect("size"));
                }
                ImportEvent::LayerPosition { index, position } => {
                    assert!(*position <= sizes[index], "{e:?}");
                    last.insert(*index, *position);
                }
                ImportEvent::LayerSent { index, how } => {
                    assert_eq!(*how, want, "blob {index}");
                    if want == "pushed" {
                        assert_eq!(last.get(index), Some(&sizes[index]), "blob {index} sent whole");
                    }
                    done += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(done, 4);
        assert_eq!(bytes, sizes.values().sum::<u64>());
    }
}

/// Exit codes as docker's: `run`, `exec` and `start -a` exit with the container command's
/// status, so strata's own failure there is 125 (126/127 for a command that cannot run), a
/// command line they refuse included; every other command fails with 1 (2 for a command line
/// clap refuses, as before).
#[test]
fn strata_failures_exit_125_where_the_container_status_is_the_answer() {
    if !privileged("strata_failures_exit_125_where_the_container_status_is_the_answer") {
        return;
    }
    let root = Root::new();
    busybox(&root, "busybox");
    for args in [
        &["run", "--rm", "nosuch", "true"][..],
        &["exec", "nosuch", "true"],
        &["start", "-a", "nosuch"],
        &["run", "--rm", "-v", "relative:/x", "busybox", "true"],
        &["run", "--no-such-option", "busybox", "true"],
        &["exec", "--no-such-option", "web", "true"],
        &["start", "-a", "--no-such-option", "web"],
    ] {
        let out = root.cmd(args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(root.cmd(&["run", "--rm", "busybox", "sh", "-c", "exit 125"]).status.code(), Some(125));
    assert_eq!(root.cmd(&["run", "--rm", "busybox", "/nonexistent"]).status.code(), Some(127));
    for args in [&["image", "rm", "nosuch"][..], &["container", "rm", "nosuch"], &["stop", "nosuch"]] {
        assert_eq!(root.cmd(args).status.code(), Some(1), "{args:?}");
    }
    for args in
        [&["image", "rm"][..], &["stop", "--no-such-option", "web"], &["start", "--no-such-option", "web"]]
    {
        assert_eq!(root.cmd(args).status.code(), Some(2), "{args:?}");
    }
    assert!(mounts_under(root.path()).is_empty());
}

/// `--root` relative to the working directory, as scripts write it: every command, `run` (which
/// mounts and records paths) included, works as with the absolute path.
#[test]
fn a_relative_root_is_taken_from_the_working_directory() {
    if !privileged("a_relative_root_is_taken_from_the_working_directory") {
        return;
    }
    // The working directory is a throw-away root's (under target/, as every test root).
    let dir = Root::new();
    let strata = |args: &[&str]| {
        let out = Command::new(STRATA)
            .current_dir(dir.path())
            .args(["--root", "state"])
            .args(args)
            .output()
            .expect("strata");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    strata(&["image", "import", &format!("{}:busybox", fixtures().join("oci").display()), "--name", "bb"]);
    assert_eq!(strata(&["run", "--rm", "bb", "echo", "relative"]), "relative\n");
    // The same store, through its absolute path.
    let out = Command::new(STRATA)
        .arg("--root")
        .arg(dir.path().join("state"))
        .args(["image", "ls"])
        .output()
        .expect("strata");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.lines().any(|l| l.split_whitespace().take(2).eq(["bb", "latest"])), "{listed}");
}

/// docker's short forms of image and container verbs: `tag`, `history`, `commit` and `diff` do
/// what `image tag`, `image history`, `container commit` and `container diff` do, with the same
/// flags (`commit -m -c`, `--json`).
#[test]
fn docker_short_forms_tag_history_commit_diff() {
    if !privileged("docker_short_forms_tag_history_commit_diff") {
        return;
    }
    let root = Root::new();
    busybox(&root, "bb");
    root.ok(&["tag", "bb", "localhost:5000/bb:1"]);
    let ls = root.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    let id = |name: &str| {
        ls.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("{name} not listed: {ls}"))
            .to_string()
    };
    assert_eq!(id("localhost:5000/bb:1"), id("bb:latest"), "{ls}");
    assert_eq!(root.ok(&["history", "bb"]), root.ok(&["image", "history", "bb"]));
    assert_eq!(root.ok(&["history", "--json", "bb"]), root.ok(&["image", "history", "bb", "--json"]));

    root.ok(&["container", "create", "bb", "web"]);
    let at = root.ok(&["container", "mount", "web"]);
    let at = std::path::Path::new(at.trim());
    std::fs::write(at.join("added"), b"x\n").expect("write");
    std::fs::remove_file(at.join("bin/vi")).expect("rm");
    root.ok(&["container", "umount", "web"]);
    assert_eq!(root.ok(&["diff", "web"]), root.ok(&["container", "diff", "web"]));
    let diff = root.ok(&["diff", "web"]);
    assert!(diff.lines().any(|l| l == "A /added") && diff.lines().any(|l| l == "D /bin/vi"), "{diff}");
    assert_eq!(root.ok(&["diff", "--json", "web"]), root.ok(&["container", "diff", "web", "--json"]));

    root.ok(&["commit", "-m", "short form", "-c", "ENV MODE=prod", "web", "web:v2"]);
    let v = json(&root.ok(&["image", "inspect", "web:v2"]));
    let env = v["config"]["config"]["Env"].as_array().expect("Env");
    assert!(env.iter().any(|e| e == "MODE=prod"), "{v}");
    let history = root.ok(&["history", "web:v2"]);
    assert!(history.contains("short form"), "{history}");
    assert_eq!(
        root.ok(&["run", "--rm", "--network", "none", "web:v2", "--", "cat", "/added"]),
        "x\n",
        "the committed layer"
    );
}
