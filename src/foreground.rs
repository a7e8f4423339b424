//! A container in the foreground: `runc run` attached to this process's stdio, the signals this
//! process takes forwarded to it ([`crate::signals`]), its exit code returned. Above both the
//! runtime driver ([`crate::runtime`]) and the signal trap, which know nothing of each other's
//! callers.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::runtime::runc::{runtime, start_failure};
use crate::runtime::{Result, RuntimeError};
use crate::signals;

/// How a foreground [`run`] is attached to this process.
pub struct Foreground<'a> {
    /// `-i`: the container reads this process's stdin (otherwise /dev/null).
    pub stdin: bool,
    /// `-t`: the spec gives the process a terminal; runc then relays this one's.
    pub terminal: bool,
    /// The signals taken meanwhile, forwarded to the container (see [`crate::signals`]).
    pub trap: &'a mut signals::Trap,
    /// How long the container has to exit after SIGTERM or SIGHUP before it is killed.
    pub stop_timeout: std::time::Duration,
}

/// `runc --root STATE run --bundle BUNDLE ID` with inherited stdio; returns the container
/// process's exit code (128+signal when killed by a signal). `state` keeps runc's state inside
/// strata's root, so container IDs of different strata roots never collide. runc's own log goes
/// to `BUNDLE/runc.log` (JSON), so a command that could not be started is told apart from one
/// that ran and failed: that is [`RuntimeError::CommandNotFound`] or
/// [`RuntimeError::CommandNotExecutable`]. (runc still prints that error on its stderr, one line.)
/// The container reads this process's stdin when `fg.stdin` (`-i`), /dev/null otherwise, as
/// podman.
///
/// Signals this process takes meanwhile are forwarded to the container
/// ([`signals::supervise`]), and runc is waited for whatever comes. Without `-t`, runc
/// runs in a process group of its own, so that a Ctrl-C on this process's terminal reaches the
/// container once, through this process, and not a second time through runc's own forwarding.
/// runc copies stdin to the container itself then, and a process outside the terminal's
/// foreground group that reads it is stopped (SIGTTIN): so with `-i` on a terminal, this process
/// reads it and feeds runc through a pipe. With `-t`, runc must stay in the terminal's
/// foreground group to relay it; the terminal is in raw mode then, and a Ctrl-C is a byte that
/// the container's own terminal turns into its SIGINT.
pub fn run(state: &Path, bundle: &Path, id: &str, fg: Foreground<'_>) -> Result<i32> {
    use std::io::IsTerminal;
    use std::os::unix::process::CommandExt;
    let rt = runtime();
    let log = bundle.join("runc.log");
    let _ = fs::remove_file(&log);
    let relay = fg.stdin && !fg.terminal && std::io::stdin().is_terminal();
    let stdin = match (fg.stdin, relay) {
        (false, _) => Stdio::null(),
        (true, true) => Stdio::piped(),
        (true, false) => Stdio::inherit(),
    };
    let mut cmd = Command::new(&rt);
    cmd.arg("--root")
        .arg(state)
        .arg("--log")
        .arg(&log)
        .args(["--log-format", "json"])
        .arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg(id)
        .stdin(stdin)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if !fg.terminal {
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().map_err(|e| RuntimeError::Runtime { runtime: rt.clone(), source: e })?;
    if let Some(mut pipe) = child.stdin.take() {
        // Blocked in a read of the terminal when the container ends; it ends with the process.
        // Without the thread, the pipe closes: the container reads end of file.
        let copy = std::thread::Builder::new().name("stdin".into()).spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut pipe);
        });
        if let Err(e) = copy {
            tracing::warn!(error = %e, "cannot pass standard input to the container");
        }
    }
    let status = signals::supervise(fg.trap, &mut child, state, id, fg.stop_timeout)
        .map_err(|e| RuntimeError::Runtime { runtime: rt.clone(), source: e })?;
    use std::os::unix::process::ExitStatusExt;
    if status.code() == Some(1) {
        // runc's own failures exit 1; so may the command. Only the log tells them apart.
        if let Some(e) = fs::read_to_string(&log).ok().as_deref().and_then(start_failure) {
            return Err(e);
        }
    }
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
