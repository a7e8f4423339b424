//! On-demand reads of a remote layer's files from an eStargz blob strata wrote.

use std::sync::Mutex;

use super::*;
use crate::seekable::footer::{estargz_toc_range, parse_estargz_footer};
use crate::seekable::write::{write_estargz, EstargzOptions};
use strata_test_support::noise;

/// A blob in memory; every range asked for is logged.
struct Fake {
    blob: Vec<u8>,
    asked: Mutex<Vec<Range<u64>>>,
}

impl RangeSource for Fake {
    fn range(&self, r: Range<u64>) -> Result<Vec<u8>, RegistryError> {
        self.asked.lock().unwrap().push(r.clone());
        Ok(self.blob[r.start as usize..r.end as usize].to_vec())
    }
}

/// A layer of a 10 000-byte file (chunks of 1 000), a small file and a hard link to it, as
/// eStargz, with its verified TOC.
fn layer() -> (Vec<u8>, Toc, Vec<u8>) {
    let big = noise(10_000, 7);
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [("big", &big[..]), ("etc/motd", b"hello\n".as_slice())] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "motd2", "etc/motd").unwrap();
    let tar = b.into_inner().unwrap();
    let opts = EstargzOptions { chunk_size: 1000, ..Default::default() };
    let (info, blob) = write_estargz(&tar[..], Vec::new(), &opts).unwrap();
    let off = parse_estargz_footer(&blob[blob.len() - 51..]).unwrap();
    let r = estargz_toc_range(blob.len() as u64, off).unwrap();
    let toc = Toc::from_estargz(&blob[r.start as usize..r.end as usize], off, &info.toc_digest).unwrap();
    (blob, toc, big)
}

#[test]
fn reads_fetch_adjacent_chunks_once_verified_and_cached() {
    let (blob, toc, big) = layer();
    let t = tempfile::tempdir().unwrap();
    let fake = Fake { blob, asked: Mutex::new(vec![]) };
    let files = RemoteFiles::new(toc, fake, t.path(), "test").unwrap();
    assert_eq!(files.size("big"), Some(10_000));
    assert_eq!(files.size("motd2"), Some(6), "a hard link reads its target");

    // 2 500 bytes across chunks 2..=4 of `big`: one request for the three adjacent chunks.
    let mut buf = vec![0u8; 2500];
    assert_eq!(files.read_at("big", 1500, &mut buf).unwrap(), 2500);
    assert_eq!(buf, big[1500..4000]);
    assert_eq!(files.source.asked.lock().unwrap().len(), 1);
    // Cached: the same bytes again cost nothing, a range overlapping them only the new chunk.
    assert_eq!(files.read_at("big", 1000, &mut buf).unwrap(), 2500);
    assert_eq!(buf, big[1000..3500]);
    assert_eq!(files.source.asked.lock().unwrap().len(), 1);
    assert_eq!(files.read_at("big", 3900, &mut buf[..200]).unwrap(), 200);
    assert_eq!(&buf[..200], &big[3900..4100]);
    assert_eq!(files.source.asked.lock().unwrap().len(), 2);
    // The end of the file: a short read, then nothing.
    assert_eq!(files.read_at("big", 9_900, &mut buf).unwrap(), 100);
    assert_eq!(&buf[..100], &big[9_900..]);
    assert_eq!(files.read_at("big", 10_000, &mut buf).unwrap(), 0);
    let mut small = [0u8; 64];
    assert_eq!(files.read_at("motd2", 0, &mut small).unwrap(), 6);
    assert_eq!(&small[..6], b"hello\n");
    // Only verified chunks, by their digest, are in the cache: no temporary file is left.
    for e in fs::read_dir(t.path()).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(!name.starts_with(".tmp"), "{name}");
        let data = fs::read(t.path().join(&name)).unwrap();
        assert_eq!(crate::digest::Sha256Digest::of(&data).hex(), name);
    }
    assert!(files.read_at("nothing", 0, &mut small).is_err());
}

#[test]
fn a_corrupted_chunk_is_never_served_nor_cached() {
    let (mut blob, toc, big) = layer();
    let big_entry = toc.entries.iter().find(|e| e.name == "big").unwrap();
    // A byte inside the third chunk's compressed data.
    let c = big_entry.chunks[2].clone();
    let at = ((c.blob_offset + c.blob_end) / 2) as usize;
    blob[at] ^= 0x55;
    let t = tempfile::tempdir().unwrap();
    let files = RemoteFiles::new(toc, Fake { blob, asked: Mutex::new(vec![]) }, t.path(), "test").unwrap();
    let mut buf = vec![0u8; 500];
    let err = files.read_at("big", 2000, &mut buf).unwrap_err();
    let text = crate::error::report(&err);
    assert!(text.contains("test") && text.contains("big"), "{text}");
    assert_eq!(err.kind(), crate::error::ErrorKind::InvalidArgument);
    assert!(buf.iter().all(|&b| b == 0), "nothing reached the reader");
    assert!(!t.path().join(c.digest.hex()).exists(), "the bad chunk is not cached");
    // Other chunks still read.
    assert_eq!(files.read_at("big", 0, &mut buf).unwrap(), 500);
    assert_eq!(buf, big[..500]);
}
