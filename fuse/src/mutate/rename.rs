//! rename(2) by path: plain, RENAME_NOREPLACE and RENAME_EXCHANGE, with the kernel's checks
//! and order; a directory with lower layers moves by being recreated at the destination.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use super::{Mutator, Res};
use crate::format;
use crate::overlay::{self, Resolved};
use crate::sys::{self, err};

/// See [`Mutator::rename_ends`].
struct RenameEnds {
    spres: Resolved,
    src: PathBuf,
    dst: PathBuf,
    r: Resolved,
    rt: Option<Resolved>,
}

impl Mutator<'_> {
    /// Both ends of a rename: the parents must be directories (else ENOTDIR); the source parent,
    /// the full paths, the source (ENOENT when missing) and the target if there is one.
    fn rename_ends(&self, sp: &Path, sname: &OsStr, dp: &Path, dname: &OsStr) -> Res<RenameEnds> {
        let spres = self.layers.resolve_rel(sp)?;
        let dpres = self.layers.resolve_rel(dp)?;
        if !spres.is_dir() || !dpres.is_dir() {
            return Err(err(libc::ENOTDIR));
        }
        let r = self.layers.lookup_in(&spres, sp, sname)?.ok_or_else(|| err(libc::ENOENT))?;
        let rt = self.layers.lookup_in(&dpres, dp, dname)?;
        Ok(RenameEnds { src: sp.join(sname), dst: dp.join(dname), spres, r, rt })
    }

    /// Rename by path (both parents are directories). Directories with lower layers are moved
    /// by recreating them at the destination (what `mv` does on EXDEV).
    pub(crate) fn rename(
        &self,
        sp: &Path,
        sname: &OsStr,
        dp: &Path,
        dname: &OsStr,
        noreplace: bool,
    ) -> Res<()> {
        let RenameEnds { spres, src, dst, r, rt, .. } = self.rename_ends(sp, sname, dp, dname)?;
        if src == dst {
            return Ok(());
        }
        if r.is_dir() && dst.starts_with(&src) {
            return Err(err(libc::EINVAL));
        }
        if let Some(rt) = &rt {
            if noreplace {
                return Err(err(libc::EEXIST));
            }
            if r.is_dir() && !rt.is_dir() {
                return Err(err(libc::ENOTDIR));
            }
            if !r.is_dir() && rt.is_dir() {
                return Err(err(libc::EISDIR));
            }
        }
        let dst_nonempty = match &rt {
            Some(rt) if rt.is_dir() => !self.layers.list(rt, &dst)?.is_empty(),
            _ => false,
        };
        // The kernel checks merged targets before any change, but lets the upper rename fail
        // for pure upper targets (after copy-up and opaque marking): same order here.
        let target_has_lower = rt.as_ref().map(|rt| self.layers.has_lower(rt)).unwrap_or(false);
        if dst_nonempty && (target_has_lower || (r.is_dir() && self.layers.has_lower(&r))) {
            return Err(err(libc::ENOTEMPTY));
        }
        if r.is_dir() && self.layers.has_lower(&r) {
            return self.move_dir_by_copy(&src, &r, dp, dname, rt.is_some());
        }
        let src_positive = self.layers.lower_positive(&spres, sp, sname);
        self.copy_up_path(&src, &r, true)?;
        self.layers.copy_up_dirs(dp)?;
        self.changed();
        let dpres = self.layers.resolve_rel(dp)?;
        // Like the kernel: a directory moved into a merged directory becomes opaque.
        let dst_parent_merged = dpres.dirs.iter().any(|l| self.layers.is_lower(*l));
        let usrc = self.layers.upper(&src)?;
        let udst = self.layers.upper(&dst)?;
        if r.is_dir() && dst_parent_merged && !self.layers.is_upper_opaque(&usrc) {
            self.layers.set_opaque(&usrc)?;
        }
        if dst_nonempty {
            self.changed();
            return Err(err(libc::ENOTEMPTY));
        }
        let dst_whiteout = matches!(sys::lstat(&udst), Ok(st) if format::is_whiteout(&st));
        if src_positive && dst_whiteout {
            // Like the kernel: switch the whiteout over to the old name.
            sys::rename_exchange(&usrc, &udst)?;
            self.changed();
            return Ok(());
        }
        match sys::lstat(&udst) {
            Ok(st) if sys::is_dir(&st) => self.layers.remove_upper(&dst)?,
            Ok(_) if r.is_dir() && dst_whiteout => sys::at(&udst, |p| fs::remove_file(p))?,
            _ => {}
        }
        sys::rename(&usrc, &udst)?;
        if src_positive {
            self.layers.make_whiteout(&src)?;
        }
        self.changed();
        Ok(())
    }

    /// RENAME_EXCHANGE of two existing entries: both are copied up and swapped in the upper layer.
    /// Like kernel overlayfs without redirect_dir, a directory with lower layers cannot move (EXDEV).
    pub(crate) fn exchange(&self, sp: &Path, sname: &OsStr, dp: &Path, dname: &OsStr) -> Res<()> {
        let RenameEnds { src, dst, r, rt, .. } = self.rename_ends(sp, sname, dp, dname)?;
        let rt = rt.ok_or_else(|| err(libc::ENOENT))?;
        if src == dst {
            return Ok(());
        }
        if (r.is_dir() && dst.starts_with(&src)) || (rt.is_dir() && src.starts_with(&dst)) {
            return Err(err(libc::EINVAL));
        }
        if (r.is_dir() && self.layers.has_lower(&r)) || (rt.is_dir() && self.layers.has_lower(&rt)) {
            return Err(err(libc::EXDEV));
        }
        self.copy_up_path(&src, &r, true)?;
        self.copy_up_path(&dst, &rt, true)?;
        self.changed();
        let usrc = self.layers.upper(&src)?;
        let udst = self.layers.upper(&dst)?;
        // Like the kernel: a directory moved into a merged directory becomes opaque.
        let merged = |p: &Path| -> Res<bool> {
            Ok(self.layers.resolve_rel(p)?.dirs.iter().any(|l| self.layers.is_lower(*l)))
        };
        if r.is_dir() && merged(dp)? && !self.layers.is_upper_opaque(&usrc) {
            self.layers.set_opaque(&usrc)?;
        }
        if rt.is_dir() && merged(sp)? && !self.layers.is_upper_opaque(&udst) {
            self.layers.set_opaque(&udst)?;
        }
        sys::rename_exchange(&usrc, &udst)?;
        self.changed();
        Ok(())
    }

    fn move_dir_by_copy(&self, src: &Path, r: &Resolved, dp: &Path, dname: &OsStr, replace: bool) -> Res<()> {
        let dst = dp.join(dname);
        let sp = src.parent().unwrap_or(Path::new(""));
        let sname = src.file_name().ok_or_else(|| err(libc::EINVAL))?;
        if replace {
            self.remove(dp, dname, true)?;
        }
        let sreal = self.layers.real(r.top, src);
        let st = sys::lstat(&sreal)?;
        // Create the destination like mkdir would, with the source's owner and mode.
        let upper_parent = {
            self.layers.copy_up_dirs(dp)?;
            self.changed();
            dp.to_path_buf()
        };
        let pres = self.layers.resolve_rel(&upper_parent)?;
        let (udst, over_wh, opaque) = self.layers.new_slot(&pres, dp, dname)?;
        let tmp = self.layers.tmp_path()?;
        let res = (|| -> Res<()> {
            sys::mkdir(&tmp, 0o700)?;
            sys::lchown(&tmp, st.st_uid, st.st_gid)?;
            sys::chmod(&tmp, st.st_mode)?;
            format::copy_xattrs(&sreal, &tmp, false)?;
            if opaque {
                self.layers.set_opaque(&tmp)?;
            }
            self.layers.install(&tmp, &udst, over_wh)
        })();
        if let Err(e) = res {
            let _ = overlay::remove_tree(&tmp);
            return Err(e);
        }
        self.changed();
        for ent in self.layers.list(r, src)? {
            self.rename(src, &ent.name, &dst, &ent.name, false)?;
        }
        self.remove(sp, sname, true)?;
        sys::utimes(
            &udst,
            Some(sys::timespec(st.st_atime, st.st_atime_nsec)),
            Some(sys::timespec(st.st_mtime, st.st_mtime_nsec)),
        )?;
        self.changed();
        Ok(())
    }
}
