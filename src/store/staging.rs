//! Staging entries: private working directories under `staging/`, each with a locked token, and
//! trash (removal by one rename into one).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use super::locks::{lock_file, LockGuard};
use super::{random_token, remove_tree, IoContext, Result, Store, StoreError};

/// A private working directory under `staging/`, removed on drop unless it was consumed.
pub struct Staging {
    pub token: String,
    pub dir: PathBuf,
    lock_path: PathBuf,
    _lock: LockGuard,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if fs::symlink_metadata(&self.dir).is_ok() {
            let _ = remove_tree(&self.dir);
        }
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Suffix of a staging lock file being created (see [`Store::staging`]).
pub(super) const LOCK_NEW: &str = ".lock-new";

/// Whether the staging entry `token` belongs to a live operation: its lock file exists and is
/// locked. (A dead one's lock is free; the probe's own lock goes with the file handle.)
pub(super) fn staging_live(staging: &Path, token: &str) -> Result<bool> {
    let p = staging.join(format!("{token}.lock"));
    let file = match OpenOptions::new().write(true).open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).at(&p),
    };
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(false),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(true),
        Err(e) => Err(io::Error::from(e)).at(&p),
    }
}

/// Whether the process whose pid starts `token` ("<pid>-<hex>") is alive.
pub(super) fn token_pid_alive(token: &str) -> bool {
    token
        .split('-')
        .next()
        .and_then(|p| p.parse::<i32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

impl Store {
    /// A new private staging directory.
    pub fn staging(&self) -> Result<Staging> {
        let st = self.staging_entry()?;
        fs::DirBuilder::new().mode(0o700).create(&st.dir).at(&st.dir)?;
        Ok(st)
    }

    /// Take `path` (a file or a tree) out of its place in one rename, into a staging entry that
    /// removes it when dropped, or, if this process dies first, the next recovery. A removal is
    /// then atomic as seen by everyone else: the thing is whole at its place or gone from it, never
    /// half deleted and reused. Returns `None` when `path` does not exist. The rename needs no
    /// free space, so removals work on a full filesystem.
    pub fn trash(&self, path: &Path) -> Result<Option<Staging>> {
        let st = self.staging_entry()?;
        match fs::rename(path, &st.dir) {
            Ok(()) => Ok(Some(st)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(path),
        }
    }

    /// A locked staging token and the (not yet created) directory that goes with it.
    fn staging_entry(&self) -> Result<Staging> {
        let token = random_token();
        let lock_path = self.root.join("staging").join(format!("{token}.lock"));
        // The lock file appears under its name already locked (made under a name recovery leaves
        // to live processes, then renamed): a concurrent `recover` must never find it unlocked.
        let new_path = self.root.join("staging").join(format!("{token}{LOCK_NEW}"));
        let lock = lock_file(&new_path, false)?.ok_or_else(|| StoreError::Io {
            path: new_path.clone(),
            source: io::ErrorKind::WouldBlock.into(),
        })?;
        if let Err(e) = fs::rename(&new_path, &lock_path) {
            let _ = fs::remove_file(&new_path);
            return Err(StoreError::Io { path: lock_path, source: e });
        }
        let dir = self.root.join("staging").join(&token);
        Ok(Staging { token, dir, lock_path, _lock: lock })
    }
}
