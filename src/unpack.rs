//! Layer unpacking: an (uncompressed) layer tar stream into an overlayfs-format directory.
//!
//! # Safety model
//! The layer root is opened once (`O_PATH|O_DIRECTORY`). Every entry's parent directory is resolved
//! with `openat2(root, parent, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so symlinks created by
//! earlier entries (absolute, `../..`, chained) are resolved as if `root` were `/` and can never lead
//! outside it. The final component is then created or changed with `*at` syscalls relative to that
//! parent fd, never following a final symlink (`O_NOFOLLOW|O_EXCL`, `AT_SYMLINK_NOFOLLOW`, `O_PATH`
//! fds with `AT_EMPTY_PATH`). Metadata of regular files and directories is applied through an fd
//! of the object itself.
//!
//! # Path policy
//! Leading `/` and `./` and empty/`.` components are stripped. Any `..` component is rejected
//! ([`UnpackError::InvalidPath`]) rather than cleaned lexically: real image builders never emit
//! them, and a rejected layer is easier to reason about than a silently rewritten one. The same
//! applies to hardlink targets. Symlink targets are stored exactly as written (absolute targets
//! stay absolute; resolution is confined by `RESOLVE_IN_ROOT`). NUL bytes, name components longer
//! than 255 bytes and paths longer than 4095 bytes are rejected.
//!
//! # Whiteouts (OCI -> overlayfs)
//! - `DIR/.wh..wh..opq`: `trusted.overlay.opaque=y` (or `user.overlay.opaque`) on DIR, creating DIR
//!   if needed.
//! - `DIR/.wh.NAME`: a character device 0:0 named NAME. If NAME already exists in this layer it is
//!   left alone (whiteouts only hide lower layers); if it is a directory, it is marked opaque, which
//!   is what "lower NAME deleted, this layer's NAME present" means for overlayfs. A directory entry
//!   replacing a same-layer whiteout device is marked opaque for the same reason.
//! - `.wh.`, `.wh..`, `.wh...` and non-final `.wh.` components are rejected. Other `.wh..wh.*`
//!   names (AUFS metadata such as `.wh..wh.plnk`) are skipped with a warning, like moby does.
//! - Whiteout handling is by name, whatever the entry type (as containerd does).
//!
//! Tar semantics for an existing path (later entry wins): a non-directory replaces anything
//! (directories are removed recursively, inside the root); a directory over a directory keeps it and
//! updates its metadata; a directory over a non-directory replaces it. Directory mtimes are applied
//! last. Unknown entry types are an error (as containerd); PAX global headers are skipped.
//!
//! # Sparse files
//! GNU sparse entries (old GNU `S` entries and PAX formats 0.0, 0.1 and 1.0; see [`crate::sparse`])
//! become files whose data extents are written at their offsets and whose holes stay holes; the
//! size is set last. The holes are never read: the tar crate expands an `S` entry with its
//! zeros, so the unpacker reads that entry's data blocks from the stream itself (and the tar
//! crate's later skip over them is answered without the stream, see `Budget::debt`). A map
//! that is malformed or disagrees with the entry is an [`UnpackError::Sparse`] naming the entry.
//!
//! Nothing is fsynced here: call [`syncfs`] once on the finished layer.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString, OsStr};
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, CWD};
use rustix::io::Errno;

use crate::overlay_format::{
    self, OPAQUE_MARKER as WH_OPAQUE, WHITEOUT_META_PREFIX as WH_META_PREFIX, WHITEOUT_PREFIX as WH_PREFIX,
};
use crate::sparse;

/// Where opaque-directory markers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrNamespace {
    /// `trusted.overlay.opaque` (needs CAP_SYS_ADMIN; the kernel's default).
    #[default]
    Trusted,
    /// `user.overlay.opaque` (kernel `userxattr` mounts, unprivileged).
    User,
}

impl XattrNamespace {
    /// The name of the opaque xattr in this namespace.
    pub fn opaque_xattr(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => overlay_format::OPAQUE_XATTRS[0],
            XattrNamespace::User => overlay_format::OPAQUE_XATTRS[1],
        }
    }
}

/// Options for [`unpack_layer`].
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    pub opaque_xattr: XattrNamespace,
    /// Do not apply the tar's uid/gid (files are owned by the unpacking user), like
    /// `tar --no-same-owner`. Default: ownership is applied.
    pub no_same_owner: bool,
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries processed (including whiteouts and skipped entries).
    pub entries: u64,
    /// Regular-file content bytes written (apparent size).
    pub bytes: u64,
}

/// Upper bound on the header data (PAX records, GNU long names, sparse maps) read for one entry.
pub const MAX_HEADER_BYTES: u64 = 8 << 20;

/// Unpack errors. Each names the entry path (the caller adds the layer digest).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The tar stream could not be opened at all.
    #[error("tar stream")]
    Tar(#[source] std::io::Error),
    /// The tar stream is corrupt or truncated. `after` is the last entry read successfully
    /// (or the entry whose data was truncated).
    #[error("corrupt tar stream at entry {after:?}")]
    Corrupt {
        after: String,
        #[source]
        source: std::io::Error,
    },
    /// The header data (PAX extension, GNU long name) of the entry following `after` is larger
    /// than [`MAX_HEADER_BYTES`].
    #[error("entry after {after:?}: tar header/extension data exceeds {limit} bytes")]
    HeaderTooLarge { after: String, limit: u64 },
    /// A path (or hardlink target) that is rejected by policy: `..`, NUL, too long, bad whiteout.
    #[error("entry {path:?}: invalid path: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// A hardlink whose target is missing, a directory, or invalid.
    #[error("entry {path:?}: hardlink to {target:?}: {reason}")]
    Hardlink { path: String, target: String, reason: String },
    /// An entry type this unpacker does not handle.
    #[error("entry {path:?}: unsupported tar entry: {what}")]
    Unsupported { path: String, what: String },
    /// Malformed header fields (e.g. an out-of-range uid).
    #[error("entry {path:?}: {reason}")]
    Entry { path: String, reason: String },
    /// A sparse file whose map is malformed, inconsistent with the entry, or too large (see
    /// [`crate::sparse`]).
    #[error("entry {path:?}: sparse file: {reason}")]
    Sparse { path: String, reason: String },
    /// A filesystem operation failed.
    #[error("entry {path:?}: {op}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl UnpackError {
    /// The entry path this error is about (for `HeaderTooLarge`/`Corrupt`: the preceding entry).
    pub fn path(&self) -> Option<&str> {
        match self {
            UnpackError::Tar(_) => None,
            UnpackError::Corrupt { after, .. } | UnpackError::HeaderTooLarge { after, .. } => Some(after),
            UnpackError::InvalidPath { path, .. }
            | UnpackError::Hardlink { path, .. }
            | UnpackError::Unsupported { path, .. }
            | UnpackError::Entry { path, .. }
            | UnpackError::Sparse { path, .. }
            | UnpackError::Io { path, .. } => Some(path),
        }
    }

    /// The OS error behind an [`UnpackError::Io`], if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            UnpackError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub use crate::fsutil::syncfs;

// ---------------------------------------------------------------------------------------------
// Bounded header reads.

/// Shared between the reader wrapper and the unpack loop: while `armed`, reads are charged to
/// `budget` (the tar crate is then parsing headers); when it runs out, reads fail.
#[derive(Default)]
struct Budget {
    armed: Cell<bool>,
    left: Cell<u64>,
    tripped: Cell<bool>,
    /// Bytes consumed from the stream so far (the tar crate's offsets count the same bytes).
    pos: Cell<u64>,
    /// Everything read while armed, starting at stream offset `captured_at`: the extension headers
    /// (PAX, GNU long names) before an entry, which are re-parsed by [`pax_records`].
    captured: std::cell::RefCell<Vec<u8>>,
    captured_at: Cell<u64>,
    /// Bytes the unpacker read past the tar crate with [`DirectReader`] (the data of an old GNU
    /// sparse entry, which the tar crate would expand with its holes): the tar crate's next
    /// reads are its skip over that data, and are answered from this count without touching
    /// the stream.
    debt: Cell<u64>,
}

struct BoundedReader<R> {
    inner: Rc<RefCell<R>>,
    budget: Rc<Budget>,
}

fn borrow_inner<R>(inner: &RefCell<R>) -> io::Result<std::cell::RefMut<'_, R>> {
    inner.try_borrow_mut().map_err(|_| io::Error::other("tar stream reader used re-entrantly"))
}

impl<R: Read> Read for BoundedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let debt = self.budget.debt.get();
        if debt > 0 && !buf.is_empty() {
            // The skip over data already consumed directly: not charged, not captured.
            let n = buf.len().min(usize::try_from(debt).unwrap_or(usize::MAX));
            if self.budget.armed.get() {
                if !self.budget.captured.borrow().is_empty() {
                    return Err(io::Error::other("sparse entry data skipped inside a header"));
                }
                self.budget.captured_at.set(self.budget.captured_at.get() + n as u64);
            }
            buf[..n].fill(0);
            self.budget.debt.set(debt - n as u64);
            self.budget.pos.set(self.budget.pos.get() + n as u64);
            return Ok(n);
        }
        let mut inner = borrow_inner(&self.inner)?;
        if !self.budget.armed.get() {
            let got = inner.read(buf)?;
            self.budget.pos.set(self.budget.pos.get() + got as u64);
            return Ok(got);
        }
        let left = self.budget.left.get();
        if left == 0 {
            self.budget.tripped.set(true);
            return Err(io::Error::other("tar header data exceeds limit"));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = inner.read(&mut buf[..n])?;
        self.budget.left.set(left - got as u64);
        self.budget.pos.set(self.budget.pos.get() + got as u64);
        self.budget.captured.borrow_mut().extend_from_slice(&buf[..got]);
        Ok(got)
    }
}

/// Reads the tar stream behind the tar crate's back (see [`Budget::debt`]).
struct DirectReader<R> {
    inner: Rc<RefCell<R>>,
    budget: Rc<Budget>,
}

impl<R: Read> Read for DirectReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = borrow_inner(&self.inner)?.read(buf)?;
        self.budget.debt.set(self.budget.debt.get() + got as u64);
        Ok(got)
    }
}

/// One PAX record: (key, value).
type PaxRecord = (Vec<u8>, Vec<u8>);

/// The PAX records of the entry whose header starts at the end of `region` (the bytes read while
/// the tar crate parsed the headers before it). The tar crate's own PAX iterator splits records at
/// newlines, which breaks binary values (e.g. `security.capability` xattrs): records are
/// length-prefixed, so parse them by length.
///
/// The extension headers form a chain of 512-byte-aligned blocks ending at the entry header; the
/// region may start with the previous entry's padding. The earliest offset from which a valid
/// chain of extension headers reaches the end is taken.
fn pax_records(region: &[u8]) -> Result<Vec<PaxRecord>, String> {
    let blocks = region.len() / 512;
    for k in (1..=blocks).rev() {
        let start = region.len() - 512 * k;
        if let Some(data) = ext_chain(region, start) {
            return data.map_or(Ok(Vec::new()), parse_pax);
        }
    }
    Ok(Vec::new())
}

/// Walk extension headers from `start`; Some(local PAX data, if any) when the chain ends exactly
/// at the end of `region`.
fn ext_chain(region: &[u8], start: usize) -> Option<Option<&[u8]>> {
    let mut p = start;
    let mut pax = None;
    while p < region.len() {
        let block = region.get(p..p + 512)?;
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(block);
        let sum: u32 = block[..148].iter().chain(&block[156..]).map(|b| u32::from(*b)).sum::<u32>() + 8 * 32;
        if h.cksum().ok()? != sum {
            return None;
        }
        let kind = block[156];
        if !matches!(kind, b'x' | b'g' | b'L' | b'K') {
            return None;
        }
        let size = usize::try_from(h.entry_size().ok()?).ok()?;
        let data = region.get(p + 512..p + 512 + size)?;
        if kind == b'x' {
            pax = Some(data);
        }
        p = p.checked_add(512 + size.div_ceil(512) * 512)?;
    }
    (p == region.len()).then_some(pax)
}

fn parse_pax(mut data: &[u8]) -> Result<Vec<PaxRecord>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let sp = data.iter().position(|b| *b == b' ').ok_or("record without a length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("record length is not a number")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(format!("record length {len} does not fit the record"));
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec.iter().position(|b| *b == b'=').ok_or("record without '='")?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Path handling.

/// Normalise a tar path into `out` (components joined by `/`, no leading `/`, no `.`).
fn normalize(raw: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    out.clear();
    if raw.contains(&0) {
        return Err("NUL byte in path");
    }
    for comp in raw.split(|b| *b == b'/') {
        if comp.is_empty() || comp == b"." {
            continue;
        }
        if comp == b".." {
            return Err("'..' path component (refused: could escape the layer root)");
        }
        if comp.len() > 255 {
            return Err("path component longer than 255 bytes (ENAMETOOLONG)");
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(comp);
    }
    if out.len() > 4095 {
        return Err("path longer than 4095 bytes (ENAMETOOLONG)");
    }
    Ok(())
}

/// Split a normalised path into (parent, name). The root has an empty name.
fn split(norm: &[u8]) -> (&[u8], &[u8]) {
    match norm.iter().rposition(|b| *b == b'/') {
        Some(i) => (&norm[..i], &norm[i + 1..]),
        None => (&[], norm),
    }
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

enum Whiteout<'a> {
    None,
    Opaque,
    /// `.wh.NAME` -> NAME
    Name(&'a [u8]),
    /// AUFS metadata: skipped.
    Meta,
}

fn classify_whiteout(norm: &[u8]) -> Result<Whiteout<'_>, &'static str> {
    let (parent, name) = split(norm);
    for comp in parent.split(|b| *b == b'/') {
        if comp.starts_with(WH_META_PREFIX) {
            return Ok(Whiteout::Meta);
        }
        if comp.starts_with(WH_PREFIX) {
            return Err("whiteout name used as a directory");
        }
    }
    if name == WH_OPAQUE {
        return Ok(Whiteout::Opaque);
    }
    if name.starts_with(WH_META_PREFIX) {
        return Ok(Whiteout::Meta);
    }
    if let Some(target) = name.strip_prefix(WH_PREFIX) {
        if target.is_empty() || target == b"." || target == b".." {
            return Err("malformed whiteout name");
        }
        return Ok(Whiteout::Name(target));
    }
    Ok(Whiteout::None)
}

fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    let mut nsec: i64 = 0;
    let mut digits = 0;
    for c in frac.bytes() {
        if !c.is_ascii_digit() {
            return None;
        }
        if digits < 9 {
            nsec = nsec * 10 + i64::from(c - b'0');
            digits += 1;
        }
    }
    while digits < 9 {
        nsec *= 10;
        digits += 1;
    }
    if neg {
        // -1.25 means 1.25 s before the epoch: (-2 s, 0.75e9 ns).
        if nsec == 0 {
            Some(Timespec { tv_sec: -secs, tv_nsec: 0 })
        } else {
            Some(Timespec { tv_sec: -secs - 1, tv_nsec: (1_000_000_000 - nsec) as _ })
        }
    } else {
        Some(Timespec { tv_sec: secs, tv_nsec: nsec as _ })
    }
}

// ---------------------------------------------------------------------------------------------
// Entry metadata gathered from the header and PAX records.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// The unpacker state.
struct Unpacker<'o> {
    root: OwnedFd,
    opts: &'o UnpackOptions,
    /// Last resolved parent directory: (normalised path, O_PATH fd).
    cache: Option<(Vec<u8>, OwnedFd)>,
    /// Directories whose mtime is applied at the end: (normalised path, mtime).
    dir_times: Vec<(Vec<u8>, Timespec)>,
    buf: Vec<u8>,
    stats: UnpackStats,
    /// The current entry's PAX records (see [`pax_records`]).
    pax: Vec<PaxRecord>,
    /// The current entry's map, when it is an old GNU sparse entry (parsed by the unpack loop).
    gnu_sparse: Option<sparse::Map>,
    /// The current entry's path, when it is not the tar crate's (`GNU.sparse.name`).
    real_name: Option<Vec<u8>>,
}

/// How a regular file's content is laid out in the entry data.
enum FileData {
    /// The data is the content.
    Plain,
    /// Old GNU sparse: the extents, read from the stream directly.
    Gnu(sparse::Map),
    /// PAX sparse: the extents, read from the entry (after the map, for 1.0).
    Pax(sparse::Map),
}

/// An entry path for messages: the layer root (empty after normalisation) shows as `.`.
fn shown(path: &[u8]) -> String {
    if path.is_empty() {
        ".".into()
    } else {
        lossy(path)
    }
}

fn io_err(path: &[u8], op: &'static str, e: impl Into<io::Error>) -> UnpackError {
    UnpackError::Io { path: shown(path), op, source: e.into() }
}

fn invalid(path: &[u8], reason: &'static str) -> UnpackError {
    UnpackError::InvalidPath { path: shown(path), reason }
}

fn sparse_err(path: &[u8], reason: impl Into<String>) -> UnpackError {
    UnpackError::Sparse { path: shown(path), reason: reason.into() }
}

/// An entry path as the tar holds it, normalised when it can be (for messages).
fn display_path(raw: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    match normalize(raw, &mut n) {
        Ok(()) => n,
        Err(_) => raw.to_vec(),
    }
}

const O_PATH_DIR: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// `fchmodat2(fd, "", mode, AT_EMPTY_PATH)`: chmod through an O_PATH fd (never follows).
fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall with a valid fd, a static NUL-terminated empty string and flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode as libc::c_uint,
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOSYS) {
        // Kernels before 6.6: chmod through the procfs magic link of the O_PATH fd, which
        // designates exactly this inode.
        let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
        rustix::fs::chmod(p.as_str(), Mode::from_raw_mode(mode))?;
        return Ok(());
    }
    Err(e)
}

impl<'o> Unpacker<'o> {
    /// Resolve (creating if missing) the directory `parent` inside the root; returns an O_PATH fd.
    fn parent_fd(&mut self, parent: &[u8], path: &[u8]) -> Result<BorrowedFd<'_>, UnpackError> {
        let hit = matches!(&self.cache, Some((p, _)) if p.as_slice() == parent);
        if !hit {
            let fd = if parent.is_empty() {
                rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(|e| io_err(path, "dup root", e))?
            } else {
                match rustix::fs::openat2(&self.root, os(parent), O_PATH_DIR, Mode::empty(), resolve_flags())
                {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => self.make_parents(parent, path)?,
                    Err(Errno::AGAIN) | Err(Errno::INTR) => {
                        // openat2 may ask for a retry when the tree changes concurrently.
                        rustix::fs::openat2(
                            &self.root,
                            os(parent),
                            O_PATH_DIR,
                            Mode::empty(),
                            resolve_flags(),
                        )
                        .map_err(|e| io_err(path, "resolve parent directory", e))?
                    }
                    Err(e) => return Err(io_err(path, "resolve parent directory", e)),
                }
            };
            self.cache = Some((parent.to_vec(), fd));
        }
        match &self.cache {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(io_err(path, "resolve parent directory", Errno::NOENT)),
        }
    }

    /// Create the missing directories of `parent` (0755, owned by the unpacking user), walking
    /// one component at a time without following symlinks; a symlink component is resolved
    /// inside the root.
    fn make_parents(&mut self, parent: &[u8], path: &[u8]) -> Result<OwnedFd, UnpackError> {
        let mut fd =
            rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(|e| io_err(path, "dup root", e))?;
        let mut end = 0;
        for comp in parent.split(|b| *b == b'/') {
            end += comp.len();
            let prefix = &parent[..end];
            end += 1;
            let flags = O_PATH_DIR | OFlags::NOFOLLOW;
            fd = match rustix::fs::openat(&fd, os(comp), flags, Mode::empty()) {
                Ok(f) => f,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&fd, os(comp), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_err(path, "create parent directory", e)),
                    }
                    let f = rustix::fs::openat(&fd, os(comp), flags, Mode::empty())
                        .map_err(|e| io_err(path, "create parent directory", e))?;
                    chmod_fd(f.as_fd(), 0o755).map_err(|e| io_err(path, "chmod parent directory", e))?;
                    f
                }
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    // A symlink (or a non-directory): resolve the prefix inside the root.
                    rustix::fs::openat2(&self.root, os(prefix), O_PATH_DIR, Mode::empty(), resolve_flags())
                        .map_err(|e| io_err(path, "resolve parent directory (through symlink)", e))?
                }
                Err(e) => return Err(io_err(path, "resolve parent directory", e)),
            };
        }
        // Directories were created: nothing cached can be stale, but be conservative.
        self.cache = None;
        Ok(fd)
    }

    fn invalidate(&mut self) {
        self.cache = None;
    }

    /// Remove `name` in `dir` (recursively if it is a directory). Never follows symlinks.
    fn remove(&mut self, dir: BorrowedFd<'_>, name: &OsStr, path: &[u8]) -> Result<(), UnpackError> {
        remove_all_at(dir, name, 0).map_err(|e| io_err(path, "remove existing entry", e))
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        direct: &mut dyn Read,
        norm: &mut Vec<u8>,
    ) -> Result<(), UnpackError> {
        let etype = entry.header().entry_type();
        let pax_sparse = sparse::pax_sparse(&self.pax).map_err(|r| {
            // Name the entry by its real name when the records give one.
            let name = self.pax.iter().rev().find(|(k, _)| k == b"GNU.sparse.name").map(|(_, v)| v.clone());
            sparse_err(&display_path(&name.unwrap_or_else(|| entry.path_bytes().into_owned())), r)
        })?;
        let raw_is_dir = {
            let raw_path: Cow<'_, [u8]> = match pax_sparse.as_ref().and_then(|s| s.name.as_deref()) {
                // 0.1 and 1.0: the ustar name is a `GNUSparseFile.N/...` placeholder.
                Some(name) => {
                    self.real_name = Some(name.to_vec());
                    Cow::Borrowed(name)
                }
                None => entry.path_bytes(),
            };
            normalize(&raw_path, norm).map_err(|r| invalid(&raw_path, r))?;
            raw_path.last() == Some(&b'/')
        };
        let path: &[u8] = norm;
        if pax_sparse.is_some()
            && (etype.is_gnu_sparse()
                || raw_is_dir
                || !matches!(etype, tar::EntryType::Regular | tar::EntryType::Continuous))
        {
            return Err(sparse_err(path, "GNU.sparse PAX records on an entry that is not a regular file"));
        }
        let kind = match etype {
            tar::EntryType::Regular if raw_is_dir => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::Hardlink,
            tar::EntryType::Char => Kind::Char,
            tar::EntryType::Block => Kind::Block,
            tar::EntryType::Fifo => Kind::Fifo,
            tar::EntryType::XGlobalHeader => {
                tracing::debug!(path = %lossy(path), "PAX global header ignored");
                return Ok(());
            }
            other => {
                return Err(UnpackError::Unsupported {
                    path: lossy(path),
                    what: format!("entry type {:?} ({:?})", other, other.as_byte() as char),
                })
            }
        };

        // Whiteouts are recognised by name, whatever the type.
        match classify_whiteout(path).map_err(|r| invalid(path, r))? {
            Whiteout::None => {}
            Whiteout::Meta => {
                tracing::warn!(path = %lossy(path), "AUFS whiteout metadata entry skipped");
                return Ok(());
            }
            Whiteout::Opaque => return self.opaque(split(path).0, path),
            Whiteout::Name(target) => return self.whiteout(split(path).0, target, path),
        }

        let meta = self.meta(entry, path)?;
        let (parent, name) = split(path);
        if name.is_empty() {
            // The layer root itself.
            if kind != Kind::Dir {
                return Err(invalid(path, "non-directory entry for the layer root"));
            }
            let fd = rustix::fs::openat(
                &self.root,
                c".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err(path, "open layer root", e))?;
            self.apply_fd_meta(fd.as_fd(), &meta, path, true)?;
            self.dir_times.push((Vec::new(), meta.mtime));
            return Ok(());
        }
        let name = os(name);

        match kind {
            Kind::File => {
                let data = match (self.gnu_sparse.take(), pax_sparse) {
                    (Some(map), _) => FileData::Gnu(map),
                    (None, Some(ps)) => FileData::Pax(self.pax_map(entry, ps, path)?),
                    (None, None) if etype.is_gnu_sparse() => {
                        return Err(sparse_err(path, "old GNU sparse entry without its map"))
                    }
                    (None, None) => FileData::Plain,
                };
                self.file(entry, direct, parent, name, &meta, path, data)
            }
            Kind::Dir => self.dir(parent, name, &meta, path),
            Kind::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| UnpackError::Entry {
                    path: lossy(path),
                    reason: "symlink without a target".into(),
                })?;
                if target.is_empty() || target.contains(&0) {
                    return Err(invalid(path, "symlink target empty or containing NUL"));
                }
                let target = target.into_owned();
                self.symlink(parent, name, &target, &meta, path)
            }
            Kind::Hardlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                self.hardlink(parent, name, &target, path)
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let (ft, dev) = match kind {
                    Kind::Char => (FileType::CharacterDevice, self.dev(entry, path)?),
                    Kind::Block => (FileType::BlockDevice, self.dev(entry, path)?),
                    _ => (FileType::Fifo, 0),
                };
                self.node(parent, name, ft, dev, &meta, path)
            }
        }
    }

    fn dev<R: Read>(&self, entry: &tar::Entry<'_, R>, path: &[u8]) -> Result<u64, UnpackError> {
        let h = entry.header();
        let bad = |what: &str| UnpackError::Entry {
            path: lossy(path),
            reason: format!("invalid device {what} number"),
        };
        let major = h.device_major().map_err(|_| bad("major"))?.unwrap_or(0);
        let minor = h.device_minor().map_err(|_| bad("minor"))?.unwrap_or(0);
        Ok(rustix::fs::makedev(major, minor))
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, path: &[u8]) -> Result<Meta, UnpackError> {
        let h = entry.header();
        let bad = |reason: String| UnpackError::Entry { path: lossy(path), reason };
        let mode = h.mode().map_err(|e| bad(format!("invalid mode field: {e}")))? & 0o7777;
        let uid = h.uid().map_err(|e| bad(format!("invalid uid field: {e}")))?;
        let gid = h.gid().map_err(|e| bad(format!("invalid gid field: {e}")))?;
        let uid = u32::try_from(uid)
            .ok()
            .filter(|u| *u != u32::MAX)
            .ok_or_else(|| bad(format!("uid {uid} out of range")))?;
        let gid = u32::try_from(gid)
            .ok()
            .filter(|g| *g != u32::MAX)
            .ok_or_else(|| bad(format!("gid {gid} out of range")))?;
        let mtime = h.mtime().map_err(|e| bad(format!("invalid mtime field: {e}")))?;
        let mut mtime = Timespec { tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX), tv_nsec: 0 };
        let mut xattrs = Vec::new();
        {
            let _ = entry;
            for (key, value) in &self.pax {
                let key = key.as_slice();
                if key == b"mtime" {
                    mtime = parse_pax_time(value).ok_or_else(|| bad("malformed PAX mtime".into()))?;
                } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if overlay_format::is_private_xattr(name) {
                        tracing::warn!(path = %lossy(path), xattr = %lossy(name), "overlay xattr from image dropped");
                        continue;
                    }
                    let cname = CString::new(name).map_err(|_| bad("NUL byte in xattr name".into()))?;
                    xattrs.push((cname, value.clone()));
                }
            }
        }
        Ok(Meta { mode, uid, gid, mtime, xattrs })
    }

    fn times(mtime: Timespec) -> Timestamps {
        Timestamps { last_access: mtime, last_modification: mtime }
    }

    /// chown, chmod, xattrs (and for non-directories, times) through a real fd of the object.
    fn apply_fd_meta(
        &self,
        fd: BorrowedFd<'_>,
        m: &Meta,
        path: &[u8],
        is_dir: bool,
    ) -> Result<(), UnpackError> {
        if !self.opts.no_same_owner {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(m.uid)),
                Some(rustix::fs::Gid::from_raw(m.gid)),
            )
            .map_err(|e| io_err(path, "chown", e))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(m.mode)).map_err(|e| io_err(path, "chmod", e))?;
        for (name, value) in &m.xattrs {
            match rustix::fs::fsetxattr(fd, name.as_c_str(), value, rustix::fs::XattrFlags::empty()) {
                Ok(()) => {}
                Err(e) => xattr_failed(path, name, e)?,
            }
        }
        if !is_dir {
            rustix::fs::futimens(fd, &Self::times(m.mtime)).map_err(|e| io_err(path, "set times", e))?;
        }
        Ok(())
    }

    /// Metadata for symlinks, devices and FIFOs, through an O_PATH|O_NOFOLLOW fd.
    fn apply_path_meta(
        &mut self,
        parent: &[u8],
        name: &OsStr,
        m: &Meta,
        path: &[u8],
        chmod: bool,
    ) -> Result<(), UnpackError> {
        let opts = self.opts;
        let pfd = self.parent_fd(parent, path)?;
        let fd =
            rustix::fs::openat(pfd, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| io_err(path, "open created entry", e))?;
        if !opts.no_same_owner {
            rustix::fs::chownat(
                &fd,
                c"",
                Some(rustix::fs::Uid::from_raw(m.uid)),
                Some(rustix::fs::Gid::from_raw(m.gid)),
                AtFlags::EMPTY_PATH,
            )
            .map_err(|e| io_err(path, "chown", e))?;
        }
        if chmod {
            chmod_fd(fd.as_fd(), m.mode).map_err(|e| io_err(path, "chmod", e))?;
        }
        if !m.xattrs.is_empty() {
            // No fd-based xattr call works on O_PATH fds: use the parent's procfs magic link plus
            // the final name with the non-following l*xattr call.
            let mut p = format!("/proc/self/fd/{}/", pfd.as_raw_fd()).into_bytes();
            p.extend_from_slice(name.as_bytes());
            for (xname, value) in &m.xattrs {
                match rustix::fs::lsetxattr(os(&p), xname.as_c_str(), value, rustix::fs::XattrFlags::empty())
                {
                    Ok(()) => {}
                    Err(e) => xattr_failed(path, xname, e)?,
                }
            }
        }
        rustix::fs::utimensat(&fd, c"", &Self::times(m.mtime), AtFlags::EMPTY_PATH)
            .map_err(|e| io_err(path, "set times", e))?;
        Ok(())
    }

    /// The map of a PAX sparse entry, checked against the entry's data. For 1.0 it is read from
    /// the start of the data (which the entry reader then stands after).
    fn pax_map<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        ps: sparse::PaxSparse,
        path: &[u8],
    ) -> Result<sparse::Map, UnpackError> {
        let size = entry.size();
        let (extents, data_size) = match ps.format {
            sparse::PaxFormat::V10 => {
                let (extents, used) = sparse::read_map_v10(entry, size).map_err(|e| match e {
                    sparse::MapError::Read(source) => UnpackError::Corrupt { after: lossy(path), source },
                    sparse::MapError::Bad(reason) => sparse_err(path, reason),
                })?;
                (extents, size - used)
            }
            sparse::PaxFormat::V00 | sparse::PaxFormat::V01 => (ps.extents, size),
        };
        let map = sparse::Map { extents, realsize: ps.realsize };
        sparse::validate(&map, data_size, false).map_err(|r| sparse_err(path, r))?;
        Ok(map)
    }

    #[allow(clippy::too_many_arguments)]
    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        direct: &mut dyn Read,
        parent: &[u8],
        name: &OsStr,
        meta: &Meta,
        path: &[u8],
        data: FileData,
    ) -> Result<(), UnpackError> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(0o600);
        let fd = {
            let pfd = self.parent_fd(parent, path)?;
            match rustix::fs::openat(pfd, name, flags, mode) {
                Ok(fd) => fd,
                Err(Errno::EXIST) => {
                    let pfd = rustix::io::fcntl_dupfd_cloexec(pfd, 0).map_err(|e| io_err(path, "dup", e))?;
                    self.remove(pfd.as_fd(), name, path)?;
                    self.invalidate();
                    rustix::fs::openat(&pfd, name, flags, mode).map_err(|e| io_err(path, "create file", e))?
                }
                Err(e) => return Err(io_err(path, "create file", e)),
            }
        };
        let mut file = std::fs::File::from(fd);
        let copy_err = |e: sparse::CopyError| match e {
            sparse::CopyError::Read(source) => UnpackError::Corrupt { after: lossy(path), source },
            sparse::CopyError::Write(source) => io_err(path, "write file", source),
        };
        let size = match data {
            FileData::Plain => {
                let size = entry.size();
                let written = copy_data(entry, &mut file, &mut self.buf).map_err(copy_err)?;
                if written != size {
                    return Err(UnpackError::Corrupt {
                        after: lossy(path),
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("entry data truncated: {written} of {size} bytes"),
                        ),
                    });
                }
                size
            }
            FileData::Gnu(map) => {
                sparse::write_extents(direct, &file, &map, &mut self.buf).map_err(copy_err)?;
                map.realsize
            }
            FileData::Pax(map) => {
                sparse::write_extents(entry, &file, &map, &mut self.buf).map_err(copy_err)?;
                map.realsize
            }
        };
        self.stats.bytes = self.stats.bytes.saturating_add(size);
        self.apply_fd_meta(file.as_fd(), meta, path, false)
    }

    fn dir(&mut self, parent: &[u8], name: &OsStr, meta: &Meta, path: &[u8]) -> Result<(), UnpackError> {
        let pfd = self.parent_fd(parent, path)?;
        let pfd = rustix::io::fcntl_dupfd_cloexec(pfd, 0).map_err(|e| io_err(path, "dup", e))?;
        let mut make_opaque = false;
        match rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let st = rustix::fs::statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err(path, "stat existing entry", e))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    // A same-layer whiteout replaced by a directory: the lower directory must
                    // stay hidden.
                    make_opaque =
                        FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0;
                    self.remove(pfd.as_fd(), name, path)?;
                    self.invalidate();
                    rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| io_err(path, "mkdir", e))?;
                }
            }
            Err(e) => return Err(io_err(path, "mkdir", e)),
        }
        let fd = rustix::fs::openat(
            &pfd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(path, "open directory", e))?;
        self.apply_fd_meta(fd.as_fd(), meta, path, true)?;
        if make_opaque {
            self.set_opaque(fd.as_fd(), path)?;
        }
        self.dir_times.push((path.to_vec(), meta.mtime));
        Ok(())
    }

    fn symlink(
        &mut self,
        parent: &[u8],
        name: &OsStr,
        target: &[u8],
        meta: &Meta,
        path: &[u8],
    ) -> Result<(), UnpackError> {
        let pfd = self.parent_fd(parent, path)?;
        let pfd = rustix::io::fcntl_dupfd_cloexec(pfd, 0).map_err(|e| io_err(path, "dup", e))?;
        // Any symlink may change how later paths resolve.
        self.invalidate();
        match rustix::fs::symlinkat(os(target), &pfd, name) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                self.remove(pfd.as_fd(), name, path)?;
                rustix::fs::symlinkat(os(target), &pfd, name).map_err(|e| io_err(path, "symlink", e))?;
            }
            Err(e) => return Err(io_err(path, "symlink", e)),
        }
        self.apply_path_meta(parent, name, meta, path, false)
    }

    fn node(
        &mut self,
        parent: &[u8],
        name: &OsStr,
        ft: FileType,
        dev: u64,
        meta: &Meta,
        path: &[u8],
    ) -> Result<(), UnpackError> {
        let pfd = self.parent_fd(parent, path)?;
        let mode = Mode::from_raw_mode(0o600);
        match rustix::fs::mknodat(pfd, name, ft, mode, dev) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let pfd = rustix::io::fcntl_dupfd_cloexec(pfd, 0).map_err(|e| io_err(path, "dup", e))?;
                self.remove(pfd.as_fd(), name, path)?;
                self.invalidate();
                rustix::fs::mknodat(&pfd, name, ft, mode, dev).map_err(|e| io_err(path, "mknod", e))?;
            }
            Err(e) => return Err(io_err(path, "mknod", e)),
        }
        self.apply_path_meta(parent, name, meta, path, true)
    }

    fn hardlink(
        &mut self,
        parent: &[u8],
        name: &OsStr,
        raw_target: &[u8],
        path: &[u8],
    ) -> Result<(), UnpackError> {
        let herr =
            |reason: String| UnpackError::Hardlink { path: lossy(path), target: lossy(raw_target), reason };
        let mut tnorm = Vec::with_capacity(raw_target.len());
        normalize(raw_target, &mut tnorm).map_err(|r| herr(format!("invalid target: {r}")))?;
        let (tparent, tname) = split(&tnorm);
        if tname.is_empty() {
            return Err(herr("target is the layer root (a directory)".into()));
        }
        let tpfd = if tparent.is_empty() {
            rustix::io::fcntl_dupfd_cloexec(&self.root, 0)
        } else {
            rustix::fs::openat2(&self.root, os(tparent), O_PATH_DIR, Mode::empty(), resolve_flags())
        };
        let tpfd = match tpfd {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => {
                return Err(herr("target does not exist (hardlinks must refer to an earlier entry)".into()))
            }
            Err(e) => return Err(herr(format!("resolve target directory: {e}"))),
        };
        let tst = match rustix::fs::statat(&tpfd, os(tname), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => {
                return Err(herr("target does not exist (hardlinks must refer to an earlier entry)".into()))
            }
            Err(e) => return Err(herr(format!("stat target: {e}"))),
        };
        if FileType::from_raw_mode(tst.st_mode) == FileType::Directory {
            return Err(herr("target is a directory".into()));
        }
        let pfd = self.parent_fd(parent, path)?;
        let pfd = rustix::io::fcntl_dupfd_cloexec(pfd, 0).map_err(|e| io_err(path, "dup", e))?;
        match rustix::fs::linkat(&tpfd, os(tname), &pfd, name, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => {
                let st = rustix::fs::statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err(path, "stat existing entry", e))?;
                if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino {
                    return Ok(()); // already that inode
                }
                self.remove(pfd.as_fd(), name, path)?;
                self.invalidate();
                rustix::fs::linkat(&tpfd, os(tname), &pfd, name, AtFlags::empty())
                    .map_err(|e| io_err(path, "link", e))
            }
            Err(e) => Err(io_err(path, "link", e)),
        }
    }

    fn set_opaque(&self, dirfd: BorrowedFd<'_>, path: &[u8]) -> Result<(), UnpackError> {
        rustix::fs::fsetxattr(
            dirfd,
            self.opts.opaque_xattr.opaque_xattr(),
            overlay_format::OPAQUE_VALUE,
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| io_err(path, "set opaque xattr", e))
    }

    /// `DIR/.wh..wh..opq`: mark DIR opaque (creating it if needed).
    fn opaque(&mut self, dir: &[u8], path: &[u8]) -> Result<(), UnpackError> {
        let pfd = match self.parent_fd(dir, path) {
            Err(e) if e.errno() == Some(libc::ENOTDIR) => {
                tracing::debug!(path = %lossy(path), "opaque marker below a non-directory ignored");
                return Ok(());
            }
            r => r?,
        };
        let fd = rustix::fs::openat(
            pfd,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(path, "open directory", e))?;
        self.set_opaque(fd.as_fd(), path)
    }

    /// `DIR/.wh.NAME`: a 0:0 character device NAME, unless NAME exists in this layer.
    fn whiteout(&mut self, dir: &[u8], name: &[u8], path: &[u8]) -> Result<(), UnpackError> {
        let pfd = match self.parent_fd(dir, path) {
            // A whiteout below a non-directory of this layer (umoci writes `f/.wh.x` after turning
            // directory f into a file): the non-directory already hides everything below it.
            Err(e) if e.errno() == Some(libc::ENOTDIR) => {
                tracing::debug!(path = %lossy(path), "whiteout below a non-directory ignored");
                return Ok(());
            }
            r => r?,
        };
        match rustix::fs::mknodat(pfd, os(name), FileType::CharacterDevice, Mode::empty(), 0) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => {
                // Same-layer entries are not hidden by a whiteout; a same-layer directory
                // replaces the lower one entirely, so it becomes opaque.
                let st = rustix::fs::statat(pfd, os(name), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err(path, "stat whiteout target", e))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    let fd = rustix::fs::openat(
                        pfd,
                        os(name),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| io_err(path, "open directory", e))?;
                    self.set_opaque(fd.as_fd(), path)?;
                }
                tracing::debug!(path = %lossy(path), "whiteout of a same-layer entry left alone");
                Ok(())
            }
            Err(e) => Err(io_err(path, "mknod whiteout", e)),
        }
    }

    /// Apply the deferred directory mtimes.
    fn finish(&mut self) -> Result<(), UnpackError> {
        let dir_times = std::mem::take(&mut self.dir_times);
        for (path, mtime) in &dir_times {
            let fd = if path.is_empty() {
                rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(|e| io_err(path, "dup root", e))?
            } else {
                match rustix::fs::openat2(
                    &self.root,
                    os(path),
                    O_PATH_DIR | OFlags::NOFOLLOW,
                    Mode::empty(),
                    resolve_flags(),
                ) {
                    Ok(fd) => fd,
                    // Replaced by a later non-directory entry, or removed.
                    Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                    Err(e) => return Err(io_err(path, "open directory for times", e)),
                }
            };
            rustix::fs::utimensat(&fd, c"", &Self::times(*mtime), AtFlags::EMPTY_PATH)
                .map_err(|e| io_err(path, "set directory times", e))?;
        }
        Ok(())
    }
}

fn xattr_failed(path: &[u8], name: &CStr, e: Errno) -> Result<(), UnpackError> {
    match e {
        // As containerd: xattrs the filesystem or our privileges do not allow are skipped.
        Errno::NOTSUP | Errno::PERM => {
            tracing::warn!(path = %lossy(path), xattr = ?name, error = %e, "xattr not applied");
            Ok(())
        }
        e => Err(io_err(path, "set xattr", e)),
    }
}

/// Copy an entry's data into `file`.
fn copy_data<R: Read>(r: &mut R, file: &mut std::fs::File, buf: &mut [u8]) -> Result<u64, sparse::CopyError> {
    use std::io::Write;
    let mut total = 0u64;
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(sparse::CopyError::Read(e)),
        };
        file.write_all(&buf[..n]).map_err(sparse::CopyError::Write)?;
        total += n as u64;
    }
}

/// Remove `name` in `dir`; directories recursively. Symlinks are removed, never followed.
fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr, depth: usize) -> rustix::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    if depth > 4096 {
        return Err(Errno::LOOP);
    }
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for ent in rustix::fs::Dir::read_from(&fd)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    for n in names {
        remove_all_at(fd.as_fd(), os(&n), depth + 1)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// Unpack the tar stream `tar` into the existing, empty directory `dest`.
pub fn unpack_layer<R: Read>(tar: R, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats, UnpackError> {
    let root = rustix::fs::openat(CWD, dest, O_PATH_DIR, Mode::empty())
        .map_err(|e| io_err(dest.as_os_str().as_bytes(), "open layer root", e))?;
    let budget = Rc::new(Budget::default());
    let inner = Rc::new(RefCell::new(BufReader::with_capacity(128 << 10, tar)));
    let reader = BoundedReader { inner: inner.clone(), budget: budget.clone() };
    let mut direct = DirectReader { inner, budget: budget.clone() };
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(UnpackError::Tar)?;
    let mut u = Unpacker {
        root,
        opts,
        cache: None,
        dir_times: Vec::new(),
        buf: vec![0u8; 256 << 10],
        stats: UnpackStats::default(),
        pax: Vec::new(),
        gnu_sparse: None,
        real_name: None,
    };
    let mut last: Vec<u8> = b"(start of stream)".to_vec();
    let mut norm = Vec::with_capacity(256);
    loop {
        budget.left.set(MAX_HEADER_BYTES);
        budget.tripped.set(false);
        budget.captured.borrow_mut().clear();
        budget.captured_at.set(budget.pos.get());
        budget.armed.set(true);
        let next = entries.next();
        budget.armed.set(false);
        let mut entry = match next {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                if budget.tripped.get() {
                    return Err(UnpackError::HeaderTooLarge { after: lossy(&last), limit: MAX_HEADER_BYTES });
                }
                // The tar crate checks old GNU sparse maps while reading the headers: name the
                // entry and the reason when that is what failed.
                if let Some((path, reason)) =
                    failed_gnu_sparse(&budget.captured.borrow(), budget.captured_at.get())
                {
                    return Err(sparse_err(&path, reason));
                }
                return Err(UnpackError::Corrupt { after: lossy(&last), source: e });
            }
        };
        if budget.debt.get() != 0 {
            return Err(UnpackError::Corrupt {
                after: lossy(&last),
                source: io::Error::other("sparse entry data not skipped"),
            });
        }
        u.stats.entries += 1;
        let header_at = entry.raw_header_position().saturating_sub(budget.captured_at.get());
        let header_at = usize::try_from(header_at).unwrap_or(usize::MAX);
        u.pax = {
            let cap = budget.captured.borrow();
            let region = cap.get(..header_at).unwrap_or(&[]);
            pax_records(region).map_err(|reason| UnpackError::Corrupt {
                after: lossy(&last),
                source: io::Error::new(io::ErrorKind::InvalidData, format!("malformed PAX header: {reason}")),
            })?
        };
        // Old GNU sparse: the tar crate expands the data with its holes (reading gigabytes of
        // zeros for a large file). The map is parsed here from the header and its extension
        // blocks, and the data blocks are read directly from the stream, never through `entry`.
        let gnu_data = if entry.header().entry_type().is_gnu_sparse() {
            let shown_path = display_path(&entry.path_bytes());
            let data_size =
                entry.header().entry_size().map_err(|e| sparse_err(&shown_path, e.to_string()))?;
            if u.pax.iter().any(|(k, _)| k == b"size" || k.starts_with(b"GNU.sparse.")) {
                return Err(sparse_err(
                    &shown_path,
                    "old GNU sparse entry with PAX size or GNU.sparse records",
                ));
            }
            let cap = budget.captured.borrow();
            let (header, ext) = match cap.get(header_at..).filter(|r| r.len() >= 512) {
                Some(r) => r.split_at(512),
                None => return Err(sparse_err(&shown_path, "header not found in the stream")),
            };
            let (map, blocks) = sparse::gnu_map(header, ext).map_err(|r| sparse_err(&shown_path, r))?;
            if ext.len() != blocks * 512 {
                return Err(sparse_err(&shown_path, "extended sparse headers do not match the tar reader's"));
            }
            sparse::validate(&map, data_size, true).map_err(|r| sparse_err(&shown_path, r))?;
            u.gnu_sparse = Some(map);
            Some(data_size)
        } else {
            u.gnu_sparse = None;
            None
        };
        u.real_name = None;
        u.entry(&mut entry, &mut direct, &mut norm)?;
        let mut sink = io::sink();
        match gnu_data {
            // Whatever the entry did not consume (all of it, for a whiteout), read past directly.
            Some(size) => {
                let left = size.saturating_sub(budget.debt.get());
                let skipped = io::copy(&mut (&mut direct).take(left), &mut sink)
                    .map_err(|e| UnpackError::Corrupt { after: lossy(&norm), source: e })?;
                if skipped != left {
                    return Err(UnpackError::Corrupt {
                        after: lossy(&norm),
                        source: io::Error::new(io::ErrorKind::UnexpectedEof, "sparse entry data truncated"),
                    });
                }
            }
            // Consume unread data (non-file entries with a size) outside the header budget.
            None => {
                io::copy(&mut entry, &mut sink)
                    .map_err(|e| UnpackError::Corrupt { after: lossy(&norm), source: e })?;
            }
        }
        last.clear();
        match u.real_name.take() {
            Some(name) => last.extend_from_slice(&name),
            None => last.extend_from_slice(&entry.path_bytes()),
        }
    }
    u.finish()?;
    Ok(u.stats)
}

/// When the tar crate refused an old GNU sparse entry, the entry's path and what is wrong with
/// its map. `region` holds the bytes read while the tar crate parsed the headers, starting at
/// stream offset `at` (inside the previous entry's padding): headers start at multiples of 512.
fn failed_gnu_sparse(region: &[u8], at: u64) -> Option<(Vec<u8>, String)> {
    let mut p = usize::try_from((512 - at % 512) % 512).ok()?;
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax_path: Option<Vec<u8>> = None;
    loop {
        let block = region.get(p..p + 512)?;
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(block);
        let sum: u32 = block[..148].iter().chain(&block[156..]).map(|b| u32::from(*b)).sum::<u32>() + 8 * 32;
        if h.cksum().ok()? != sum {
            return None;
        }
        let size = h.entry_size().ok()?;
        match block[156] {
            b'x' | b'g' | b'L' | b'K' => {
                let len = usize::try_from(size).ok()?;
                let data = region.get(p + 512..p.checked_add(512 + len)?)?;
                match block[156] {
                    b'L' => long_name = Some(data.split(|b| *b == 0).next().unwrap_or(&[]).to_vec()),
                    b'x' => {
                        for (k, v) in parse_pax(data).ok()? {
                            if k == b"path" {
                                pax_path = Some(v);
                            }
                        }
                    }
                    _ => {}
                }
                p = p.checked_add(512 + len.div_ceil(512) * 512)?;
            }
            b'S' => {
                let name = pax_path.or(long_name).unwrap_or_else(|| h.path_bytes().into_owned());
                let name = display_path(&name);
                let ext = region.get(p + 512..).unwrap_or(&[]);
                let reason = match sparse::gnu_map(block, ext) {
                    Err(r) => r,
                    Ok((map, _)) => sparse::validate(&map, size, true).err()?,
                };
                return Some((name, reason));
            }
            _ => return None,
        }
    }
}
