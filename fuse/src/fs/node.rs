//! Node-level steps shared by the adapters: resolving a node (through the cache), its
//! attributes and time-outs, the shared node of a hardlinked file, entry replies, listings with
//! nodes, opening a node (copying it up first for writing) and node splits after a copy-up under
//! a passthrough open.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileHandle, FileType, Generation, INodeNo, ReplyEmpty, ReplyEntry, TimeOrNow};
use tracing::debug;

use super::{errno_of, AttrChange, Held, Res, StrataFs, WriteGuard};
use crate::cache::Scoped;
use crate::contents::Content;
use crate::listing::{Cookied, DirEntry};
use crate::mutate::{Mutator, Owner, SetAttr, StagedCopy};
use crate::overlay::{self, Resolved};
use crate::sys::{self, err, Stat};

pub(super) fn kind_of(fmt: u32) -> FileType {
    match fmt {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn systime(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::new(sec.unsigned_abs(), 0) + Duration::new(0, nsec as u32)
    }
}

pub(super) fn to_timespec(t: TimeOrNow) -> libc::timespec {
    match t {
        TimeOrNow::Now => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        TimeOrNow::SpecificTime(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => sys::timespec(d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = -(d.subsec_nanos() as i64);
                if nsec < 0 {
                    sec -= 1;
                    nsec += 1_000_000_000;
                }
                sys::timespec(sec, nsec)
            }
        },
    }
}

impl StrataFs {
    /// Merged path and make-up of an inode.
    pub(super) fn resolve(&self, ino: u64) -> Res<(PathBuf, Arc<Resolved>)> {
        self.cache.resolve(&self.inodes.chain(ino)?, &self.layers)
    }

    pub(super) fn resolve_dir(&self, ino: u64) -> Res<(PathBuf, Arc<Resolved>)> {
        let (p, r) = self.resolve(ino)?;
        if !r.is_dir() {
            return Err(err(libc::ENOTDIR));
        }
        Ok((p, r))
    }

    /// Whether the names of a file in layer `top` with several links share one node: in the
    /// upper layer, and in every layer of a read-only mount (nothing is ever copied up there, so
    /// the names cannot part ways; kernel overlayfs shares the inode then too).
    pub(super) fn shares_links(&self, top: usize) -> bool {
        !self.layers.has_upper || top == 0
    }

    /// For a file with several links (see [`StrataFs::shares_links`]): the node shared by all
    /// its names. `ino` is the node of `parent/name`, with `counted` lookups the caller added
    /// to it; when the name joins another node, those lookups move there.
    pub(super) fn canonical(
        &self,
        parent: u64,
        name: &OsStr,
        ino: u64,
        st: &Stat,
        r: &Resolved,
        counted: u64,
    ) -> u64 {
        if st.st_nlink <= 1 || sys::is_dir(st) || !self.shares_links(r.top) {
            return ino;
        }
        let key = (st.st_dev, st.st_ino);
        let mut h = self.inodes.hardlinks();
        let x = match h.get(&key).copied() {
            None => {
                h.insert(key, ino);
                return ino;
            }
            Some(x) => self.inodes.current(x),
        };
        if x == ino {
            h.insert(key, ino);
            return ino;
        }
        // Still a named node, and the same file under x's own name?
        let same = self.inodes.is_attached(x)
            && self.resolve(x).ok().and_then(|(p, xr)| {
                if self.shares_links(xr.top) {
                    overlay::dev_ino(&self.layers.real(xr.top, &p))
                } else {
                    None
                }
            }) == Some(key);
        if same {
            if let Some(x) = self.inodes.merge_name(x, parent, name, counted) {
                h.insert(key, x);
                drop(h);
                if counted > 0 {
                    self.inodes.forget(ino, counted);
                }
                return x;
            }
        }
        h.insert(key, ino);
        ino
    }

    pub(super) fn attr_of(&self, ino: u64, st: &Stat, r: Option<&Resolved>) -> FileAttr {
        let fmt = st.st_mode & libc::S_IFMT;
        let merged = r.map(|r| r.dirs.len() > 1).unwrap_or(false);
        FileAttr {
            ino: INodeNo(ino),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: systime(st.st_atime, st.st_atime_nsec),
            mtime: systime(st.st_mtime, st.st_mtime_nsec),
            ctime: systime(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: kind_of(fmt),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: if merged { 1 } else { st.st_nlink as u32 },
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
            flags: 0,
        }
    }

    /// Entry and attribute timeout of node `ino` with attributes `st`: zero for a file that has
    /// or had several links. Its link count changes through other names, and the kernel keeps
    /// its own count too: it drops it by one when it sees an unlink succeed, so an answer given
    /// between the daemon's unlink and that drop (a stat by another thread) makes it drop twice,
    /// to 0 with a name left, and link(2) from that name fails with ENOENT without asking the
    /// daemon. With no caching every path walk to such a name asks the daemon (a LOOKUP), which
    /// corrects the kernel's count first.
    pub(super) fn ttl_of(&self, ino: u64, st: &Stat) -> Duration {
        if sys::is_dir(st) {
            return self.ttl;
        }
        if self.inodes.uncached(ino, st.st_nlink > 1) {
            Duration::ZERO
        } else {
            self.ttl
        }
    }

    pub(super) fn stat_node(&self, ino: u64) -> Res<(Stat, Arc<Resolved>, PathBuf)> {
        let (path, r) = self.resolve(ino)?;
        let st = sys::lstat(&self.layers.real(r.top, &path))?;
        Ok((st, r, path))
    }

    /// The listing of directory `ino` for a reader at `offset` (see [`Listings::get`]), under
    /// the read lock.
    pub(super) fn listing_shared(&self, ino: u64, offset: u64) -> Res<Cookied> {
        let _r = self.lock_r();
        self.listings.get(ino, offset, || self.list_dir(ino))
    }

    /// A reader reached the end of the listing of `ino`.
    pub(super) fn listing_done(&self, ino: u64) {
        self.listings.done(ino);
    }

    /// unlink (`dir` false) and rmdir (`dir` true) of `parent/name`, answered.
    pub(super) fn remove_reply(&self, parent: u64, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let r = (|| -> Res<()> {
            let _g = self.lock_w()?;
            let (ppath, pres) = self.resolve_dir(parent)?;
            let scope = self.entry_scope(parent, &pres, name)?;
            Mutator::new(&self.layers, &scope).remove_in(&ppath, &pres, name, dir)?;
            self.inodes.detach(parent, name);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    // ---- copy-ups by node (callers hold the write lock) ----

    /// Copy `ino` up (with its parents) and return its merged path.
    pub(super) fn copy_up(&self, ino: u64, with_data: bool) -> Res<PathBuf> {
        let (path, r) = self.resolve(ino)?;
        self.ops().copy_up_path(&path, &r, with_data)?;
        Ok(path)
    }

    /// The data of node `ino`'s lower regular file, copied to the workdir (see [`StrataFs::do_open`]);
    /// `None` when it is not a lower regular file or the copy failed (the locked copy-up then
    /// does all the work and reports any error).
    pub(super) fn stage_copy_up(&self, ino: u64) -> Option<(PathBuf, (u64, u64))> {
        // The read lock for the resolution only, not for the copy.
        let (path, r) = {
            let _r = self.lock_r();
            self.resolve(ino).ok()?
        };
        if r.top == 0 || r.is_dir() {
            return None;
        }
        self.layers.stage_data(&path, &r).ok()
    }

    /// Copy-up of `ino` under the write lock with data staged by [`StrataFs::stage_copy_up`]: used
    /// only if the name still resolves to the very lower file that was staged.
    pub(super) fn copy_up_staged(&self, ino: u64, (tmp, src): (PathBuf, (u64, u64))) -> Res<PathBuf> {
        let (path, r) = match self.resolve(ino) {
            Ok(v) => v,
            Err(e) => {
                let _ = overlay::remove_tree(&tmp);
                return Err(e);
            }
        };
        self.ops().copy_up_staged(&path, &r, (tmp, src))?;
        Ok(path)
    }

    /// What a create or removal of entry `parent/name` may change in the resolution cache (see
    /// [`crate::cache::ResolveCache::scoped`]): that entry, and, unless the parent (resolved as
    /// `pres`) is in the upper layer already, the directories above it, which a copy-up brings
    /// there.
    pub(super) fn entry_scope(&self, parent: u64, pres: &Resolved, name: &OsStr) -> Res<Scoped<'_>> {
        let mut nodes = Vec::new();
        if pres.top != 0 {
            nodes.extend(self.inodes.chain(parent)?.into_iter().map(|(i, _)| i));
        }
        nodes.extend(self.inodes.child(parent, name));
        Ok(self.cache.scoped(nodes))
    }

    /// The path-level changes, invalidating this filesystem's caches.
    pub(super) fn ops(&self) -> Mutator<'_> {
        Mutator::new(&self.layers, &self.cache)
    }

    pub(super) fn path_of_parent(&self, parent: u64) -> Res<PathBuf> {
        let (p, _) = self.resolve_dir(parent)?;
        Ok(p)
    }

    /// Create `parent/name` (see [`Mutator::create`]) and reply with its entry, with the write
    /// lock held until the reply.
    pub(super) fn create_reply(
        &self,
        owner: Owner,
        parent: u64,
        name: &OsStr,
        mode: u32,
        make: &mut dyn FnMut(&Path) -> Res<()>,
        reply: ReplyEntry,
    ) {
        let r = (|| -> Res<WriteGuard<'_>> {
            let g = self.lock_w()?;
            let (ppath, pres) = self.resolve_dir(parent)?;
            let scope = self.entry_scope(parent, &pres, name)?;
            Mutator::new(&self.layers, &scope).create_in(owner, &ppath, &pres, name, mode, make)?;
            Ok(g)
        })();
        match r {
            Ok(_g) => self.entry_reply(parent, name, reply),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    /// Reply with the entry of `parent/name` (counting a lookup), with either side of
    /// [`StrataFs::rw`] held.
    pub(super) fn entry_reply(&self, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let ino = self.inodes.node_for(parent, name, 1);
        match self.stat_node(ino) {
            Ok((st, r, _)) => {
                let ino = self.canonical(parent, name, ino, &st, &r, 1);
                let attr = self.attr_of(ino, &st, Some(&r));
                let ttl = self.ttl_of(ino, &st);
                reply.entry(&ttl, &attr, Generation(0));
            }
            Err(e) => {
                // Drop the lookup we added.
                self.inodes.forget(ino, 1);
                reply.error(errno_of(&e))
            }
        }
    }

    /// Reply to a LOOKUP of a name that does not exist: an entry with node id 0, which the kernel
    /// keeps as a negative dentry for the entry timeout, so looking the name up again (a PATH
    /// search, an import path probe, a stat before a create) asks nothing. Safe because the
    /// names under the mount change only through it: this daemon is the only writer of its upper
    /// dir, lower layers never change, and the kernel turns the negative dentry positive itself
    /// when a create, link or rename through the mount makes the name.
    pub(super) fn negative_entry_reply(&self, reply: ReplyEntry) {
        let attr = FileAttr {
            ino: INodeNo(0),
            size: 0,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: FileType::RegularFile,
            perm: 0,
            nlink: 0,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 0,
            flags: 0,
        };
        reply.entry(&self.ttl, &attr, Generation(0));
    }

    pub(super) fn list_dir(&self, ino: u64) -> Res<Vec<(OsString, u32, u64)>> {
        let (path, r) = self.resolve_dir(ino)?;
        let ents: Vec<DirEntry> = self.layers.list(&r, &path)?;
        let parent = self.inodes.parent_of(ino);
        let mut out = Vec::with_capacity(ents.len() + 2);
        out.push((OsString::from("."), libc::S_IFDIR, ino));
        out.push((OsString::from(".."), libc::S_IFDIR, parent));
        for e in ents {
            let child = self.inodes.node_for(ino, &e.name, 0);
            out.push((e.name, e.fmt, child));
        }
        Ok(out)
    }

    /// Open node `ino` (copied up first for writing). Returns the file, whether it is a lower
    /// one, and the lock under which it was resolved and opened (see [`StrataFs::rw`]), for the
    /// caller to register the open under it too.
    pub(super) fn do_open(&self, ino: u64, flags: i32) -> Res<(Content, bool, Held<'_>)> {
        let acc = flags & libc::O_ACCMODE;
        let write = acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        let held = if write {
            let with_data = flags & libc::O_TRUNC == 0;
            // The data of a lower file is copied before taking the write lock (lower layers do
            // not change), so a long copy-up does not hold up every other change.
            let staged = if with_data && self.layers.has_upper { self.stage_copy_up(ino) } else { None };
            let g = self.lock_w()?;
            match staged {
                Some(st) => self.copy_up_staged(ino, st)?,
                None => self.copy_up(ino, with_data)?,
            };
            Held::W { _g: g }
        } else {
            Held::R { _g: self.lock_r() }
        };
        let (path, r) = self.resolve(ino)?;
        let real = self.layers.real(r.top, &path);
        let f = self.layers.open_real(&real, flags)?;
        let content = match self.layers.contents_of(r.top) {
            Some(c) if r.fmt == libc::S_IFREG => c.open(&path, f)?,
            _ => Content::Local(f),
        };
        if let Some(log) = &self.read_log {
            if !write && r.fmt == libc::S_IFREG && self.layers.is_lower(r.top) {
                log.record(r.top - usize::from(self.layers.has_upper), &path);
            }
        }
        Ok((content, self.layers.is_lower(r.top), held))
    }

    /// After [`Inodes::split`]: make the kernel drop its cached entries for `names` (so
    /// every name shows the new node at once, hardlinks included) and its attributes of the old
    /// node (still open: its `fstat` now shows the copied-up file). Must not run while the
    /// calling request holds the parent directory locked in the kernel (CREATE does): the
    /// kernel takes that lock for the notification.
    pub(super) fn forget_names(&self, old: u64, names: &[(u64, OsString)]) {
        let Some(n) = self.notifier.get() else { return };
        for (parent, name) in names {
            if let Err(e) = n.inval_entry(INodeNo(*parent), name) {
                debug!(parent, ?name, error = %e, "inval_entry");
            }
        }
        let _ = n.inval_inode(INodeNo(old), -1, 0);
    }

    pub(super) fn setattr_inner(
        &self,
        ino: u64,
        ch: AttrChange,
        fh: Option<FileHandle>,
        kill_suidgid: bool,
    ) -> Res<(Stat, Arc<Resolved>)> {
        let AttrChange { mode, uid, gid, size, atime, mtime } = ch;
        let with_data = size != Some(0);
        let mut staged = StagedCopy(if with_data { self.stage_copy_up(ino) } else { None });
        let _g = self.lock_w()?;
        let path = match staged.0.take() {
            Some(st) => self.copy_up_staged(ino, st)?,
            None => self.copy_up(ino, with_data)?,
        };
        let attrs = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(to_timespec),
            mtime: mtime.map(to_timespec),
            kill_suidgid,
        };
        let h = if size.is_some() { fh.and_then(|fh| self.handles.get(fh.0)) } else { None };
        self.ops().set_attrs(&path, &attrs, h.as_ref().map(|h| &h.file))?;
        let (st, r, _) = self.stat_node(ino)?;
        Ok((st, r))
    }
}
