//! The one error type of this crate.

use std::path::PathBuf;

use rustix::io::Errno;

use crate::OVL_MAX_STACK;

/// Everything that can go wrong while validating, mounting, unmounting or inspecting an overlay.
///
/// Messages name the target, the operation and the errno (symbolic name and description), and, for
/// the new mount API, the messages the kernel left in the filesystem context log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("overlay spec has no lower layers")]
    NoLowers,

    #[error(
        "overlay spec has {count} lower layers, more than the overlayfs limit of {limit} \
         (OVL_MAX_STACK); squash or flatten layers"
    )]
    TooManyLowers { count: usize, limit: usize },

    #[error("overlay spec has an upper dir ({upper}) but no work dir")]
    UpperWithoutWork { upper: PathBuf },

    #[error("overlay spec has a work dir ({work}) but no upper dir")]
    WorkWithoutUpper { work: PathBuf },

    #[error("overlay spec asks for volatile but has no upper dir")]
    VolatileWithoutUpper,

    #[error(
        "read-only overlay with the single lower layer {lower} needs `empty_lower` (an empty \
         directory): overlayfs requires at least 2 lower layers when there is no upper dir"
    )]
    SingleLowerReadOnly { lower: PathBuf },

    #[error("overlay path {path} is not absolute")]
    NotAbsolute { path: PathBuf },

    #[error("overlay path {path} contains a NUL byte")]
    NulInPath { path: PathBuf },

    #[error("overlay path {path} is not valid UTF-8 and cannot be written as a mount option")]
    NonUtf8Path { path: PathBuf },

    #[error("empty_lower {path} is not an empty directory")]
    EmptyLowerNotEmpty { path: PathBuf },

    #[error(
        "mounting overlay on {target}: legacy mount(2) option string is {len} bytes even with lower \
         layers named by descriptor number (their paths relative to {common} were longer), over the \
         {limit}-byte page limit (and the kernel lacks fsconfig lowerdir+)"
    )]
    OptionsTooLong { target: PathBuf, common: PathBuf, len: usize, limit: usize },

    #[error("mounting overlay on {target}: {op} failed: {}{}", errno_display(.errno), kernel_log(.kernel, *.errno))]
    Mount { target: PathBuf, op: String, errno: Errno, kernel: Vec<String> },

    #[error("unmounting {target}: umount2 failed: {}", errno_display(.errno))]
    Unmount { target: PathBuf, errno: Errno },

    #[error("reading /proc/self/mountinfo")]
    Mountinfo {
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The errno of a failed syscall, if this error is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Mount { errno, .. } | Error::Unmount { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Checks the stack depth; shared by `validate` and tests.
pub(crate) fn check_depth(count: usize) -> Result<(), Error> {
    if count > OVL_MAX_STACK {
        return Err(Error::TooManyLowers { count, limit: OVL_MAX_STACK });
    }
    Ok(())
}

fn kernel_log(lines: &[String], errno: Errno) -> String {
    if lines.is_empty() {
        if errno == Errno::INVAL {
            // overlayfs reports most option conflicts with pr_err, not in the fs_context log.
            " (overlayfs logs the reason in the kernel log: see dmesg)".to_string()
        } else {
            String::new()
        }
    } else {
        format!(" (kernel: {})", lines.join("; "))
    }
}

/// `EINVAL (Invalid argument, os error 22)`.
pub fn errno_display(errno: &Errno) -> String {
    let raw = errno.raw_os_error();
    let io = std::io::Error::from_raw_os_error(raw);
    match errno_name(raw) {
        Some(name) => format!("{name} ({io})"),
        None => format!("{io}"),
    }
}

/// Symbolic names of the errnos mount code meets.
pub fn errno_name(raw: i32) -> Option<&'static str> {
    Some(match raw {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ESTALE => "ESTALE",
        _ => return None,
    })
}
