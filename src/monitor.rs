//! The monitor of a detached container (`strata container monitor NAME`): runc's state says
//! whether a container's process runs, never how it ended, so a detached container is started by
//! a small process of its own that starts it (`runc run --detach`) as a child subreaper; the
//! container's process becomes its child when runc exits, its status is reaped there (as
//! podman's conmon does) and recorded (`containers/<name>/exit`), and the monitor then deletes
//! runc's state and unmounts the container. Used by `run -d` ([`crate::run`]) and `start`
//! ([`crate::lifecycle`]), below both.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::container::{self, ContainerError};
use crate::runtime::{runc, RuntimeError};
use crate::store::{Store, StoreError};

/// Monitor errors: which step failed, for which container.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("container {name}: its monitor ({exe}): {reason}")]
    Failed { name: String, exe: PathBuf, reason: String },
    #[error("container {name}")]
    Container { name: String, source: Box<ContainerError> },
    #[error("container {name}")]
    Runtime { name: String, source: RuntimeError },
    #[error("container {name}")]
    Store { name: String, source: StoreError },
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl MonitorError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            MonitorError::Failed { .. } => ErrorKind::Internal,
            MonitorError::Container { source, .. } => source.kind(),
            MonitorError::Runtime { source, .. } => source.kind(),
            MonitorError::Store { source, .. } => source.kind(),
            MonitorError::Io { source, .. } => ErrorKind::of_io(source),
        }
    }
}

pub type Result<T, E = MonitorError> = std::result::Result<T, E>;

fn cerr(name: &str) -> impl Fn(ContainerError) -> MonitorError + '_ {
    move |source| MonitorError::Container { name: name.to_string(), source: Box::new(source) }
}

fn berr(name: &str) -> impl Fn(RuntimeError) -> MonitorError + '_ {
    move |source| MonitorError::Runtime { name: name.to_string(), source }
}

/// Start `strata container monitor NAME` (see [`monitor`]; it makes its own session), its stdio
/// away from ours, and wait for its first line: the container started, or why not.
pub fn spawn(store: &Store, name: &str, exe: Option<&Path>) -> Result<()> {
    let exe = match exe {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| MonitorError::Io { path: "/proc/self/exe".into(), source: e })?,
    };
    let failed = |reason: String| MonitorError::Failed { name: name.to_string(), exe: exe.clone(), reason };
    // From /, so that it keeps no directory of the caller's busy; hence an absolute root.
    let root = std::path::absolute(store.root())
        .map_err(|e| MonitorError::Io { path: store.root().to_path_buf(), source: e })?;
    let mut child = Command::new(&exe)
        .current_dir("/")
        .arg("--root")
        .arg(&root)
        .args(["container", "monitor", name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let report: serde_json::Value = match serde_json::from_str(line.trim()) {
        Ok(v) => v,
        Err(_) => {
            let st = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            return Err(failed(format!("ended ({st}) before the container started")));
        }
    };
    // The monitor lives on; it is reaped by whoever inherits it.
    drop(child);
    if report.get("started").and_then(|v| v.as_bool()) == Some(true) {
        return Ok(());
    }
    Err(match decode_failure(&report) {
        Some(e) => berr(name)(e),
        None => failed(report.get("error").and_then(|v| v.as_str()).unwrap_or("unknown failure").to_string()),
    })
}

/// What a monitor reports when the runtime could not start the container.
fn encode_failure(e: &RuntimeError) -> serde_json::Value {
    match e {
        RuntimeError::CommandNotFound { cmd, in_path } => {
            serde_json::json!({"error": e.to_string(), "not_found": cmd, "in_path": in_path})
        }
        RuntimeError::CommandNotExecutable { cmd, reason } => {
            serde_json::json!({"error": e.to_string(), "not_executable": cmd, "reason": reason})
        }
        e => serde_json::json!({"error": crate::error::report(e)}),
    }
}

fn decode_failure(v: &serde_json::Value) -> Option<RuntimeError> {
    if let Some(cmd) = v.get("not_found").and_then(|c| c.as_str()) {
        let in_path = v.get("in_path").and_then(|b| b.as_bool()).unwrap_or(false);
        return Some(RuntimeError::CommandNotFound { cmd: cmd.to_string(), in_path });
    }
    let cmd = v.get("not_executable").and_then(|c| c.as_str())?;
    let reason = v.get("reason").and_then(|r| r.as_str()).unwrap_or("").to_string();
    Some(RuntimeError::CommandNotExecutable { cmd: cmd.to_string(), reason })
}

/// The monitor of a detached container (`strata container monitor NAME`, started by [`start`]):
/// as a child subreaper it runs `runc run --detach` on the bundle `start` wrote, writes one JSON
/// line to `report` (`{"started":true}` or why not), then reaps the container's process when it
/// ends, records its exit code and, unless something started it again meanwhile, deletes runc's
/// state and unmounts the container.
pub fn monitor(root: &Path, name: &str, report: &mut dyn Write) -> Result<()> {
    // A session of its own: the terminal's Ctrl-C and hangup are not for it.
    if let Err(e) = rustix::process::setsid() {
        tracing::debug!(error = %e, "setsid");
    }
    // The store is opened only to start and to clean up, not held while the container runs.
    let store = Store::open(root).map_err(|source| MonitorError::Store { name: name.to_string(), source })?;
    // The id `start` deleted any stale state of (never an older strata's legacy id).
    let state = container::runc_state_dir(&store);
    let id = container::runc_id(&store, name);
    let bundle_dir = container::dir(&store, name).join("bundle");
    let log = container::log_path(&store, name);
    drop(store);
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        let _ = writeln!(report, "{}", serde_json::json!({"error": format!("PR_SET_CHILD_SUBREAPER: {e}")}));
        return Err(MonitorError::Io { path: "prctl".into(), source: e.into() });
    }
    if let Err(e) = runc::run_detached(&state, &bundle_dir, &id, &log) {
        let _ = writeln!(report, "{}", encode_failure(&e));
        return Err(berr(name)(e));
    }
    let pid = runc::runc_pid(&state, &id);
    let _ = writeln!(report, "{}", serde_json::json!({"started": true}));
    let _ = report.flush();
    // No pid when it already ended (runc says pid 0 then): the child we adopt is that process.
    let (pid, code) = match reap(pid) {
        Some((p, code)) => (Some(p), Some(code)),
        None => (pid, None),
    };
    let store = Store::open(root).map_err(|source| MonitorError::Store { name: name.to_string(), source })?;
    // The `run -d` or `start` that started it lets go of its run lock just after our report;
    // until then the container counts as running and is not unmounted.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let g = container::lock(&store, name).map_err(cerr(name))?;
        // Started again meanwhile (restart): that run is not ours to clean up.
        let current = runc::runc_pid(&state, &id);
        if current.is_some() && current != pid {
            return Ok(());
        }
        let free = container::running(&store, name).map_err(cerr(name))?.is_none();
        if free || Instant::now() > until {
            // Unmounted first, then the code: whoever sees the code sees it unmounted; runc's
            // state last (not --force: a container runc still runs is not deleted).
            if free {
                // Its network (idempotent; what fails is left to release_leaked) and the mount
                // points made for its files, before it is unmounted.
                crate::netsetup::teardown(&store, name);
                if let Ok(Some(at)) = container::mounted_at(&store, name) {
                    if let Err(e) = kernel_overlay::unmount(&at, kernel_overlay::UnmountMode::Normal) {
                        tracing::warn!(container = name, error = %e, "not unmounted after it exited");
                    }
                }
            }
            if let Some(code) = code {
                container::record_exit(&store, name, code);
            }
            let _ = runc::runc_verb(&state, "delete", &id, &[]);
            return Ok(());
        }
        drop(g);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reap children until `pid` (or, when `None`, the first adopted child) ends; its pid and exit
/// code (128+signal when killed). runc itself was reaped already, so any child of ours is the
/// container's process, adopted as its subreaper.
fn reap(pid: Option<i32>) -> Option<(i32, i32)> {
    loop {
        let mut st = 0;
        // SAFETY: waitpid writes the status into `st`.
        let r = unsafe { libc::waitpid(-1, &mut st, 0) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
        if pid.is_none_or(|p| p == r) {
            if libc::WIFEXITED(st) {
                return Some((r, libc::WEXITSTATUS(st)));
            }
            if libc::WIFSIGNALED(st) {
                return Some((r, 128 + libc::WTERMSIG(st)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_failures_round_trip() {
        let e = RuntimeError::CommandNotFound { cmd: "x\ty".into(), in_path: true };
        let back = decode_failure(&encode_failure(&e)).unwrap();
        assert!(matches!(back, RuntimeError::CommandNotFound { ref cmd, in_path: true } if cmd == "x\ty"));
        let e = RuntimeError::CommandNotExecutable { cmd: "/e".into(), reason: "mode 0644".into() };
        assert_eq!(decode_failure(&encode_failure(&e)).unwrap().exit_code(), Some(126));
        assert!(decode_failure(&encode_failure(&RuntimeError::NoCommand)).is_none());
    }
}
