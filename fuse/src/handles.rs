//! Open files and their passthrough backing files. Directories have no per-open state (OPENDIR
//! is not used; see [`crate::listing::Listings`] for the listings being read).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use fuser::BackingId;
use tracing::{debug, warn};

use crate::contents::ChunkReader;
use crate::sys::{self, err};

/// An open file.
pub(crate) struct Handle {
    /// The node it was opened as.
    pub(crate) ino: u64,
    pub(crate) file: File,
    /// Held while the file is open in passthrough mode.
    pub(crate) _backing: Option<Arc<Backing>>,
    /// A remote lower file's reader (see [`crate::contents`]): reads go through it, not `file`.
    pub(crate) reader: Option<Arc<dyn ChunkReader>>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("ino", &self.ino)
            .field("file", &self.file)
            .field("passthrough", &self._backing.is_some())
            .field("remote", &self.reader.is_some())
            .finish()
    }
}

/// A passthrough backing file registered with the kernel (`FUSE_DEV_IOC_BACKING_OPEN`) on the
/// connection's `/dev/fuse` fd, closed when dropped. Registered here rather than through a
/// fuser reply: a ring queue's replies travel over a socket, which has no such ioctl.
#[derive(Debug)]
pub(crate) struct Backing {
    dev: Arc<OwnedFd>,
    id: u32,
}

impl Backing {
    /// The kernel's backing id.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }
}

/// `FUSE_DEV_IOC_BACKING_CLOSE`: `_IOW(229, 2, uint32_t)`.
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

impl Drop for Backing {
    fn drop(&mut self) {
        // SAFETY: a valid fd and a pointer to a u32 the ioctl only reads.
        let r = unsafe { libc::ioctl(self.dev.as_raw_fd(), FUSE_DEV_IOC_BACKING_CLOSE, &self.id) };
        if r != 0 {
            // The connection is gone (unmounted): the kernel dropped its backing files.
            debug!("closing backing id {}: {}", self.id, io::Error::last_os_error());
        }
    }
}

/// A passthrough backing file of an inode and the real (dev, ino) it refers to.
type BackingOf = (Weak<Backing>, (u64, u64));

#[derive(Debug)]
pub(crate) struct Handles {
    open: RwLock<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    backings: Mutex<HashMap<u64, BackingOf>>,
    /// Opens use passthrough (set at init when the kernel allows it, cleared when it fails).
    passthrough: AtomicBool,
    /// The connection's `/dev/fuse` fd, for registering backing files (set once mounted).
    device: Arc<OnceLock<Arc<OwnedFd>>>,
}

impl Default for Handles {
    fn default() -> Handles {
        Handles {
            open: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            backings: Mutex::new(HashMap::new()),
            passthrough: AtomicBool::new(false),
            device: Arc::new(OnceLock::new()),
        }
    }
}

impl Handles {
    pub(crate) fn get(&self, fh: u64) -> Option<Arc<Handle>> {
        self.open.read().unwrap_or_else(|e| e.into_inner()).get(&fh).cloned()
    }

    /// Register an open file; returns its handle number.
    pub(crate) fn add(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.open.write().unwrap_or_else(|e| e.into_inner()).insert(fh, Arc::new(h));
        fh
    }

    pub(crate) fn remove(&self, fh: u64) {
        self.open.write().unwrap_or_else(|e| e.into_inner()).remove(&fh);
    }

    /// Any open file of a (possibly unlinked) inode.
    pub(crate) fn of_inode(&self, ino: u64) -> Option<Arc<Handle>> {
        self.open.read().unwrap_or_else(|e| e.into_inner()).values().find(|h| h.ino == ino).cloned()
    }

    pub(crate) fn passthrough(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    pub(crate) fn set_passthrough(&self, on: bool) {
        self.passthrough.store(on, Ordering::Relaxed);
    }

    /// The slot of the connection's `/dev/fuse` fd, filled once the mount exists.
    pub(crate) fn device_slot(&self) -> Arc<OnceLock<Arc<OwnedFd>>> {
        self.device.clone()
    }

    /// Get (or register) the passthrough backing file of an inode. EBUSY: the inode is open in
    /// passthrough mode on another real file (its lower copy, before a copy-up).
    pub(crate) fn backing_for(&self, ino: u64, file: &File) -> io::Result<Option<Arc<Backing>>> {
        if !self.passthrough() {
            return Ok(None);
        }
        let st = sys::fstat(file)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(None);
        }
        let id = (st.st_dev, st.st_ino);
        let mut b = self.backings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((w, rid)) = b.get(&ino) {
            if let Some(a) = w.upgrade() {
                if *rid == id {
                    return Ok(Some(a));
                }
                // The inode is open in passthrough mode on another real file (opened before a
                // copy-up): the kernel allows one backing file per inode.
                return Err(err(libc::EBUSY));
            }
        }
        let Some(dev) = self.device.get() else {
            return Ok(None);
        };
        match BackingId::create_raw(&**dev, file) {
            Ok(bid) => {
                let a = Arc::new(Backing { dev: dev.clone(), id: bid });
                b.insert(ino, (Arc::downgrade(&a), id));
                Ok(Some(a))
            }
            Err(e) => {
                warn!("passthrough unavailable ({e}); serving I/O from the daemon");
                self.set_passthrough(false);
                Ok(None)
            }
        }
    }
}
