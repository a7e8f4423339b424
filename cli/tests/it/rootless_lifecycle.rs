//! Rootless mode's lifecycle verbs beyond `run`/`exec`/`stop` (`logs -f`, `kill`, `restart`),
//! what a namespace without a cgroup freezer does with `pause` and `commit --pause` (refused,
//! as rootless podman on cgroup v1; `commit` is live by default, as podman's), and `system
//! migrate`, which stops the pause process.

use std::io::BufRead;

use crate::common::privileged;
use crate::common::user::TestUser;

/// The container's state in `ps -a`.
fn status(user: &TestUser, name: &str) -> String {
    let ps = user.ok(&["ps", "-a"]);
    let line = ps.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_default().to_string();
    line
}

#[test]
fn logs_follow_kill_restart_pause_refused_migrate() {
    if !privileged("logs_follow_kill_restart_pause_refused_migrate") {
        return;
    }
    let user = TestUser::new(true);
    user.import_busybox();
    let ticker = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done";
    user.ok(&["run", "-d", "--name", "w", "busybox", "--", "sh", "-c", ticker]);
    // logs -f follows what the container writes after it started.
    let mut follow = user
        .command(crate::common::STRATA, &["logs", "-f", "w"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs -f");
    let out = follow.stdout.take().expect("stdout");
    let lines: Vec<String> = std::io::BufReader::new(out).lines().take(5).map(|l| l.expect("line")).collect();
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(lines, (0..5).map(|i| format!("tick {i}")).collect::<Vec<_>>());
    // pause and unpause: no freezer rootless, said plainly (not runc's cgroup message).
    let err = user.fails(&["pause", "w"]);
    assert!(err.contains("cannot be paused: rootless mode has no cgroup freezer"), "{err}");
    let err = user.fails(&["unpause", "w"]);
    assert!(err.contains("not paused"), "{err}");
    // commit: live by default rootless; --pause refused with the same reason.
    user.ok(&["exec", "w", "--", "sh", "-c", "echo live > /committed"]);
    let err = user.fails(&["container", "commit", "--pause", "w", "snap"]);
    assert!(err.contains("no cgroup freezer") && err.contains("--pause=false"), "{err}");
    user.ok(&["container", "commit", "w", "snap"]);
    assert_eq!(user.ok(&["run", "--rm", "snap", "--", "cat", "/committed"]), "live\n");
    assert!(status(&user, "w").contains("running"), "{}", status(&user, "w"));
    // kill: the container ends with the signal's status.
    user.ok(&["kill", "--signal", "KILL", "w"]);
    assert_eq!(user.ok(&["wait", "w"]).trim(), "137");
    assert!(status(&user, "w").contains("exited (137)"), "{}", status(&user, "w"));
    // restart: running again, from the start of its command.
    user.ok(&["restart", "--time", "1", "w"]);
    assert!(status(&user, "w").contains("running"), "{}", status(&user, "w"));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while user.ok(&["logs", "w"]).matches("tick 0\n").count() < 2 {
        assert!(std::time::Instant::now() < until, "no second run in the logs: {}", user.ok(&["logs", "w"]));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // system migrate: the running container stopped, a mounted one unmounted, the pause
    // process gone; the next command makes a new namespace.
    user.ok(&["container", "create", "busybox", "m"]);
    let at = user.ok(&["container", "mount", "m"]);
    let pause = user.pause_pid().expect("a pause process");
    let out = user.cmd(&["system", "migrate", "--time", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains(&format!("stopped pause process {pause}")), "{err}");
    assert!(!std::path::Path::new(&format!("/proc/{pause}")).exists(), "pause process gone");
    assert!(user.pause_pid().is_none(), "pause.pid removed");
    assert!(user.others_settle(&[]).is_empty(), "nothing of the user runs: {:?}", user.others_settle(&[]));
    let out = user.cmd(&["system", "migrate"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to stop"), "{out:?}");
    assert!(user.pause_pid().is_none(), "migrate with none running starts none");
    assert!(status(&user, "w").contains("exited"), "{}", status(&user, "w"));
    let again = user.pause_pid().expect("a new pause process");
    assert_ne!(again, pause);
    let mounts = user.ok(&["unshare", "cat", "/proc/self/mountinfo"]);
    assert!(!mounts.contains(at.trim()), "m is not mounted in the new namespace: {mounts}");
    assert_eq!(user.ok(&["run", "--rm", "busybox", "--", "echo", "ok"]), "ok\n");
}
