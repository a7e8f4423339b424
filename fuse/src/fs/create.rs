//! CREATE answered: the new regular file made in the upper layer and opened in one request,
//! its entry and open handle in the reply.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::fs::OpenOptionsExt;

use fuser::{Errno, FileHandle, FopenFlags, Generation, ReplyCreate};

use super::{errno_of, Res, StrataFs, WriteGuard};
use crate::handles::Handle;
use crate::mutate::{Mutator, Owner};
use crate::sys::{self, err};

impl StrataFs {
    pub(super) fn create_file_reply(
        &self,
        owner: Owner,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        // The write lock is held until the new file's node is set up and replied.
        let r = (|| -> Res<(File, WriteGuard<'_>)> {
            let g = self.lock_w()?;
            let (ppath, pres) = self.resolve_dir(parent)?;
            let scope = self.entry_scope(parent, &pres, name)?;
            let mut file = None;
            let fmode = (mode & 0o7777) | libc::S_IFREG;
            Mutator::new(&self.layers, &scope).create_in(owner, &ppath, &pres, name, fmode, &mut |p| {
                let acc = flags & libc::O_ACCMODE;
                let f = sys::at(p, |p| {
                    fs::OpenOptions::new()
                        .read(acc != libc::O_WRONLY)
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(p)
                })?;
                file = Some(f);
                Ok(())
            })?;
            Ok((file.ok_or_else(|| err(libc::EIO))?, g))
        })();
        let (file, _g) = match r {
            Ok(f) => f,
            Err(e) => return reply.error(errno_of(&e)),
        };
        let ino = self.inodes.node_for(parent, name, 1);
        let (st, r) = match self.stat_node(ino) {
            Ok((st, r, _)) => (st, r),
            Err(e) => {
                self.inodes.forget(ino, 1);
                return reply.error(errno_of(&e));
            }
        };
        let attr = self.attr_of(ino, &st, Some(&r));
        let backing = match self.handles.backing_for(ino, &file) {
            Ok(b) => b,
            Err(e) => {
                self.inodes.forget(ino, 1);
                if e.raw_os_error() == Some(libc::EBUSY) {
                    // No notifications here: the kernel holds the parent locked during CREATE.
                    let _ = self.inodes.split(ino);
                    return reply.error(Errno::ESTALE);
                }
                return reply.error(errno_of(&e));
            }
        };
        let fh = self.handles.add(Handle { ino, file, _backing: backing.clone(), reader: None });
        match backing {
            Some(b) => {
                // SAFETY: as in `open`: `b` keeps the id open, `into_raw` leaves closing it to `b`.
                let id = unsafe { reply.wrap_backing(b.id()) };
                reply.created_passthrough(
                    &self.ttl,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                    &id,
                );
                let _ = id.into_raw();
            }
            None => reply.created(&self.ttl, &attr, Generation(0), FileHandle(fh), FopenFlags::empty()),
        }
    }
}
