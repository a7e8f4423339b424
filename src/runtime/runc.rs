//! Driving the OCI runtime binary (`STRATA_RUNTIME` or `runc`) on a bundle: `run --detach`,
//! `exec`, `state`, `pause`, and the verbs whose only answer is the runtime's own message; its
//! JSON log read to tell a command it could not start (127, 126) from one that ran and failed.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::spec::{apply_env, ProcessOverrides};
use super::{Result, RuntimeError};

/// The OCI runtime binary (`STRATA_RUNTIME` or `runc`).
pub fn runtime() -> String {
    std::env::var("STRATA_RUNTIME").unwrap_or_else(|_| "runc".into())
}

/// The runtime's own error, from its JSON log (`--log FILE --log-format json`), when it failed
/// to start the container's command: runc says `exec: "CMD": executable file not found in
/// $PATH`, `exec: "CMD": stat CMD: no such file or directory` or `exec: "CMD": permission denied`.
pub(crate) fn start_failure(log: &str) -> Option<RuntimeError> {
    let msg = log
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("level").and_then(|l| l.as_str()) == Some("error"))
        .find_map(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))?;
    // Go's exec.Error from the lookup (`exec: "CMD": ...`) or an os.PathError from execve
    // (`exec CMD: ...`, e.g. a script whose interpreter is missing).
    let (cmd, reason) = match msg.split_once("exec: \"") {
        Some((_, after)) => after.split_once("\": ")?,
        None => msg.split_once("unable to start container process: exec ")?.1.rsplit_once(": ")?,
    };
    let cmd = cmd.to_string();
    if reason.contains("executable file not found") {
        Some(RuntimeError::CommandNotFound { cmd, in_path: true })
    } else if reason.ends_with("no such file or directory") {
        Some(RuntimeError::CommandNotFound { cmd, in_path: false })
    } else if reason.ends_with("permission denied") {
        Some(RuntimeError::CommandNotExecutable { cmd, reason: reason.to_string() })
    } else {
        None
    }
}

/// `runc --root STATE exec [--env K=V]... [--cwd DIR] [--user UID:GID] [--tty] ID ARGS...` with
/// inherited stdio; the process starts from the container's process spec (capabilities, rlimits,
/// environment) with these overrides. Returns its exit code (128+signal when killed). runc's own
/// log goes to a temporary JSON file: a command it could not start (runc exits 255 then) is
/// [`RuntimeError::CommandNotFound`] or [`RuntimeError::CommandNotExecutable`], as with
/// [`crate::foreground::run`], not the runtime's raw message and 255. `user`: the numeric ids
/// `spec.user` resolved to in the container (see [`resolve_user`]). `spec.volumes` must be
/// empty: a running container's mounts are fixed.
pub fn exec(
    state: &Path,
    id: &str,
    spec: &ProcessOverrides,
    user: Option<&(u32, u32, Vec<u32>)>,
) -> Result<i32> {
    if spec.args.is_empty() {
        return Err(RuntimeError::NoCommand);
    }
    if let Some(v) = spec.volumes.first() {
        let reason = "a running container's mounts are fixed: exec takes no volumes".to_string();
        return Err(RuntimeError::Volume { value: v.clone(), reason });
    }
    let rt = runtime();
    let mut env = Vec::new();
    apply_env(&mut env, &spec.env)?;
    let log = tempfile::Builder::new()
        .prefix("strata-exec-")
        .suffix(".log")
        .tempfile()
        .map_err(|e| RuntimeError::Io { path: std::env::temp_dir(), source: e })?;
    let mut cmd = Command::new(&rt);
    cmd.arg("--root").arg(state).arg("--log").arg(log.path()).args(["--log-format", "json"]).arg("exec");
    for e in &env {
        cmd.arg("--env").arg(e);
    }
    if let Some(c) = &spec.workdir {
        if !c.starts_with('/') {
            return Err(RuntimeError::Workdir { dir: c.clone() });
        }
        cmd.arg("--cwd").arg(c);
    }
    if let Some((uid, gid, extra)) = user {
        cmd.arg("--user").arg(format!("{uid}:{gid}"));
        for g in extra {
            cmd.arg("--additional-gids").arg(g.to_string());
        }
    }
    if spec.terminal {
        cmd.arg("--tty");
    }
    // runc takes ID then the command as is (no `--`: it would be the command).
    cmd.arg(id).args(&spec.args);
    let status = cmd
        .stdin(if spec.interactive { Stdio::inherit() } else { Stdio::null() })
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| RuntimeError::Runtime { runtime: rt.clone(), source: e })?;
    use std::os::unix::process::ExitStatusExt;
    if status.code() == Some(255) {
        // runc exec's own failures exit 255; so may the command. Only the log tells them apart.
        let text = fs::read_to_string(log.path()).unwrap_or_default();
        if let Some(e) = start_failure(&text) {
            return Err(e);
        }
        let failure = text
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("level").and_then(|l| l.as_str()) == Some("error"))
            .find_map(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string));
        if let Some(reason) = failure {
            return Err(RuntimeError::Verb { runtime: rt, verb: "exec".into(), reason });
        }
    }
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// `runc --root STATE run --detach --bundle BUNDLE ID`, the container's stdout and stderr going
/// to the file `log` (appended), stdin /dev/null; returns once the process has started. A
/// command that could not be started is [`RuntimeError::CommandNotFound`] or
/// [`RuntimeError::CommandNotExecutable`], as with [`crate::foreground::run`].
pub fn run_detached(state: &Path, bundle: &Path, id: &str, log: &Path) -> Result<()> {
    let rt = runtime();
    let runc_log = bundle.join("runc.log");
    let _ = fs::remove_file(&runc_log);
    let open = || {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| RuntimeError::Io { path: log.to_path_buf(), source: e })
    };
    let out = Command::new(&rt)
        .arg("--root")
        .arg(state)
        .arg("--log")
        .arg(&runc_log)
        .args(["--log-format", "json"])
        .args(["run", "--detach", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .status()
        .map_err(|e| RuntimeError::Runtime { runtime: rt.clone(), source: e })?;
    if out.success() {
        return Ok(());
    }
    let text = fs::read_to_string(&runc_log).unwrap_or_default();
    if let Some(e) = start_failure(&text) {
        return Err(e);
    }
    let reason = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| format!("exited with {out}"));
    Err(RuntimeError::Verb { runtime: rt, verb: "run --detach".into(), reason })
}

/// Remove runc's state for `id` if a previous run left it (e.g. killed).
pub fn delete_stale(state: &Path, id: &str) {
    let _ = Command::new(runtime())
        .arg("--root")
        .arg(state)
        .args(["delete", "--force", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `runc state ID` as JSON, or `None` when runc does not know the container.
fn runc_state(state: &Path, id: &str) -> Option<Value> {
    let out = Command::new(runtime())
        .arg("--root")
        .arg(state)
        .args(["state", id])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// What runc says of container `id`: its status (`created`, `running`, `paused`, `stopped`), or
/// `None` when runc does not know it.
pub fn runc_status(state: &Path, id: &str) -> Option<String> {
    runc_state(state, id)?.get("status").and_then(Value::as_str).map(str::to_string)
}

/// The host pid of container `id`'s process as runc recorded it, or `None` when runc does not
/// know the container.
pub fn runc_pid(state: &Path, id: &str) -> Option<i32> {
    runc_state(state, id)?
        .get("pid")
        .and_then(Value::as_i64)
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 0)
}

/// `runc pause`: the cgroup freezer. The kernel may not freeze every task at once (one in an
/// uninterruptible sleep, a loaded machine); runc then thaws the group again and fails with
/// "unable to freeze". That is retried a few times, with growing pauses, before it is an error.
pub fn runc_pause(state: &Path, id: &str) -> Result<()> {
    let mut wait = std::time::Duration::from_millis(50);
    for _ in 0..4 {
        match runc_verb(state, "pause", id, &[]) {
            Err(RuntimeError::Verb { reason, .. }) if reason.contains("unable to freeze") => {
                tracing::info!(id, "the freezer did not freeze every task; trying again");
                std::thread::sleep(wait);
                wait *= 2;
            }
            done => return done,
        }
    }
    runc_verb(state, "pause", id, &[])
}

/// `runc --root STATE VERB ID [ARGS]`, for pause, resume, kill and delete. The runtime's own
/// message becomes the error.
pub fn runc_verb(state: &Path, verb: &str, id: &str, args: &[&str]) -> Result<()> {
    let rt = runtime();
    let out = Command::new(&rt)
        .arg("--root")
        .arg(state)
        .arg(verb)
        .arg(id)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RuntimeError::Runtime { runtime: rt.clone(), source: e })?;
    if out.status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&out.stderr);
    Err(RuntimeError::Verb {
        runtime: rt,
        verb: verb.to_string(),
        reason: msg.lines().last().unwrap_or("").trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_start_failures_from_the_log() {
        let line =
            |msg: &str| format!("{}\n", serde_json::json!({"level": "error", "msg": msg, "time": "t"}));
        let e = start_failure(&line(
            "runc run failed: unable to start container process: exec: \"nope\": executable file not found in $PATH",
        ))
        .unwrap();
        assert!(matches!(&e, RuntimeError::CommandNotFound { cmd, in_path: true } if cmd == "nope"), "{e}");
        let e = start_failure(&line(
            "runc run failed: unable to start container process: exec: \"/x\": stat /x: no such file or directory",
        ))
        .unwrap();
        assert!(matches!(&e, RuntimeError::CommandNotFound { cmd, in_path: false } if cmd == "/x"), "{e}");
        let e = start_failure(&line(
            "runc run failed: unable to start container process: exec: \"/etc/passwd\": permission denied",
        ))
        .unwrap();
        assert_eq!(e.exit_code(), Some(126));
        let e = start_failure(&line(
            "runc run failed: unable to start container process: exec /s: no such file or directory",
        ))
        .unwrap();
        assert!(matches!(&e, RuntimeError::CommandNotFound { cmd, .. } if cmd == "/s"), "{e}");
        assert!(start_failure(&line("runc run failed: cgroup: something else")).is_none());
        assert!(
            start_failure("{\"level\":\"warning\",\"msg\":\"exec: \\\"x\\\": permission denied\"}").is_none()
        );
        assert!(start_failure("").is_none());
    }
}
