//! A container's life ends with nothing left behind: Ctrl-C, SIGTERM and SIGHUP to a foreground
//! `strata run` reach the container and strata cleans up after it (issue 23, item 2);
//! `container rm --force` and `gc` leave no runc state or cgroup (item 3); two state roots never
//! share a cgroup or a runc id (item 4).

use crate::common;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rustix::process::{kill_process, Pid, Signal};

fn busybox(root: &Root) {
    let fx = fixtures();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display()), "--name", "busybox"]);
}

/// A `sleep` argument no other process on the machine uses, so the test finds its own process in
/// /proc by its command line.
fn marker(n: u32) -> String {
    (1_000_000 + (std::process::id() % 100_000) * 10 + n).to_string()
}

/// Processes whose command line is exactly `args`.
fn pids_of(args: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want) {
            out.push(pid);
        }
    }
    out
}

/// Wait (up to 30 s) for the container's `sleep MARKER` to run; returns its pid.
fn wait_for_sleep(marker: &str) -> i32 {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let [pid] = pids_of(&["sleep", marker])[..] {
            return pid;
        }
        assert!(Instant::now() < until, "sleep {marker} never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` still runs (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// The cgroup paths of a process (`/proc/PID/cgroup`), one per hierarchy line.
fn cgroups_of(pid: i32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .expect("cgroup of process")
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2).map(str::to_string))
        .collect()
}

fn signal(pid: u32, sig: Signal) {
    let pid = Pid::from_raw(pid as i32).expect("pid");
    kill_process(pid, sig).expect("kill");
}

/// Wait for `child` to exit within `limit`; kills it and fails otherwise.
fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: strata still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What must hold once a container has ended: its process gone, nothing mounted under the root,
/// runc knows nothing, no cgroup of it in any hierarchy; its row gone (`rm`) or kept unmounted.
fn assert_all_gone(root: &Root, name: &str, pid: i32, removed: bool, what: &str) {
    assert!(!alive(pid), "{what}: the container's process {pid} still runs");
    assert_eq!(mounts_under(root.path()), Vec::<PathBuf>::new(), "{what}: mounts left");
    assert_eq!(runc_list(root.path()), Vec::<String>::new(), "{what}: runc state left");
    let id = runc_id(root.path(), name);
    assert_eq!(cgroup_dirs(&id), Vec::<PathBuf>::new(), "{what}: cgroups left");
    let out = root.cmd(&["container", "inspect", name]);
    if removed {
        assert!(!out.status.success(), "{what}: --rm but the container is still listed");
    } else {
        assert!(out.status.success(), "{what}: the container is gone without --rm");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect json");
        let running = v["running"] == true || v["running"].is_string();
        assert!(v["mounted"].is_null() && !running, "{what}: {v}");
    }
}

/// A foreground `strata run` in the background of the test, stdout and stderr captured.
fn spawn_run(root: &Root, args: &[&str]) -> Child {
    Command::new(STRATA)
        .arg("--root")
        .arg(root.path())
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata run")
}

fn output_of(child: &mut Child) -> (String, String) {
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (out, err)
}

/// SIGTERM, SIGHUP and SIGINT to a foreground run reach the container's process, which handles
/// them: strata exits with the container's status (not its own 128+signal), after removing it
/// (`--rm`) or unmounting it.
#[test]
fn signals_to_a_foreground_run_reach_the_container() {
    if !privileged("signals_to_a_foreground_run_reach_the_container") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let cases =
        [(Signal::TERM, "TERM", 71, true), (Signal::HUP, "HUP", 72, false), (Signal::INT, "INT", 73, true)];
    for (i, (sig, sig_name, code, rm)) in cases.into_iter().enumerate() {
        let name = format!("fwd{i}");
        let m = marker(i as u32);
        let _runc = RuncGuard::new(&root, &name);
        let script = format!("trap 'echo got {sig_name}; exit {code}' {sig_name}; sleep {m} & wait");
        let mut args = vec!["--name", &name, "busybox", "--", "sh", "-c", &script];
        if rm {
            args.insert(0, "--rm");
        }
        let mut child = spawn_run(&root, &args);
        let pid = wait_for_sleep(&m);
        let cgroups = cgroups_of(pid);
        let id = runc_id(root.path(), &name);
        assert!(cgroups.iter().all(|c| c == &format!("/{id}")), "cgroups of the container: {cgroups:?}");
        signal(child.id(), sig);
        let st = wait_exit(&mut child, Duration::from_secs(30), sig_name);
        let (out, err) = output_of(&mut child);
        assert_eq!(st.code(), Some(code), "SIG{sig_name}: the container's status\n{out}\n{err}");
        assert_eq!(out, format!("got {sig_name}\n"), "SIG{sig_name} reached the container once");
        assert_all_gone(&root, &name, pid, rm, &format!("SIG{sig_name}"));
    }
}

/// A container whose process ignores them (`sleep` as pid 1 has no handler, so the kernel drops
/// SIGTERM, SIGINT and SIGHUP) is killed: at the second Ctrl-C, or when the stop timeout after
/// SIGTERM or SIGHUP ends. strata then exits with its status, 137, and everything is cleaned up.
#[test]
fn a_container_that_ignores_signals_is_killed() {
    if !privileged("a_container_that_ignores_signals_is_killed") {
        return;
    }
    let root = Root::new();
    busybox(&root);

    // One Ctrl-C is forwarded and the run goes on (as podman); the second kills.
    let m = marker(4);
    let _runc = RuncGuard::new(&root, "int");
    let mut child = spawn_run(&root, &["--rm", "--name", "int", "busybox", "--", "sleep", &m]);
    let pid = wait_for_sleep(&m);
    signal(child.id(), Signal::INT);
    std::thread::sleep(Duration::from_secs(1));
    assert!(child.try_wait().expect("try_wait").is_none(), "one SIGINT ended the run");
    assert!(alive(pid), "one SIGINT killed the container");
    signal(child.id(), Signal::INT);
    let st = wait_exit(&mut child, Duration::from_secs(20), "second SIGINT");
    assert_eq!(st.code(), Some(137), "{:?}", output_of(&mut child));
    assert_all_gone(&root, "int", pid, true, "second SIGINT");

    // SIGTERM, SIGHUP: killed after --stop-timeout (1 s here), not before.
    for (i, (sig, what, rm)) in
        [(Signal::TERM, "SIGTERM", true), (Signal::HUP, "SIGHUP", false)].into_iter().enumerate()
    {
        let name = format!("ign{i}");
        let m = marker(5 + i as u32);
        let _runc = RuncGuard::new(&root, &name);
        let mut args = vec!["--stop-timeout", "1", "--name", &name, "busybox", "--", "sleep", &m];
        if rm {
            args.insert(0, "--rm");
        }
        let mut child = spawn_run(&root, &args);
        let pid = wait_for_sleep(&m);
        let t = Instant::now();
        signal(child.id(), sig);
        let st = wait_exit(&mut child, Duration::from_secs(20), what);
        assert!(t.elapsed() >= Duration::from_millis(900), "{what}: killed before the stop timeout");
        assert_eq!(st.code(), Some(137), "{what}: {:?}", output_of(&mut child));
        assert_all_gone(&root, &name, pid, rm, what);
    }
}

/// The strata process running `run ... --name NAME` under this root, if any.
fn strata_pid(root: &Root, name: &str) -> Option<i32> {
    let root_arg = root.path().display().to_string();
    for e in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(c) = fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            c.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.first().is_some_and(|a| a.ends_with("/strata"))
            && args.contains(&root_arg)
            && args.contains(&"run".to_string())
            && args.contains(&name.to_string())
            && alive(pid)
        {
            return Some(pid);
        }
    }
    None
}

/// With -it the terminal is the container's: Ctrl-C is a byte its own terminal turns into its
/// SIGINT; strata then cleans up as after any exit. And when the terminal goes away (the
/// terminal emulator, `script` here, dies), strata gets SIGHUP as the session's leader and still
/// stops the container and cleans up.
#[test]
fn with_a_terminal_ctrl_c_and_hangup_clean_up() {
    if !privileged("with_a_terminal_ctrl_c_and_hangup_clean_up") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let in_script = |args: &str| {
        // exec: strata itself leads the terminal's session, whatever the shell.
        let cmd = format!("exec {STRATA} --root {} run {args}", root.path().display());
        Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script")
    };

    let m = marker(7);
    let _runc = RuncGuard::new(&root, "tty");
    let script = format!("trap 'exit 7' INT; sleep {m} & wait");
    // -it: runc relays the terminal's input (raw) to the container's own terminal.
    let mut term = in_script(&format!("-it --rm --name tty busybox -- sh -c \"{script}\""));
    let pid = wait_for_sleep(&m);
    term.stdin.as_mut().expect("stdin").write_all(b"\x03").expect("type ^C");
    let st = wait_exit(&mut term, Duration::from_secs(20), "^C on the terminal");
    assert_eq!(st.code(), Some(7), "the container's status through script");
    assert_all_gone(&root, "tty", pid, true, "^C with -t");

    // -i without -t on a terminal: strata reads it for the container (runc, in a process group
    // of its own, would be stopped reading it), and Ctrl-C is a SIGINT of the terminal that only
    // strata gets and forwards: the container gets it once.
    let m = marker(15);
    let _runc = RuncGuard::new(&root, "ti");
    let script = format!("trap 'echo got INT; exit 9' INT; read x; echo read \\$x; sleep {m} & wait");
    let mut term = in_script(&format!("-i --rm --name ti busybox -- sh -c \"{script}\""));
    term.stdin.as_mut().expect("stdin").write_all(b"hello\n").expect("type a line");
    let pid = wait_for_sleep(&m);
    term.stdin.as_mut().expect("stdin").write_all(b"\x03").expect("type ^C");
    let st = wait_exit(&mut term, Duration::from_secs(20), "^C on the terminal without -t");
    let (out, _) = output_of(&mut term);
    assert_eq!(st.code(), Some(9), "{out:?}");
    assert!(out.contains("read hello"), "the line typed reached the container: {out:?}");
    assert_eq!(out.matches("got INT").count(), 1, "SIGINT reached the container once: {out:?}");
    assert_all_gone(&root, "ti", pid, true, "^C with -i");

    let m = marker(8);
    let _runc = RuncGuard::new(&root, "hup");
    let mut term = in_script(&format!("-t --stop-timeout 1 --name hup busybox -- sleep {m}"));
    let pid = wait_for_sleep(&m);
    let strata = strata_pid(&root, "hup").expect("the strata process");
    term.kill().expect("kill the terminal");
    let _ = term.wait();
    let until = Instant::now() + Duration::from_secs(20);
    while alive(strata) {
        assert!(Instant::now() < until, "strata still runs 20 s after its terminal went away");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_all_gone(&root, "hup", pid, false, "terminal hangup");
}

/// `container rm --force` of a running `run -d` container leaves no runc state and no cgroup.
#[test]
fn rm_force_leaves_no_runc_state_or_cgroup() {
    if !privileged("rm_force_leaves_no_runc_state_or_cgroup") {
        return;
    }
    let root = Root::new();
    busybox(&root);
    let m = marker(9);
    let _runc = RuncGuard::new(&root, "d");
    root.ok(&["run", "-d", "--name", "d", "busybox", "--", "sleep", &m]);
    let pid = wait_for_sleep(&m);
    let id = runc_id(root.path(), "d");
    assert_eq!(runc_list(root.path()), vec![id.clone()]);
    let dirs = cgroup_dirs(&id);
    assert!(dirs.len() >= 2, "the container's cgroups in every hierarchy (v1 and unified): {dirs:?}");
    root.ok(&["container", "rm", "--force", "d"]);
    assert_all_gone(&root, "d", pid, true, "rm --force");
}

/// A runc container made by hand in ROOT/runc over a mounted strata container's rootfs, as an
/// older strata (or a crash between runc and strata's rows) leaves one: `sleep MARKER`, id `id`,
/// cgroups at `cgroups_path` (runc's default, `/<id>`, when `None`).
fn runc_by_hand(root: &Root, id: &str, rootfs: &Path, marker: &str, cgroups_path: Option<&str>) {
    let bundle = root.path().join(format!("by-hand-{id}"));
    fs::create_dir_all(&bundle).expect("bundle dir");
    let out = Command::new("runc").args(["spec", "--bundle"]).arg(&bundle).output().expect("runc spec");
    assert!(out.status.success(), "runc spec: {}", String::from_utf8_lossy(&out.stderr));
    let mut spec = json(&bundle.join("config.json"));
    spec["root"]["path"] = rootfs.display().to_string().into();
    spec["root"]["readonly"] = false.into();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["sleep", marker]);
    if let Some(p) = cgroups_path {
        spec["linux"]["cgroupsPath"] = p.into();
    }
    fs::write(bundle.join("config.json"), serde_json::to_vec(&spec).expect("spec json")).expect("write spec");
    // No pipes: the container's process would hold them open, and reading them never end.
    let log = bundle.join("runc.log");
    let st = Command::new("runc")
        .arg("--root")
        .arg(root.path().join("runc"))
        .arg("--log")
        .arg(&log)
        .args(["run", "--detach", "--bundle"])
        .arg(&bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runc run");
    assert!(st.success(), "runc run {id}: {}", fs::read_to_string(&log).unwrap_or_default());
}

/// `gc` deletes runc state and cgroups of containers that no longer exist in its root (a runc
/// container without a row, a stray cgroup named with the root's tag), and nothing of another
/// root, though its container has the same name.
#[test]
fn gc_removes_runtime_leftovers_of_its_own_root_only() {
    if !privileged("gc_removes_runtime_leftovers_of_its_own_root_only") {
        return;
    }
    let a = Root::new();
    let b = Root::new();
    busybox(&a);
    busybox(&b);
    // In A: a runc container whose strata container does not exist, and a stray cgroup.
    a.ok(&["container", "create", "busybox", "host"]);
    let rootfs = PathBuf::from(a.ok(&["container", "mount", "host"]).trim());
    let ghost = runc_id(a.path(), "ghost");
    let _ga = RuncGuard::new(&a, "ghost");
    let m = marker(10);
    runc_by_hand(&a, &ghost, &rootfs, &m, Some(&format!("/{ghost}")));
    let ghost_pid = wait_for_sleep(&m);
    let zombie = runc_id(a.path(), "zombie");
    let unified = Path::new("/sys/fs/cgroup/unified");
    let stray =
        if unified.is_dir() { unified.join(&zombie) } else { Path::new("/sys/fs/cgroup").join(&zombie) };
    fs::create_dir(&stray).expect("make a stray cgroup");
    struct Rmdir(PathBuf);
    impl Drop for Rmdir {
        fn drop(&mut self) {
            let _ = fs::remove_dir(&self.0);
        }
    }
    let _stray = Rmdir(stray.clone());
    // In B: a running container of the same name.
    let _gb = RuncGuard::new(&b, "ghost");
    let mb = marker(11);
    b.ok(&["run", "-d", "--name", "ghost", "busybox", "--", "sleep", &mb]);
    let b_pid = wait_for_sleep(&mb);

    a.ok(&["gc"]);
    assert!(!alive(ghost_pid), "gc left the orphan's process running");
    assert_eq!(runc_list(a.path()), Vec::<String>::new(), "gc left runc state");
    assert_eq!(cgroup_dirs(&ghost), Vec::<PathBuf>::new(), "gc left the orphan's cgroups");
    assert!(!stray.exists(), "gc left the stray cgroup");
    // A's own container is untouched; B's is still running, its cgroups in place.
    assert!(a.ok(&["container", "inspect", "host"]).contains("rootfs"));
    assert!(alive(b_pid), "gc of root A killed root B's container");
    assert_eq!(runc_list(b.path()), vec![runc_id(b.path(), "ghost")]);
    assert!(!cgroup_dirs(&runc_id(b.path(), "ghost")).is_empty());
    b.ok(&["stop", "ghost"]);
    a.ok(&["container", "rm", "--force", "host"]);
}

/// Two roots, each with a container named `c`: different cgroups, different runc ids; stopping
/// one leaves the other running. A container started by an older strata (runc id `strata-NAME`,
/// cgroup `/strata-NAME`) is still found, stopped and cleaned up.
#[test]
fn roots_never_share_cgroups_or_runc_ids() {
    if !privileged("roots_never_share_cgroups_or_runc_ids") {
        return;
    }
    let a = Root::new();
    let b = Root::new();
    busybox(&a);
    busybox(&b);
    let (ma, mb) = (marker(12), marker(13));
    let _ga = RuncGuard::new(&a, "c");
    let _gb = RuncGuard::new(&b, "c");
    a.ok(&["run", "-d", "--name", "c", "busybox", "--", "sleep", &ma]);
    b.ok(&["run", "-d", "--name", "c", "busybox", "--", "sleep", &mb]);
    let (pa, pb) = (wait_for_sleep(&ma), wait_for_sleep(&mb));
    let (ca, cb) = (cgroups_of(pa), cgroups_of(pb));
    let (ia, ib) = (runc_id(a.path(), "c"), runc_id(b.path(), "c"));
    assert_ne!(ia, ib);
    assert!(ca.iter().all(|c| c == &format!("/{ia}")), "{ca:?}");
    assert!(cb.iter().all(|c| c == &format!("/{ib}")), "{cb:?}");
    assert!(ca.iter().all(|c| !cb.contains(c)), "shared cgroups: {ca:?} {cb:?}");
    a.ok(&["stop", "-t", "1", "c"]);
    assert!(!alive(pa), "stop left A's container running");
    assert!(alive(pb), "stopping A's c stopped B's c");
    assert_eq!(runc_list(b.path()), vec![ib.clone()]);
    assert!(!cgroup_dirs(&ib).is_empty(), "B's cgroups went with A's container");
    assert_eq!(cgroup_dirs(&ia), Vec::<PathBuf>::new());
    b.ok(&["container", "rm", "--force", "c"]);
    assert!(!alive(pb));

    // A container an older strata started: found by its legacy id, stopped, cleaned up.
    // (Its cgroup, `/strata-NAME`, is the same in every root: a name no other test uses.)
    let m = marker(14);
    let old = format!("old{m}");
    a.ok(&["container", "create", "busybox", &old]);
    let rootfs = PathBuf::from(a.ok(&["container", "mount", &old]).trim());
    let _gl = RuncGuard::new(&a, &old);
    let legacy = format!("strata-{old}");
    runc_by_hand(&a, &legacy, &rootfs, &m, None);
    let pid = wait_for_sleep(&m);
    assert_eq!(cgroups_of(pid)[0], format!("/{legacy}"));
    assert!(a.ok(&["ps"]).contains(&old), "ps does not show the legacy container");
    a.ok(&["stop", "-t", "1", &old]);
    assert!(!alive(pid), "stop left the legacy container running");
    assert_eq!(runc_list(a.path()), Vec::<String>::new());
    assert_eq!(cgroup_dirs(&legacy), Vec::<PathBuf>::new());
    assert!(mounts_under(a.path()).is_empty());
    a.ok(&["container", "rm", &old]);
}
