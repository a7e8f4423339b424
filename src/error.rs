//! What every strata error shares: a kind a front end maps to its own codes, and one way to
//! print a chain of causes.
//!
//! Each error's `Display` says its own part only (the file, the layer, the step); what caused
//! it is its `source()`. [`report`] joins the chain for a person; `kind()` on the error types
//! classifies it for a program (the CLI's exit status, containerd's gRPC codes).

use std::error::Error;

/// What class of failure an error is: what a CLI or gRPC front end maps to its own codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    /// The object is in a state that forbids the call (has children, not active, in use).
    FailedPrecondition,
    InvalidArgument,
    Internal,
}

impl ErrorKind {
    /// The kind an I/O error stands for.
    pub fn of_io(e: &std::io::Error) -> ErrorKind {
        match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => ErrorKind::InvalidArgument,
            _ => ErrorKind::Internal,
        }
    }
}

/// The whole chain of causes, outermost first, joined by ": ".
pub fn report(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let msg = s.to_string();
        if !msg.is_empty() {
            out.push_str(": ");
            out.push_str(&msg);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {

    /// Every pipeline's and the runtime's errors say their kind, through their causes too.
    #[test]
    fn kinds_see_through_the_chain() {
        use crate::export::ExportError;
        use crate::image::ImageError;
        use crate::registry::RegistryError;
        use crate::run::RunError;
        use crate::runtime::RuntimeError;
        let tag = || ImageError::NoSuchTag { source_name: "a".into(), tag: "t".into(), available: "".into() };
        assert_eq!(
            RuntimeError::CommandNotFound { cmd: "x".into(), in_path: true }.kind(),
            ErrorKind::NotFound
        );
        assert_eq!(RuntimeError::NoCommand.kind(), ErrorKind::InvalidArgument);
        assert_eq!(RegistryError::Image(tag()).kind(), ErrorKind::NotFound);
        assert_eq!(
            RegistryError::Unauthorized { host: "h".into(), message: "m".into(), hint: "".into() }.kind(),
            ErrorKind::FailedPrecondition
        );
        let run = RunError::Runtime { name: "c".into(), source: RuntimeError::NoCommand };
        assert_eq!(run.kind(), ErrorKind::InvalidArgument);
        assert_eq!(RunError::NoLog { name: "c".into() }.kind(), ErrorKind::NotFound);
        assert_eq!(ExportError::Exists("/x".into()).kind(), ErrorKind::AlreadyExists);
        let gone = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(ExportError::Io { path: "/x".into(), source: gone }.kind(), ErrorKind::NotFound);
        assert_eq!(ExportError::Image(tag()).kind(), ErrorKind::NotFound);
        // The helpers' errors too: a bad layer is the input's fault, a full disk is not.
        use crate::unpack::UnpackError;
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(
            UnpackError::Io { path: "f".into(), op: "write", source: full }.kind(),
            ErrorKind::Internal
        );
        let bad = UnpackError::InvalidPath { path: "../x".into(), reason: "escapes" };
        assert_eq!(bad.kind(), ErrorKind::InvalidArgument);
        assert_eq!(crate::reference::ReferenceError::Empty.kind(), ErrorKind::InvalidArgument);
        let exists = crate::fsutil::AtomicError::Exists { path: "/x".into() };
        assert_eq!(exists.kind(), ErrorKind::AlreadyExists);
        let moved = crate::diff::DiffError::InContainer {
            name: "c".into(),
            source: Box::new(crate::diff::DiffError::Moved { path: "/p".into() }),
        };
        assert_eq!(moved.kind(), ErrorKind::FailedPrecondition);
    }

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("layer {0}")]
    struct Outer(&'static str, #[source] std::io::Error);

    #[test]
    fn report_joins_each_part_once() {
        let e = Outer("sha256:ab", std::io::Error::other("disk full"));
        assert_eq!(e.to_string(), "layer sha256:ab");
        assert_eq!(report(&e), "layer sha256:ab: disk full");
    }

    #[test]
    fn io_kinds_map() {
        let nf = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(ErrorKind::of_io(&nf), ErrorKind::NotFound);
        assert_eq!(ErrorKind::of_io(&std::io::Error::other("x")), ErrorKind::Internal);
    }
}
