//! Typed locks: the flock files under `locks/`, each named once ([`Lock`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use super::{IoContext, Result, Store, StoreError};
use crate::digest::Sha256Digest;

/// The locks under `locks/`, each named here once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock<'a> {
    /// Taken exclusively by gc; shared ([`Store::gc_shared`]) by whatever writes or reads blobs and
    /// layers that no image references yet.
    Gc,
    /// A layer's unpack, and its removal.
    Layer(&'a Sha256Digest),
    /// Every change of a container's state (create, mount, umount, rm, commit, export, run;
    /// recovery of its directory).
    Container(&'a str),
    /// A running `strata run` of a container (it records its pid there).
    Run(&'a str),
    /// The networks' files and the published ports of attachments (`network/`).
    Networks,
}

impl Lock<'_> {
    /// The lock's name: its file is `locks/<name>.lock`.
    pub fn name(&self) -> String {
        match self {
            Lock::Gc => "gc".to_string(),
            Lock::Layer(d) => format!("layer-{}", d.hex()),
            Lock::Container(name) => format!("container-{name}"),
            Lock::Run(name) => format!("run-{name}"),
            Lock::Networks => "networks".to_string(),
        }
    }
}

/// An exclusive flock held until drop.
pub struct LockGuard {
    file: File,
}

impl LockGuard {
    /// Write `text` into the lock file (who holds it, for messages to those who find it taken).
    pub fn record(&self, text: &str) -> io::Result<()> {
        let mut f = &self.file;
        f.set_len(0)?;
        std::io::Seek::seek(&mut f, io::SeekFrom::Start(0))?;
        f.write_all(text.as_bytes())
    }
}

pub(super) fn lock_file(path: &Path, blocking: bool) -> Result<Option<LockGuard>> {
    let op = if blocking { FlockOperation::LockExclusive } else { FlockOperation::NonBlockingLockExclusive };
    flock_file(path, op)
}

pub(super) fn flock_file(path: &Path, op: FlockOperation) -> Result<Option<LockGuard>> {
    let file = OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path).at(path)?;
    let blocking = matches!(op, FlockOperation::LockExclusive | FlockOperation::LockShared);
    match rustix::fs::flock(&file, op) {
        Ok(()) => Ok(Some(LockGuard { file })),
        Err(rustix::io::Errno::WOULDBLOCK) if !blocking => Ok(None),
        Err(e) => Err(io::Error::from(e)).at(path),
    }
}

impl Store {
    /// Take lock `lock` exclusively, waiting for it.
    pub fn lock(&self, lock: Lock<'_>) -> Result<LockGuard> {
        let p = self.lock_path(lock);
        lock_file(&p, true)?
            .ok_or_else(|| StoreError::Io { path: p, source: io::ErrorKind::WouldBlock.into() })
    }

    /// Hold off `gc` (which takes this lock exclusively) while blobs and layers are written or
    /// read that no image references yet, or that an export is copying: imports, commits,
    /// exports and layer unpacks hold it shared for their whole run, so gc never takes what they
    /// have just written for garbage.
    pub fn gc_shared(&self) -> Result<LockGuard> {
        let p = self.lock_path(Lock::Gc);
        flock_file(&p, FlockOperation::LockShared)?
            .ok_or_else(|| StoreError::Io { path: p, source: io::ErrorKind::WouldBlock.into() })
    }

    /// Take lock `lock` if it is free; `Ok(None)` when another holds it.
    pub fn try_lock(&self, lock: Lock<'_>) -> Result<Option<LockGuard>> {
        lock_file(&self.lock_path(lock), false)
    }

    /// What the holder of lock `lock` recorded in it ([`LockGuard::record`]).
    pub fn lock_record(&self, lock: Lock<'_>) -> String {
        fs::read_to_string(self.lock_path(lock)).unwrap_or_default()
    }

    fn lock_path(&self, lock: Lock<'_>) -> PathBuf {
        self.root.join("locks").join(format!("{}.lock", lock.name()))
    }
}
