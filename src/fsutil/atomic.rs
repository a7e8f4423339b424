//! The one way strata writes a whole file (an archive, a layout's `index.json` or blob, `-o FILE`,
//! auth.json, a container's exit code): so that a crash leaves the old file or the complete new
//! one, and so that nobody who can write to the destination's directory can redirect the write.
//!
//! - The destination's directory is opened once; every later step is relative to that fd, so a
//!   directory renamed or swapped for a symlink meanwhile changes nothing.
//! - The temporary file `.NAME.tmp-PID-N` (N random) is created with `O_EXCL | O_NOFOLLOW`: a
//!   symlink or any file planted under that name is never opened, let alone followed, and the name
//!   cannot be guessed ahead of time.
//! - [`AtomicFile::commit`] fsyncs the file, renames it over `NAME` (`renameat`, which replaces a
//!   symlink at `NAME` rather than following it; [`AtomicFile::commit_new`] never replaces
//!   anything), then fsyncs the directory.
//! - Until then the temporary file is removed on every failure and when the writer is dropped.
//!
//! The writer holds an flock on its temp file from creation to rename, so a temp file whose lock
//! is free belongs to a writer that died (kill -9, power loss): [`remove_stale_temps`], which
//! [`atomic_write`] and export call first, removes it. The lock, not the PID, decides (a dead
//! writer's PID may be reused by the time anyone looks).

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufWriter, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, RenameFlags};

/// What went wrong, naming the path it happened at (the destination, its directory or the
/// temporary file); the cause is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// [`AtomicFile::commit_new`] found a file at the destination.
    #[error("{}: already exists", path.display())]
    Exists { path: PathBuf },
    #[error("{}: not a file name", path.display())]
    NotAFileName { path: PathBuf },
}

impl AtomicError {
    /// What class of failure this is (see [`crate::error::ErrorKind`]).
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            AtomicError::Io { source, .. } => ErrorKind::of_io(source),
            AtomicError::Exists { .. } => ErrorKind::AlreadyExists,
            AtomicError::NotAFileName { .. } => ErrorKind::InvalidArgument,
        }
    }
}

impl From<AtomicError> for io::Error {
    /// Keeps the cause's kind (NotFound, PermissionDenied...) for callers that match on it.
    fn from(e: AtomicError) -> io::Error {
        let kind = match &e {
            AtomicError::Io { source, .. } => source.kind(),
            AtomicError::Exists { .. } => io::ErrorKind::AlreadyExists,
            AtomicError::NotAFileName { .. } => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> AtomicError {
    let path = path.into();
    move |source| AtomicError::Io { path, source }
}

/// The directory holding `path` (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A number nobody outside this process can predict: SipHash under the process's random
/// `RandomState` keys (from the kernel's getrandom) of a counter and the time.
fn unpredictable() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(TMP_COUNTER.fetch_add(1, Ordering::Relaxed));
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    h.write_u128(t.as_nanos());
    h.finish()
}

/// A fresh temp name for the file `name`: `.NAME.tmp-PID-N`, N random.
fn tmp_file_name(name: &OsStr) -> OsString {
    let mut s = OsString::from(".");
    s.push(name);
    s.push(format!(".tmp-{}-{}", std::process::id(), unpredictable()));
    s
}

/// A fresh temp path next to `path` (see [`tmp_file_name`]).
pub fn tmp_name(path: &Path) -> PathBuf {
    path.with_file_name(tmp_file_name(path.file_name().unwrap_or_default()))
}

/// `NAME` if `file_name` is one of strata's temp names for it (`.NAME.tmp-PID[-N]`).
pub fn temp_target(file_name: &str) -> Option<&str> {
    let (name, suffix) = file_name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    let mut parts = suffix.splitn(2, '-');
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ok = parts.next().is_some_and(digits) && parts.next().is_none_or(digits);
    (ok && !name.is_empty()).then_some(name)
}

/// Whether `path` and the open `file` are the same inode.
fn same_file(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Whether `name` in `dir` is (still) the inode open as `file`; never follows a symlink.
fn same_file_at(dir: &OwnedFd, name: &OsStr, file: &File) -> bool {
    match (rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW), rustix::fs::fstat(file)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

/// A new file being written under a temp name next to its destination; see the module doc.
/// Dropped without [`commit`](Self::commit), it removes its temp file.
#[derive(Debug)]
pub struct AtomicFile {
    dir: OwnedFd,
    dir_path: PathBuf,
    dest: PathBuf,
    name: OsString,
    tmp: OsString,
    file: File,
    committed: bool,
}

impl AtomicFile {
    /// Create (exclusively, never through a symlink) and lock the temp file for `dest`, with
    /// `mode` (the umask applies). Errors name `dest`'s directory.
    pub fn create(dest: &Path, mode: u32) -> Result<AtomicFile, AtomicError> {
        let name = match dest.file_name() {
            Some(n) if !n.as_bytes().contains(&b'/') => n.to_os_string(),
            _ => return Err(AtomicError::NotAFileName { path: dest.to_path_buf() }),
        };
        let dir_path = parent_dir(dest).to_path_buf();
        let dir =
            rustix::fs::open(&dir_path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| io_at(&dir_path)(e.into()))?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut last = io::Error::other("temp file vanished while it was being created");
        for _ in 0..8 {
            let tmp = tmp_file_name(&name);
            let file = match rustix::fs::openat(&dir, &tmp, flags, Mode::from_raw_mode(mode)) {
                Ok(fd) => File::from(fd),
                // Someone made this name first (it cannot have been guessed): take another.
                Err(rustix::io::Errno::EXIST) => {
                    last = rustix::io::Errno::EXIST.into();
                    continue;
                }
                Err(e) => return Err(io_at(&dir_path)(e.into())),
            };
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                // A stale-temp sweep may have taken it (and removed it) before the lock.
                Ok(()) if same_file_at(&dir, &tmp, &file) => {
                    return Ok(AtomicFile {
                        dir,
                        dir_path,
                        dest: dest.to_path_buf(),
                        name,
                        tmp,
                        file,
                        committed: false,
                    })
                }
                Ok(()) => {}
                Err(e) => last = e.into(),
            }
        }
        Err(io_at(&dir_path)(last))
    }

    /// The open temp file, to write to (through `&File`, which is `Write`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where the temp file is, for messages.
    pub fn path(&self) -> PathBuf {
        self.dir_path.join(&self.tmp)
    }

    /// Write all of `data`; an error names the temp file.
    pub fn write_all(&mut self, data: &[u8]) -> Result<(), AtomicError> {
        self.file.write_all(data).map_err(|e| io_at(self.path())(e))
    }

    /// fsync, rename over the destination (replacing whatever is there, a symlink included,
    /// without following it), fsync the directory.
    pub fn commit(self) -> Result<(), AtomicError> {
        self.finish(true)
    }

    /// As [`commit`](Self::commit), but an existing destination is an error
    /// ([`AtomicError::Exists`]), even one created since anybody checked.
    pub fn commit_new(self) -> Result<(), AtomicError> {
        self.finish(false)
    }

    fn finish(mut self, replace: bool) -> Result<(), AtomicError> {
        self.file.sync_all().map_err(io_at(self.path()))?;
        if replace {
            rustix::fs::renameat(&self.dir, &self.tmp, &self.dir, &self.name)
                .map_err(|e| io_at(&self.dest)(e.into()))?;
        } else {
            self.rename_noreplace()?;
        }
        self.committed = true;
        rustix::fs::fsync(&self.dir).map_err(|e| io_at(&self.dir_path)(e.into()))
    }

    /// Rename that never replaces the destination.
    fn rename_noreplace(&self) -> Result<(), AtomicError> {
        let exists = || AtomicError::Exists { path: self.dest.clone() };
        match rustix::fs::renameat_with(&self.dir, &self.tmp, &self.dir, &self.name, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::EXIST) => Err(exists()),
            // Filesystems without RENAME_NOREPLACE: a hard link refuses an existing name too.
            Err(rustix::io::Errno::INVAL) => {
                match rustix::fs::linkat(&self.dir, &self.tmp, &self.dir, &self.name, AtFlags::empty()) {
                    Ok(()) => {
                        let _ = rustix::fs::unlinkat(&self.dir, &self.tmp, AtFlags::empty());
                        Ok(())
                    }
                    Err(rustix::io::Errno::EXIST) => Err(exists()),
                    Err(e) => Err(io_at(&self.dest)(e.into())),
                }
            }
            Err(e) => Err(io_at(&self.dest)(e.into())),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = rustix::fs::unlinkat(&self.dir, &self.tmp, AtFlags::empty());
        }
    }
}

/// Write `path` whole through `f` (buffered) as an [`AtomicFile`] with `mode` for a new file (the
/// umask still applies), replacing what is there; a killed writer's temp files for `path` are
/// removed first. The temp file is removed when anything fails.
pub fn atomic_write<E: From<AtomicError>>(
    path: &Path,
    mode: u32,
    f: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), E> {
    if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
        remove_stale_temps(parent_dir(path), |n| n == name);
    }
    let t = AtomicFile::create(path, mode)?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, t.file());
        f(&mut w)?;
        w.flush().map_err(io_at(t.path()))?;
    }
    t.commit()?;
    Ok(())
}

/// Remove the temp files in `dir` that `wanted` claims (by target name) and no live writer
/// holds. Best effort: what cannot be examined stays.
pub fn remove_stale_temps(dir: &Path, wanted: impl Fn(&str) -> bool) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !temp_target(name).is_some_and(&wanted) {
            continue;
        }
        let path = dir.join(name);
        // Never follow a link or block on a FIFO planted under such a name.
        let Ok(f) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&path)
        else {
            continue;
        };
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            continue;
        }
        match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) if same_file(&path, &f) => match fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed a killed writer's temp file"),
                Err(e) => tracing::debug!(path = %path.display(), error = %e, "stale temp file stays"),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn temp_names() {
        let t = tmp_name(Path::new("/x/img.tar"));
        let name = t.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_target(name), Some("img.tar"), "{name}");
        assert_eq!(temp_target(".img.tar.tmp-123"), Some("img.tar"));
        assert_eq!(temp_target(".a.tmp-b.tmp-1-2"), Some("a.tmp-b"));
        for not in [
            "img.tar.tmp-1",
            ".img.tar.tmp-",
            ".img.tar.tmp-x",
            ".img.tar.tmp-1-",
            ".img.tar.tmp-1-2-3",
            "..tmp-1",
        ] {
            assert_eq!(temp_target(not), None, "{not}");
        }
        // Not predictable: two names for one target differ.
        assert_ne!(tmp_name(Path::new("a")), tmp_name(Path::new("a")));
    }

    /// Only unlocked temp files of the wanted target go; a live writer's (locked) stays, and so do
    /// other names, symlinks and FIFOs.
    #[test]
    fn stale_temps_removed_only_when_unlocked() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let dead = d.join(".a.tar.tmp-4194999-0");
        fs::write(&dead, b"half").unwrap();
        let live = AtomicFile::create(&d.join("a.tar"), 0o644).unwrap();
        let other = d.join(".b.tar.tmp-4194999-0");
        fs::write(&other, b"x").unwrap();
        let target = d.join("target");
        fs::write(&target, b"keep").unwrap();
        let link = d.join(".a.tar.tmp-4194998");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let fifo = d.join(".a.tar.tmp-4194997");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from(0o600),
            0,
        )
        .unwrap();
        remove_stale_temps(d, |n| n == "a.tar");
        assert!(!dead.exists());
        assert!(live.path().exists(), "a live export's temp file stays");
        assert!(other.exists() && fs::symlink_metadata(&link).is_ok() && fifo.exists());
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        let live_path = live.path();
        drop(live);
        assert!(!live_path.exists(), "an unpersisted temp file goes with its writer");
    }

    /// Symlinks planted at the destination and at every name the old writer would have used
    /// (`.NAME.tmp-PID`, `.NAME.tmp-PID-N`) are not followed: the files they point to keep their
    /// content, the destination becomes a regular file with the new content.
    #[test]
    fn never_follows_a_planted_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, outside) = (tmp.path().join("d"), tmp.path().join("outside"));
        fs::create_dir(&d).unwrap();
        fs::create_dir(&outside).unwrap();
        let victim = outside.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let pid = std::process::id();
        let mut planted = vec![format!(".out.tmp-{pid}")];
        planted.extend((0..16).map(|n| format!(".out.tmp-{pid}-{n}")));
        for p in &planted {
            std::os::unix::fs::symlink(&victim, d.join(p)).unwrap();
        }
        std::os::unix::fs::symlink(&victim, d.join("out")).unwrap();
        atomic_write(&d.join("out"), 0o600, |w| w.write_all(b"new")).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let md = fs::symlink_metadata(d.join("out")).unwrap();
        assert!(md.is_file(), "the link at the destination is replaced, not followed");
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(d.join("out")).unwrap(), b"new");
        for p in &planted {
            assert!(fs::symlink_metadata(d.join(p)).unwrap().file_type().is_symlink(), "{p}");
        }
        assert_eq!(names(&outside), ["victim"]);
        // commit_new refuses an existing destination, a symlink included, and cleans up.
        std::os::unix::fs::symlink(&victim, d.join("new")).unwrap();
        let mut t = AtomicFile::create(&d.join("new"), 0o644).unwrap();
        t.write_all(b"x").unwrap();
        let e = t.commit_new().unwrap_err();
        assert!(matches!(&e, AtomicError::Exists { path } if path == &d.join("new")), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let mut want: Vec<String> = planted.clone();
        want.extend(["new".into(), "out".into()]);
        want.sort();
        assert_eq!(names(&d), want);
    }

    /// A failing writer and a dropped (crashed) one leave the old file whole and no temp file;
    /// errors name the path and keep the cause as `source()`.
    #[test]
    fn cleans_up_on_error_and_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let p = d.join("f");
        fs::write(&p, b"old").unwrap();
        let e = atomic_write(&p, 0o644, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("boom"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "boom");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(names(d), ["f"]);

        let mut t = AtomicFile::create(&p, 0o644).unwrap();
        t.write_all(b"half of the new content").unwrap();
        assert_eq!(names(d).len(), 2);
        drop(t);
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(names(d), ["f"]);

        let missing = d.join("no/such");
        let e = AtomicFile::create(&missing.join("f"), 0o644).unwrap_err();
        assert!(
            matches!(&e, AtomicError::Io { path, source } if path == &missing
            && source.kind() == io::ErrorKind::NotFound),
            "{e:?}"
        );
        assert_eq!(e.to_string(), missing.display().to_string(), "the message names the path");
        assert!(std::error::Error::source(&e).is_some(), "the cause is the source");
        let e = AtomicFile::create(Path::new("/"), 0o644).unwrap_err();
        assert!(matches!(e, AtomicError::NotAFileName { .. }), "{e}");
    }
}
