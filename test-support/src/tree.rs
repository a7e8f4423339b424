//! Tree snapshots: a filesystem tree recorded entry by entry so two trees can be compared.
//!
//! Each entry records its type, mode (permission bits including setuid/setgid/sticky), owner, size,
//! content hash, link target, device numbers, xattrs and hardlink group. Two trees are equal when
//! their entry lists are equal. Used by tests (against `umoci unpack`, kernel overlay, strata-fuse)
//! and by strata-fuse's differential tests.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// The kind of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

/// One recorded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits and setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size for regular files; 0 otherwise (directory sizes are filesystem specific).
    pub size: u64,
    /// sha256 of the content of regular files.
    pub hash: Option<String>,
    /// Target of a symlink, as stored.
    pub target: Option<PathBuf>,
    /// (major, minor) of character and block devices.
    pub rdev: Option<(u32, u32)>,
    /// Extended attributes (name -> value), filtered by [`Options::xattr_filter`].
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Modification time in seconds, when [`Options::mtime`] is set.
    pub mtime: Option<i64>,
    /// Index of the hardlink group (the first path of the group, relative), for files with nlink > 1
    /// whose other links are inside the tree.
    pub link_group: Option<PathBuf>,
}

/// What to record.
#[derive(Clone)]
pub struct Options {
    /// Record directory and file mtimes.
    pub mtime: bool,
    /// Record hardlink groups.
    pub hardlinks: bool,
    /// Keep an xattr by name. Default: all but `security.*` (set by the host's LSM).
    pub xattr_filter: fn(&str) -> bool,
    /// Paths (relative, e.g. `".wh..wh..opq"`) to skip entirely.
    pub skip: Vec<PathBuf>,
    /// Skip entries that readdir lists but lstat cannot find. Overlayfs lists a whiteout that sits
    /// in a lower directory no other layer merges with, yet looks it up as absent: for a user it
    /// does not exist.
    pub skip_vanished: bool,
}

fn default_xattr_filter(name: &str) -> bool {
    !name.starts_with("security.")
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mtime: false,
            hardlinks: true,
            xattr_filter: default_xattr_filter,
            skip: vec![],
            skip_vanished: false,
        }
    }
}

/// A recorded tree: relative path -> entry. The root itself is recorded under `"."`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tree {
    pub entries: BTreeMap<PathBuf, Entry>,
}

impl Tree {
    /// Record the tree under `root` with default options.
    pub fn capture(root: &Path) -> io::Result<Tree> {
        Self::capture_with(root, &Options::default())
    }

    /// Record the tree under `root`.
    pub fn capture_with(root: &Path, opts: &Options) -> io::Result<Tree> {
        Self::capture_inner(root, opts)
            .map_err(|(p, e)| io::Error::new(e.kind(), format!("{}: {e}", root.join(p).display())))
    }

    fn capture_inner(root: &Path, opts: &Options) -> Result<Tree, (PathBuf, io::Error)> {
        let mut tree = Tree::default();
        let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let mut stack = vec![PathBuf::from(".")];
        while let Some(rel) = stack.pop() {
            if opts.skip.iter().any(|s| s == &rel) {
                continue;
            }
            let abs = if rel == Path::new(".") { root.to_path_buf() } else { root.join(&rel) };
            let md = match fs::symlink_metadata(&abs) {
                Err(e)
                    if opts.skip_vanished && e.kind() == io::ErrorKind::NotFound && rel != Path::new(".") =>
                {
                    continue
                }
                r => r.map_err(|e| (rel.clone(), e))?,
            };
            let ft = md.file_type();
            let kind = if ft.is_file() {
                Kind::File
            } else if ft.is_dir() {
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink
            } else if ft.is_char_device() {
                Kind::Char
            } else if ft.is_block_device() {
                Kind::Block
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Socket
            };
            let mut entry = Entry {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if kind == Kind::File { md.len() } else { 0 },
                hash: None,
                target: None,
                rdev: None,
                xattrs: BTreeMap::new(),
                mtime: if opts.mtime && kind != Kind::Symlink { Some(md.mtime()) } else { None },
                link_group: None,
            };
            match kind {
                Kind::File => {
                    entry.hash = Some(hash_file(&abs).map_err(|e| (rel.clone(), e))?);
                    if opts.hardlinks && md.nlink() > 1 {
                        let key = (md.dev(), md.ino());
                        let first = inodes.entry(key).or_insert_with(|| rel.clone()).clone();
                        entry.link_group = Some(first);
                    }
                }
                Kind::Symlink => {
                    entry.target = Some(fs::read_link(&abs).map_err(|e| (rel.clone(), e))?);
                    // Symlink permission bits are meaningless on Linux.
                    entry.mode = 0;
                }
                Kind::Char | Kind::Block => {
                    let rdev = md.rdev();
                    entry.rdev = Some((libc::major(rdev), libc::minor(rdev)));
                }
                _ => {}
            }
            if kind != Kind::Symlink {
                entry.xattrs = read_xattrs(&abs, opts.xattr_filter).map_err(|e| (rel.clone(), e))?;
            }
            if kind == Kind::Dir {
                let mut names: Vec<_> = fs::read_dir(&abs)
                    .and_then(|d| d.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| (rel.clone(), e))?;
                names.sort_by_key(|e| e.file_name());
                for child in names.into_iter().rev() {
                    let crel = if rel == Path::new(".") {
                        PathBuf::from(child.file_name())
                    } else {
                        rel.join(child.file_name())
                    };
                    stack.push(crel);
                }
            }
            tree.entries.insert(rel, entry);
        }
        // Hardlink groups are recorded by the lexically first member so that walk order does not
        // matter: normalise every group to its smallest path.
        if opts.hardlinks {
            let mut smallest: HashMap<PathBuf, PathBuf> = HashMap::new();
            for (path, e) in &tree.entries {
                if let Some(g) = &e.link_group {
                    let s = smallest.entry(g.clone()).or_insert_with(|| path.clone());
                    if path < s {
                        *s = path.clone();
                    }
                }
            }
            let mut counts: HashMap<PathBuf, usize> = HashMap::new();
            for e in tree.entries.values() {
                if let Some(g) = &e.link_group {
                    *counts.entry(g.clone()).or_default() += 1;
                }
            }
            for e in tree.entries.values_mut() {
                if let Some(g) = e.link_group.take() {
                    // A file whose other links are outside the tree is not part of a group here.
                    if counts.get(&g).copied().unwrap_or(0) > 1 {
                        e.link_group = smallest.get(&g).cloned();
                    }
                }
            }
        }
        Ok(tree)
    }

    /// Differences between `self` (left) and `other` (right), one human-readable line each.
    pub fn diff(&self, other: &Tree) -> Vec<String> {
        let mut out = Vec::new();
        for (p, a) in &self.entries {
            match other.entries.get(p) {
                None => out.push(format!("only in left: {}", p.display())),
                Some(b) if a != b => {
                    out.push(format!("differs: {}\n   left:  {:?}\n   right: {:?}", p.display(), a, b))
                }
                _ => {}
            }
        }
        for p in other.entries.keys() {
            if !self.entries.contains_key(p) {
                out.push(format!("only in right: {}", p.display()));
            }
        }
        out
    }

    /// Remove entries for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&Path, &mut Entry) -> bool) {
        self.entries.retain(|p, e| keep(p, e));
    }
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (p, e) in &self.entries {
            writeln!(f, "{} {:?} {:o} {}:{} {}", p.display(), e.kind, e.mode, e.uid, e.gid, e.size)?;
        }
        Ok(())
    }
}

/// Panic with a readable listing when two trees differ (for tests).
pub fn assert_trees_eq(left: &Tree, right: &Tree, what: &str) {
    let d = left.diff(right);
    if !d.is_empty() {
        let shown: Vec<_> = d.iter().take(40).cloned().collect();
        panic!("{what}: trees differ in {} entries:\n{}", d.len(), shown.join("\n"));
    }
}

fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Read all xattrs of `path` without following a final symlink.
pub fn read_xattrs(path: &Path, keep: fn(&str) -> bool) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(out),
            Err(e) => return Err(e.into()),
        }
    };
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name_str = String::from_utf8_lossy(name).into_owned();
        if !keep(&name_str) {
            continue;
        }
        let cname = std::ffi::OsStr::from_bytes(name);
        let mut val = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, cname, &mut val) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => val.resize(val.len() * 4, 0),
                Err(e) => return Err(e.into()),
            }
        };
        val.truncate(len);
        out.insert(name_str, val);
    }
    Ok(out)
}
