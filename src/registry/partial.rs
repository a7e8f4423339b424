//! A remote layer's blob as it arrives (`pull --lazy`, see docs/lazy.md): the compressed bytes
//! fetched so far, by whoever fetched them (the pull's TOC tail, strata-fuse's reads, prefetch
//! and background completion, `complete_layers`), kept so that the whole blob can be assembled
//! without fetching any byte twice.
//!
//! - `remote/<diff_id>/blob.partial`: a sparse file, each range written at its offset in the
//!   blob;
//! - `remote/<diff_id>/blob.ranges`: one line `START END` appended for each range *after* its
//!   bytes are written. Only whole lines count, and a line claims no more than its bytes: a
//!   process killed mid-write (kill -9) leaves at most a range that is not recorded and is
//!   fetched again.
//!
//! Nothing here is trusted: a range served from it is decoded and verified chunk by chunk as
//! any fetched range is, and the whole file becomes a blob only once its digest and size are
//! the descriptor's ([`super::lazy::complete_layers`], which copies it into the blob store while
//! it hashes, and removes both files). Several processes may hold one layer's files at once
//! (two containers over it): each appends its own ranges, and [`PartialBlob::refresh`] reads
//! the others'. Writes of one range by two processes are of the same registry bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The partial blob's data file in a remote layer's directory.
pub const DATA: &str = crate::store::PARTIAL_BLOB_FILES[0];
/// The partial blob's record of ranges.
pub const RANGES: &str = crate::store::PARTIAL_BLOB_FILES[1];
/// Taken (flock, exclusive) by the process completing the layer in the background: one at a
/// time; released when it ends, killed or not.
pub const BACKGROUND_LOCK: &str = "background.lock";

/// A remote layer's blob as far as it has arrived.
#[derive(Debug)]
pub struct PartialBlob {
    data: File,
    log: File,
    path: PathBuf,
    size: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Sorted, disjoint, not adjacent.
    have: Vec<Range<u64>>,
    /// Bytes of the ranges file read so far.
    read: u64,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PartialBlob {
    /// The partial blob of `size` bytes in directory `dir` (made when missing), with the ranges
    /// recorded there so far.
    pub fn open(dir: &Path, size: u64) -> io::Result<PartialBlob> {
        fs::create_dir_all(dir)?;
        let open = |name: &str, append: bool| {
            let mut o = OpenOptions::new();
            o.read(true).create(true).mode(0o600);
            if append {
                o.append(true);
            } else {
                o.write(true);
            }
            o.open(dir.join(name))
        };
        let p = PartialBlob {
            data: open(DATA, false)?,
            log: open(RANGES, true)?,
            path: dir.join(DATA),
            size,
            state: Mutex::new(State::default()),
        };
        p.refresh()?;
        Ok(p)
    }

    /// Whether directory `dir` holds a partial blob.
    pub fn exists(dir: &Path) -> bool {
        dir.join(RANGES).is_file()
    }

    /// Remove the partial blob of directory `dir` (a process holding it open writes on into
    /// the removed files, harmlessly).
    pub fn remove(dir: &Path) -> io::Result<()> {
        for f in [RANGES, DATA] {
            match fs::remove_file(dir.join(f)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Read the ranges other processes recorded since the last look.
    pub fn refresh(&self) -> io::Result<()> {
        let mut st = lock(&self.state);
        let len = self.log.metadata()?.len();
        if len <= st.read {
            return Ok(());
        }
        let mut buf = vec![0u8; (len - st.read) as usize];
        self.log.read_exact_at(&mut buf, st.read)?;
        // Whole lines only: a line being written is read at the next look.
        let whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in buf[..whole].split(|&b| b == b'\n') {
            if let Some(r) = parse_line(line).filter(|r| r.start < r.end && r.end <= self.size) {
                insert(&mut st.have, r);
            }
        }
        st.read += whole as u64;
        Ok(())
    }

    /// Keep `data`, the blob's bytes from `offset`: written, then recorded.
    pub fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset.checked_add(data.len() as u64).filter(|&e| e <= self.size);
        let Some(end) = end.filter(|_| !data.is_empty()) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a range outside the blob"));
        };
        self.data.write_all_at(data, offset)?;
        // One write of one short line: appended whole (O_APPEND), never torn by a kill.
        (&self.log).write_all(format!("{offset} {end}\n").as_bytes())?;
        insert(&mut lock(&self.state).have, offset..end);
        Ok(())
    }

    /// The bytes `range` of the blob, if every one of them is here (after a look at what other
    /// processes recorded). Unverified: the caller verifies what it uses.
    pub fn read(&self, range: Range<u64>) -> io::Result<Option<Vec<u8>>> {
        if range.start >= range.end {
            return Ok(None);
        }
        if !self.covers(&range) {
            self.refresh()?;
            if !self.covers(&range) {
                return Ok(None);
            }
        }
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        self.data.read_exact_at(&mut buf, range.start)?;
        Ok(Some(buf))
    }

    /// The parts of `range` not here (after a look at what other processes recorded), in
    /// order.
    pub fn gaps_in(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        self.refresh()?;
        let st = lock(&self.state);
        let mut out = Vec::new();
        let mut at = range.start;
        for h in st.have.iter().filter(|h| h.end > range.start && h.start < range.end) {
            if h.start > at {
                out.push(at..h.start);
            }
            at = at.max(h.end);
        }
        if at < range.end {
            out.push(at..range.end);
        }
        Ok(out)
    }

    /// The file's bytes `range`, whatever is here (zeros where nothing is).
    pub fn read_raw(&self, range: Range<u64>) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; range.end.saturating_sub(range.start) as usize];
        let mut done = 0;
        while done < buf.len() {
            match self.data.read_at(&mut buf[done..], range.start + done as u64)? {
                0 => break, // past the file's end: zeros
                n => done += n,
            }
        }
        Ok(buf)
    }

    fn covers(&self, r: &Range<u64>) -> bool {
        lock(&self.state).have.iter().any(|h| h.start <= r.start && r.end <= h.end)
    }

    /// The first range of the blob not here, whole.
    pub fn first_gap(&self) -> Option<Range<u64>> {
        let st = lock(&self.state);
        let mut at = 0;
        for h in &st.have {
            if h.start > at {
                return Some(at..h.start);
            }
            at = at.max(h.end);
        }
        (at < self.size).then_some(at..self.size)
    }

    /// Bytes here.
    pub fn have(&self) -> u64 {
        lock(&self.state).have.iter().map(|r| r.end - r.start).sum()
    }

    /// Whether every byte of the blob is here.
    pub fn is_complete(&self) -> bool {
        self.first_gap().is_none()
    }
}

fn parse_line(line: &[u8]) -> Option<Range<u64>> {
    let s = std::str::from_utf8(line).ok()?;
    let (a, b) = s.split_once(' ')?;
    Some(a.parse().ok()?..b.parse().ok()?)
}

/// Add `r` to the sorted, disjoint `have`, merging what it touches.
fn insert(have: &mut Vec<Range<u64>>, r: Range<u64>) {
    let mut merged = r;
    let mut out = Vec::with_capacity(have.len() + 1);
    let mut placed = false;
    for h in have.drain(..) {
        if h.end < merged.start {
            out.push(h);
        } else if merged.end < h.start {
            if !placed {
                out.push(merged.clone());
                placed = true;
            }
            out.push(h);
        } else {
            merged = merged.start.min(h.start)..merged.end.max(h.end);
        }
    }
    if !placed {
        out.push(merged);
    }
    *have = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranges written by one handle are read by another (another process's, say) at its next
    /// look; a torn last line counts for nothing; gaps and completeness follow.
    #[test]
    fn ranges_are_recorded_after_their_bytes_and_shared() {
        let t = tempfile::tempdir().unwrap();
        let blob: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let a = PartialBlob::open(t.path(), 1000).unwrap();
        assert_eq!(a.first_gap(), Some(0..1000));
        a.write(100, &blob[100..300]).unwrap();
        a.write(500, &blob[500..600]).unwrap();
        assert_eq!(a.read(150..250).unwrap().as_deref(), Some(&blob[150..250]));
        assert_eq!(a.read(250..350).unwrap(), None, "not all there");
        assert_eq!(a.gaps_in(50..700).unwrap(), vec![50..100, 300..500, 600..700]);
        assert_eq!(a.gaps_in(150..250).unwrap(), vec![]);
        assert_eq!(&a.read_raw(280..320).unwrap()[..20], &blob[280..300]);
        assert!(a.write(900, &blob[..200]).is_err(), "past the end");
        let b = PartialBlob::open(t.path(), 1000).unwrap();
        assert_eq!((b.have(), b.first_gap()), (300, Some(0..100)));
        b.write(0, &blob[..100]).unwrap();
        b.write(300, &blob[300..500]).unwrap();
        // `a` sees them when it needs them.
        assert_eq!(a.read(0..600).unwrap().as_deref(), Some(&blob[..600]));
        assert_eq!(a.first_gap(), Some(600..1000));
        // A torn line (a writer killed mid-line) claims nothing; whole lines after it count.
        let mut log = OpenOptions::new().append(true).open(t.path().join(RANGES)).unwrap();
        log.write_all(b"600 10").unwrap();
        let c = PartialBlob::open(t.path(), 1000).unwrap();
        assert_eq!(c.first_gap(), Some(600..1000));
        log.write_all(b"\n700 2000\nx y\n").unwrap();
        c.refresh().unwrap();
        assert_eq!(c.first_gap(), Some(600..1000), "a range outside the blob is ignored");
        c.write(600, &blob[600..]).unwrap();
        assert!(c.is_complete());
        assert_eq!(fs::read(c.path()).unwrap(), blob);
        PartialBlob::remove(t.path()).unwrap();
        assert!(!PartialBlob::exists(t.path()));
        PartialBlob::remove(t.path()).unwrap();
    }

    #[test]
    fn ranges_merge() {
        let mut h = Vec::new();
        for r in [10..20, 30..40, 20..25, 5..8, 50..60, 39..51] {
            insert(&mut h, r);
        }
        assert_eq!(h, vec![5..8, 10..25, 30..60]);
        insert(&mut h, 0..100);
        assert_eq!(h, vec![0..100]);
    }
}
