//! Path-level changes of the layer stack: copy-up, create, unlink and rmdir with whiteouts,
//! rename, setattr, xattrs and links. Paths are merged paths relative to the root, resolved
//! afresh from the layers (uncached); nothing here knows inodes, handles or FUSE, so every change
//! is a plain call over the layer directories (see the unit tests). Callers serialise changes
//! (strata-fuse holds its write lock over each) and are told of every on-disk step through
//! [`Invalidate`], so that no cached resolution outlives it.

mod rename;
#[cfg(test)]
mod tests;
mod upper;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::format;
use crate::overlay::{self, Layers, Resolved};
use crate::sys::{self, err};

type Res<T> = Result<T, io::Error>;

/// Told after each change of the layers on disk.
pub(crate) trait Invalidate {
    fn changed(&self);
}

/// Nothing to invalidate.
impl Invalidate for () {
    fn changed(&self) {}
}

/// Owner of a new entry: the caller's uid and gid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The attributes a setattr changes (`None`: unchanged).
#[derive(Clone, Copy, Default)]
pub(crate) struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<libc::timespec>,
    pub mtime: Option<libc::timespec>,
    /// Drop set-user-ID, and set-group-ID when the group may execute, from a regular file
    /// (after the other changes): what the kernel leaves to the daemon once it handles
    /// FUSE_HANDLE_KILLPRIV_V2.
    pub kill_suidgid: bool,
}

/// Data staged for a copy-up by [`Layers::stage_data`] (the file in the workdir and the
/// source's (dev, ino)): removed unless taken.
pub(crate) struct StagedCopy(pub(crate) Option<(PathBuf, (u64, u64))>);

impl Drop for StagedCopy {
    fn drop(&mut self) {
        if let Some((p, _)) = self.0.take() {
            let _ = overlay::remove_tree(&p);
        }
    }
}

/// The path-level changes over a layer stack.
pub(crate) struct Mutator<'a> {
    pub(crate) layers: &'a Layers,
    on_change: &'a dyn Invalidate,
}

impl<'a> Mutator<'a> {
    pub(crate) fn new(layers: &'a Layers, on_change: &'a dyn Invalidate) -> Mutator<'a> {
        Mutator { layers, on_change }
    }

    fn changed(&self) {
        self.on_change.changed();
    }

    /// Whether directory `pres` is in the upper layer (and so are its parents: an upper
    /// directory never exists without them).
    fn in_upper(&self, pres: &Resolved) -> bool {
        self.layers.has_upper && pres.top == 0
    }

    /// Copy-up of `path` (resolved as `r`) with data staged by [`Layers::stage_data`]: used only
    /// if the name still resolves to the very lower file that was staged (`src`, its (dev, ino)),
    /// else a copy-up from scratch. The staged file is used or removed.
    pub(crate) fn copy_up_staged(
        &self,
        path: &Path,
        r: &Resolved,
        (tmp, src): (PathBuf, (u64, u64)),
    ) -> Res<()> {
        let same = r.top != 0 && overlay::dev_ino(&self.layers.real(r.top, path)) == Some(src);
        if !same {
            let _ = overlay::remove_tree(&tmp);
            return self.copy_up_path(path, r, true);
        }
        let parent = path.parent().unwrap_or(Path::new(""));
        if let Err(e) = self.layers.copy_up_dirs(parent) {
            let _ = overlay::remove_tree(&tmp);
            return Err(e);
        }
        self.layers.copy_up_entry_with(path, r, true, Some(tmp))?;
        self.changed();
        Ok(())
    }

    /// Copy `path` (resolved as `r`) up with its parents, unless it is in the upper layer.
    pub(crate) fn copy_up_path(&self, path: &Path, r: &Resolved, with_data: bool) -> Res<()> {
        if r.top == 0 {
            return Ok(());
        }
        let parent = path.parent().unwrap_or(Path::new(""));
        self.layers.copy_up_dirs(parent)?;
        self.layers.copy_up_entry(path, r, with_data)?;
        self.changed();
        Ok(())
    }

    /// Create a new entry `ppath/name` of `mode` (type and permission bits) in upper with the
    /// callback making it at the path it is given (a temporary one when the entry replaces a
    /// whiteout), owned by `owner` (the group is the parent's when it is set-group-ID), opaque
    /// when it is a directory over a whiteout. Returns the upper path.
    #[cfg(test)]
    pub(crate) fn create(
        &self,
        owner: Owner,
        ppath: &Path,
        name: &OsStr,
        mode: u32,
        make: &mut dyn FnMut(&Path) -> Res<()>,
    ) -> Res<PathBuf> {
        let pres = self.layers.resolve_rel(ppath)?;
        self.create_in(owner, ppath, &pres, name, mode, make)
    }

    /// [`Mutator::create`] with the parent's current resolution `pres` (the caller's, from a
    /// cache it keeps up to date): a parent already in the upper layer is neither walked to
    /// nor resolved again, which is what makes a create in a directory one lookup.
    pub(crate) fn create_in(
        &self,
        owner: Owner,
        ppath: &Path,
        pres: &Resolved,
        name: &OsStr,
        mode: u32,
        make: &mut dyn FnMut(&Path) -> Res<()>,
    ) -> Res<PathBuf> {
        if !pres.is_dir() {
            return Err(err(libc::ENOTDIR));
        }
        if self.layers.lookup_in(pres, ppath, name)?.is_some() {
            return Err(err(libc::EEXIST));
        }
        if name.len() > 255 {
            return Err(err(libc::ENAMETOOLONG));
        }
        let copied;
        let pres = if self.in_upper(pres) {
            pres
        } else {
            self.layers.copy_up_dirs(ppath)?;
            self.changed();
            copied = self.layers.resolve_rel(ppath)?;
            &copied
        };
        let (dst, over_wh, opaque) = self.layers.new_slot(pres, ppath, name)?;
        let pst = sys::lstat(&self.layers.upper(ppath)?)?;
        let fmt = mode & libc::S_IFMT;
        let (gid, mut perm) = if pst.st_mode & libc::S_ISGID != 0 {
            (pst.st_gid, if fmt == libc::S_IFDIR { mode | libc::S_ISGID } else { mode })
        } else {
            (owner.gid, mode)
        };
        perm &= 0o7777;
        let target = if over_wh { self.layers.tmp_path()? } else { dst.clone() };
        let res = (|| -> Res<()> {
            make(&target)?;
            sys::lchown(&target, owner.uid, gid)?;
            if fmt != libc::S_IFLNK {
                sys::chmod(&target, perm)?;
            }
            if opaque && fmt == libc::S_IFDIR {
                self.layers.set_opaque(&target)?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            let _ = overlay::remove_tree(&target);
            return Err(e);
        }
        if over_wh {
            if let Err(e) = self.layers.install(&target, &dst, true) {
                let _ = overlay::remove_tree(&target);
                return Err(e);
            }
        }
        self.changed();
        Ok(dst)
    }

    /// Remove `ppath/name` (unlink, or rmdir with `dir`): a whiteout in its place when a lower
    /// layer has the name, else the upper entry is removed.
    pub(crate) fn remove(&self, ppath: &Path, name: &OsStr, dir: bool) -> Res<()> {
        let pres = self.layers.resolve_rel(ppath)?;
        self.remove_in(ppath, &pres, name, dir)
    }

    /// [`Mutator::remove`] with the parent's current resolution `pres` (see
    /// [`Mutator::create_in`]).
    pub(crate) fn remove_in(&self, ppath: &Path, pres: &Resolved, name: &OsStr, dir: bool) -> Res<()> {
        let rel = ppath.join(name);
        let r = self.layers.lookup_in(pres, ppath, name)?.ok_or_else(|| err(libc::ENOENT))?;
        if dir && !r.is_dir() {
            return Err(err(libc::ENOTDIR));
        }
        if !dir && r.is_dir() {
            return Err(err(libc::EISDIR));
        }
        if dir && !self.layers.list(&r, &rel)?.is_empty() {
            return Err(err(libc::ENOTEMPTY));
        }
        let positive = self.layers.lower_positive(pres, ppath, name);
        if !self.in_upper(pres) {
            self.layers.copy_up_dirs(ppath)?;
            self.changed();
        }
        if positive {
            self.layers.make_whiteout(&rel)?;
        } else {
            self.layers.remove_upper(&rel)?;
        }
        self.changed();
        Ok(())
    }

    /// Link the file at `spath` (resolved as `sr`) as new entry `ppath/name`, copying it up
    /// first (with the data in `staged` when that is the same lower file). Returns the upper path
    /// of the file, which both names now share.
    pub(crate) fn link(
        &self,
        spath: &Path,
        sr: &Resolved,
        staged: &mut StagedCopy,
        ppath: &Path,
        name: &OsStr,
    ) -> Res<PathBuf> {
        if sr.is_dir() {
            return Err(err(libc::EPERM));
        }
        let pres = self.layers.resolve_rel(ppath)?;
        if self.layers.lookup_in(&pres, ppath, name)?.is_some() {
            return Err(err(libc::EEXIST));
        }
        match staged.0.take() {
            Some(st) => self.copy_up_staged(spath, sr, st)?,
            None => self.copy_up_path(spath, sr, true)?,
        }
        let usrc = self.layers.upper(spath)?;
        self.add_link(ppath, name, &usrc)?;
        Ok(usrc)
    }

    /// Link upper file `usrc` as new entry `ppath/name` (copying `ppath` up first).
    pub(crate) fn add_link(&self, ppath: &Path, name: &OsStr, usrc: &Path) -> Res<()> {
        self.layers.copy_up_dirs(ppath)?;
        self.changed();
        let pres = self.layers.resolve_rel(ppath)?;
        let (dst, over_wh, _) = self.layers.new_slot(&pres, ppath, name)?;
        if over_wh {
            let tmp = self.layers.tmp_path()?;
            sys::link(usrc, &tmp)?;
            if let Err(e) = self.layers.install(&tmp, &dst, true) {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        } else {
            sys::link(usrc, &dst)?;
        }
        self.changed();
        Ok(())
    }

    /// Change the attributes of upper entry `path` (copied up already); a size through `file`
    /// when given (an open file of it), else by path.
    pub(crate) fn set_attrs(&self, path: &Path, a: &SetAttr, file: Option<&File>) -> Res<()> {
        let up = self.layers.upper(path)?;
        if a.uid.is_some() || a.gid.is_some() {
            sys::lstat(&up)?;
            // -1 keeps a value unchanged.
            let u = a.uid.unwrap_or(u32::MAX);
            let g = a.gid.unwrap_or(u32::MAX);
            sys::lchown(&up, u, g)
                .or_else(|e| if u == u32::MAX && g == u32::MAX { Ok(()) } else { Err(e) })?;
        }
        if let Some(m) = a.mode {
            sys::chmod(&up, m)?;
        }
        if let Some(s) = a.size {
            match file.map(|f| f.set_len(s)) {
                Some(r) => r.or_else(|_| sys::truncate(&up, s))?,
                None => sys::truncate(&up, s)?,
            }
        }
        if a.atime.is_some() || a.mtime.is_some() {
            sys::utimes(&up, a.atime, a.mtime)?;
        }
        if a.kill_suidgid {
            let st = sys::lstat(&up)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFREG {
                if let Some(m) = sys::without_suidgid(st.st_mode) {
                    sys::chmod(&up, m)?;
                }
            }
        }
        self.changed();
        Ok(())
    }

    /// Set xattr `name` of `path` (resolved as `r`), copying it up first. Private names are
    /// refused (EOPNOTSUPP).
    pub(crate) fn set_xattr(
        &self,
        path: &Path,
        r: &Resolved,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> Res<()> {
        if format::is_private_xattr(name) {
            return Err(err(libc::EOPNOTSUPP));
        }
        self.copy_up_path(path, r, true)?;
        let res = sys::set_xattr(&self.layers.upper(path)?, name, value, flags);
        self.changed();
        res
    }

    /// Remove xattr `name` of `path` (resolved as `r`): like the kernel, no copy-up when the
    /// attribute is not there (ENODATA). Private names are refused (EOPNOTSUPP).
    pub(crate) fn remove_xattr(&self, path: &Path, r: &Resolved, name: &OsStr) -> Res<()> {
        if format::is_private_xattr(name) {
            return Err(err(libc::EOPNOTSUPP));
        }
        sys::get_xattr(&self.layers.real(r.top, path), name)?;
        self.copy_up_path(path, r, true)?;
        let res = sys::remove_xattr(&self.layers.upper(path)?, name);
        self.changed();
        res
    }
}
