//! Directory listing: the merged listing of a directory over the layers it is made of
//! ([`Resolved::dirs`], top first, ending at the first opaque one): an upper name hides the same
//! name below, a whiteout (a character device 0:0, or an OCI `.wh.NAME` in a lower layer) hides
//! it and is not listed itself. And the listings being read through readdir, whose offsets are
//! name cookies.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::format;
use crate::overlay::{Layers, Resolved};
use crate::sys;

/// One merged directory entry.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: OsString,
    pub fmt: u32,
}

impl Layers {
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
}

/// A listing ordered by directory offset cookie: (cookie, name, file type bits, node).
pub(crate) type Cookied = Arc<Vec<(u64, OsString, u32, u64)>>;

/// The readdir offset of a name: a 63-bit hash of it (FNV-1a), as ext4 does with htree hashes.
/// An offset names a position in the *name space*, not in one snapshot, so a reader resuming at
/// any offset with any later listing sees every entry that stayed in the directory exactly once,
/// whatever changed and whoever else listed it meanwhile. 1 and 2 are "." and "..".
fn cookie(name: &OsStr) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h >> 1).max(3)
}

/// Listings of directories being read, by directory node: built when a reader starts (offset 0),
/// reused while it continues, dropped when it reaches the end. Directories have no per-open
/// state (OPENDIR is not used), so this is all there is of a directory handle.
#[derive(Debug, Default)]
pub(crate) struct Listings(Mutex<HashMap<u64, Cookied>>);

impl Listings {
    /// The listing of directory `ino` in cookie order for a reader at `offset`: built afresh
    /// from `entries` ((name, file type bits, node), "." and ".." included) at offset 0, reused
    /// while a reader continues.
    pub(crate) fn get(
        &self,
        ino: u64,
        offset: u64,
        entries: impl FnOnce() -> io::Result<Vec<(OsString, u32, u64)>>,
    ) -> io::Result<Cookied> {
        if offset != 0 {
            if let Some(l) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&ino) {
                return Ok(l.clone());
            }
        }
        let mut v: Vec<(u64, OsString, u32, u64)> = entries()?
            .into_iter()
            .map(|(name, fmt, child)| {
                let c = match name.as_encoded_bytes() {
                    b"." => 1,
                    b".." => 2,
                    _ => cookie(&name),
                };
                (c, name, fmt, child)
            })
            .collect();
        v.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let l = Arc::new(v);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(ino, l.clone());
        Ok(l)
    }

    /// A reader reached the end of the listing of `ino`.
    pub(crate) fn done(&self, ino: u64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&ino);
    }
}
