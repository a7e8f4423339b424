//! The lifecycle verbs as a docker user types them: exec's exit codes, stop and rm of several
//! names, start, kill, restart, wait, pause/unpause, ps -a, system prune, and the short aliases.
//! Each test ends with nothing mounted under its root and nothing in runc's state.

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn busybox(root: &Root) {
    let fx = fixtures();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display()), "--name", "busybox"]);
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// runc's containers under this root (`runc list`), whatever their ids.
fn runc_list(root: &Root) -> Vec<Value> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(root.path().join("runc"))
        .args(["list", "--format", "json"])
        .output()
        .expect("runc list");
    if !out.status.success() {
        // No state directory yet.
        return Vec::new();
    }
    serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default()
}

/// Deletes (runc delete --force) every runc container under the root when dropped, so a failing
/// test leaves no process running after its root is gone.
struct RuncAll(std::path::PathBuf);

impl RuncAll {
    fn new(root: &Root) -> RuncAll {
        RuncAll(root.path().to_path_buf())
    }
}

impl Drop for RuncAll {
    fn drop(&mut self) {
        let state = self.0.join("runc");
        let Ok(out) = Command::new("runc").arg("--root").arg(&state).args(["list", "-q"]).output() else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = Command::new("runc").arg("--root").arg(&state).args(["delete", "--force", id]).output();
        }
    }
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Nothing mounted under the root and nothing in runc's state (a monitor cleans up just after
/// its container ended, so this polls for a few seconds).
fn assert_clean(root: &Root) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let mounts = mounts_under(root.path());
        let runc = runc_list(root);
        if mounts.is_empty() && runc.is_empty() {
            return;
        }
        assert!(Instant::now() < until, "left behind: mounts {mounts:?}, runc {runc:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ps -a --json` as name -> entry.
fn ps_all(root: &Root) -> std::collections::BTreeMap<String, Value> {
    let v: Value = serde_json::from_str(&root.ok(&["ps", "-a", "--json"])).expect("ps json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|e| (e["name"].as_str().expect("name").to_string(), e.clone()))
        .collect()
}

fn status_of(root: &Root, name: &str) -> String {
    ps_all(root).get(name).map(|e| e["status"].as_str().unwrap_or("").to_string()).unwrap_or_default()
}

/// The host pid runc has for the root's only running container.
fn runc_pid(root: &Root) -> i64 {
    let l = runc_list(root);
    assert_eq!(l.len(), 1, "{l:?}");
    l[0]["pid"].as_i64().expect("pid")
}

/// A detached `busybox` container running `script`, up and running when this returns.
fn run_detached(root: &Root, name: &str, script: &str) {
    assert_eq!(root.ok(&["run", "-d", "--name", name, "busybox", "--", "sh", "-c", script]).trim(), name);
    wait_until(&format!("{name} running"), 20, || status_of(root, name) == "running");
}

/// exec of a missing command exits 127 with one line naming it (not runc's log line and 255);
/// of a file that is not executable 126; of a command that fails, its status.
#[test]
fn exec_exit_codes_as_docker() {
    if !privileged("exec_exit_codes_as_docker") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let _runc = RuncAll::new(&root);
    run_detached(&root, "box", "sleep 60");
    let out = root.cmd(&["exec", "box", "--", "/nonexistent", "arg"]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.contains("/nonexistent") && err.contains("not found"), "{err}");
    assert!(!err.contains("runc") && !err.contains("{"), "no raw runtime log: {err}");
    let out = root.cmd(&["exec", "box", "--", "nope"]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert!(stderr(&out).contains("executable file not found in $PATH: nope"), "{out:?}");
    let out = root.cmd(&["exec", "box", "--", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("/etc/passwd") && err.contains("permission denied"), "{err}");
    // A directory is not executable either; -e PATH is the one exec searches.
    assert_eq!(root.cmd(&["exec", "box", "--", "/etc"]).status.code(), Some(126));
    assert_eq!(
        root.cmd(&["exec", "-e", "PATH=/nowhere", "box", "--", "sh", "-c", "true"]).status.code(),
        Some(127)
    );
    // exec does not create a missing working directory: said by name, 126 as docker.
    let out = root.cmd(&["exec", "-w", "/nonexistent", "box", "--", "true"]);
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("-w /nonexistent: no such directory"), "{err}");
    assert_eq!(root.cmd(&["exec", "-w", "/etc/passwd", "box", "--", "true"]).status.code(), Some(126));
    assert_eq!(root.ok(&["exec", "-w", "/tmp", "box", "--", "pwd"]), "/tmp\n");
    // The command's own status passes through, 127 included.
    assert_eq!(root.cmd(&["exec", "box", "--", "sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(root.cmd(&["exec", "box", "--", "sh", "-c", "exit 127"]).status.code(), Some(127));
    root.ok(&["rm", "-f", "box"]);
    assert_clean(&root);
}

/// stop of a created or exited container exits 0; stop and container rm of several names
/// process each one, report each failure on its own line and exit 1 when any failed.
#[test]
fn stop_and_rm_take_several_names() {
    if !privileged("stop_and_rm_take_several_names") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let _runc = RuncAll::new(&root);
    root.ok(&["container", "create", "busybox", "made"]);
    assert_eq!(
        root.cmd(&["run", "--name", "ran", "busybox", "--", "sh", "-c", "exit 3"]).status.code(),
        Some(3)
    );
    assert_eq!(root.ok(&["stop", "made"]), "made\n");
    assert_eq!(root.ok(&["stop", "ran"]), "ran\n");
    run_detached(&root, "up", "trap 'exit 0' TERM; while true; do sleep 0.1; done");
    let out = root.cmd(&["stop", "made", "nope", "up", "ran"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stdout(&out), "made\nup\nran\n");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nope") && err.contains("not found"), "{err}");
    assert_eq!(root.ok(&["wait", "up"]), "0\n");
    assert_eq!(status_of(&root, "up"), "exited (0)");
    assert!(mounts_under(root.path()).is_empty());
    // rm: each removed, the missing one reported.
    let out = root.cmd(&["container", "rm", "made", "nope", "ran"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stdout(&out), "made\nran\n");
    assert!(stderr(&out).contains("nope"), "{out:?}");
    assert_eq!(ps_all(&root).keys().collect::<Vec<_>>(), ["up"]);
    root.ok(&["container", "rm", "up"]);
    assert_clean(&root);
}

/// ps -a lists every container with its state: created, running, paused, exited (CODE); ps
/// without -a only running and paused ones.
#[test]
fn ps_all_shows_each_state() {
    if !privileged("ps_all_shows_each_state") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let _runc = RuncAll::new(&root);
    root.ok(&["container", "create", "busybox", "c1"]);
    run_detached(&root, "c2", "sleep 60");
    assert_eq!(
        root.cmd(&["run", "--name", "c3", "busybox", "--", "sh", "-c", "exit 3"]).status.code(),
        Some(3)
    );
    let ps = ps_all(&root);
    assert_eq!((&ps["c1"]["status"], &ps["c1"]["running"]), (&"created".into(), &false.into()));
    assert_eq!((&ps["c2"]["status"], &ps["c2"]["running"]), (&"running".into(), &true.into()));
    assert_eq!((&ps["c3"]["status"], &ps["c3"]["exit_code"]), (&"exited (3)".into(), &3.into()));
    // container inspect and ls say the same.
    let i: Value = serde_json::from_str(&root.ok(&["container", "inspect", "c3"])).expect("inspect json");
    assert_eq!((&i["status"], &i["exit_code"]), (&"exited (3)".into(), &3.into()));
    let text = root.ok(&["ps", "-a"]);
    let line = |n: &str| text.lines().find(|l| l.starts_with(&format!("{n} "))).unwrap_or("").to_string();
    assert!(line("c1").contains("created"), "{text}");
    assert!(line("c2").contains("running"), "{text}");
    assert!(line("c3").contains("exited (3)"), "{text}");
    let running = root.ok(&["ps"]);
    assert!(running.contains("c2 ") && !running.contains("c1 ") && !running.contains("c3 "), "{running}");
    // -q: names only, one per line, what `rm -f $(strata ps -aq)` takes.
    let mut names: Vec<String> = root.ok(&["ps", "-aq"]).lines().map(str::to_string).collect();
    names.sort();
    assert_eq!(names, ["c1", "c2", "c3"]);
    assert_eq!(root.ok(&["ps", "-q"]), "c2\n");
    assert_eq!(
        root.ok(&["container", "ls", "-q"]),
        root.ok(&["ps", "-aq"]),
        "container ls lists every container"
    );
    root.ok(&["pause", "c2"]);
    assert_eq!(status_of(&root, "c2"), "paused");
    assert!(root.ok(&["ps"]).contains("paused"));
    root.ok(&["unpause", "c2"]);
    root.ok(&["rm", "-f", "c1", "c2", "c3"]);
    assert_clean(&root);
}

/// start -a runs the container's command again in the foreground and exits with its status;
/// start without -a runs it detached, its output in the log, and wait prints its code.
#[test]
fn start_attach_and_detached() {
    if !privileged("start_attach_and_detached") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let _runc = RuncAll::new(&root);
    let script = "echo run >> /count; wc -l < /count; exit 4";
    let out = root.cmd(&["run", "--name", "s", "busybox", "--", "sh", "-c", script]);
    assert_eq!((out.status.code(), stdout(&out)), (Some(4), "1\n".to_string()));
    // The same command, over the same upper dir.
    let out = root.cmd(&["start", "-a", "s"]);
    assert_eq!((out.status.code(), stdout(&out)), (Some(4), "2\n".to_string()), "{out:?}");
    assert_eq!(status_of(&root, "s"), "exited (4)");
    assert!(mounts_under(root.path()).is_empty());
    assert_eq!(root.ok(&["start", "s"]), "s\n");
    assert_eq!(root.ok(&["wait", "s"]), "4\n");
    assert_eq!(root.ok(&["logs", "s"]), "3\n");
    // A created container never ran: its image's command (sh, stdin /dev/null: exits 0).
    root.ok(&["container", "create", "busybox", "fresh"]);
    assert_eq!(root.cmd(&["start", "-a", "fresh"]).status.code(), Some(0));
    assert_eq!(status_of(&root, "fresh"), "exited (0)");
    // Starting a running container is refused; starting a missing one names it.
    run_detached(&root, "up", "sleep 60");
    let err = root.fails(&["start", "up"]);
    assert!(err.contains("\"up\" is running"), "{err}");
    assert!(root.fails(&["start", "nope"]).contains("\"nope\" not found"));
    root.ok(&["rm", "-f", "s", "fresh", "up"]);
    assert_clean(&root);
}

/// kill sends the signal given by name (with or without SIG, any case) or number, KILL by
/// default; the container's status is the one its handler chose, or 137. As in docker, PID 1
/// without a handler ignores TERM.
#[test]
fn kill_signals_and_wait() {
    if !privileged("kill_signals_and_wait") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let _runc = RuncAll::new(&root);
    let traps = "trap 'exit 42' USR1; trap 'exit 43' TERM; while true; do sleep 0.1; done";
    run_detached(&root, "t", traps);
    assert_eq!(root.ok(&["kill", "-s", "usr1", "t"]), "t\n");
    assert_eq!(root.ok(&["wait", "t"]), "42\n");
    assert_eq!(status_of(&root, "t"), "exited (42)");
    root.ok(&["start", "t"]);
    wait_until("t running again", 20, || status_of(&root, "t") == "running");
    root.ok(&["kill", "--signal", "15", "t"]);
    assert_eq!(root.ok(&["wait", "t"]), "43\n");
    // A sleep that is PID 1 ignores TERM (no handler), as under docker; KILL ends it: 137.
    run_detached(&root, "sleeper", "exec sleep 60");
    root.ok(&["kill", "-s", "SIGTERM", "sleeper"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status_of(&root, "sleeper"), "running");
    root.ok(&["kill", "sleeper"]);
    assert_eq!(root.ok(&["wait", "sleeper"]), "137\n");
    // A foreground run observes the same: TERM reaches a shell's handler, the status is ours.
    let fg = BackgroundRun::start(&root, "busybox", "fg", &["--", "sh", "-c", traps]);
    wait_until("fg running", 20, || status_of(&root, "fg") == "running");
    root.ok(&["kill", "-s", "TERM", "fg"]);
    assert_eq!(fg.wait().code(), Some(43));
    assert_eq!(root.ok(&["wait", "fg"]), "43\n");
    // Bad signals and stopped containers are refused by name.
    let err = root.fails(&["kill", "-s", "BOGUS", "t"]);
    assert!(err.contains("BOGUS") && err.contains("not a signal"), "{err}");
    assert!(root.fails(&["kill", "-s", "99", "t"]).contains("not a signal"));
    let err = root.fails(&["kill", "t"]);
    assert!(err.contains("\"t\" is not running"), "{err}");
    root.ok(&["rm", "t", "sleeper", "fg"]);
    assert_clean(&root);
}

/// pause freezes the container's processes (runc says paused, nothing they write changes) and
/// unpause lets them go on.
#[test]
fn pause_freezes_unpause_resumes() {
    if !privileged("pause_freezes_unpause_resumes") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let _runc = RuncAll::new(&root);
    run_detached(&root, "p", "i=0; while true; do i=$((i+1)); echo $i > /tick; sleep 0.02; done");
    let tick = root.upper("p").join("tick");
    let read = || std::fs::read_to_string(&tick).unwrap_or_default();
    wait_until("ticking", 20, || !read().is_empty());
    assert_eq!(root.ok(&["pause", "p"]), "p\n");
    assert_eq!(runc_list(&root)[0]["status"], "paused");
    let pid = runc_pid(&root);
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let state = st.lines().find(|l| l.starts_with("State:")).unwrap_or("").to_string();
    // The v1 freezer shows frozen tasks in D, the v2 one in S; never running.
    assert!(!state.contains('R'), "{state}");
    std::thread::sleep(Duration::from_millis(100));
    let frozen = read();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read(), frozen, "it went on while paused");
    assert!(root.fails(&["pause", "p"]).contains("is paused"));
    assert_eq!(root.ok(&["unpause", "p"]), "p\n");
    wait_until("ticking again", 10, || read() != frozen);
    assert_eq!(status_of(&root, "p"), "running");
    assert!(root.fails(&["unpause", "p"]).contains("is not paused"));
    // stop takes a paused container too.
    root.ok(&["pause", "p"]);
    root.ok(&["stop", "-t", "1", "p"]);
    assert_eq!(root.ok(&["wait", "p"]), "137\n");
    assert_eq!(status_of(&root, "p"), "exited (137)");
    root.ok(&["rm", "p"]);
    assert_clean(&root);
}

/// restart stops the container and starts it again: a new process; a created container is
/// started.
#[test]
fn restart_gives_a_new_process() {
    if !privileged("restart_gives_a_new_process") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let _runc = RuncAll::new(&root);
    run_detached(&root, "r", "trap 'exit 0' TERM; while true; do sleep 0.1; done");
    let before = runc_pid(&root);
    assert_eq!(root.ok(&["restart", "-t", "5", "r"]), "r\n");
    wait_until("r running again", 20, || status_of(&root, "r") == "running");
    let after = runc_pid(&root);
    assert_ne!(before, after);
    assert!(Path::new(&format!("/proc/{after}")).exists());
    assert!(!Path::new(&format!("/proc/{before}")).exists());
    root.ok(&["stop", "r"]);
    assert_eq!(root.ok(&["wait", "r"]), "0\n");
    assert_eq!(status_of(&root, "r"), "exited (0)");
    root.ok(&["rm", "r"]);
    assert_clean(&root);
}

/// system prune removes the containers that are not running (created, exited) and leaves the
/// running one; without -f and without a terminal it refuses and removes nothing.
#[test]
fn system_prune_keeps_running_containers() {
    if !privileged("system_prune_keeps_running_containers") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let _runc = RuncAll::new(&root);
    root.ok(&["container", "create", "busybox", "made"]);
    root.ok(&["run", "--name", "done", "busybox", "--", "true"]);
    run_detached(&root, "live", "sleep 60");
    let out = Command::new(STRATA)
        .arg("--root")
        .arg(root.path())
        .args(["system", "prune"])
        .stdin(Stdio::null())
        .output()
        .expect("run strata");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("use -f"), "{out:?}");
    assert_eq!(ps_all(&root).len(), 3);
    let out = root.ok(&["system", "prune", "-f"]);
    assert_eq!(out, "done\nmade\n");
    assert_eq!(ps_all(&root).keys().collect::<Vec<_>>(), ["live"]);
    assert_eq!(status_of(&root, "live"), "running");
    // The image stays (it is named); image prune removes only unreachable data.
    root.ok(&["image", "prune"]);
    assert!(root.ok(&["images"]).contains("busybox"));
    root.ok(&["rm", "-f", "live"]);
    assert_clean(&root);
}

/// The short forms behave as the long ones: rm (-f), rmi, images, inspect (a container first,
/// then an image, as docker); version and info say what they find.
#[test]
fn aliases_version_info() {
    if !privileged("aliases_version_info") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let _runc = RuncAll::new(&root);
    assert_eq!(root.ok(&["images"]), root.ok(&["image", "ls"]));
    assert_eq!(root.ok(&["images", "-q"]), root.ok(&["image", "ls", "-q"]));
    root.ok(&["image", "tag", "busybox", "other"]);
    root.ok(&["container", "create", "busybox", "c"]);
    assert_eq!(root.ok(&["inspect", "c"]), root.ok(&["container", "inspect", "c"]));
    assert_eq!(root.ok(&["inspect", "busybox"]), root.ok(&["image", "inspect", "busybox"]));
    // A container and an image of the same name: the container, as docker.
    root.ok(&["container", "create", "busybox", "other"]);
    assert_eq!(root.ok(&["inspect", "other"]), root.ok(&["container", "inspect", "other"]));
    let err = root.fails(&["inspect", "nope"]);
    assert!(err.contains("no such container or image") && err.contains("nope"), "{err}");
    // rmi is image rm: a second name goes; the last name of an image containers stand on is
    // refused, and -f removes those containers first (as podman rmi -f).
    root.ok(&["rm", "other"]);
    assert_eq!(root.ok(&["rmi", "other"]), "Untagged: other:latest\n");
    let err = root.fails(&["rmi", "busybox"]);
    assert!(err.contains("used by container(s) c"), "{err}");
    run_detached(&root, "live", "sleep 60");
    assert_eq!(root.ok(&["rm", "-f", "live"]), "live\n");
    assert_eq!(root.ok(&["rmi", "-f", "busybox"]), "Untagged: busybox:latest\n");
    assert!(ps_all(&root).is_empty());
    assert!(!root.ok(&["images"]).contains("busybox"));
    // version: strata's, runc's and the kernel's.
    let v = root.ok(&["version"]);
    assert!(v.contains(env!("CARGO_PKG_VERSION")) && v.contains("runc version"), "{v}");
    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    assert!(v.contains(&release), "{v}");
    // info: the store, the backend auto takes and why, kernel features, counts.
    busybox(&root);
    root.ok(&["container", "create", "busybox", "c2"]);
    let i: Value = serde_json::from_str(&root.ok(&["info", "--json"])).expect("info json");
    assert_eq!(i["root"], root.path().display().to_string());
    assert_eq!(i["images"], 1);
    assert_eq!((&i["containers"], &i["created"]), (&1.into(), &1.into()));
    assert!(i["layers"].as_u64().is_some_and(|n| n >= 1) && i["layers_bytes"].as_u64() > Some(0), "{i}");
    let overlay = std::fs::read_to_string("/proc/filesystems").expect("filesystems").contains("\toverlay");
    assert_eq!(i["kernel"]["overlay"], overlay);
    assert_eq!(i["auto_backend"]["backend"], if overlay { "kernel" } else { "fuse" });
    assert!(i["auto_backend"]["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(root.ok(&["info"]).contains("backend (auto)"));
    root.ok(&["rm", "c2"]);
    assert_clean(&root);
}
