//! Sparse files in the layer tar: a regular file whose data (as `SEEK_DATA`/`SEEK_HOLE` on its
//! open descriptor report it) covers less than its size is written as a GNU sparse entry, PAX
//! format 1.0, as `tar --format=posix --sparse` writes it and GNU tar and Go's `archive/tar`
//! (umoci, containerd, docker) read it:
//!
//! - PAX records `GNU.sparse.major=1`, `GNU.sparse.minor=0`, `GNU.sparse.name=<path>`,
//!   `GNU.sparse.realsize=<size>`; the ustar name is the placeholder
//!   `<dir>/GNUSparseFile.0/<name>` (GNU tar puts its pid where we put 0, which would make the
//!   output differ from run to run), cut to the 100 bytes of the name field when it does not fit
//!   ustar, as GNU tar does: the real name is `GNU.sparse.name`.
//! - The entry's data: the map (decimal numbers, one per line: the count, then offset and size of
//!   each extent), zero-padded to 512 bytes, then each extent's bytes, one after the other. As
//!   GNU tar, a file ending in a hole gets a last, empty extent at its size.
//! - Extents are widened to 512-byte boundaries (and merged where they then touch): GNU tar pads
//!   every extent to 512 bytes in the archive, Go and the tar crate read them back to back, and
//!   the two agree only when every extent but the last is a multiple of 512 bytes. Filesystems
//!   report extents in whole blocks anyway, so this changes nothing but a few zeros.
//!
//! Files without holes keep their plain entries (same bytes as before). The data is read extent
//! by extent with `pread`; a file that shrinks, grows or gets new data or holes while it is
//! archived is an error, not a corrupt or silently wrong tar.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

pub(super) use crate::tar::sparse::placeholder_name;
use crate::tar::sparse::{map_block, Extent, BLOCK};

/// The data extents of the open file `fd` of `size` bytes, widened to 512-byte boundaries (the
/// last one clamped to `size`) and merged. A filesystem that cannot tell holes from data reports
/// the whole file as data. Moves the file offset.
pub(super) fn data_extents(fd: BorrowedFd<'_>, size: u64) -> io::Result<Vec<Extent>> {
    let mut out: Vec<Extent> = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match rustix::fs::seek(fd, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // No data at or after pos.
            Err(Errno::NXIO) => break,
            // No SEEK_DATA here: all data.
            Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) if pos == 0 => {
                return Ok(vec![Extent { offset: 0, len: size }]);
            }
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = match rustix::fs::seek(fd, SeekFrom::Hole(data)) {
            Ok(h) => h.min(size),
            Err(Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if hole <= data {
            // The file changed under us; the re-check after reading reports it.
            break;
        }
        let start = data / BLOCK * BLOCK;
        let end = hole.div_ceil(BLOCK).saturating_mul(BLOCK).min(size);
        match out.last_mut() {
            Some(last) if start <= last.offset + last.len => {
                last.len = end.max(last.offset + last.len) - last.offset;
            }
            _ => out.push(Extent { offset: start, len: end - start }),
        }
        pos = hole;
    }
    Ok(out)
}

/// True when `extents` leave holes in a file of `size` bytes.
pub(super) fn has_holes(extents: &[Extent], size: u64) -> bool {
    extents.iter().map(|e| e.len).sum::<u64>() < size
}

/// The data of a sparse entry: the map block, then each extent read with `pread`. At the end the
/// file is checked to still have the size and extents it was archived with.
pub(super) struct SparseReader<'a> {
    file: File,
    map: Vec<u8>,
    map_pos: usize,
    extents: Vec<Extent>,
    idx: usize,
    done_in_extent: u64,
    size: u64,
    checked: bool,
    path: &'a Path,
}

impl<'a> SparseReader<'a> {
    pub(super) fn new(file: File, extents: Vec<Extent>, size: u64, path: &'a Path) -> Self {
        let map = map_block(&extents, size);
        SparseReader { file, map, map_pos: 0, extents, idx: 0, done_in_extent: 0, size, checked: false, path }
    }

    /// Bytes of entry data: the map block plus the extents.
    pub(super) fn len(&self) -> u64 {
        self.map.len() as u64 + self.extents.iter().map(|e| e.len).sum::<u64>()
    }

    fn changed(&self, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{}: file {what} while it was being archived", self.path.display()),
        )
    }

    fn check_unchanged(&self) -> io::Result<()> {
        let st = rustix::fs::fstat(&self.file)?;
        if st.st_size as u64 != self.size {
            return Err(self.changed("changed size"));
        }
        if data_extents(self.file.as_fd(), self.size)? != self.extents {
            return Err(self.changed("got new data or holes"));
        }
        Ok(())
    }
}

impl Read for SparseReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.map_pos < self.map.len() {
            let n = buf.len().min(self.map.len() - self.map_pos);
            buf[..n].copy_from_slice(&self.map[self.map_pos..self.map_pos + n]);
            self.map_pos += n;
            return Ok(n);
        }
        while let Some(e) = self.extents.get(self.idx).copied() {
            let left = e.len - self.done_in_extent;
            if left == 0 {
                self.idx += 1;
                self.done_in_extent = 0;
                continue;
            }
            let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = self.file.read_at(&mut buf[..max], e.offset + self.done_in_extent)?;
            if n == 0 {
                return Err(self.changed("shrank"));
            }
            self.done_in_extent += n as u64;
            return Ok(n);
        }
        if !self.checked {
            self.check_unchanged()?;
            self.checked = true;
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    fn sparse_file(dir: &Path, size: u64, writes: &[(u64, &[u8])]) -> File {
        let mut f =
            File::options().read(true).write(true).create(true).truncate(true).open(dir.join("s")).unwrap();
        f.set_len(size).unwrap();
        for (off, data) in writes {
            f.seek(io::SeekFrom::Start(*off)).unwrap();
            f.write_all(data).unwrap();
        }
        f.sync_all().unwrap();
        f
    }

    #[test]
    fn extents_maps_and_names() {
        let t = tempfile::tempdir().unwrap();
        let f = sparse_file(t.path(), 10 << 20, &[(12288, &[b'A'; 5000]), (8 << 20, &[b'B'; 100])]);
        let ext = data_extents(f.as_fd(), 10 << 20).unwrap();
        // Whole filesystem blocks (4 KiB on ext4, tmpfs), as GNU tar's map shows them.
        assert_eq!(ext, [Extent { offset: 12288, len: 8192 }, Extent { offset: 8 << 20, len: 4096 }]);
        assert!(has_holes(&ext, 10 << 20));
        // Byte for byte what GNU tar 1.34 writes for this file.
        let text = b"3\n12288\n8192\n8388608\n4096\n10485760\n0\n";
        assert_eq!(map_block(&ext, 10 << 20), [&text[..], &vec![0u8; 512 - text.len()]].concat());
        // Ending in data: no empty extent; all holes: only the empty one.
        assert_eq!(&map_block(&[Extent { offset: 0, len: 700 }], 700)[..8], b"1\n0\n700\n");
        assert_eq!(&map_block(&[], 1 << 20)[..12], b"1\n1048576\n0\n");
        // Extents not on 512-byte boundaries are widened and merged.
        let dense = sparse_file(t.path(), 1000, &[(0, &[1u8; 1000])]);
        assert!(!has_holes(&data_extents(dense.as_fd(), 1000).unwrap(), 1000));
        assert_eq!(placeholder_name(b"a/b/c"), b"a/b/GNUSparseFile.0/c");
        assert_eq!(placeholder_name(b"c"), b"GNUSparseFile.0/c");
    }

    #[test]
    fn reader_gives_map_then_extents_and_sees_changes() {
        let t = tempfile::tempdir().unwrap();
        let size = 1 << 20;
        let f = sparse_file(t.path(), size, &[(4096, b"hello"), (65536, b"world")]);
        let ext = data_extents(f.as_fd(), size).unwrap();
        let mut r = SparseReader::new(f.try_clone().unwrap(), ext.clone(), size, t.path());
        let want_len = r.len();
        let mut got = vec![];
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got.len() as u64, want_len);
        assert_eq!(&got[..21], b"3\n4096\n4096\n65536\n409");
        assert_eq!(&got[512..517], b"hello");
        assert_eq!(&got[512 + 4096..512 + 4096 + 5], b"world");
        // Data written into a hole while it is archived: an error naming the file.
        let mut r = SparseReader::new(f.try_clone().unwrap(), ext.clone(), size, t.path());
        let mut head = [0u8; 512];
        r.read_exact(&mut head).unwrap();
        f.write_at(b"late", 500_000).unwrap();
        let e = r.read_to_end(&mut vec![]).unwrap_err();
        assert!(e.to_string().contains("new data or holes"), "{e}");
        // Shrunk: an error too.
        let mut r = SparseReader::new(f.try_clone().unwrap(), ext, size, t.path());
        f.set_len(4096).unwrap();
        let e = r.read_to_end(&mut vec![]).unwrap_err();
        assert!(e.to_string().contains("shrank"), "{e}");
    }
}
