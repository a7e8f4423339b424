//! The exit status of a command that failed, as docker and podman give it: where the answer is
//! a container process's status (`run`, `exec`, `start -a`), strata's own failure is 125, out of
//! the way of the command's codes, and a command the container cannot run is 127 (not found)
//! or 126 (not executable); every other command fails with 1. Output to a closed pipe ends
//! quietly with 141 (128 + SIGPIPE), as a Unix tool that SIGPIPE ends.

use std::process::ExitCode;

use crate::args::Cmd;

/// Output to a closed pipe: 128 + SIGPIPE.
pub const BROKEN_PIPE: u8 = 141;

/// What a command's exit status stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A container process's status (`run`, `exec`, `start -a`): strata's own failure is 125.
    ContainerStatus,
    /// strata's own: 1 on failure.
    Own,
}

impl Role {
    pub fn of(cmd: &Cmd) -> Role {
        match cmd {
            Cmd::Run { .. } | Cmd::Exec { .. } | Cmd::Start { attach: true, .. } => Role::ContainerStatus,
            _ => Role::Own,
        }
    }
}

/// The exit status for `e`, a failure of a command of role `role`.
pub fn status(e: &anyhow::Error, role: Role) -> u8 {
    if stdout_closed(e) {
        return BROKEN_PIPE;
    }
    if let Some(code) = command_status(e) {
        return code;
    }
    match role {
        Role::ContainerStatus => 125,
        Role::Own => 1,
    }
}

/// Report `e` on stderr (unless stdout's reader has gone: then quietly) and give its status.
pub fn fail(e: &anyhow::Error, role: Role) -> ExitCode {
    let code = status(e, role);
    if code != BROKEN_PIPE {
        // Messages may quote input (names from archives, parser errors): never raw bytes.
        eprintln!("strata: error: {}", strata::image::printable(&format!("{e:#}"), 4096));
    }
    ExitCode::from(code)
}

/// Whether `e` is a broken pipe and stdout is a pipe whose reader has gone (poll says POLLERR):
/// a write error on stdout, from the CLI's own lines or from a library writing a tar there.
fn stdout_closed(e: &anyhow::Error) -> bool {
    let broken = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    let mut pfd = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
    // SAFETY: one valid pollfd, no timeout.
    broken && unsafe { libc::poll(&mut pfd, 1, 0) } == 1 && pfd.revents & libc::POLLERR != 0
}

/// 127 for a command not found in the container, 126 for one that cannot be executed (as
/// podman and shells); `None` for strata's own failures.
fn command_status(e: &anyhow::Error) -> Option<u8> {
    e.chain().find_map(|c| c.downcast_ref::<strata::bundle::BundleError>()).and_then(|b| b.exit_code())
}
