//! Overlay semantics over the on-disk format shared with kernel overlayfs.
//!
//! Paths here are relative to the merged root. Layer 0 is the upper layer when there is one;
//! the following layers are the lower layers, top first.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::format;
use crate::sys::{self, err, Stat};

/// How a merged entry is made up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Layer holding the visible entry.
    pub top: usize,
    /// File type bits (`S_IFMT`) of the visible entry.
    pub fmt: u32,
    /// For directories: the layers merged into it, top first.
    pub dirs: Vec<usize>,
}

impl Resolved {
    pub fn is_dir(&self) -> bool {
        self.fmt == libc::S_IFDIR
    }
}

/// One merged directory entry.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: OsString,
    pub fmt: u32,
}

/// The layer stack.
#[derive(Debug)]
pub struct Layers {
    /// Layer roots: upper first (if any), then lower layers top first.
    pub roots: Vec<PathBuf>,
    pub has_upper: bool,
    /// Private scratch directory inside the workdir (same filesystem as upper).
    pub work: Option<PathBuf>,
    /// Copy-ups reach the disk before they become visible (off with the `volatile` option).
    pub durable: bool,
    tmp_seq: AtomicU64,
}

impl Layers {
    pub fn new(lowers: Vec<PathBuf>, upper: Option<PathBuf>, workdir: Option<PathBuf>) -> io::Result<Layers> {
        let has_upper = upper.is_some();
        let mut roots = Vec::new();
        roots.extend(upper);
        roots.extend(lowers);
        let work = match (&workdir, has_upper) {
            (Some(w), true) => {
                let p = w.join("strata-fuse");
                match fs::create_dir(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        // Leftovers of an earlier run: remove them.
                        for ent in fs::read_dir(&p)? {
                            let ent = ent?;
                            let _ = remove_tree(&ent.path());
                        }
                    }
                    Err(e) => return Err(e),
                }
                Some(p)
            }
            (None, true) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "upperdir needs workdir"))
            }
            _ => None,
        };
        Ok(Layers { roots, has_upper, work, durable: true, tmp_seq: AtomicU64::new(0) })
    }

    pub fn is_lower(&self, l: usize) -> bool {
        !(self.has_upper && l == 0)
    }

    pub fn real(&self, l: usize, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.roots[l].clone()
        } else {
            self.roots[l].join(rel)
        }
    }

    pub fn upper(&self, rel: &Path) -> io::Result<PathBuf> {
        if self.has_upper {
            Ok(self.real(0, rel))
        } else {
            Err(err(libc::EROFS))
        }
    }

    pub fn tmp_path(&self) -> io::Result<PathBuf> {
        let w = self.work.as_ref().ok_or_else(|| err(libc::EROFS))?;
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        Ok(w.join(format!("#{}-{n}", std::process::id())))
    }

    /// The root directory.
    pub fn resolve_root(&self) -> Resolved {
        let mut dirs = Vec::new();
        for l in 0..self.roots.len() {
            dirs.push(l);
            if format::is_opaque(&self.roots[l], self.is_lower(l)) {
                break;
            }
        }
        Resolved { top: 0, fmt: libc::S_IFDIR, dirs }
    }

    /// Look `name` up in a merged directory.
    pub fn lookup_in(&self, parent: &Resolved, ppath: &Path, name: &OsStr) -> io::Result<Option<Resolved>> {
        let mut top: Option<(usize, u32)> = None;
        let mut dirs = Vec::new();
        let oci_name = format::is_oci_name(name);
        for &l in &parent.dirs {
            let lower = self.is_lower(l);
            if lower && oci_name {
                continue;
            }
            let p = self.real(l, ppath).join(name);
            match sys::lstat(&p) {
                Ok(st) => {
                    if format::is_whiteout(&st) {
                        break;
                    }
                    let fmt = st.st_mode & libc::S_IFMT;
                    if top.is_none() {
                        top = Some((l, fmt));
                    } else if fmt != libc::S_IFDIR {
                        break;
                    }
                    if fmt != libc::S_IFDIR {
                        break;
                    }
                    dirs.push(l);
                    if format::is_opaque(&p, lower) {
                        break;
                    }
                }
                Err(e) if matches!(sys::errno(&e), libc::ENOENT | libc::ENOTDIR) => {
                    if lower && self.oci_whiteout(l, ppath, name) {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(top.map(|(top, fmt)| Resolved { top, fmt, dirs }))
    }

    fn oci_whiteout(&self, l: usize, ppath: &Path, name: &OsStr) -> bool {
        sys::exists(&self.real(l, ppath).join(format::oci_whiteout_name(name)))
    }

    /// Resolve a relative path from the root (uncached).
    pub fn resolve_rel(&self, rel: &Path) -> io::Result<Resolved> {
        let mut cur = self.resolve_root();
        let mut path = PathBuf::new();
        for c in rel.components() {
            if !cur.is_dir() {
                return Err(err(libc::ENOTDIR));
            }
            let name = c.as_os_str();
            cur = self.lookup_in(&cur, &path, name)?.ok_or_else(|| err(libc::ENOENT))?;
            path.push(name);
        }
        Ok(cur)
    }

    /// Whether a lower layer of the merged directory `parent` has a visible (non-whiteout) `name`.
    pub fn lower_positive(&self, parent: &Resolved, ppath: &Path, name: &OsStr) -> bool {
        let oci_name = format::is_oci_name(name);
        for &l in parent.dirs.iter().filter(|l| self.is_lower(**l)) {
            if oci_name {
                return false;
            }
            match sys::lstat(&self.real(l, ppath).join(name)) {
                Ok(st) => return !format::is_whiteout(&st),
                Err(_) => {
                    if self.oci_whiteout(l, ppath, name) {
                        return false;
                    }
                }
            }
        }
        false
    }

    /// Whether an OCI whiteout in a lower layer hides `name` (kernel format needs the new directory opaque).
    fn oci_hidden(&self, parent: &Resolved, ppath: &Path, name: &OsStr) -> bool {
        parent.dirs.iter().any(|&l| self.is_lower(l) && self.oci_whiteout(l, ppath, name))
    }

    /// The merged listing of a directory (without "." and "..").
    pub fn list(&self, dir: &Resolved, rel: &Path) -> io::Result<Vec<DirEntry>> {
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        for &l in &dir.dirs {
            let lower = self.is_lower(l);
            let base = self.real(l, rel);
            let mut hidden_below = Vec::new();
            let rd = match sys::at(&base, |p| fs::read_dir(p)) {
                Ok(rd) => rd,
                Err(e) if matches!(sys::errno(&e), libc::ENOENT | libc::ENOTDIR) => continue,
                Err(e) => return Err(e),
            };
            for ent in rd {
                let ent = ent?;
                let name = ent.file_name();
                if lower {
                    match format::oci_entry(&name) {
                        format::OciEntry::Plain => {}
                        format::OciEntry::Whiteout(n) => {
                            hidden_below.push(n.to_os_string());
                            continue;
                        }
                        format::OciEntry::Opaque => continue,
                    }
                }
                if seen.contains(&name) {
                    continue;
                }
                let ft = ent.file_type()?;
                use std::os::unix::fs::FileTypeExt;
                let fmt = if ft.is_dir() {
                    libc::S_IFDIR
                } else if ft.is_file() {
                    libc::S_IFREG
                } else if ft.is_symlink() {
                    libc::S_IFLNK
                } else if ft.is_char_device() {
                    match sys::lstat(&base.join(&name)) {
                        Ok(st) if format::is_whiteout(&st) => {
                            seen.insert(name);
                            continue;
                        }
                        _ => libc::S_IFCHR,
                    }
                } else if ft.is_block_device() {
                    libc::S_IFBLK
                } else if ft.is_fifo() {
                    libc::S_IFIFO
                } else {
                    libc::S_IFSOCK
                };
                seen.insert(name.clone());
                out.push(DirEntry { name, fmt });
            }
            seen.extend(hidden_below);
        }
        Ok(out)
    }

    pub fn has_lower(&self, r: &Resolved) -> bool {
        r.dirs.iter().any(|l| self.is_lower(*l)) || self.is_lower(r.top)
    }

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
        match self.new_file_from(&src, &tmp, true) {
            Ok(id) => Ok((tmp, id.unwrap_or_default())),
            Err(e) => {
                let _ = remove_tree(&tmp);
                Err(e)
            }
        }
    }

    /// Create regular file `tmp` (0600) and, with `with_data`, copy into it the data of regular
    /// file `src`, whose (dev, ino) it then returns.
    fn new_file_from(&self, src: &Path, tmp: &Path, with_data: bool) -> io::Result<Option<(u64, u64)>> {
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
        sys::copy_data(&inp, &out, st.st_size as u64, self.durable)?;
        Ok(Some((st.st_dev, st.st_ino)))
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
                    self.new_file_from(&src, &tmp, with_data && st.st_size > 0)?;
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

    /// Open a real file for I/O.
    pub fn open_real(&self, real: &Path, flags: i32) -> io::Result<File> {
        let keep = libc::O_ACCMODE | libc::O_SYNC | libc::O_DSYNC | libc::O_TRUNC | libc::O_NONBLOCK;
        let f = flags & keep;
        // Access mode 3 (O_WRONLY|O_RDWR: no I/O, needs read and write permission) is passed on
        // like the kernel does, hence open(2) rather than OpenOptions.
        sys::open(real, f | libc::O_NOFOLLOW | libc::O_CLOEXEC)
    }
}

/// Remove a file or a directory tree without following symlinks.
pub fn remove_tree(p: &Path) -> io::Result<()> {
    sys::at(p, |p| {
        let md = fs::symlink_metadata(p)?;
        if md.is_dir() {
            fs::remove_dir_all(p)
        } else {
            fs::remove_file(p)
        }
    })
}

/// Device and inode of a path, for hardlink tracking.
pub fn dev_ino(p: &Path) -> Option<(u64, u64)> {
    sys::at(p, |p| fs::symlink_metadata(p)).ok().map(|m| (m.dev(), m.ino()))
}
