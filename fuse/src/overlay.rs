//! The layer stack and the resolution of merged names over it: which layer holds a name's
//! visible entry and, for a directory, which layers it merges (whiteouts and opaque directories
//! end the merge; the format itself is in `format`). Listing is in `listing`, the changes of the
//! layers in `mutate`.
//!
//! Paths here are relative to the merged root. Layer 0 is the upper layer when there is one;
//! the following layers are the lower layers, top first.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::contents::LowerContents;
use crate::format;
use crate::sys::{self, err};

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
    /// The contents of each layer's regular files, by layer index (see [`crate::contents`]):
    /// empty, or `None` for a layer, when they are its real files.
    pub contents: Vec<Option<Arc<dyn LowerContents>>>,
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
        Ok(Layers { roots, has_upper, work, durable: true, contents: Vec::new(), tmp_seq: AtomicU64::new(0) })
    }

    /// The contents of layer `l`'s regular files, when they are not its real files.
    pub fn contents_of(&self, l: usize) -> Option<&Arc<dyn LowerContents>> {
        self.contents.get(l).and_then(Option::as_ref)
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
    pub(crate) fn oci_hidden(&self, parent: &Resolved, ppath: &Path, name: &OsStr) -> bool {
        parent.dirs.iter().any(|&l| self.is_lower(l) && self.oci_whiteout(l, ppath, name))
    }

    pub fn has_lower(&self, r: &Resolved) -> bool {
        r.dirs.iter().any(|l| self.is_lower(*l)) || self.is_lower(r.top)
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
