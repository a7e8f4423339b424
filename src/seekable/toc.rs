//! The TOC: `stargz.index.json`'s schema, decoded from its gzip member (eStargz) or zstd frame
//! (zstd:chunked), verified against the descriptor's digest, and checked entry by entry into
//! [`Toc`]: names confined (no `..`, no absolute paths), kinds known, numbers in range, every
//! regular file's chunks contiguous, inside the blob's data and each with a digest.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::Read;

use base64::Engine as _;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::{Format, Locator, SeekableError, MAX_TOC_BYTES, MAX_TOC_ENTRIES, MAX_XATTR_BYTES, TOC_NAME};
use crate::digest::Sha256Digest;

/// Longest path and path component accepted in a TOC.
const MAX_PATH: usize = 4096;
const MAX_NAME: usize = 255;

/// What a TOC entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    Reg,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// One chunk of a regular file: `size` bytes of the file from `file_offset`, the start of a
/// gzip member or zstd frame at `blob_offset` that ends by `blob_end`; the first `size` bytes
/// it decompresses to hash to `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub file_offset: u64,
    pub size: u64,
    pub blob_offset: u64,
    pub blob_end: u64,
    pub digest: Sha256Digest,
}

/// One entry of a checked TOC. `name` is relative, cleaned (`etc/passwd`; the root is `""`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    pub name: String,
    pub kind: EntryKind,
    /// A regular file's length (0 for others).
    pub size: u64,
    /// Permission bits, setuid/setgid/sticky included (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// RFC 3339, as the TOC has it.
    pub modtime: Option<String>,
    /// A symlink's target as written; a hardlink's target entry's cleaned name.
    pub link_name: String,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// A regular file's content digest when the TOC gives it.
    pub digest: Option<Sha256Digest>,
    /// A regular file's chunks, in order, covering `0..size`.
    pub chunks: Vec<Chunk>,
}

/// A verified, checked TOC.
#[derive(Debug, Clone)]
pub struct Toc {
    pub format: Format,
    pub version: i64,
    pub entries: Vec<TocEntry>,
    /// Where the file data ends (the TOC's start): no chunk reaches past it.
    pub data_end: u64,
}

impl Toc {
    /// The eStargz TOC from its gzip member (`member`, read from `toc_offset`, the offset
    /// the footer gave), verified against the descriptor's `toc_digest` (of the JSON).
    pub fn from_estargz(
        member: &[u8],
        toc_offset: u64,
        toc_digest: &Sha256Digest,
    ) -> Result<Toc, SeekableError> {
        let json = estargz_toc_json(member)?;
        let actual = Sha256Digest::of(&json);
        if &actual != toc_digest {
            return Err(SeekableError::TocDigest { expected: toc_digest.clone(), actual });
        }
        Toc::parse(&json, Format::Estargz, toc_offset)
    }

    /// The zstd:chunked TOC from its compressed bytes, verified against the checksum (of the
    /// compressed bytes, so nothing unverified is decompressed).
    pub fn from_zstd_chunked(compressed: &[u8], locator: &Locator) -> Result<Toc, SeekableError> {
        let Locator::ZstdChunked { offset, uncompressed, checksum, .. } = locator else {
            return Err(SeekableError::Footer("not a zstd:chunked locator".into()));
        };
        let actual = Sha256Digest::of(compressed);
        if &actual != checksum {
            return Err(SeekableError::TocDigest { expected: checksum.clone(), actual });
        }
        let json = zstd_toc_json(compressed, *uncompressed)?;
        // The TOC's skippable frame header (8 bytes) ends the data.
        Toc::parse(&json, Format::ZstdChunked, offset.saturating_sub(8))
    }

    /// Checks a TOC JSON of a blob whose data ends at `data_end`.
    pub fn parse(json: &[u8], format: Format, data_end: u64) -> Result<Toc, SeekableError> {
        if json.len() as u64 > MAX_TOC_BYTES {
            return Err(SeekableError::TooLarge { what: "TOC", limit: MAX_TOC_BYTES });
        }
        let raw: RawToc = serde_json::from_slice(json).map_err(SeekableError::TocJson)?;
        check(raw, format, data_end)
    }

    /// The index of the prefetch landmark, if the layer has one: entries before it are to be
    /// fetched first.
    pub fn prefetch_landmark(&self) -> Option<usize> {
        self.entries.iter().position(|e| e.name == super::PREFETCH_LANDMARK)
    }
}

/// The JSON inside an eStargz TOC member: a tar whose one entry is `stargz.index.json`.
pub fn estargz_toc_json(member: &[u8]) -> Result<Vec<u8>, SeekableError> {
    let dec = flate2::read::GzDecoder::new(member);
    // The tar around the JSON: a header, padding and the end-of-archive blocks.
    let limit = MAX_TOC_BYTES + 8 * 512;
    let mut ar = tar::Archive::new(dec.take(limit));
    let err = |source| SeekableError::Decompress { what: "TOC", source };
    let mut entries = ar.entries().map_err(err)?;
    let mut entry = match entries.next() {
        Some(e) => e.map_err(err)?,
        None => return Err(SeekableError::Footer("the TOC member holds no tar entry".into())),
    };
    let path = entry.path_bytes().into_owned();
    if path != TOC_NAME.as_bytes() || entry.header().entry_type() != tar::EntryType::Regular {
        return Err(SeekableError::Footer(format!(
            "the TOC member holds {:?}, not {TOC_NAME}",
            String::from_utf8_lossy(&path)
        )));
    }
    let size = entry.size();
    if size > MAX_TOC_BYTES {
        return Err(SeekableError::TooLarge { what: "TOC", limit: MAX_TOC_BYTES });
    }
    let mut json = Vec::with_capacity(size.min(1 << 20) as usize);
    (&mut entry).take(size).read_to_end(&mut json).map_err(err)?;
    if json.len() as u64 != size {
        return Err(err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "TOC cut short")));
    }
    Ok(json)
}

/// The JSON of a zstd:chunked TOC, which must decompress to exactly `uncompressed` bytes.
pub fn zstd_toc_json(compressed: &[u8], uncompressed: u64) -> Result<Vec<u8>, SeekableError> {
    if uncompressed > MAX_TOC_BYTES {
        return Err(SeekableError::TooLarge { what: "TOC", limit: MAX_TOC_BYTES });
    }
    let err = |source| SeekableError::Decompress { what: "TOC", source };
    let dec = zstd::stream::read::Decoder::with_buffer(compressed).map_err(err)?;
    let mut json = Vec::with_capacity(uncompressed.min(1 << 20) as usize);
    dec.take(uncompressed + 1).read_to_end(&mut json).map_err(err)?;
    if json.len() as u64 != uncompressed {
        return Err(SeekableError::Footer(format!(
            "the TOC decompresses to {} bytes, its position says {uncompressed}",
            json.len()
        )));
    }
    Ok(json)
}

#[derive(Deserialize)]
struct RawToc {
    #[serde(default)]
    version: i64,
    #[serde(deserialize_with = "bounded_entries")]
    entries: Vec<RawEntry>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawEntry {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    size: i64,
    modtime: Option<String>,
    link_name: String,
    mode: i64,
    uid: i64,
    gid: i64,
    offset: i64,
    /// containers/storage's zstd:chunked: where the frame of this file's data ends.
    end_offset: i64,
    dev_major: i64,
    dev_minor: i64,
    xattrs: Option<BTreeMap<String, String>>,
    digest: String,
    chunk_offset: i64,
    chunk_size: i64,
    chunk_digest: String,
}

/// At most [`MAX_TOC_ENTRIES`] entries, refused while parsing (before they are all in memory).
fn bounded_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RawEntry>, D::Error> {
    struct Bounded;
    impl<'de> Visitor<'de> for Bounded {
        type Value = Vec<RawEntry>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of at most {MAX_TOC_ENTRIES} entries")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(e) = seq.next_element()? {
                if out.len() == MAX_TOC_ENTRIES {
                    return Err(serde::de::Error::custom(format!("more than {MAX_TOC_ENTRIES} entries")));
                }
                out.push(e);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

/// A TOC name made relative and clean: `./a//b/` is `a/b`, `./` the root (`""`); `..`, NUL and
/// over-long names are refused.
pub fn clean_name(raw: &str) -> Result<String, String> {
    if raw.contains('\0') {
        return Err("NUL in name".into());
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("`..` in name".into()),
            c if c.len() > MAX_NAME => return Err("path component too long".into()),
            c => parts.push(c),
        }
    }
    let name = parts.join("/");
    if name.len() > MAX_PATH {
        return Err("path too long".into());
    }
    Ok(name)
}

fn check(raw: RawToc, format: Format, data_end: u64) -> Result<Toc, SeekableError> {
    // Where each chunk's compressed bytes end: at the next data entry's offset (gzip members
    // and zstd frames are cut there), the last at the TOC.
    let offsets: BTreeSet<u64> =
        raw.entries.iter().filter(|e| e.offset > 0).map(|e| e.offset as u64).collect();
    let mut entries: Vec<TocEntry> = Vec::with_capacity(raw.entries.len());
    let mut by_name: HashMap<String, usize> = HashMap::new();
    // zstd:chunked: where the current file's last frame ends (its entry's `endOffset`).
    let mut file_end = 0i64;
    for (index, r) in raw.entries.into_iter().enumerate() {
        let fail = |reason: String| SeekableError::TocEntry { index, name: r.name.clone(), reason };
        let name = clean_name(&r.name).map_err(fail)?;
        if r.kind == "chunk" {
            let Some(file) = entries.last_mut().filter(|f| f.kind == EntryKind::Reg && f.name == name) else {
                return Err(fail("a chunk that follows no regular file of its name".into()));
            };
            let chunk = chunk_of(&r, file, file_end, &offsets, data_end).map_err(fail)?;
            file.chunks.push(chunk);
            continue;
        }
        if let Some(prev) = entries.last() {
            check_complete(prev).map_err(|reason| SeekableError::TocEntry {
                index: index - 1,
                name: prev.name.clone(),
                reason,
            })?;
        }
        if name == TOC_NAME {
            return Err(fail("the TOC lists itself".into()));
        }
        let kind = match r.kind.as_str() {
            "dir" => EntryKind::Dir,
            "reg" => EntryKind::Reg,
            "symlink" => EntryKind::Symlink,
            "hardlink" => EntryKind::Hardlink,
            "char" => EntryKind::Char,
            "block" => EntryKind::Block,
            "fifo" => EntryKind::Fifo,
            other => return Err(fail(format!("unknown type {other:?}"))),
        };
        if name.is_empty() && kind != EntryKind::Dir {
            return Err(fail("the root is not a directory".into()));
        }
        let id = |v: i64, what: &str| u32::try_from(v).map_err(|_| format!("{what} {v} out of range"));
        let link_name = match kind {
            EntryKind::Symlink => {
                if r.link_name.is_empty() || r.link_name.contains('\0') || r.link_name.len() > MAX_PATH {
                    return Err(fail("bad symlink target".into()));
                }
                r.link_name.clone()
            }
            EntryKind::Hardlink => {
                let target = clean_name(&r.link_name).map_err(fail)?;
                match by_name.get(&target).map(|&i| entries[i].kind) {
                    Some(EntryKind::Dir) | None => {
                        return Err(fail(format!("hardlink to {target:?}, no earlier non-directory entry")))
                    }
                    Some(_) => target,
                }
            }
            _ => String::new(),
        };
        let mut xattrs = BTreeMap::new();
        let mut xattr_bytes = 0usize;
        for (k, v) in r.xattrs.iter().flatten() {
            let value = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|_| fail(format!("xattr {k:?} is not base64")))?;
            xattr_bytes += k.len() + value.len();
            if k.is_empty() || k.contains('\0') || xattr_bytes > MAX_XATTR_BYTES {
                return Err(fail("bad or too many xattrs".into()));
            }
            xattrs.insert(k.clone(), value);
        }
        let (dev_major, dev_minor) = match kind {
            EntryKind::Char | EntryKind::Block => {
                (id(r.dev_major, "devMajor").map_err(fail)?, id(r.dev_minor, "devMinor").map_err(fail)?)
            }
            _ => (0, 0),
        };
        let digest = match (kind, r.digest.as_str()) {
            (EntryKind::Reg, d) if !d.is_empty() => {
                Some(Sha256Digest::parse(d).map_err(|e| fail(format!("digest: {e}")))?)
            }
            _ => None,
        };
        let size = match kind {
            EntryKind::Reg => u64::try_from(r.size).map_err(|_| fail("negative size".into()))?,
            _ => 0,
        };
        let mut entry = TocEntry {
            name: name.clone(),
            kind,
            size,
            mode: (r.mode & 0o7777) as u32,
            uid: id(r.uid, "uid").map_err(fail)?,
            gid: id(r.gid, "gid").map_err(fail)?,
            modtime: r.modtime.clone().filter(|m| m.len() <= 64),
            link_name,
            dev_major,
            dev_minor,
            xattrs,
            digest,
            chunks: Vec::new(),
        };
        file_end = r.end_offset;
        if kind == EntryKind::Reg && size > 0 {
            let chunk = chunk_of(&r, &entry, file_end, &offsets, data_end).map_err(fail)?;
            entry.chunks.push(chunk);
        }
        by_name.insert(name, entries.len());
        entries.push(entry);
    }
    if let Some((index, prev)) = entries.iter().enumerate().next_back() {
        check_complete(prev).map_err(|reason| SeekableError::TocEntry {
            index,
            name: prev.name.clone(),
            reason,
        })?;
    }
    Ok(Toc { format, version: raw.version, entries, data_end })
}

/// The next chunk of `file` that raw entry `r` (the file's own, or a `chunk` entry) describes.
/// `file_end` is the file entry's `endOffset` (zstd:chunked: where its last frame ends; 0 when
/// not given).
fn chunk_of(
    r: &RawEntry,
    file: &TocEntry,
    file_end: i64,
    offsets: &BTreeSet<u64>,
    data_end: u64,
) -> Result<Chunk, String> {
    let expected = file.chunks.last().map_or(0, |c| c.file_offset + c.size);
    if r.chunk_offset < 0 || r.chunk_offset as u64 != expected {
        return Err(format!("chunk at {} where {expected} was due", r.chunk_offset));
    }
    let remain = file.size - expected;
    let size = match r.chunk_size {
        // Zero (or absent): to the end of the file.
        0 => remain,
        n if n > 0 && n as u64 <= remain => n as u64,
        n => return Err(format!("chunk size {n} does not fit the file")),
    };
    if size == 0 {
        return Err("empty chunk".into());
    }
    if r.offset <= 0 || r.offset as u64 >= data_end {
        return Err(format!("data offset {} outside the blob's data", r.offset));
    }
    let blob_offset = r.offset as u64;
    let next = offsets.range(blob_offset + 1..).next().copied().unwrap_or(data_end).min(data_end);
    // A chunk's frame ends at the next data offset at the latest (the tar headers of the
    // entries between are in frames of their own); containers/storage says where a file's last
    // frame ends, which spares fetching those headers with its last chunk. A bound that does not
    // fall between the chunk's start and the next data offset is ignored.
    let end_hint = if expected + size == file.size { file_end } else { r.end_offset };
    let blob_end = match end_hint {
        e if e > r.offset && (e as u64) <= next => e as u64,
        _ => next,
    };
    let digest_text = match (&r.chunk_digest, &file.digest) {
        (d, _) if !d.is_empty() => d.clone(),
        // One chunk for the whole file: the file's digest is the chunk's.
        (_, Some(d)) if expected == 0 && size == file.size => d.to_string(),
        _ => return Err("a chunk without a digest".into()),
    };
    let digest = Sha256Digest::parse(&digest_text).map_err(|e| format!("chunk digest: {e}"))?;
    Ok(Chunk { file_offset: expected, size, blob_offset, blob_end, digest })
}

/// A regular file's chunks must cover it.
fn check_complete(e: &TocEntry) -> Result<(), String> {
    let covered = e.chunks.last().map_or(0, |c| c.file_offset + c.size);
    if e.kind == EntryKind::Reg && covered != e.size {
        return Err(format!("chunks cover {covered} of {} bytes", e.size));
    }
    Ok(())
}
