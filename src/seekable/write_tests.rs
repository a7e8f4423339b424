//! The eStargz writer: its output is the input tar, byte for byte, with the landmark and TOC
//! entries added, compressed in members the TOC locates; read back by this module's reader.

use std::collections::HashMap;
use std::io::Read;

use super::footer::*;
use super::write::*;
use super::*;
use crate::seekable::chunk::decode_chunk_to_vec;

fn big(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 253) as u8).collect()
}

/// A layer tar with one of most things: dirs, files (empty, multi-chunk), a long name (PAX
/// path), xattrs, a symlink, a hardlink, a device, a fifo, a large uid (PAX).
fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, data: &[u8], f: &dyn Fn(&mut tar::Header)| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        f(&mut h);
        b.append_data(&mut h, name, data).unwrap();
    };
    add("etc/", tar::EntryType::Directory, b"", &|h| h.set_mode(0o755));
    add("etc/hosts", tar::EntryType::Regular, b"127.0.0.1 localhost\n", &|_| {});
    add("etc/empty", tar::EntryType::Regular, b"", &|_| {});
    add("big", tar::EntryType::Regular, &big(3000), &|h| h.set_mode(0o4755));
    add("exact", tar::EntryType::Regular, &big(2000), &|_| {});
    let long = format!("d/{}", "n".repeat(150));
    add(&long, tar::EntryType::Regular, b"long", &|_| {});
    add("sh", tar::EntryType::Symlink, b"", &|h| h.set_link_name("/bin/busybox").unwrap());
    add("hosts2", tar::EntryType::Link, b"", &|h| h.set_link_name("etc/hosts").unwrap());
    add("null", tar::EntryType::Char, b"", &|h| {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    });
    add("fifo", tar::EntryType::Fifo, b"", &|_| {});
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(2);
    h.set_mode(0o600);
    b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v\x00w"[..]), ("uid", b"3000000000")]).unwrap();
    b.append_data(&mut h, "x", &b"xx"[..]).unwrap();
    b.into_inner().unwrap()
}

/// Where the tar's entries end (before its end-of-archive blocks).
fn entries_end(tar: &[u8]) -> usize {
    let mut end = tar.len();
    while end >= 512 && tar[end - 512..end].iter().all(|&b| b == 0) {
        end -= 512;
    }
    end
}

#[test]
fn estargz_output_is_the_tar_plus_its_toc_and_reads_back() {
    let tar = layer_tar();
    let opts = EstargzOptions { chunk_size: 1000, ..Default::default() };
    let (info, blob) = write_estargz(&tar[..], Vec::new(), &opts).unwrap();
    assert_eq!((info.size, info.digest.clone()), (blob.len() as u64, crate::digest::Sha256Digest::of(&blob)));

    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut plain).unwrap();
    assert_eq!(
        (info.uncompressed_size, info.diff_id.clone()),
        (plain.len() as u64, crate::digest::Sha256Digest::of(&plain))
    );
    // The landmark entry (1024 bytes), the input's entries unchanged, the TOC entry, the end.
    let body = &tar[..entries_end(&tar)];
    assert_eq!(&plain[1024..1024 + body.len()], body);
    let names: Vec<String> = tar::Archive::new(&plain[..])
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            if name == TOC_NAME || name == NO_PREFETCH_LANDMARK {
                // The added entries' headers are whole: their ids are numbers (0).
                assert_eq!((e.header().uid().unwrap(), e.header().gid().unwrap()), (0, 0));
            }
            name
        })
        .collect();
    assert_eq!(names.first().map(String::as_str), Some(NO_PREFETCH_LANDMARK));
    assert_eq!(names.last().map(String::as_str), Some(TOC_NAME));
    assert!(plain.ends_with(&[0; 1024]));

    let off = parse_estargz_footer(&blob[blob.len() - 51..]).unwrap();
    let r = estargz_toc_range(blob.len() as u64, off).unwrap();
    let toc = Toc::from_estargz(&blob[r.start as usize..r.end as usize], off, &info.toc_digest).unwrap();
    let mut expected = tar::Archive::new(&tar[..]);
    for e in expected.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut want = Vec::new();
        e.read_to_end(&mut want).unwrap();
        let got = toc
            .entries
            .iter()
            .find(|t| t.name == name.trim_end_matches('/'))
            .unwrap_or_else(|| panic!("{name}"));
        let mut content = Vec::new();
        for c in &got.chunks {
            content.extend(
                decode_chunk_to_vec(
                    Format::Estargz,
                    &blob[c.blob_offset as usize..c.blob_end as usize],
                    &name,
                    c,
                )
                .unwrap(),
            );
        }
        if e.header().entry_type().is_file() {
            assert_eq!(content, want, "{name}");
        }
        assert_eq!(got.mode, e.header().mode().unwrap() & 0o7777, "{name}");
    }
    let by = |n: &str| toc.entries.iter().find(|t| t.name == n).unwrap();
    assert_eq!(by("big").chunks.len(), 3);
    assert_eq!(by("exact").chunks.iter().map(|c| c.size).collect::<Vec<_>>(), [1000, 1000]);
    assert_eq!((by("sh").kind, by("sh").link_name.as_str()), (EntryKind::Symlink, "/bin/busybox"));
    assert_eq!((by("hosts2").kind, by("hosts2").link_name.as_str()), (EntryKind::Hardlink, "etc/hosts"));
    assert_eq!((by("null").dev_major, by("null").dev_minor), (1, 3));
    assert_eq!(
        (by("x").uid, by("x").xattrs.get("user.k").cloned()),
        (3_000_000_000, Some(b"v\x00w".to_vec()))
    );
    assert_eq!(by(&format!("d/{}", "n".repeat(150))).size, 4);
}

#[test]
fn converting_twice_replaces_the_toc_and_landmark() {
    let tar = layer_tar();
    let (first, blob) = write_estargz(&tar[..], Vec::new(), &EstargzOptions::default()).unwrap();
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut plain).unwrap();
    let (second, blob2) = write_estargz(&plain[..], Vec::new(), &EstargzOptions::default()).unwrap();
    assert_eq!((first.diff_id, first.toc_digest), (second.diff_id, second.toc_digest));
    assert_eq!(blob, blob2);
    let (none, _) = write_estargz(
        &tar[..],
        Vec::new(),
        &EstargzOptions { landmark: Landmark::None, ..Default::default() },
    )
    .unwrap();
    assert_eq!(none.entries + 1, first.entries);
}

#[test]
fn what_estargz_cannot_hold_is_refused() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    b.append_data(&mut h, "caf\u{e9}", &b""[..]).unwrap();
    let mut tar = b.into_inner().unwrap();
    // A name that is not UTF-8.
    let i = tar.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
    tar[i] = 0xff;
    let mut h = tar::Header::from_byte_slice(&tar[..512]).clone();
    h.set_cksum();
    tar[..512].copy_from_slice(h.as_bytes());
    assert!(write_estargz(&tar[..], Vec::new(), &EstargzOptions::default()).is_err());
    assert!(write_estargz(&b"garbage that is no tar"[..], Vec::new(), &EstargzOptions::default()).is_err());
}

/// zstd:chunked: the output decompresses (any zstd reader) to the input tar byte for byte, so
/// the diff_id is kept; its annotations locate a TOC that verifies, whose chunks decode to each
/// file's content; a file of several chunks gives each its size, and its last frame ends where
/// its entry's `endOffset` says.
#[test]
fn zstd_chunked_output_is_the_tar_itself_and_reads_back() {
    let tar = layer_tar();
    let opts = ZstdChunkedOptions { chunk_size: 1000, ..Default::default() };
    let (info, blob) = write_zstd_chunked(&tar[..], Vec::new(), &opts).unwrap();
    assert_eq!((info.size, info.digest.clone()), (blob.len() as u64, crate::digest::Sha256Digest::of(&blob)));
    let plain = zstd::decode_all(&blob[..]).unwrap();
    assert_eq!(plain, tar, "the tar, unchanged");
    assert_eq!(
        (info.diff_id.clone(), info.uncompressed_size),
        (crate::digest::Sha256Digest::of(&tar), tar.len() as u64)
    );

    let ann: HashMap<String, String> =
        info.annotations().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    assert_eq!(ann.len(), 4);
    assert_eq!(ann[ANNOTATION_ZSTD_POSITION], ann[ANNOTATION_ZSTD_POSITION_GH]);
    let loc = locate(crate::compression::MT_OCI_LAYER_ZSTD, &ann, blob.len() as u64).unwrap().unwrap();
    let Locator::ZstdChunked { offset, length, .. } = loc.clone() else { panic!("{loc:?}") };
    let footer = parse_zstd_chunked_footer(&blob[blob.len() - 48..], blob.len() as u64).unwrap();
    assert_eq!((footer.offset, footer.length), (offset, length));
    let frame = &blob[offset as usize..(offset + length) as usize];
    let toc = Toc::from_zstd_chunked(frame, &loc).unwrap();
    assert_eq!(crate::digest::Sha256Digest::of(&zstd::decode_all(frame).unwrap()), info.toc_digest);
    assert!(!toc.entries.iter().any(|e| crate::seekable::HIDDEN_NAMES.contains(&e.name.as_str())));

    let mut expected = tar::Archive::new(&tar[..]);
    let mut files = 0;
    for e in expected.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut want = Vec::new();
        e.read_to_end(&mut want).unwrap();
        let got = toc.entries.iter().find(|t| t.name == name.trim_end_matches('/')).unwrap();
        assert_eq!(got.mode, e.header().mode().unwrap() & 0o7777, "{name}");
        if !e.header().entry_type().is_file() {
            continue;
        }
        let mut content = Vec::new();
        for c in &got.chunks {
            let part = &blob[c.blob_offset as usize..c.blob_end as usize];
            // Each chunk is one whole frame of the file's bytes only.
            assert_eq!(zstd::decode_all(part).unwrap().len() as u64, c.size, "{name}");
            content.extend(decode_chunk_to_vec(Format::ZstdChunked, part, &name, c).unwrap());
        }
        assert_eq!(content, want, "{name}");
        files += 1;
    }
    assert!(files >= 5);
    let by = |n: &str| toc.entries.iter().find(|t| t.name == n).unwrap();
    assert_eq!(by("big").chunks.iter().map(|c| c.size).collect::<Vec<_>>(), [1000, 1000, 1000]);
    assert_eq!(by("x").xattrs.get("user.k").cloned(), Some(b"v\x00w".to_vec()));

    // The raw TOC: chunk sizes on every chunk of a file of several, none on a file of one,
    // every chunk's digest, and endOffset where the last frame ends.
    let raw: serde_json::Value = serde_json::from_slice(&zstd::decode_all(frame).unwrap()).unwrap();
    let raw = raw["entries"].as_array().unwrap();
    let big: Vec<&serde_json::Value> = raw.iter().filter(|e| e["name"] == "big").collect();
    assert_eq!(big.len(), 3);
    assert!(big.iter().all(|e| e["chunkSize"] == 1000 && e["chunkDigest"].is_string()));
    assert_eq!(big[0]["endOffset"].as_u64(), Some(by("big").chunks[2].blob_end));
    let hosts = raw.iter().find(|e| e["name"] == "etc/hosts").unwrap();
    assert!(hosts.get("chunkSize").is_none() && hosts["chunkDigest"] == hosts["digest"], "{hosts}");
}

/// Thousands of entries without data in a row (their headers more than one frame buffers):
/// the output is still the input tar, and the file after them reads back through its chunk.
#[test]
fn zstd_chunked_cuts_long_runs_of_headers() {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..20_000 {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        b.append_data(&mut h, format!("d{i}/"), &b""[..]).unwrap();
    }
    let mut h = tar::Header::new_ustar();
    h.set_size(4);
    h.set_mode(0o644);
    b.append_data(&mut h, "last", &b"last"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let (info, blob) = write_zstd_chunked(&tar[..], Vec::new(), &ZstdChunkedOptions::default()).unwrap();
    assert_eq!(zstd::decode_all(&blob[..]).unwrap(), tar);
    let frame = &blob[info.toc_offset as usize..(info.toc_offset + info.toc_length) as usize];
    let json = zstd::decode_all(frame).unwrap();
    let toc = Toc::parse(&json, Format::ZstdChunked, info.toc_offset - 8).unwrap();
    assert_eq!(toc.entries.len(), 20_001);
    let last = toc.entries.last().unwrap();
    let c = &last.chunks[0];
    let got = decode_chunk_to_vec(
        Format::ZstdChunked,
        &blob[c.blob_offset as usize..c.blob_end as usize],
        "last",
        c,
    );
    assert_eq!(got.unwrap(), b"last");
}

/// zstd:chunked TOC times are exact (nanoseconds, before 1970) from the tar's PAX records, and
/// an eStargz's TOC and landmark entries are left out (the diff_id is then the tar without
/// them).
#[test]
fn zstd_chunked_keeps_exact_times_and_drops_an_old_toc() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(3);
    h.set_mode(0o644);
    b.append_pax_extensions([("mtime", &b"981173106.123456789"[..])]).unwrap();
    b.append_data(&mut h, "ns", &b"ns\n"[..]).unwrap();
    b.append_pax_extensions([("mtime", &b"-14182940"[..])]).unwrap();
    b.append_data(&mut h, "old", &b"old"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let (info, blob) = write_zstd_chunked(&tar[..], Vec::new(), &ZstdChunkedOptions::default()).unwrap();
    assert_eq!(info.diff_id, crate::digest::Sha256Digest::of(&tar));
    let frame = &blob[info.toc_offset as usize..(info.toc_offset + info.toc_length) as usize];
    let raw: serde_json::Value = serde_json::from_slice(&zstd::decode_all(frame).unwrap()).unwrap();
    let times: Vec<&str> =
        raw["entries"].as_array().unwrap().iter().map(|e| e["modtime"].as_str().unwrap()).collect();
    assert_eq!(times, ["2001-02-03T04:05:06.123456789Z", "1969-07-20T20:17:40Z"]);

    // From an eStargz's plain tar: its TOC and landmark are not carried over.
    let (_, gz) = write_estargz(&tar[..], Vec::new(), &EstargzOptions::default()).unwrap();
    let mut esgz_tar = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut esgz_tar).unwrap();
    let (again, blob) =
        write_zstd_chunked(&esgz_tar[..], Vec::new(), &ZstdChunkedOptions::default()).unwrap();
    let names: Vec<String> = tar::Archive::new(&zstd::decode_all(&blob[..]).unwrap()[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["ns", "old"]);
    assert_eq!(again.entries, 2);
}

/// `Landmark::PrefetchAfter(n)`: `.prefetch.landmark` follows the input's first n entries (the
/// files a lazy mount fetches first), the rest of the tar unchanged around it; past the input's
/// end it comes last, before the TOC.
#[test]
fn the_prefetch_landmark_follows_the_first_entries() {
    let tar = layer_tar();
    let input: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    for n in [0, 3, input.len(), input.len() + 5] {
        let opts =
            EstargzOptions { chunk_size: 1000, landmark: Landmark::PrefetchAfter(n), ..Default::default() };
        let (info, blob) = write_estargz(&tar[..], Vec::new(), &opts).unwrap();
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut plain).unwrap();
        let names: Vec<String> = tar::Archive::new(&plain[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        let at = n.min(input.len());
        let mut want = input.clone();
        want.insert(at, PREFETCH_LANDMARK.to_string());
        want.push(TOC_NAME.to_string());
        assert_eq!(names, want, "n = {n}");
        // The TOC finds it, and every file before it lies before its offset in the blob.
        let off = parse_estargz_footer(&blob[blob.len() - 51..]).unwrap();
        let r = estargz_toc_range(blob.len() as u64, off).unwrap();
        let toc = Toc::from_estargz(&blob[r.start as usize..r.end as usize], off, &info.toc_digest).unwrap();
        let i = toc.prefetch_landmark().expect("landmark");
        let mark = toc.entries[i].chunks[0].blob_offset;
        for e in &toc.entries[..i] {
            assert!(e.chunks.iter().all(|c| c.blob_end <= mark), "{} after the landmark", e.name);
        }
        for e in &toc.entries[i + 1..] {
            assert!(e.chunks.iter().all(|c| c.blob_offset > mark), "{} before the landmark", e.name);
        }
        assert!(!toc.entries.iter().any(|e| e.name == NO_PREFETCH_LANDMARK));
    }
}
