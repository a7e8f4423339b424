//! The FUSE filesystem: [`StrataFs`] and its `fuser::Filesystem` adapters, which translate each
//! request into calls of the modules that own the concepts (the inode table in `inode`, the
//! resolution cache in `cache`, listings in `listing`, open files in `handles`, the path-level
//! changes in `mutate`) and answer it; `node` holds what several adapters share (resolving a
//! node, its attributes and entry replies, opening and copying up a node).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use tracing::debug;

use crate::cache::ResolveCache;
use crate::contents::{Content, LowerContents};
use crate::format::{self, is_private_xattr};
use crate::handles::{Handle, Handles};
use crate::inode::Inodes;
use crate::listing::Listings;
use crate::mutate::{Invalidate, Owner, StagedCopy};
use crate::overlay::{self, Layers};
use crate::stats::{Op, Stats};
use crate::sys::{self, err};

mod create;
mod dir;
mod node;

/// Settings of a strata-fuse instance.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Lower layers, top first.
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// Entry and attribute cache timeout.
    pub ttl: Duration,
    /// Use FUSE passthrough for open files when the kernel allows it.
    pub passthrough: bool,
    /// As kernel overlayfs' `volatile`: copy-ups are not synced, fsync and syncfs do nothing.
    pub volatile: bool,
    /// The contents of each lower layer's files, by the index of `lowers`: `None` (or missing)
    /// for a plain directory, served as it is; a remote layer's reader otherwise (see
    /// [`crate::contents`]).
    pub contents: Vec<Option<Arc<dyn LowerContents>>>,
    /// `readlog=FILE`: the lower files opened for reading are logged there (see
    /// [`crate::readlog`]).
    pub read_log: Option<PathBuf>,
}

type WriteGuard<'a> = std::sync::RwLockWriteGuard<'a, ()>;

/// Either side of [`StrataFs::rw`], held.
enum Held<'a> {
    R { _g: std::sync::RwLockReadGuard<'a, ()> },
    W { _g: std::sync::RwLockWriteGuard<'a, ()> },
}

/// The merged filesystem.
#[derive(Debug)]
pub struct StrataFs {
    layers: Layers,
    ttl: Duration,
    want_passthrough: bool,
    inodes: Inodes,
    cache: ResolveCache,
    /// Held exclusively by every change of the layers, over its on-disk steps and the matching
    /// update of the node table; shared by every resolution of a node and the syscall that uses
    /// it (lstat, open, readlink, listing...). So nobody sees a change half made: between a
    /// lookup and its lstat an unlink could otherwise put a whiteout in place (a char device to
    /// the kernel: a bad inode, EIO), and a node could still carry a name that now is another
    /// file's.
    rw: RwLock<()>,
    handles: Handles,
    /// Directory listings being read.
    listings: Listings,
    /// Kernel notifications (set once the session exists; see [`StrataFs::notifier_slot`]).
    notifier: Arc<OnceLock<fuser::Notifier>>,
    /// Requests by kind.
    stats: Arc<Stats>,
    /// The read log, when asked for.
    read_log: Option<crate::readlog::ReadLog>,
}

type Res<T> = Result<T, io::Error>;

fn errno_of(e: &io::Error) -> Errno {
    Errno::from_i32(sys::errno(e))
}

/// An xattr value or name list: its size when asked with size 0, ERANGE when it does not fit.
fn reply_sized(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32)
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(data)
    }
}

/// Whether a SETATTR must also drop set-user-ID and set-group-ID (see [`crate::mutate::SetAttr::kill_suidgid`])
/// under FUSE_HANDLE_KILLPRIV_V2, where the kernel leaves that to the daemon and says so with a
/// flag (FATTR_KILL_SUIDGID) fuser 0.18 does not pass on. So it is told from the request's
/// shape: a truncate by a caller other than root (the kernel sets the flag when the caller
/// lacks CAP_FSETID), or a SETATTR that changes nothing, which the kernel sends only to drop
/// privileges (after a write by a caller that may not keep them) or for chown(-1, -1), which
/// drops them too. One case comes out differently: root writing a set-user-ID file that has a
/// security.capability keeps the bit on the kernel and loses it here.
fn kills_suidgid(caller: u32, ch: &AttrChange) -> bool {
    let AttrChange { mode, uid, gid, size, atime, mtime } = ch;
    if mode.is_some() {
        return false;
    }
    let nothing = uid.is_none() && gid.is_none() && size.is_none() && atime.is_none() && mtime.is_none();
    nothing || (size.is_some() && caller != 0)
}

/// What a SETATTR asks to change, as the kernel sent it.
pub(crate) struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
}

/// The owner of an entry created by `req`.
fn owner(req: &Request) -> Owner {
    Owner { uid: req.uid(), gid: req.gid() }
}

impl StrataFs {
    /// Set up the layer stack.
    pub fn new(cfg: &FsConfig) -> Res<StrataFs> {
        for p in cfg.lowers.iter().chain(cfg.upper.iter()).chain(cfg.work.iter()) {
            let st = sys::lstat(p)?;
            if !sys::is_dir(&st) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a directory", p.display()),
                ));
            }
        }
        let mut layers = Layers::new(cfg.lowers.clone(), cfg.upper.clone(), cfg.work.clone())?;
        layers.durable = !cfg.volatile;
        if cfg.contents.iter().any(Option::is_some) {
            let mut contents: Vec<Option<Arc<dyn LowerContents>>> = Vec::new();
            if layers.has_upper {
                contents.push(None);
            }
            contents.extend((0..cfg.lowers.len()).map(|i| cfg.contents.get(i).cloned().flatten()));
            layers.contents = contents;
        }
        Ok(StrataFs {
            layers,
            ttl: cfg.ttl,
            want_passthrough: cfg.passthrough,
            inodes: Inodes::default(),
            cache: ResolveCache::default(),
            rw: RwLock::new(()),
            handles: Handles::default(),
            listings: Listings::default(),
            notifier: Arc::new(OnceLock::new()),
            stats: Arc::default(),
            read_log: cfg.read_log.as_deref().map(crate::readlog::ReadLog::open).transpose()?,
        })
    }

    fn lock_w(&self) -> Res<std::sync::RwLockWriteGuard<'_, ()>> {
        if !self.layers.has_upper {
            return Err(err(libc::EROFS));
        }
        Ok(self.rw.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// See [`StrataFs::rw`]. Never taken twice by one thread (a writer waiting in between
    /// would deadlock it), never held while the kernel is notified (it may wait for a
    /// directory lock held by a request that waits for this lock).
    fn lock_r(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.rw.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The request counts of this filesystem.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The slot for the connection's `/dev/fuse` fd (passthrough backing files are registered
    /// on it), filled by whoever creates the session.
    pub fn device_slot(&self) -> Arc<OnceLock<Arc<std::os::fd::OwnedFd>>> {
        self.handles.device_slot()
    }

    /// The slot for the session's notifier, filled by whoever creates the session.
    pub fn notifier_slot(&self) -> Arc<OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // READDIRPLUS for every chunk of a listing, not only the first (no READDIRPLUS_AUTO):
        // otherwise each entry past the first 32 KiB costs a LOOKUP round trip when a walker
        // stats it (find over /usr/share: 1.6 s -> 1.2 s cold).
        for f in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_MAX_PAGES,
            InitFlags::FUSE_ASYNC_DIO,
            // See `kills_suidgid`: without it, every write(2) through a passthrough file costs a
            // GETXATTR of security.capability (the kernel's check before each write), and
            // with it only the first write of each inode does (the kernel marks the inode S_NOSEC).
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
        ] {
            let _ = config.add_capabilities(f);
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        if self.want_passthrough && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok() {
            let stacked = self
                .layers
                .roots
                .iter()
                .any(|r| matches!(sys::fs_magic(r), Ok(0x794c_7630) | Ok(0x6573_5546)));
            let depth = if stacked { 2 } else { 1 };
            if config.set_max_stack_depth(depth).is_ok() {
                self.handles.set_passthrough(true);
            }
        }
        debug!(passthrough = self.handles.passthrough(), "init");
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.stats.add(Op::Lookup);
        let parent = parent.0;
        let _r = self.lock_r();
        // Ok(false): no such name in an existing directory.
        let r = (|| -> Res<bool> {
            let epoch = self.cache.epoch();
            if let Some(ino) = self.inodes.child(parent, name) {
                if self.cache.get(ino, epoch).is_some() {
                    return Ok(true);
                }
            }
            let (ppath, pres) = self.resolve_dir(parent)?;
            let Some(r) = self.layers.lookup_in(&pres, &ppath, name)? else { return Ok(false) };
            let ino = self.inodes.node_for(parent, name, 0);
            self.cache.put(ino, epoch, Arc::new(r));
            Ok(true)
        })();
        match r {
            Ok(true) => self.entry_reply(parent, name, reply),
            Ok(false) => {
                self.stats.add(Op::LookupNegative);
                self.negative_entry_reply(reply)
            }
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.stats.add(Op::Forget);
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.stats.add(Op::Getattr);
        let _r = self.lock_r();
        match self.stat_node(ino.0) {
            Ok((st, r, _)) => reply.attr(&self.ttl_of(ino.0, &st), &self.attr_of(ino.0, &st, Some(&r))),
            Err(e) => {
                let h = fh.and_then(|f| self.handles.get(f.0)).or_else(|| self.handles.of_inode(ino.0));
                if let Some(f) = h {
                    if let Ok(st) = sys::fstat(&f.file) {
                        return reply.attr(&Duration::ZERO, &self.attr_of(ino.0, &st, None));
                    }
                }
                reply.error(errno_of(&e))
            }
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.stats.add(Op::Setattr);
        let ch = AttrChange { mode, uid, gid, size, atime, mtime };
        let kill = kills_suidgid(req.uid(), &ch);
        match self.setattr_inner(ino.0, ch, fh, kill) {
            Ok((st, r)) => reply.attr(&self.ttl_of(ino.0, &st), &self.attr_of(ino.0, &st, Some(&r))),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.stats.add(Op::Readlink);
        let _r = self.lock_r();
        match self.resolve(ino.0).and_then(|(p, r)| sys::readlink(&self.layers.real(r.top, &p))) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.stats.add(Op::Mknod);
        // A character device 0:0 is a whiteout: as kernel overlayfs, refuse to make one (it
        // would hide the name and stay behind in the upper layer).
        if format::is_whiteout_node(mode, u64::from(rdev)) {
            return reply.error(Errno::from_i32(libc::EPERM));
        }
        self.create_reply(owner(req), parent.0, name, mode, &mut |p| sys::mknod(p, mode, rdev as u64), reply);
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        self.stats.add(Op::Mkdir);
        let mode = (mode & 0o7777) | libc::S_IFDIR;
        self.create_reply(owner(req), parent.0, name, mode, &mut |p| sys::mkdir(p, 0o700), reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stats.add(Op::Unlink);
        self.remove_reply(parent.0, name, false, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stats.add(Op::Rmdir);
        self.remove_reply(parent.0, name, true, reply);
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        self.stats.add(Op::Symlink);
        let mode = libc::S_IFLNK | 0o777;
        self.create_reply(owner(req), parent.0, link_name, mode, &mut |p| sys::symlink(target, p), reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.stats.add(Op::Rename);
        let r = (|| -> Res<()> {
            let bits = flags.bits();
            let exchange = bits == libc::RENAME_EXCHANGE;
            if bits & !libc::RENAME_NOREPLACE != 0 && !exchange {
                return Err(err(libc::EINVAL));
            }
            let _g = self.lock_w()?;
            let sp = self.path_of_parent(parent.0)?;
            let dp = self.path_of_parent(newparent.0)?;
            if exchange {
                self.ops().exchange(&sp, name, &dp, newname)?;
                if parent.0 != newparent.0 || name != newname {
                    self.inodes.swap_nodes(parent.0, name, newparent.0, newname);
                }
            } else {
                self.ops().rename(&sp, name, &dp, newname, bits & libc::RENAME_NOREPLACE != 0)?;
                if parent.0 != newparent.0 || name != newname {
                    self.inodes.move_node(parent.0, name, newparent.0, newname);
                }
            }
            self.cache.changed();
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        self.stats.add(Op::Link);
        // A lower file's data is copied before the write lock is taken (see `do_open`).
        let mut staged = StagedCopy(self.stage_copy_up(ino.0));
        let r = (|| -> Res<WriteGuard<'_>> {
            let g = self.lock_w()?;
            let (spath, sr) = self.resolve(ino.0)?;
            if sr.is_dir() {
                return Err(err(libc::EPERM));
            }
            let ppath = self.path_of_parent(newparent.0)?;
            let usrc = self.ops().link(&spath, &sr, &mut staged, &ppath, newname)?;
            // Both names share the node (and so st_ino), like the kernel's overlay inode: the
            // node the source resolves as, which is not the kernel's if that one was split
            // off by a copy-up under a passthrough open (it has no names to share).
            let node = self.inodes.current(ino.0);
            if let Some(key) = overlay::dev_ino(&usrc) {
                self.inodes.hardlinks().insert(key, node);
            }
            self.inodes.add_alias(node, newparent.0, newname);
            Ok(g)
        })();
        match r {
            Ok(_g) => self.entry_reply(newparent.0, newname, reply),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.stats.add(Op::Open);
        match self.do_open(ino.0, flags.0) {
            Ok((Content::Remote { file, reader }, _, held)) => {
                // Not whole yet: every read through the daemon, nothing kept in the page cache.
                let fh = self.handles.add(Handle { ino: ino.0, file, _backing: None, reader: Some(reader) });
                drop(held);
                reply.opened(FileHandle(fh), FopenFlags::empty())
            }
            Ok((Content::Local(file), lower, held)) => {
                let backing = match self.handles.backing_for(ino.0, &file) {
                    Ok(b) => b,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        // The VFS retries an open that fails with ESTALE once, revalidating
                        // each name by LOOKUP: that finds the split-off node and opens it.
                        let names = self.inodes.split(ino.0);
                        drop(held);
                        self.forget_names(ino.0, &names);
                        return reply.error(Errno::ESTALE);
                    }
                    Err(e) => return reply.error(errno_of(&e)),
                };
                let fl = if lower { FopenFlags::FOPEN_KEEP_CACHE } else { FopenFlags::empty() };
                let fh =
                    self.handles.add(Handle { ino: ino.0, file, _backing: backing.clone(), reader: None });
                drop(held);
                match backing {
                    Some(b) => {
                        // SAFETY: `b` keeps the id open for as long as a handle uses it, and it
                        // was registered on this connection; `into_raw` leaves closing it to `b`.
                        let id = unsafe { reply.wrap_backing(b.id()) };
                        reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
                        let _ = id.into_raw();
                    }
                    None => reply.opened(FileHandle(fh), fl),
                }
            }
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.stats.add(Op::Read);
        let Some(h) = self.handles.get(fh.0) else { return reply.error(Errno::EBADF) };
        let f = &*h;
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            let at = offset + got as u64;
            let r = match &f.reader {
                Some(reader) => reader.read_at(&mut buf[got..], at),
                None => f.file.read_at(&mut buf[got..], at),
            };
            match r {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(errno_of(&e)),
            }
        }
        reply.data(&buf[..got]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.stats.add(Op::Write);
        let Some(h) = self.handles.get(fh.0) else { return reply.error(Errno::EBADF) };
        let f = &*h;
        let r = f.file.write_all_at(data, offset).and_then(|()| {
            // FUSE_HANDLE_KILLPRIV_V2: the writer may not keep set-user-ID (and the kernel
            // did not drop it: the daemon writes as root, which may).
            if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                let st = sys::fstat(&f.file)?;
                if let Some(m) = sys::without_suidgid(st.st_mode) {
                    f.file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(m))?;
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.stats.add(Op::Flush);
        // Nothing to do on close(): data goes straight to the real file (no write-back cache) and
        // POSIX locks live in the kernel. ENOSYS makes the kernel stop sending FLUSH, one round
        // trip per close() fewer.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.stats.add(Op::Release);
        self.handles.remove(fh.0);
        reply.ok();
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.stats.add(Op::Ioctl);
        // As kernel overlayfs: inode flags can be read (lsattr), other ioctls are not for
        // this file (ENOTTY; isatty() asks on every fopen).
        const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
        if cmd != FS_IOC_GETFLAGS {
            return reply.error(Errno::from_i32(libc::ENOTTY));
        }
        let Some(h) = self.handles.get(fh.0) else { return reply.error(Errno::EBADF) };
        let mut flags: libc::c_long = 0;
        // SAFETY: valid fd; the kernel writes an int into the long-sized buffer.
        if unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&h.file), FS_IOC_GETFLAGS as _, &mut flags) }
            != 0
        {
            return reply.error(errno_of(&io::Error::last_os_error()));
        }
        let bytes = flags.to_ne_bytes();
        reply.ioctl(0, &bytes[..(out_size as usize).min(bytes.len())]);
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        self.stats.add(Op::Fsync);
        let Some(h) = self.handles.get(fh.0) else { return reply.error(Errno::EBADF) };
        if !self.layers.durable {
            return reply.ok();
        }
        let f = &*h;
        let r = if datasync { f.file.sync_data() } else { f.file.sync_all() };
        match r {
            Ok(()) => reply.ok(),
            // Read-only lower files may refuse; nothing to flush there.
            Err(e) if sys::errno(&e) == libc::EBADF || sys::errno(&e) == libc::EROFS => reply.ok(),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.stats.add(Op::Opendir);
        // No per-open state: offsets are name cookies (see `listing::cookie`). Answering ENOSYS once makes
        // the kernel stop sending OPENDIR and RELEASEDIR (two round trips per directory walked)
        // and open every directory with FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR: warm listings come
        // from the kernel's cache, which it drops when the directory changes through the mount.
        reply.error(Errno::ENOSYS);
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, reply: ReplyDirectory) {
        self.stats.add(Op::Readdir);
        self.readdir_reply(ino.0, offset, reply);
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.stats.add(Op::Readdirplus);
        self.readdirplus_reply(ino.0, offset, reply);
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.stats.add(Op::Fsyncdir);
        let _r = self.lock_r();
        if let Ok((p, r)) = self.resolve(ino.0) {
            if r.top == 0 && self.layers.has_upper && self.layers.durable {
                if let Ok(f) = sys::at(&self.layers.real(0, &p), |p| File::open(p)) {
                    let _ = f.sync_all();
                }
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.stats.add(Op::Statfs);
        match sys::statvfs(&self.layers.roots[0]) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.stats.add(Op::Setxattr);
        if is_private_xattr(name) {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let r = (|| -> Res<()> {
            let _g = self.lock_w()?;
            let (p, r) = self.resolve(ino.0)?;
            self.ops().set_xattr(&p, &r, name, value, flags)
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.stats.add(Op::Getxattr);
        if is_private_xattr(name) {
            return reply.error(Errno::from_i32(libc::ENODATA));
        }
        let _r = self.lock_r();
        match self.resolve(ino.0).and_then(|(p, r)| sys::get_xattr(&self.layers.real(r.top, &p), name)) {
            Ok(v) => reply_sized(reply, size, &v),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.stats.add(Op::Listxattr);
        let _r = self.lock_r();
        match self.resolve(ino.0).and_then(|(p, r)| sys::list_xattrs(&self.layers.real(r.top, &p))) {
            Ok(names) => reply_sized(reply, size, &format::visible_xattr_list(&names)),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stats.add(Op::Removexattr);
        if is_private_xattr(name) {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let r = (|| -> Res<()> {
            let _g = self.lock_w()?;
            let (p, r) = self.resolve(ino.0)?;
            self.ops().remove_xattr(&p, &r, name)
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.stats.add(Op::Access);
        let _r = self.lock_r();
        match self.resolve(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.stats.add(Op::Create);
        self.create_file_reply(owner(req), parent.0, name, mode, flags, reply);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.stats.add(Op::Fallocate);
        let Some(h) = self.handles.get(fh.0) else { return reply.error(Errno::EBADF) };
        let f = &*h;
        use std::os::fd::AsRawFd;
        // SAFETY: valid fd.
        let r = unsafe { libc::fallocate(f.file.as_raw_fd(), mode, offset as i64, length as i64) };
        if r < 0 {
            reply.error(errno_of(&io::Error::last_os_error()))
        } else {
            reply.ok()
        }
    }
}
