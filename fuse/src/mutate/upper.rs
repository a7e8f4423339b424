//! Upper-layer primitives of the path-level changes: copy-up (atomic: made in the workdir and
//! renamed into place), whiteouts, the slot of a new entry and its installation.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::contents::{self, Content};
use crate::format;
use crate::overlay::{remove_tree, Layers, Resolved};
use crate::sys::{self, err, Stat};

impl Layers {
    fn copy_times(st: &Stat, dst: &Path) -> io::Result<()> {
        sys::utimes(
            dst,
            Some(sys::timespec(st.st_atime, st.st_atime_nsec)),
            Some(sys::timespec(st.st_mtime, st.st_mtime_nsec)),
        )
    }

    /// Make sure every directory of `rel` (inclusive) exists in the upper layer.
    pub fn copy_up_dirs(&self, rel: &Path) -> io::Result<()> {
        let mut path = PathBuf::new();
        let mut cur = self.resolve_root();
        for c in rel.components() {
            let name = c.as_os_str();
            let next = self.lookup_in(&cur, &path, name)?.ok_or_else(|| err(libc::ENOENT))?;
            path.push(name);
            if !next.is_dir() {
                return Err(err(libc::ENOTDIR));
            }
            if next.top != 0 || !self.has_upper {
                self.copy_up_entry(&path, &next, true)?;
                cur = self
                    .lookup_in(&cur, path.parent().unwrap_or(Path::new("")), name)?
                    .ok_or_else(|| err(libc::ENOENT))?;
            } else {
                cur = next;
            }
        }
        Ok(())
    }

    /// Copy up `rel` (whose parents are already in upper) from its top lower layer.
    /// Atomic: the copy is made in the workdir and renamed into place.
    pub fn copy_up_entry(&self, rel: &Path, r: &Resolved, with_data: bool) -> io::Result<()> {
        self.copy_up_entry_with(rel, r, with_data, None)
    }

    /// Copy the data of lower regular file `rel` (resolved as `r`) to a new file in the workdir,
    /// for [`Layers::copy_up_entry_with`]: the slow part of a copy-up, which needs no lock
    /// (lower layers do not change). Returns the file and the source's (dev, ino).
    pub fn stage_data(&self, rel: &Path, r: &Resolved) -> io::Result<(PathBuf, (u64, u64))> {
        let src = self.real(r.top, rel);
        // Never open anything but a regular file (a FIFO would block, a device would open).
        if sys::lstat(&src)?.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let tmp = self.tmp_path()?;
        match self.new_file_from((r.top, rel), &src, &tmp, true) {
            Ok(id) => Ok((tmp, id.unwrap_or_default())),
            Err(e) => {
                let _ = remove_tree(&tmp);
                Err(e)
            }
        }
    }

    /// Create regular file `tmp` (0600) and, with `with_data`, copy into it the data of regular
    /// file `src` (`rel` of layer `l`: a remote layer's is read through its reader), whose
    /// (dev, ino) it then returns.
    fn new_file_from(
        &self,
        (l, rel): (usize, &Path),
        src: &Path,
        tmp: &Path,
        with_data: bool,
    ) -> io::Result<Option<(u64, u64)>> {
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(tmp)?;
        if !with_data {
            return Ok(None);
        }
        let inp = sys::at(src, |p| {
            OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(p)
        })?;
        let st = sys::fstat(&inp)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let id = (st.st_dev, st.st_ino);
        let inp = match self.contents_of(l) {
            Some(c) => c.open(rel, inp)?,
            None => Content::Local(inp),
        };
        match inp {
            Content::Local(inp) => sys::copy_data(&inp, &out, st.st_size as u64, self.durable)?,
            Content::Remote { reader, .. } => {
                contents::copy_from_reader(&*reader, &out, st.st_size as u64, self.durable)?
            }
        }
        Ok(Some(id))
    }

    /// [`Layers::copy_up_entry`], taking the data of a regular file from `staged` (a file from
    /// [`Layers::stage_data`] of this same source) instead of copying it now.
    pub fn copy_up_entry_with(
        &self,
        rel: &Path,
        r: &Resolved,
        with_data: bool,
        staged: Option<PathBuf>,
    ) -> io::Result<()> {
        let dst = self.upper(rel)?;
        let src = self.real(r.top, rel);
        let st = sys::lstat(&src)?;
        let fmt = st.st_mode & libc::S_IFMT;
        let (tmp, staged) = match staged {
            Some(t) if fmt == libc::S_IFREG => (t, true),
            Some(t) => {
                let _ = remove_tree(&t);
                (self.tmp_path()?, false)
            }
            None => (self.tmp_path()?, false),
        };
        let res = (|| -> io::Result<()> {
            match fmt {
                libc::S_IFDIR => {
                    sys::mkdir(&tmp, 0o700)?;
                }
                libc::S_IFREG if staged => {}
                libc::S_IFREG => {
                    self.new_file_from((r.top, rel), &src, &tmp, with_data && st.st_size > 0)?;
                }
                libc::S_IFLNK => {
                    let target = sys::readlink(&src)?;
                    sys::symlink(Path::new(&target), &tmp)?;
                }
                _ => sys::mknod(&tmp, st.st_mode, st.st_rdev)?,
            }
            sys::lchown(&tmp, st.st_uid, st.st_gid)?;
            if fmt != libc::S_IFLNK {
                sys::chmod(&tmp, st.st_mode)?;
            }
            format::copy_xattrs(&src, &tmp, true)?;
            Self::copy_times(&st, &tmp)?;
            sys::rename(&tmp, &dst)
        })();
        if res.is_err() {
            let _ = remove_tree(&tmp);
        }
        res
    }

    /// Create a whiteout at upper `rel`, replacing whatever non-directory is there.
    pub fn make_whiteout(&self, rel: &Path) -> io::Result<()> {
        let dst = self.upper(rel)?;
        let tmp = self.tmp_path()?;
        format::mknod_whiteout(&tmp)?;
        match sys::lstat(&dst) {
            Ok(st) if sys::is_dir(&st) => {
                // Swap the directory out, then drop it.
                sys::rename_exchange(&tmp, &dst)?;
                remove_tree(&tmp)
            }
            _ => sys::rename(&tmp, &dst),
        }
    }

    /// Remove whatever the upper layer has at `rel` (a directory recursively).
    pub fn remove_upper(&self, rel: &Path) -> io::Result<()> {
        let dst = self.upper(rel)?;
        match sys::lstat(&dst) {
            Ok(st) if sys::is_dir(&st) => {
                let tmp = self.tmp_path()?;
                sys::rename(&dst, &tmp)?;
                remove_tree(&tmp)
            }
            Ok(_) => sys::at(&dst, |p| fs::remove_file(p)),
            Err(e) if sys::errno(&e) == libc::ENOENT => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Prepare the upper slot for a new entry `name` in merged dir `parent` (already in upper).
    /// Returns (upper path, created over a whiteout, directory must be opaque).
    pub fn new_slot(
        &self,
        parent: &Resolved,
        ppath: &Path,
        name: &OsStr,
    ) -> io::Result<(PathBuf, bool, bool)> {
        let rel = ppath.join(name);
        let dst = self.upper(&rel)?;
        let over_wh = match sys::lstat(&dst) {
            Ok(st) if format::is_whiteout(&st) => true,
            Ok(_) => return Err(err(libc::EEXIST)),
            Err(_) => false,
        };
        let opaque = over_wh || self.oci_hidden(parent, ppath, name);
        Ok((dst, over_wh, opaque))
    }

    /// Move a prepared entry `tmp` into upper slot `dst`, replacing a whiteout there.
    pub fn install(&self, tmp: &Path, dst: &Path, over_wh: bool) -> io::Result<()> {
        if over_wh {
            sys::rename_exchange(tmp, dst)?;
            fs::remove_file(tmp)
        } else {
            sys::rename(tmp, dst)
        }
    }

    pub fn set_opaque(&self, real: &Path) -> io::Result<()> {
        format::set_opaque(real)
    }

    pub fn is_upper_opaque(&self, real: &Path) -> bool {
        format::is_opaque(real, false)
    }
}
