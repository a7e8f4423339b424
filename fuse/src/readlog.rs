//! The read log (`-o readlog=FILE`): which regular files of the lower layers were opened for
//! reading, each once, in the order of their first open. `strata image optimize` runs a
//! command over an image with it on, then moves those files to the front of each layer, before
//! eStargz's prefetch landmark.
//!
//! The format, one line per file: the lower layer's index in `lowerdir=` (0: the top one), a
//! tab, the file's path in that layer (relative, as its layer tar names it), `\` written `\\`
//! and every byte below 0x20 and 0x7f written `\NNN` (three octal digits), so that a line is one
//! file whatever its name (`strata::optimize::readlog` reads it). Each line is appended with one
//! write (`O_APPEND`) before the open is answered, so the log is whole once the process that
//! read has ended, whatever happens to the daemon afterwards.
//!
//! Off (no option), the open path tests one `Option` and does nothing more.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An open read log.
#[derive(Debug)]
pub(crate) struct ReadLog {
    /// The file, and the (lower, path) pairs written to it so far.
    inner: Mutex<(File, HashSet<(usize, PathBuf)>)>,
}

impl ReadLog {
    /// Open (create) `path` for appending, mode 0600.
    pub(crate) fn open(path: &Path) -> io::Result<ReadLog> {
        let file = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path)?;
        Ok(ReadLog { inner: Mutex::new((file, HashSet::new())) })
    }

    /// File `rel` of lower layer `lower` was opened for reading: logged if it is the first time.
    /// A failed write is logged (the open itself goes on).
    pub(crate) fn record(&self, lower: usize, rel: &Path) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (file, seen) = &mut *g;
        if seen.contains(&(lower, rel.to_path_buf())) {
            return;
        }
        let line = line(lower, rel.as_os_str().as_bytes());
        match file.write_all(&line) {
            Ok(()) => {
                seen.insert((lower, rel.to_path_buf()));
            }
            Err(e) => tracing::warn!(lower, path = %rel.display(), error = %e, "read log: write failed"),
        }
    }
}

/// One line of the log (see the [module](self) docs).
pub(crate) fn line(lower: usize, rel: &[u8]) -> Vec<u8> {
    let mut out = format!("{lower}\t").into_bytes();
    for &b in rel {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b if b < 0x20 || b == 0x7f => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            b => out.push(b),
        }
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names with a backslash, a newline, a tab and DEL are one line each; others as they are.
    #[test]
    fn lines_escape_what_would_split_them() {
        assert_eq!(line(0, b"etc/motd"), b"0\tetc/motd\n");
        assert_eq!(line(12, b"a\\b\nc\td\x7f\xc3\xa9"), b"12\ta\\\\b\\012c\\011d\\177\xc3\xa9\n");
    }

    /// Each file once, in the order of its first open; the same path in two lowers twice.
    #[test]
    fn first_opens_only_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("log");
        let log = ReadLog::open(&p).expect("open");
        for (l, f) in [(1, "b"), (0, "a"), (1, "b"), (0, "b"), (0, "a")] {
            log.record(l, Path::new(f));
        }
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "1\tb\n0\ta\n0\tb\n");
    }
}
