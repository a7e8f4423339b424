//! One [`StrataFs`] behind several fuser sessions: the `/dev/fuse` session and each ring
//! queue's session hold a [`Shared`], which hands every request to the same filesystem.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use fuser::{
    AccessFlags, FileHandle, Filesystem, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::fs::StrataFs;

/// What the `/dev/fuse` session's FUSE_INIT settled, for starting the ring queues.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub fs: Arc<StrataFs>,
    /// The kernel's protocol version.
    pub abi: (u32, u32),
    /// FUSE_OVER_IO_URING was offered and accepted.
    pub uring: bool,
    /// The largest request or reply a queue's socket pair must carry.
    pub max_message: usize,
}

#[derive(Debug)]
enum Role {
    /// The `/dev/fuse` session: runs the filesystem's INIT, accepts FUSE_OVER_IO_URING when
    /// wanted, and hands the filesystem on.
    Device { want_uring: bool, max_message: usize, out: Arc<OnceLock<Negotiated>> },
    /// A ring queue's session: its INIT is the transport's own, the filesystem is set up.
    Queue,
}

/// A fuser filesystem that forwards to a shared [`StrataFs`].
#[derive(Debug)]
pub struct Shared {
    fs: Arc<StrataFs>,
    role: Role,
    inited: AtomicBool,
}

impl Shared {
    /// For the `/dev/fuse` session; `out` is filled by its INIT. `max_message` bounds what a
    /// queue's socket pair carries: the ring's max_write and max_readahead are kept within it.
    pub fn device(
        fs: StrataFs,
        want_uring: bool,
        max_message: usize,
        out: Arc<OnceLock<Negotiated>>,
    ) -> Shared {
        Shared {
            fs: Arc::new(fs),
            role: Role::Device { want_uring, max_message, out },
            inited: AtomicBool::new(false),
        }
    }

    /// For a ring queue's session.
    pub(crate) fn queue(fs: Arc<StrataFs>) -> Shared {
        Shared { fs, role: Role::Queue, inited: AtomicBool::new(false) }
    }
}

macro_rules! forward {
    ($(fn $name:ident(&self $(, $arg:ident : $ty:ty)*);)*) => {
        $(fn $name(&self $(, $arg: $ty)*) {
            Filesystem::$name(&*self.fs $(, $arg)*)
        })*
    };
}

impl Filesystem for Shared {
    fn init(&mut self, req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let Role::Device { want_uring, max_message, out } = &self.role else {
            return Ok(());
        };
        if self.inited.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        let fs = Arc::get_mut(&mut self.fs)
            .ok_or_else(|| io::Error::other("the filesystem is shared before its INIT"))?;
        fs.init(req, config)?;
        let uring = *want_uring && config.add_capabilities(InitFlags::FUSE_OVER_IO_URING).is_ok();
        if uring {
            // A request (or reply) must fit one packet of the queue's socket pair.
            let fit = (max_message.saturating_sub(4096) / 4096 * 4096).max(4096) as u32;
            if fit < 1 << 20 {
                let _ = config.set_max_write(fit);
                let _ = config.set_max_readahead(fit);
            }
        }
        let v = config.kernel_abi();
        let _ =
            out.set(Negotiated { fs: self.fs.clone(), abi: (v.0, v.1), uring, max_message: *max_message });
        Ok(())
    }

    forward! {
        fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry);
        fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64);
        fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr);
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
            ctime: Option<SystemTime>,
            fh: Option<FileHandle>,
            crtime: Option<SystemTime>,
            chgtime: Option<SystemTime>,
            bkuptime: Option<SystemTime>,
            flags: Option<fuser::BsdFileFlags>,
            reply: ReplyAttr
        );
        fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData);
        fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry);
        fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry);
        fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty);
        fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty);
        fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry);
        fn rename(
            &self,
            req: &Request,
            parent: INodeNo,
            name: &OsStr,
            newparent: INodeNo,
            newname: &OsStr,
            flags: RenameFlags,
            reply: ReplyEmpty
        );
        fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry);
        fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen);
        fn read(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: u64,
            size: u32,
            flags: OpenFlags,
            lock_owner: Option<LockOwner>,
            reply: ReplyData
        );
        fn write(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: u64,
            data: &[u8],
            write_flags: WriteFlags,
            flags: OpenFlags,
            lock_owner: Option<LockOwner>,
            reply: ReplyWrite
        );
        fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty);
        fn release(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            flags: OpenFlags,
            lock_owner: Option<LockOwner>,
            flush: bool,
            reply: ReplyEmpty
        );
        fn ioctl(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            flags: fuser::IoctlFlags,
            cmd: u32,
            in_data: &[u8],
            out_size: u32,
            reply: ReplyIoctl
        );
        fn fsync(&self, req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty);
        fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen);
        fn readdir(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectory);
        fn readdirplus(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectoryPlus);
        fn fsyncdir(&self, req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty);
        fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs);
        fn setxattr(
            &self,
            req: &Request,
            ino: INodeNo,
            name: &OsStr,
            value: &[u8],
            flags: i32,
            position: u32,
            reply: ReplyEmpty
        );
        fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr);
        fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr);
        fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty);
        fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty);
        fn create(
            &self,
            req: &Request,
            parent: INodeNo,
            name: &OsStr,
            mode: u32,
            umask: u32,
            flags: i32,
            reply: ReplyCreate
        );
        fn fallocate(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: u64,
            length: u64,
            mode: i32,
            reply: ReplyEmpty
        );
    }
}
