//! The OCI runtime: [`spec`] builds a bundle's `config.json` from an image config and the
//! user's [`ProcessOverrides`] (oci-spec's runtime types; users resolved, volumes parsed, the
//! command looked up in the root filesystem before the runtime is asked); [`runc`] drives the
//! runtime binary on it (`run --detach`, `exec`, `state`, `pause`, `kill`, `delete`). The
//! attached `runc run` is [`crate::foreground`]'s; the monitor of a detached one
//! [`crate::monitor`]'s.

pub mod rootless;
pub mod runc;
pub mod spec;

pub use spec::{ProcessOverrides, SpecSettings, Volume};

use std::path::PathBuf;

use crate::image::printable;

/// Runtime errors: building the spec, or the runtime binary failing.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image config: {0}")]
    Config(String),
    #[error("user {user:?}: {reason}")]
    User { user: String, reason: String },
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("runtime spec")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("running {runtime}")]
    Runtime { runtime: String, source: std::io::Error },
    #[error("{runtime} {verb}: {reason}")]
    Verb { runtime: String, verb: String, reason: String },
    #[error("-e {value:?}: {reason}")]
    Env { value: String, reason: &'static str },
    #[error("-w {dir:?}: the working directory must be an absolute path")]
    Workdir { dir: String },
    #[error("no command: the image has neither Entrypoint nor Cmd, and none was given")]
    NoCommand,
    #[error("-v {value:?}: {reason}")]
    Volume { value: String, reason: String },
    /// `exec -w DIR` where DIR is not a directory in the container (exit status 126, as docker).
    #[error("-w {}: {reason}", printable(dir, 200))]
    ExecWorkdir { dir: String, reason: &'static str },
    /// The command is not in the container (exit status 127, as podman and shells use).
    #[error("executable file not found{}: {}", if *in_path { " in $PATH" } else { "" }, printable(cmd, 200))]
    CommandNotFound { cmd: String, in_path: bool },
    /// The command is there but cannot be executed (exit status 126).
    #[error("permission denied: cannot execute {}: {reason}", printable(cmd, 200))]
    CommandNotExecutable { cmd: String, reason: String },
}

impl RuntimeError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            RuntimeError::CommandNotFound { .. } => ErrorKind::NotFound,
            RuntimeError::Config(_)
            | RuntimeError::User { .. }
            | RuntimeError::Env { .. }
            | RuntimeError::Workdir { .. }
            | RuntimeError::NoCommand
            | RuntimeError::Volume { .. }
            | RuntimeError::ExecWorkdir { .. }
            | RuntimeError::CommandNotExecutable { .. } => ErrorKind::InvalidArgument,
            RuntimeError::Io { source, .. } => ErrorKind::of_io(source),
            RuntimeError::Spec(_) | RuntimeError::Runtime { .. } | RuntimeError::Verb { .. } => {
                ErrorKind::Internal
            }
        }
    }

    /// The exit status `strata run` gives for this error, where one is conventional.
    pub fn exit_code(&self) -> Option<u8> {
        match self {
            RuntimeError::CommandNotFound { .. } => Some(127),
            RuntimeError::CommandNotExecutable { .. } | RuntimeError::ExecWorkdir { .. } => Some(126),
            _ => None,
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
