//! Rootless mode: the user namespace an unprivileged strata works in, and where a user's state
//! lives.
//!
//! The model is podman's: one long-lived user + mount namespace per user, held open by a *pause
//! process* whose pid is in `$XDG_RUNTIME_DIR/strata/pause.pid`. The first command creates it
//! (the pause process unshares, `newuidmap`/`newgidmap` write its mappings: the user's own uid
//! as 0, the user's `/etc/subuid` and `/etc/subgid` ranges from 1 up); every command then joins
//! it with `setns` ([`enter`]), so mounts made by one command are there for the next. Joining a
//! user namespace needs a single-threaded process: the CLI does it first thing in `main`.
//!
//! Inside, strata is uid 0 with every capability of the namespace, and the layers above see
//! [`current`] say [`Mode::Rootless`]: layers are written with `user.overlay.*` markers, kernel
//! overlay mounts take `userxattr`, runc runs without cgroups.
//!
//! Files: here the mode of this process and the user's directories; `subid.rs` the
//! `/etc/subuid` and `/etc/subgid` ranges; `pause.rs` the pause process and joining it.

mod pause;
mod subid;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use pause::{enter, pause_main, running_pause, stop_pause, unshare_command, PAUSE_ARG};
pub use subid::{subordinate_ranges, SubIdRange};

/// One line of `/proc/PID/uid_map` (or `gid_map`): `count` ids from `inside` in the namespace
/// are `outside` in its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// How this process stands towards the host's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// In the initial user namespace (or one mapping every id to itself): root mode.
    Root,
    /// In a user namespace with these mappings: rootless mode.
    Rootless { uids: Vec<IdRange>, gids: Vec<IdRange> },
}

impl Mode {
    pub fn is_rootless(&self) -> bool {
        matches!(self, Mode::Rootless { .. })
    }

    /// Whether uid `id` (as the namespace sees it) has a host id; always true in root mode.
    pub fn maps_uid(&self, id: u32) -> bool {
        match self {
            Mode::Root => true,
            Mode::Rootless { uids, .. } => maps(uids, id),
        }
    }

    /// Whether gid `id` (as the namespace sees it) has a host id; always true in root mode.
    pub fn maps_gid(&self, id: u32) -> bool {
        match self {
            Mode::Root => true,
            Mode::Rootless { gids, .. } => maps(gids, id),
        }
    }
}

fn maps(ranges: &[IdRange], id: u32) -> bool {
    ranges.iter().any(|r| id >= r.inside && u64::from(id) < u64::from(r.inside) + u64::from(r.count))
}

/// Rootless-mode errors.
#[derive(Debug, thiserror::Error)]
pub enum UserNsError {
    #[error("XDG_RUNTIME_DIR is not set: rootless strata keeps its runtime state there (a login session sets it; otherwise make a directory of your own, mode 0700, and export XDG_RUNTIME_DIR=/path/to/it)")]
    NoRuntimeDir,
    #[error("XDG_RUNTIME_DIR={} {reason}: rootless strata keeps its runtime state there; give a directory of your own, mode 0700", path.display())]
    BadRuntimeDir { path: PathBuf, reason: String },
    #[error("neither XDG_DATA_HOME nor HOME is set (an absolute path): rootless strata's store is $XDG_DATA_HOME/strata, else ~/.local/share/strata; or give --root")]
    NoDataHome,
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no user name for uid {uid} in the password database: /etc/subuid names users")]
    NoUserName { uid: u32 },
    #[error(
        "{} cannot be run: it sets rootless strata's id mappings (Debian/Ubuntu: apt-get install uidmap)",
        tool
    )]
    NoMapTool {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} {args} failed ({status}): {stderr}")]
    MapToolFailed { tool: &'static str, args: String, status: String, stderr: String },
    #[error("the pause process (which holds the user namespace) could not be started: {reason}")]
    Pause { reason: String },
    #[error("{step}")]
    Sys {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("strata unshare is for rootless mode: as root there is no user namespace to enter")]
    UnshareAsRoot,
    #[error("not in rootless mode's user namespace (or its runtime directory is unusable)")]
    NotInNamespace,
    #[error("cannot run {cmd}")]
    Exec {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
}

impl UserNsError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            UserNsError::NoRuntimeDir
            | UserNsError::NoDataHome
            | UserNsError::NoUserName { .. }
            | UserNsError::UnshareAsRoot
            | UserNsError::NotInNamespace => ErrorKind::FailedPrecondition,
            UserNsError::BadRuntimeDir { .. } => ErrorKind::InvalidArgument,
            UserNsError::NoMapTool { .. } => ErrorKind::NotFound,
            UserNsError::Io { source, .. } | UserNsError::Exec { source, .. } => ErrorKind::of_io(source),
            UserNsError::MapToolFailed { .. } | UserNsError::Pause { .. } | UserNsError::Sys { .. } => {
                ErrorKind::Internal
            }
        }
    }
}

/// Parse `/proc/PID/uid_map` (or `gid_map`) text. Malformed lines are left out.
pub fn parse_id_map(text: &str) -> Vec<IdRange> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(str::parse::<u32>);
            match (f.next(), f.next(), f.next()) {
                (Some(Ok(inside)), Some(Ok(outside)), Some(Ok(count))) => {
                    Some(IdRange { inside, outside, count })
                }
                _ => None,
            }
        })
        .collect()
}

/// The mode of a process whose maps read `uid_map` and `gid_map`: root when every id maps to
/// itself (the initial namespace's `0 0 4294967295`), rootless otherwise.
pub fn mode_of(uid_map: &str, gid_map: &str) -> Mode {
    let uids = parse_id_map(uid_map);
    let gids = parse_id_map(gid_map);
    let identity = |r: &[IdRange]| r == [IdRange { inside: 0, outside: 0, count: u32::MAX }];
    if identity(&uids) && identity(&gids) {
        Mode::Root
    } else {
        Mode::Rootless { uids, gids }
    }
}

/// This process's mode, read once from `/proc/self/{uid,gid}_map`. A kernel without user
/// namespaces (no map files) is root mode.
pub fn current() -> &'static Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    MODE.get_or_init(|| {
        match (std::fs::read_to_string("/proc/self/uid_map"), std::fs::read_to_string("/proc/self/gid_map")) {
            (Ok(u), Ok(g)) => mode_of(&u, &g),
            _ => Mode::Root,
        }
    })
}

/// Whether this process runs in rootless mode.
pub fn is_rootless() -> bool {
    current().is_rootless()
}

/// The environment variable's value when it is an absolute path (XDG's rule: relative ones are
/// ignored).
fn abs_env(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute())
}

/// The rootless store's default place: `$XDG_DATA_HOME/strata`, else `~/.local/share/strata`.
pub fn default_data_root() -> Result<PathBuf, UserNsError> {
    if let Some(d) = abs_env("XDG_DATA_HOME") {
        return Ok(d.join("strata"));
    }
    abs_env("HOME").map(|h| h.join(".local/share/strata")).ok_or(UserNsError::NoDataHome)
}

/// `$XDG_RUNTIME_DIR`, checked: set, absolute, a directory (not a link) owned by `owner` (this
/// user's uid as this process sees it) and writable by nobody else.
pub fn checked_runtime_base(owner: u32) -> Result<PathBuf, UserNsError> {
    use std::os::unix::fs::MetadataExt;
    let Some(raw) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) else {
        return Err(UserNsError::NoRuntimeDir);
    };
    let path = PathBuf::from(raw);
    let bad = |reason: String| UserNsError::BadRuntimeDir { path: path.clone(), reason };
    if !path.is_absolute() {
        return Err(bad("is not an absolute path".into()));
    }
    let md = std::fs::symlink_metadata(&path).map_err(|e| bad(format!("cannot be read ({e})")))?;
    if !md.file_type().is_dir() {
        return Err(bad("is not a directory".into()));
    }
    if md.uid() != owner {
        return Err(bad(format!("is owned by uid {}, not by this user (uid {owner})", md.uid())));
    }
    if md.mode() & 0o022 != 0 {
        return Err(bad(format!("is writable by others (mode {:o})", md.mode() & 0o7777)));
    }
    Ok(path)
}

/// `$XDG_RUNTIME_DIR/strata` (created, mode 0700) in rootless mode: runtime state (runc's, the
/// pause process's pid, the mount probe's answer). `None` in root mode.
pub fn runtime_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| if is_rootless() { checked_runtime_dir().ok() } else { None }).clone()
}

/// `$XDG_RUNTIME_DIR/strata`, checked as [`checked_runtime_base`] checks its parent for this
/// process's effective uid and created (mode 0700) if missing; the error says what is wrong.
/// Whatever the mode: a daemon that is about to put its socket there asks before it serves.
pub fn checked_runtime_dir() -> Result<PathBuf, UserNsError> {
    let dir = checked_runtime_base(rustix::process::geteuid().as_raw())?.join("strata");
    make_private_dir(&dir)?;
    Ok(dir)
}

/// Create `dir` (mode 0700) if missing.
fn make_private_dir(dir: &Path) -> Result<(), UserNsError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(UserNsError::Io { path: dir.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_from_maps() {
        let root = "         0          0 4294967295\n";
        assert_eq!(mode_of(root, root), Mode::Root);
        let m = mode_of("0 1000 1\n1 100000 65536\n", "0 1000 1\n1 100000 65536\n");
        assert!(m.is_rootless());
        assert!(m.maps_uid(0) && m.maps_uid(1) && m.maps_uid(65536));
        assert!(!m.maps_uid(65537) && !m.maps_gid(70000));
        let single = mode_of("0 1000 1\n", "0 1000 1\n");
        assert!(single.maps_uid(0) && !single.maps_uid(1));
        assert_eq!(parse_id_map("x y z\n0 1 2\n"), vec![IdRange { inside: 0, outside: 1, count: 2 }]);
        assert!(Mode::Root.maps_uid(u32::MAX - 1));
    }
}
