//! The reserve: space held back in the state root so that strata still works on a full
//! filesystem.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::random_token;

/// Size of `<root>/reserve`, space held back so that strata still works on a full filesystem.
pub const RESERVE_BYTES: u64 = 8 << 20;

/// Below this much free space the reserve is released.
const RESERVE_RELEASE_BELOW: u64 = 4 << 20;

/// The space a full filesystem needs to let strata free space: `<root>/reserve`, released just
/// before the database opens when the filesystem is (nearly) full, and taken back when the
/// store closes, from the space the command freed or that was left free. Released and retaken
/// by every command that finds the disk full, so listing, `image rm`, `container rm` and `gc`
/// work however often the disk fills; only a process killed in between leaves it released, until
/// the next command closes its store.
///
/// Why a reserve and not a SQLite setting: in WAL mode the first connection to open the
/// database truncates and regrows the `-shm` WAL index, page by page, which fails with ENOSPC
/// ("disk I/O error ... xShmMap") on a full filesystem even for a read, and any write needs WAL
/// (or, in rollback mode, journal) pages; `locking_mode=EXCLUSIVE` would keep the index in memory
/// but serialize every strata process for the life of its connection (`strata run` holds one for
/// the whole run). Releasing 8 MiB before opening the database gives SQLite the pages it needs;
/// when the last connection closes, SQLite removes the WAL and its index, and the space is back.
pub(super) struct Reserve {
    pub(super) root: PathBuf,
}

impl Reserve {
    fn path(root: &Path) -> PathBuf {
        root.join("reserve")
    }

    /// Release the reserve if the filesystem is nearly full.
    pub(super) fn balance(root: &Path) -> Reserve {
        let reserve = Self::path(root);
        if free_bytes(root).is_some_and(|free| free < RESERVE_RELEASE_BELOW)
            && fs::symlink_metadata(&reserve).is_ok()
        {
            tracing::warn!(root = %root.display(), "filesystem nearly full: releasing strata's reserve");
            let _ = fs::remove_file(&reserve);
        }
        Reserve { root: root.to_path_buf() }
    }
}

impl Drop for Reserve {
    /// Take the reserve back when there is room for it.
    fn drop(&mut self) {
        let reserve = Self::path(&self.root);
        if fs::symlink_metadata(&reserve).is_ok() || free_bytes(&self.root).is_none_or(|f| f < RESERVE_BYTES)
        {
            return;
        }
        // Under the name of a blob temp file, which recovery removes if this process dies.
        let tmp = self.root.join("staging").join(format!("blob-{}", random_token()));
        let made = (|| -> io::Result<()> {
            let f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, RESERVE_BYTES)?;
            fs::rename(&tmp, &reserve)
        })();
        if made.is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}

/// Free bytes for an unprivileged writer on the filesystem of `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    rustix::fs::statvfs(path).ok().map(|st| st.f_bavail.saturating_mul(st.f_frsize))
}
