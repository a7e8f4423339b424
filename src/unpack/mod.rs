//! Layer unpacking: an (uncompressed) layer tar stream into an overlayfs-format directory.
//!
//! - `stream.rs`: stream accounting (bytes read, the header data limit, the bytes behind an
//!   entry's headers, reads behind the tar crate's back).
//! - `policy.rs`: path and whiteout policy (which names are refused, `.wh.` names, opaque
//!   markers).
//! - `fs.rs`: the confined filesystem operations (`openat2` with `RESOLVE_IN_ROOT`, mknod, links,
//!   xattrs, times).
//! - this file: the public API and the entry driver (entry types, metadata from the header and
//!   PAX records, sparse maps); the tar format itself is [`crate::tar`]'s.
//!
//! Unknown entry types are an error (as containerd); PAX global headers are skipped. Xattrs are
//! kept as [`crate::tar::keeps_xattr`] says (the overlay's own are dropped).
//!
//! # Sparse files
//! GNU sparse entries (old GNU `S` entries and PAX formats 0.0, 0.1 and 1.0; see [`crate::tar::sparse`])
//! become files whose data extents are written at their offsets and whose holes stay holes; the
//! size is set last. The holes are never read: the tar crate expands an `S` entry with its
//! zeros, so the unpacker reads that entry's data blocks from the stream itself (and the tar
//! crate's later skip over them is answered without the stream, see `Budget::debt`). A map
//! that is malformed or disagrees with the entry is an [`UnpackError::Sparse`] naming the entry.
//!
//! Nothing is fsynced here: call [`syncfs`] once on the finished layer.

mod fs;
mod policy;
mod stream;

use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::CString;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{FileType, Mode, OFlags, Timespec, CWD};

use self::fs::O_PATH_DIR;
use self::policy::{classify_whiteout, display_path, lossy, normalize, os, split, Whiteout};
pub use self::stream::MAX_HEADER_BYTES;
use self::stream::{BoundedReader, Budget, DirectReader};
use crate::overlay_format;
use crate::tar::{pax, sparse, ustar};

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
    /// Skip device nodes (character and block devices) with a warning instead of creating them:
    /// a user namespace may not create them (rootless mode, as podman does). Whiteouts are made
    /// all the same (a 0:0 character device is allowed there).
    pub skip_devices: bool,
}

impl UnpackOptions {
    /// The options for this process's mode ([`crate::userns::current`]): in rootless mode
    /// opaque markers as `user.overlay.opaque` and device nodes skipped.
    pub fn for_this_process() -> UnpackOptions {
        let rootless = crate::userns::is_rootless();
        UnpackOptions {
            opaque_xattr: if rootless { XattrNamespace::User } else { XattrNamespace::Trusted },
            no_same_owner: false,
            skip_devices: rootless,
        }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries processed (including whiteouts and skipped entries).
    pub entries: u64,
    /// Regular-file content bytes written (apparent size).
    pub bytes: u64,
    /// Device nodes left out ([`UnpackOptions::skip_devices`]).
    pub devices_skipped: u64,
}

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
    Hardlink {
        path: String,
        target: String,
        reason: String,
        /// The failed operation's error, when one caused it.
        #[source]
        source: Option<std::io::Error>,
    },
    /// An entry type this unpacker does not handle.
    #[error("entry {path:?}: unsupported tar entry: {what}")]
    Unsupported { path: String, what: String },
    /// Malformed header fields (e.g. an out-of-range uid).
    #[error("entry {path:?}: {reason}")]
    Entry {
        path: String,
        reason: String,
        /// The header field's parse error, when one caused it.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A sparse file whose map is malformed, inconsistent with the entry, or too large (see
    /// [`crate::tar::sparse`]).
    #[error("entry {path:?}: sparse file: {reason}")]
    Sparse {
        path: String,
        reason: String,
        /// The read error, when one caused it (a malformed map has none).
        #[source]
        source: Option<std::io::Error>,
    },
    /// An owner the user namespace does not map (rootless mode: outside the user's
    /// subordinate ranges).
    #[error(
        "entry {path:?}: owner {uid}:{gid} is not mapped in this user namespace: potentially \
         insufficient UIDs or GIDs available in /etc/subuid and /etc/subgid for the user \
         namespace (give the user a range that covers it, then restart the namespace: kill \
         $(cat $XDG_RUNTIME_DIR/strata/pause.pid))"
    )]
    UnmappedOwner { path: String, uid: u32, gid: u32 },
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
            | UnpackError::UnmappedOwner { path, .. }
            | UnpackError::Io { path, .. } => Some(path),
        }
    }

    /// What class of failure this is (see [`crate::error::ErrorKind`]): the layer's fault
    /// ([`ErrorKind::InvalidArgument`](crate::error::ErrorKind)) unless a filesystem operation
    /// failed for its own reason (no space, permissions).
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            UnpackError::Io { source, .. } => match ErrorKind::of_io(source) {
                ErrorKind::Internal => ErrorKind::Internal,
                _ => ErrorKind::InvalidArgument,
            },
            UnpackError::UnmappedOwner { .. } => ErrorKind::FailedPrecondition,
            _ => ErrorKind::InvalidArgument,
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
    /// The current entry's PAX records (see [`pax::records_before`]).
    pax: Vec<pax::PaxRecord>,
    /// The current entry's map, when it is an old GNU sparse entry (parsed by the unpack loop).
    gnu_sparse: Option<sparse::Map>,
    /// The current entry's path, when it is not the tar crate's (`GNU.sparse.name`).
    real_name: Option<Vec<u8>>,
    /// The first device node skipped, for the one warning of the layer.
    first_device: Option<String>,
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
    UnpackError::Sparse { path: shown(path), reason: reason.into(), source: None }
}

impl<'o> Unpacker<'o> {
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        direct: &mut dyn Read,
        norm: &mut Vec<u8>,
    ) -> Result<(), UnpackError> {
        let etype = entry.header().entry_type();
        let pax_sparse = sparse::pax_sparse(&self.pax).map_err(|r| {
            // Name the entry by its real name when the records give one.
            let name = self.pax.iter().rev().find(|(k, _)| k == sparse::PAX_NAME).map(|(_, v)| v.clone());
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
                    source: None,
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
            Kind::Char | Kind::Block if self.opts.skip_devices => {
                // One warning per layer (at its end), naming the first: a base image has dozens.
                tracing::debug!(path = %lossy(path), "device node skipped");
                if self.stats.devices_skipped == 0 {
                    self.first_device = Some(lossy(path));
                }
                self.stats.devices_skipped += 1;
                Ok(())
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
        let bad = |what: &str, source: io::Error| UnpackError::Entry {
            path: lossy(path),
            reason: format!("invalid device {what} number"),
            source: Some(source),
        };
        let major = h.device_major().map_err(|e| bad("major", e))?.unwrap_or(0);
        let minor = h.device_minor().map_err(|e| bad("minor", e))?.unwrap_or(0);
        Ok(rustix::fs::makedev(major, minor))
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, path: &[u8]) -> Result<Meta, UnpackError> {
        let h = entry.header();
        let bad = |reason: String| UnpackError::Entry { path: lossy(path), reason, source: None };
        let field = |name: &str, source: io::Error| UnpackError::Entry {
            path: lossy(path),
            reason: format!("invalid {name} field"),
            source: Some(source),
        };
        let mode = h.mode().map_err(|e| field("mode", e))? & 0o7777;
        let uid = h.uid().map_err(|e| field("uid", e))?;
        let gid = h.gid().map_err(|e| field("gid", e))?;
        let uid = u32::try_from(uid)
            .ok()
            .filter(|u| *u != u32::MAX)
            .ok_or_else(|| bad(format!("uid {uid} out of range")))?;
        let gid = u32::try_from(gid)
            .ok()
            .filter(|g| *g != u32::MAX)
            .ok_or_else(|| bad(format!("gid {gid} out of range")))?;
        let mtime = h.mtime().map_err(|e| field("mtime", e))?;
        let mut mtime = Timespec { tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX), tv_nsec: 0 };
        let mut xattrs = Vec::new();
        {
            let _ = entry;
            for (key, value) in &self.pax {
                let key = key.as_slice();
                if key == pax::MTIME {
                    mtime = pax::parse_time(value).ok_or_else(|| bad("malformed PAX mtime".into()))?;
                } else if let Some(name) = pax::xattr_name(key) {
                    if !crate::tar::keeps_xattr(name) {
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
        first_device: None,
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
            pax::records_before(region).map_err(|reason| UnpackError::Corrupt {
                after: lossy(&last),
                source: io::Error::new(io::ErrorKind::InvalidData, format!("malformed PAX header: {reason}")),
            })?
        };
        // Old GNU sparse: the tar crate expands the data with its holes (reading gigabytes of
        // zeros for a large file). The map is parsed here from the header and its extension
        // blocks, and the data blocks are read directly from the stream, never through `entry`.
        let gnu_data = if entry.header().entry_type().is_gnu_sparse() {
            let shown_path = display_path(&entry.path_bytes());
            let data_size = entry.header().entry_size().map_err(|e| UnpackError::Sparse {
                path: shown(&shown_path),
                reason: "invalid size field".into(),
                source: Some(e),
            })?;
            if u.pax.iter().any(|(k, _)| k == pax::SIZE || k.starts_with(sparse::PAX_PREFIX)) {
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
    if let Some(first) = &u.first_device {
        tracing::warn!(
            count = u.stats.devices_skipped,
            first = %first,
            "device nodes skipped: a user namespace cannot create them (rootless mode, as podman)"
        );
    }
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
        let h = ustar::checked_header(block)?;
        let size = h.entry_size().ok()?;
        match block[ustar::TYPEFLAG] {
            kind if ustar::is_extension(kind) => {
                let len = usize::try_from(size).ok()?;
                let data = region.get(p + 512..p.checked_add(512 + len)?)?;
                match kind {
                    b'L' => long_name = Some(data.split(|b| *b == 0).next().unwrap_or(&[]).to_vec()),
                    b'x' => {
                        for (k, v) in pax::parse(data).ok()? {
                            if k == pax::PATH {
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
