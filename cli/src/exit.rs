//! The exit status of a command that failed, as docker and podman give it: where the answer is
//! a container process's status (`run`, `exec`, `start -a`), strata's own failure is 125, out of
//! the way of the command's codes (a command line clap refuses included), and a command the
//! container cannot run is 127 (not found) or 126 (not executable); every other command fails
//! with 1 (2 for a command line clap refuses). Output to a closed pipe ends quietly with 141
//! (128 + SIGPIPE), as a Unix tool that SIGPIPE ends.
//!
//! The library's error kinds (`strata::error::ErrorKind`) do not enter: docker gives every failure
//! of the engine one status (1, or 125 where the status could be a container's) whatever its
//! class, and which failures are the container command's (126, 127) is finer than a kind (a
//! missing command and a missing image are both `NotFound`): the runtime's error says it,
//! `RuntimeError::exit_code`.

use std::process::ExitCode;

use clap::CommandFactory;

use crate::args::Cmd;
use crate::Cli;

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

    /// The role of the command `args` name, read by clap without failing on what is wrong
    /// with them.
    fn of_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Role {
        let Ok(m) = Cli::command().ignore_errors(true).try_get_matches_from(args) else {
            return Role::Own;
        };
        match m.subcommand() {
            Some(("run" | "exec", _)) => Role::ContainerStatus,
            Some(("start", s)) if s.try_get_one::<bool>("attach").ok().flatten() == Some(&true) => {
                Role::ContainerStatus
            }
            _ => Role::Own,
        }
    }
}

/// A command line clap refuses: its message, and the status docker and podman give a usage
/// error where the status could be a container's (125), clap's otherwise (2; 0 for `--help`
/// and `--version`).
pub fn usage(e: &clap::Error) -> ExitCode {
    // Printed as clap prints it; a closed stdout or stderr leaves nothing to tell.
    let _ = e.print();
    if e.use_stderr() && Role::of_args(std::env::args_os()) == Role::ContainerStatus {
        return ExitCode::from(125);
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
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
    e.chain().find_map(|c| c.downcast_ref::<strata::runtime::RuntimeError>()).and_then(|b| b.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;
    use strata::runtime::RuntimeError;

    fn not_found() -> RuntimeError {
        RuntimeError::CommandNotFound { cmd: "/nonexistent".into(), in_path: false }
    }

    /// The command the container cannot run gives 127 or 126 wherever it sits in the chain;
    /// any other failure 125 where the status is a container's, 1 elsewhere.
    #[test]
    fn statuses_follow_docker() {
        let wrapped = |b: RuntimeError| {
            let run = strata::run::RunError::Runtime { name: "c".into(), source: b };
            Err::<(), _>(run).context("running c").unwrap_err()
        };
        for role in [Role::ContainerStatus, Role::Own] {
            assert_eq!(status(&wrapped(not_found()), role), 127);
            let denied =
                RuntimeError::CommandNotExecutable { cmd: "/etc".into(), reason: "a directory".into() };
            assert_eq!(status(&wrapped(denied), role), 126);
            let workdir =
                RuntimeError::ExecWorkdir { dir: "/nonexistent".into(), reason: "no such directory" };
            assert_eq!(status(&anyhow::Error::new(workdir), role), 126);
        }
        let own = || wrapped(RuntimeError::NoCommand);
        assert_eq!(status(&own(), Role::ContainerStatus), 125);
        assert_eq!(status(&own(), Role::Own), 1);
        assert_eq!(status(&anyhow::anyhow!("image \"x\" not found"), Role::ContainerStatus), 125);
        assert_eq!(status(&anyhow::anyhow!("image \"x\" not found"), Role::Own), 1);
    }

    /// A command line clap refuses is read for its command all the same.
    #[test]
    fn usage_errors_know_their_command() {
        let role = |args: &[&str]| {
            Role::of_args(std::iter::once("strata").chain(args.iter().copied()).map(Into::into))
        };
        for args in [
            &["run", "--badflag", "busybox"][..],
            &["run"],
            &["--root", "/x", "-v", "run", "-x", "busybox"],
            &["exec", "--nope", "web", "true"],
            &["start", "-a", "--nope", "web"],
            &["start", "-a"],
        ] {
            assert_eq!(role(args), Role::ContainerStatus, "{args:?}");
        }
        for args in
            [&["start", "--nope", "web"][..], &["stop"], &["image", "rm"], &["bogus"], &[], &["--root"]]
        {
            assert_eq!(role(args), Role::Own, "{args:?}");
        }
    }
}
