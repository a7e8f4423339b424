//! The seekable formats against hand-built blobs laid out as Go's estargz writer lays them out
//! (a header in the current member, each chunk of data starting a new one, the TOC member,
//! the footer), and against hostile footers, TOCs and chunks.

use std::collections::HashMap;
use std::io::{Read, Write};

use super::footer::*;
use super::*;
use crate::seekable::chunk::{decode_chunk, decode_chunk_to_vec};

/// A test file: name, content (None for a directory).
type Spec<'a> = (&'a str, Option<&'a [u8]>);

struct Built {
    blob: Vec<u8>,
    toc_json: Vec<u8>,
    toc_offset: u64,
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn header(name: &str, content: Option<&[u8]>) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_mode(if content.is_some() { 0o644 } else { 0o755 });
    h.set_entry_type(if content.is_some() { tar::EntryType::Regular } else { tar::EntryType::Directory });
    h.set_size(content.map_or(0, |c| c.len() as u64));
    h.set_cksum();
    h.as_bytes().to_vec()
}

fn pad(n: usize) -> Vec<u8> {
    vec![0; (512 - n % 512) % 512]
}

/// An eStargz blob of `files`, chunks of `chunk` bytes.
fn estargz(files: &[Spec], chunk: usize) -> Built {
    let mut blob = Vec::new();
    let mut pending = Vec::new(); // the open member's bytes
    let mut entries = Vec::new();
    for (name, content) in files {
        pending.extend(header(name, *content));
        match content {
            None => entries.push(serde_json::json!({"name": name, "type": "dir", "mode": 0o755})),
            Some(c) => {
                let mut off = 0;
                if c.is_empty() {
                    entries.push(serde_json::json!({"name": name, "type": "reg", "mode": 0o644}));
                }
                while off < c.len() {
                    blob.extend(gz(&std::mem::take(&mut pending)));
                    let end = (off + chunk).min(c.len());
                    let mut e = serde_json::json!({
                        "name": name, "type": if off == 0 { "reg" } else { "chunk" },
                        "offset": blob.len(), "chunkOffset": off,
                        "chunkDigest": crate::digest::Sha256Digest::of(&c[off..end]).to_string(),
                    });
                    if end - off == chunk {
                        e["chunkSize"] = (end - off).into();
                    }
                    if off == 0 {
                        e["size"] = c.len().into();
                        e["mode"] = 0o644.into();
                        e["digest"] = crate::digest::Sha256Digest::of(c).to_string().into();
                    }
                    entries.push(e);
                    pending.extend(&c[off..end]);
                    off = end;
                }
                pending.extend(pad(c.len()));
            }
        }
    }
    blob.extend(gz(&pending));
    let toc_offset = blob.len() as u64;
    let toc_json = serde_json::to_vec(&serde_json::json!({"version": 1, "entries": entries})).unwrap();
    let mut toc_tar = header(TOC_NAME, Some(&toc_json));
    toc_tar.extend(&toc_json);
    toc_tar.extend(pad(toc_json.len()));
    toc_tar.extend([0; 1024]);
    blob.extend(gz(&toc_tar));
    blob.extend(estargz_footer(toc_offset));
    Built { blob, toc_json, toc_offset }
}

fn read_estargz(b: &Built) -> Result<Toc, SeekableError> {
    let tail = &b.blob[b.blob.len() - ESTARGZ_FOOTER_SIZE as usize..];
    let off = parse_estargz_footer(tail)?;
    let range = estargz_toc_range(b.blob.len() as u64, off)?;
    let digest = crate::digest::Sha256Digest::of(&b.toc_json);
    Toc::from_estargz(&b.blob[range.start as usize..range.end as usize], off, &digest)
}

fn files() -> Vec<Spec<'static>> {
    vec![
        ("./", None),
        ("etc/", None),
        ("etc/hosts", Some(b"127.0.0.1 localhost\n")),
        ("etc/empty", Some(b"")),
        ("big", Some(&BIG)),
    ]
}

static BIG: [u8; 2500] = {
    let mut b = [0u8; 2500];
    let mut i = 0;
    while i < 2500 {
        b[i] = (i * 7 % 251) as u8;
        i += 1;
    }
    b
};

#[test]
fn footer_round_trips_and_is_an_empty_gzip_member() {
    for off in [0u64, 1, 0x1234_5678_9abc, u64::MAX >> 1] {
        let f = estargz_footer(off);
        assert_eq!(parse_estargz_footer(&f).unwrap(), off);
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&f[..]).read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
    }
}

#[test]
fn hostile_footers_are_refused_without_panic() {
    let good = estargz_footer(4096);
    assert!(parse_estargz_footer(&good[..50]).is_err());
    assert!(parse_estargz_footer(&[0u8; 51]).is_err());
    // Every single-byte corruption either fails or still names a hex offset.
    for i in 0..good.len() {
        for v in [0u8, 0xff, b'g', b'S'] {
            let mut f = good;
            f[i] = v;
            let _ = parse_estargz_footer(&f);
        }
    }
    let mut bad_hex = good;
    bad_hex[16] = b'z';
    assert!(matches!(parse_estargz_footer(&bad_hex), Err(SeekableError::Footer(_))));
    assert!(estargz_toc_range(50, 0).is_err());
    assert!(estargz_toc_range(1000, 949).is_err(), "TOC offset at the footer");
    assert!(matches!(estargz_toc_range(u64::MAX, 1), Err(SeekableError::TooLarge { .. })));
    assert_eq!(estargz_toc_range(1000, 900).unwrap(), 900..949);
}

#[test]
fn estargz_toc_reads_chunks_and_the_blob_is_a_plain_gzip_tar() {
    let b = estargz(&files(), 1000);
    let toc = read_estargz(&b).unwrap();
    assert_eq!(toc.format, Format::Estargz);
    assert_eq!(toc.data_end, b.toc_offset);
    let names: Vec<&str> = toc.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["", "etc", "etc/hosts", "etc/empty", "big"]);
    let big = &toc.entries[4];
    assert_eq!((big.kind, big.size, big.mode, big.chunks.len()), (EntryKind::Reg, 2500, 0o644, 3));
    assert_eq!(
        big.chunks.iter().map(|c| (c.file_offset, c.size)).collect::<Vec<_>>(),
        [(0, 1000), (1000, 1000), (2000, 500)]
    );
    // Every chunk, decompressed from its own range, is the file's bytes.
    for e in &toc.entries {
        let mut content = Vec::new();
        for c in &e.chunks {
            let range = &b.blob[c.blob_offset as usize..c.blob_end as usize];
            content.extend(decode_chunk_to_vec(toc.format, range, &e.name, c).unwrap());
        }
        let want =
            files().iter().find(|f| f.0.trim_end_matches('/') == e.name).and_then(|f| f.1).unwrap_or(b"");
        assert_eq!(content, want, "{}", e.name);
    }
    // A plain reader sees a gzip tar with the TOC as its last entry.
    let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(&b.blob[..]));
    let tar_names: Vec<String> =
        ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    assert_eq!(tar_names.last().map(String::as_str), Some(TOC_NAME));
}

#[test]
fn a_toc_that_is_not_the_descriptors_is_refused() {
    let b = estargz(&files(), 1000);
    let off = b.toc_offset as usize;
    let member = &b.blob[off..b.blob.len() - 51];
    let wrong = crate::digest::Sha256Digest::of(b"another TOC");
    assert!(matches!(Toc::from_estargz(member, b.toc_offset, &wrong), Err(SeekableError::TocDigest { .. })));
    // A member that is not gzip, or gzip of something else.
    let right = crate::digest::Sha256Digest::of(&b.toc_json);
    assert!(Toc::from_estargz(&member[..member.len() / 2], b.toc_offset, &right).is_err());
    assert!(Toc::from_estargz(&gz(&header("other", Some(b"x"))), 1, &right).is_err());
    // A TOC tar header that claims more than the bound is refused before reading.
    let mut h = tar::Header::new_gnu();
    h.set_path(TOC_NAME).unwrap();
    h.set_size(MAX_TOC_BYTES + 1);
    h.set_cksum();
    assert!(matches!(toc::estargz_toc_json(&gz(h.as_bytes())), Err(SeekableError::TooLarge { .. })));
}

#[test]
fn a_corrupted_or_cut_chunk_is_never_returned() {
    let b = estargz(&files(), 1000);
    let toc = read_estargz(&b).unwrap();
    let e = &toc.entries[4];
    let c = &e.chunks[1];
    // Replace the member with one of other bytes: the digest catches it.
    let forged = gz(&vec![b'x'; 1000]);
    let err = decode_chunk_to_vec(
        toc.format,
        &forged,
        &e.name,
        &Chunk { blob_end: c.blob_offset + forged.len() as u64, ..c.clone() },
    );
    assert!(
        matches!(err, Err(SeekableError::ChunkDigest { ref name, file_offset: 1000, .. }) if name == "big"),
        "{err:?}"
    );
    let range = &b.blob[c.blob_offset as usize..c.blob_end as usize];
    assert!(decode_chunk_to_vec(toc.format, &range[..range.len() - 9], &e.name, c).is_err());
    let mut flipped = range.to_vec();
    flipped[20] ^= 0x55;
    let mut sink = Vec::new();
    assert!(decode_chunk(toc.format, &flipped, &e.name, c, &mut sink).is_err());
}

fn toc_err(entries: serde_json::Value) -> String {
    let json = serde_json::to_vec(&serde_json::json!({"version": 1, "entries": entries})).unwrap();
    match Toc::parse(&json, Format::Estargz, 10_000) {
        Ok(t) => panic!("accepted {t:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hostile_tocs_are_refused_with_the_entry_named() {
    let d = crate::digest::Sha256Digest::of(b"x").to_string();
    let cases = [
        (serde_json::json!([{"name": "../etc/passwd", "type": "reg"}]), "`..`"),
        (serde_json::json!([{"name": "a\u{0}b", "type": "dir"}]), "NUL"),
        (serde_json::json!([{"name": "a", "type": "socket"}]), "unknown type"),
        (serde_json::json!([{"name": "", "type": "reg"}]), "root"),
        (serde_json::json!([{"name": "a", "type": "chunk", "offset": 1}]), "follows no regular"),
        (
            serde_json::json!([{"name": "a", "type": "reg", "size": 5, "offset": 20000, "chunkDigest": d}]),
            "outside",
        ),
        (
            serde_json::json!([{"name": "a", "type": "reg", "size": 5, "offset": 0, "chunkDigest": d}]),
            "outside",
        ),
        (serde_json::json!([{"name": "a", "type": "reg", "size": 5, "offset": 10}]), "without a digest"),
        (
            serde_json::json!([{"name": "a", "type": "reg", "size": 5, "offset": 10, "chunkSize": 6, "chunkDigest": d}]),
            "does not fit",
        ),
        (
            serde_json::json!([{"name": "a", "type": "reg", "size": 5, "offset": 10, "chunkSize": 2, "chunkDigest": d}]),
            "cover 2 of 5",
        ),
        (
            serde_json::json!([{"name": "a", "type": "reg", "size": 5, "offset": 10, "chunkSize": 2, "chunkDigest": d},
            {"name": "a", "type": "chunk", "offset": 20, "chunkOffset": 3, "chunkDigest": d}]),
            "where 2 was due",
        ),
        (serde_json::json!([{"name": "a", "type": "reg", "size": -1}]), "negative"),
        (serde_json::json!([{"name": "a", "type": "dir", "uid": -1}]), "uid"),
        (serde_json::json!([{"name": "a", "type": "dir", "gid": 1u64 << 40}]), "gid"),
        (serde_json::json!([{"name": "a", "type": "hardlink", "linkName": "b"}]), "hardlink"),
        (
            serde_json::json!([{"name": "d", "type": "dir"}, {"name": "a", "type": "hardlink", "linkName": "d"}]),
            "hardlink",
        ),
        (serde_json::json!([{"name": "a", "type": "symlink"}]), "symlink"),
        (serde_json::json!([{"name": "a", "type": "dir", "xattrs": {"user.x": "%%%"}}]), "base64"),
        (serde_json::json!([{"name": "a", "type": "reg", "digest": "md5:00"}]), "digest"),
        (serde_json::json!([{"name": TOC_NAME, "type": "reg"}]), "lists itself"),
    ];
    for (entries, want) in cases {
        let err = toc_err(entries.clone());
        assert!(err.contains(want), "{entries}: {err}");
    }
    assert!(Toc::parse(b"{\"entries\": 5}", Format::Estargz, 1).is_err());
    assert!(Toc::parse(b"not json", Format::Estargz, 1).is_err());
    let big_xattr = "A".repeat(MAX_XATTR_BYTES * 2);
    assert!(toc_err(serde_json::json!([{"name": "a", "type": "dir", "xattrs": {"user.x": big_xattr}}]))
        .contains("xattrs"));
}

#[test]
fn too_many_entries_are_refused_while_parsing() {
    let mut json = b"{\"entries\":[".to_vec();
    for i in 0..=MAX_TOC_ENTRIES {
        json.extend_from_slice(if i == 0 { b"{}" } else { b",{}" });
    }
    json.extend_from_slice(b"]}");
    let err = Toc::parse(&json, Format::Estargz, 1).unwrap_err().to_string();
    assert!(
        crate::error::report(&Toc::parse(&json, Format::Estargz, 1).unwrap_err()).contains("more than"),
        "{err}"
    );
}

#[test]
fn legitimate_tocs_keep_their_fields() {
    let d = crate::digest::Sha256Digest::of(b"x").to_string();
    let json = serde_json::to_vec(&serde_json::json!({"version": 1, "entries": [
        {"name": "./bin/", "type": "dir", "mode": 0o40755, "uid": 1000, "gid": 1000,
         "xattrs": {"user.k": "dmFsdWU="}},
        {"name": "bin/sh", "type": "reg", "size": 1, "offset": 100, "digest": d, "mode": 0o104755},
        {"name": "bin/ash", "type": "hardlink", "linkName": "./bin/sh"},
        {"name": "bin/l", "type": "symlink", "linkName": "/bin/sh"},
        {"name": "dev/null", "type": "char", "devMajor": 1, "devMinor": 3},
        {"name": "p", "type": "fifo"},
    ]}))
    .unwrap();
    let toc = Toc::parse(&json, Format::Estargz, 200).unwrap();
    let e = &toc.entries;
    assert_eq!((e[0].name.as_str(), e[0].mode, e[0].uid), ("bin", 0o755, 1000));
    assert_eq!(e[0].xattrs.get("user.k").map(Vec::as_slice), Some(&b"value"[..]));
    assert_eq!((e[1].mode, e[1].chunks[0].blob_end), (0o4755, 200), "one chunk, the file's digest");
    assert_eq!(e[2].link_name, "bin/sh");
    assert_eq!(e[3].link_name, "/bin/sh");
    assert_eq!((e[4].kind, e[4].dev_major, e[4].dev_minor), (EntryKind::Char, 1, 3));
}

/// A zstd:chunked blob: each file's data in its own frame, the TOC in a skippable frame, the
/// footer frame; and the descriptor's annotations.
fn zstd_chunked(content: &[u8]) -> (Vec<u8>, HashMap<String, String>) {
    let mut blob = zstd::encode_all(&header("f", Some(content))[..], 1).unwrap();
    let offset = blob.len();
    let mut data = content.to_vec();
    data.extend(pad(content.len()));
    blob.extend(zstd::encode_all(&data[..], 1).unwrap());
    let d = crate::digest::Sha256Digest::of(content).to_string();
    let json = serde_json::to_vec(&serde_json::json!({"version": 1, "entries": [
        {"name": "f", "type": "reg", "size": content.len(), "offset": offset, "endOffset": blob.len(), "digest": d},
    ]}))
    .unwrap();
    blob.extend(zstd::encode_all(&[0u8; 1024][..], 1).unwrap());
    let toc = zstd::encode_all(&json[..], 3).unwrap();
    let toc_offset = blob.len() as u64 + 8;
    blob.extend(skippable_frame(&toc).unwrap());
    let f = ZstdFooter { offset: toc_offset, length: toc.len() as u64, uncompressed: json.len() as u64 };
    blob.extend(zstd_chunked_footer(f));
    let mut ann = HashMap::new();
    ann.insert(
        ANNOTATION_ZSTD_POSITION.to_string(),
        format!("{}:{}:{}:1", f.offset, f.length, f.uncompressed),
    );
    ann.insert(ANNOTATION_ZSTD_CHECKSUM.to_string(), crate::digest::Sha256Digest::of(&toc).to_string());
    (blob, ann)
}

#[test]
fn zstd_chunked_toc_is_located_verified_and_read() {
    let (blob, ann) = zstd_chunked(b"hello, zstd");
    let size = blob.len() as u64;
    let loc = locate(crate::compression::MT_OCI_LAYER_ZSTD, &ann, size).unwrap().unwrap();
    let Locator::ZstdChunked { offset, length, .. } = loc.clone() else { panic!("{loc:?}") };
    let footer = parse_zstd_chunked_footer(&blob[blob.len() - 48..], size).unwrap();
    assert_eq!((footer.offset, footer.length), (offset, length));
    let frame = &blob[offset as usize..(offset + length) as usize];
    let toc = Toc::from_zstd_chunked(frame, &loc).unwrap();
    let c = &toc.entries[0].chunks[0];
    let got =
        decode_chunk_to_vec(toc.format, &blob[c.blob_offset as usize..c.blob_end as usize], "f", c).unwrap();
    assert_eq!(got, b"hello, zstd");
    // A chunk's digest is of its uncompressed bytes: a valid frame of other bytes is refused,
    // and so is a damaged frame.
    let other = zstd::encode_all(&b"HELLO, zstd"[..], 1).unwrap();
    let c2 = Chunk { blob_end: c.blob_offset + other.len() as u64, ..c.clone() };
    assert!(matches!(
        decode_chunk_to_vec(toc.format, &other, "f", &c2),
        Err(SeekableError::ChunkDigest { .. })
    ));
    let mut damaged = blob[c.blob_offset as usize..c.blob_end as usize].to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x55;
    assert!(decode_chunk_to_vec(toc.format, &damaged, "f", c).is_err());
    // A plain zstd reader skips the TOC and footer frames.
    let plain = zstd::decode_all(&blob[..]).unwrap();
    assert_eq!(tar::Archive::new(&plain[..]).entries().unwrap().count(), 1);
    // The checksum is of the compressed bytes: a forged TOC is refused before decompression.
    let mut forged = frame.to_vec();
    forged[5] ^= 1;
    assert!(matches!(Toc::from_zstd_chunked(&forged, &loc), Err(SeekableError::TocDigest { .. })));
    assert!(parse_zstd_chunked_footer(&blob[blob.len() - 48..], 10).is_err(), "TOC outside a small blob");
}

#[test]
fn locate_reads_only_well_formed_annotations() {
    let gz_mt = crate::compression::MT_OCI_LAYER_GZIP;
    let zstd_mt = crate::compression::MT_OCI_LAYER_ZSTD;
    let ann = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let d = crate::digest::Sha256Digest::of(b"toc").to_string();
    assert_eq!(locate(gz_mt, &HashMap::new(), 100).unwrap(), None);
    assert_eq!(
        locate(crate::compression::MT_OCI_LAYER, &ann(&[(ANNOTATION_TOC_DIGEST, &d)]), 100).unwrap(),
        None
    );
    assert_eq!(
        locate(gz_mt, &ann(&[(ANNOTATION_TOC_DIGEST, &d)]), 100).unwrap().map(|l| l.format()),
        Some(Format::Estargz)
    );
    assert!(locate(gz_mt, &ann(&[(ANNOTATION_TOC_DIGEST, "sha256:../../x")]), 100).is_err());
    assert!(locate(gz_mt, &ann(&[(ANNOTATION_TOC_DIGEST, &d)]), 10).is_err(), "smaller than a footer");
    for pos in ["1:2:3", "a:2:3:1", "10:20:30:2", "10:0:30:1", "90:20:30:1", "18446744073709551615:2:3:1"] {
        let a = ann(&[(ANNOTATION_ZSTD_POSITION, pos), (ANNOTATION_ZSTD_CHECKSUM, &d)]);
        assert!(locate(zstd_mt, &a, 100).is_err(), "{pos}");
    }
    let a = ann(&[(ANNOTATION_ZSTD_POSITION_GH, "10:20:30:1"), (ANNOTATION_ZSTD_CHECKSUM_GH, &d)]);
    assert!(matches!(
        locate(zstd_mt, &a, 100).unwrap(),
        Some(Locator::ZstdChunked { offset: 10, length: 20, .. })
    ));
    assert_eq!(locate(zstd_mt, &ann(&[(ANNOTATION_ZSTD_POSITION, "10:20:30:1")]), 100).unwrap(), None);
}

/// containers/storage's TOC: a file of several chunks (rolling-checksum cut, `chunk` entries),
/// `endOffset` on the file's entry saying where its last frame ends; the frames of the next
/// entries' tar headers lie between it and the next file's data.
#[test]
fn zstd_chunked_chunks_end_where_the_file_says() {
    let d = |s: &str| crate::digest::Sha256Digest::of(s.as_bytes()).to_string();
    let json = serde_json::to_vec(&serde_json::json!({"version": 1, "entries": [
        {"type": "dir", "name": "./"},
        {"type": "reg", "name": "a", "size": 30, "offset": 100, "endOffset": 400,
         "chunkSize": 10, "chunkDigest": d("1"), "digest": d("a")},
        {"type": "chunk", "name": "a", "offset": 200, "chunkOffset": 10, "chunkSize": 15, "chunkDigest": d("2")},
        {"type": "chunk", "name": "a", "offset": 300, "chunkOffset": 25, "chunkSize": 5, "chunkDigest": d("3"),
         "chunkType": "zeros"},
        {"type": "reg", "name": "b", "size": 3, "offset": 500, "endOffset": 550, "digest": d("b")},
        {"type": "reg", "name": "c", "size": 3, "offset": 600, "endOffset": 9999, "digest": d("c")},
    ]}))
    .unwrap();
    let toc = Toc::parse(&json, Format::ZstdChunked, 700).unwrap();
    let spans = |name: &str| -> Vec<(u64, u64, u64, u64)> {
        let e = toc.entries.iter().find(|e| e.name == name).unwrap();
        e.chunks.iter().map(|c| (c.file_offset, c.size, c.blob_offset, c.blob_end)).collect()
    };
    assert_eq!(spans("a"), vec![(0, 10, 100, 200), (10, 15, 200, 300), (25, 5, 300, 400)]);
    assert_eq!(spans("b"), vec![(0, 3, 500, 550)]);
    // An endOffset past the next data (or the TOC) is not believed.
    assert_eq!(spans("c"), vec![(0, 3, 600, 700)]);
}
