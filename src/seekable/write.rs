//! Writing seekable layers: a plain layer tar (as commit writes it, or a stored layer
//! decompressed) to eStargz or zstd:chunked.
//!
//! The tar's bytes pass through unchanged (read with the tar crate through a tee that keeps
//! what it consumed); only the frame boundaries (gzip members, zstd frames) are placed: each
//! entry's headers go into the open frame, each chunk of a regular file's data (at most
//! `chunk_size` bytes) starts a frame of its own.
//! - eStargz ([`write_estargz`]): the tar's end-of-archive blocks are replaced by the TOC entry
//!   (`stargz.index.json`, in a member of its own, followed by the end-of-archive blocks) and
//!   the footer. The result is an ordinary gzip tar: its diff_id is that of the tar with the TOC
//!   entry (and the landmark, when written) added.
//! - zstd:chunked ([`write_zstd_chunked`], the format docs/lazy.md describes): the tar is kept
//!   whole, end-of-archive blocks included, so the diff_id is the input's (unless a landmark
//!   entry is asked for, which `image optimize` does); a file's last chunk
//!   closes its frame (its entry's `endOffset`). The TOC follows in a skippable frame
//!   (zstd-compressed JSON), then the 48-byte footer frame (containers/storage 1.43's and
//!   stargz-snapshotter's form). Every chunk has its `chunkDigest`, as stargz-snapshotter's
//!   verifier requires; a file of several chunks has `chunkSize` on each, as containers/storage
//!   writes them.
//!
//! Both leave out an earlier conversion's TOC and landmark entries (a new TOC is written).
//! Neither reorders: the caller gives the entries in the order wanted (`super::order` moves
//! the files a command read to the front, then [`Landmark::PrefetchAfter`] places the landmark
//! after them).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::rc::Rc;

use base64::Engine as _;
use flate2::write::GzEncoder;
use sha2::Digest as _;

use super::{
    footer, Format, SeekableError, MAX_TOC_BYTES, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_NAME,
};
use crate::digest::Sha256Digest;

/// eStargz's chunk size by default (stargz-snapshotter's).
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

/// Which landmark the layer starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Landmark {
    /// `.no.prefetch.landmark` first: nothing to prefetch (what Go's `estargz.Build` writes
    /// when no file is prioritised).
    #[default]
    NoPrefetch,
    /// No landmark entry.
    None,
    /// `.prefetch.landmark` after the first N entries of the input tar: those are the files a
    /// lazy mount fetches first, in one request (the caller orders the tar; Go's
    /// `estargz.Build` moves prioritised files to the front the same way).
    PrefetchAfter(usize),
}

/// How to write eStargz.
#[derive(Debug, Clone)]
pub struct EstargzOptions {
    pub gzip_level: u32,
    /// Largest chunk of a regular file's data in one gzip member.
    pub chunk_size: u64,
    pub landmark: Landmark,
}

impl Default for EstargzOptions {
    fn default() -> Self {
        EstargzOptions { gzip_level: 6, chunk_size: DEFAULT_CHUNK_SIZE, landmark: Landmark::default() }
    }
}

/// What [`write_estargz`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EstargzInfo {
    /// The blob's digest and size.
    pub digest: Sha256Digest,
    pub size: u64,
    /// The uncompressed tar's digest and size (with the TOC entry).
    pub diff_id: Sha256Digest,
    pub uncompressed_size: u64,
    /// The TOC JSON's digest (the `toc.digest` annotation).
    pub toc_digest: Sha256Digest,
    /// TOC entries written (chunks of a file counted once each).
    pub entries: usize,
}

/// zstd:chunked: the most bytes of tar headers buffered for one frame.
const MAX_HEADER_FRAME: usize = 8 << 20;

/// How to write zstd:chunked.
#[derive(Debug, Clone)]
pub struct ZstdChunkedOptions {
    pub zstd_level: i32,
    /// Largest chunk of a regular file's data in one zstd frame.
    pub chunk_size: u64,
    /// None by default: a landmark is a tar entry, so writing one changes the diff_id, which
    /// zstd:chunked otherwise keeps (`image optimize` writes `.prefetch.landmark` into the
    /// layers it reorders, whose diff_id changes anyway; stargz-snapshotter reads it too).
    pub landmark: Landmark,
}

impl Default for ZstdChunkedOptions {
    fn default() -> Self {
        ZstdChunkedOptions { zstd_level: 3, chunk_size: DEFAULT_CHUNK_SIZE, landmark: Landmark::None }
    }
}

/// What [`write_zstd_chunked`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZstdChunkedInfo {
    /// The blob's digest and size.
    pub digest: Sha256Digest,
    pub size: u64,
    /// The uncompressed tar's digest and size: the input's, unless it held TOC or landmark
    /// entries of an earlier conversion (left out).
    pub diff_id: Sha256Digest,
    pub uncompressed_size: u64,
    /// The TOC JSON's digest (what stargz-snapshotter's reader verifies; what strata stores).
    pub toc_digest: Sha256Digest,
    /// The compressed TOC's digest (the `manifest-checksum` annotation).
    pub toc_checksum: Sha256Digest,
    /// Where the compressed TOC is (past its skippable frame's header), its length and its
    /// JSON's.
    pub toc_offset: u64,
    pub toc_length: u64,
    pub toc_uncompressed: u64,
    /// TOC entries written (chunks of a file counted once each).
    pub entries: usize,
}

impl ZstdChunkedInfo {
    /// The layer descriptor's annotations: position and checksum, each in both spellings
    /// (containers/storage 1.43 and stargz-snapshotter read `io.containers.`, newer
    /// containers/storage `io.github.containers.`).
    pub fn annotations(&self) -> Vec<(&'static str, String)> {
        let position = format!("{}:{}:{}:1", self.toc_offset, self.toc_length, self.toc_uncompressed);
        let checksum = self.toc_checksum.to_string();
        vec![
            (super::ANNOTATION_ZSTD_POSITION, position.clone()),
            (super::ANNOTATION_ZSTD_CHECKSUM, checksum.clone()),
            (super::ANNOTATION_ZSTD_POSITION_GH, position),
            (super::ANNOTATION_ZSTD_CHECKSUM_GH, checksum),
        ]
    }
}

/// The TOC entry as written (Go's field names, zero fields left out).
#[derive(serde::Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct OutEntry {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    modtime: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    link_name: String,
    #[serde(skip_serializing_if = "is_zero")]
    mode: u64,
    #[serde(skip_serializing_if = "is_zero")]
    uid: u64,
    #[serde(skip_serializing_if = "is_zero")]
    gid: u64,
    #[serde(skip_serializing_if = "is_zero")]
    offset: u64,
    #[serde(skip_serializing_if = "is_zero")]
    end_offset: u64,
    #[serde(skip_serializing_if = "is_zero")]
    dev_major: u64,
    #[serde(skip_serializing_if = "is_zero")]
    dev_minor: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    xattrs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    digest: String,
    #[serde(skip_serializing_if = "is_zero")]
    chunk_offset: u64,
    #[serde(skip_serializing_if = "is_zero")]
    chunk_size: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    chunk_digest: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The compressed stream: counted and hashed (the blob's digest).
struct Blob<W> {
    inner: W,
    n: u64,
    hash: sha2::Sha256,
}

impl<W: Write> Write for Blob<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// How frames are compressed.
enum Codec {
    Gzip(flate2::Compression),
    /// One compression context for every frame (a frame's bytes are buffered until it closes:
    /// a chunk, or the headers between two files). A frame of headers that grows past `max`
    /// bytes (thousands of entries without data in a row) is cut there, which bounds the
    /// buffer: only file data's frames are located by the TOC, and a reader decompresses
    /// whatever frames lie between them.
    Zstd {
        ctx: Box<zstd::bulk::Compressor<'static>>,
        max: usize,
    },
}

/// The open frame.
enum Frame<W: Write> {
    Gzip(Box<GzEncoder<Blob<W>>>),
    Zstd(Blob<W>, Vec<u8>),
}

/// The frames: plain bytes go into the open frame (one is opened when none is).
struct Members<W: Write> {
    idle: Option<Blob<W>>,
    open: Option<Frame<W>>,
    codec: Codec,
    diff: sha2::Sha256,
    plain: u64,
}

fn broken() -> io::Error {
    io::Error::other("seekable writer broken")
}

/// A zstd compression context that writes a checksum in each frame.
fn zstd_context(level: i32) -> io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
    Ok(c)
}

impl<W: Write> Members<W> {
    fn new(out: W, codec: Codec) -> Self {
        Members {
            idle: Some(Blob { inner: out, n: 0, hash: sha2::Sha256::new() }),
            open: None,
            codec,
            diff: sha2::Sha256::new(),
            plain: 0,
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.open.is_none() {
            let blob = self.idle.take().ok_or_else(broken)?;
            self.open = Some(match &self.codec {
                Codec::Gzip(level) => Frame::Gzip(Box::new(GzEncoder::new(blob, *level))),
                Codec::Zstd { .. } => Frame::Zstd(blob, Vec::new()),
            });
        }
        match (&mut self.open, &mut self.codec) {
            (Some(Frame::Gzip(gz)), _) => gz.write_all(data)?,
            (Some(Frame::Zstd(blob, buf)), Codec::Zstd { ctx, max }) => {
                if !buf.is_empty() && buf.len() + data.len() > *max {
                    blob.write_all(&ctx.compress(buf)?)?;
                    buf.clear();
                }
                buf.extend_from_slice(data);
            }
            (Some(Frame::Zstd(..)), Codec::Gzip(_)) | (None, _) => return Err(broken()),
        }
        self.diff.update(data);
        self.plain += data.len() as u64;
        Ok(())
    }

    /// Closes the open frame; returns the offset where the next one starts.
    fn close(&mut self) -> io::Result<u64> {
        match (self.open.take(), &mut self.codec) {
            (Some(Frame::Gzip(gz)), _) => self.idle = Some(gz.finish()?),
            (Some(Frame::Zstd(mut blob, buf)), Codec::Zstd { ctx, .. }) => {
                blob.write_all(&ctx.compress(&buf)?)?;
                self.idle = Some(blob);
            }
            (Some(Frame::Zstd(..)), Codec::Gzip(_)) => return Err(broken()),
            (None, _) => {}
        }
        self.idle.as_ref().map(|b| b.n).ok_or_else(broken)
    }
}

/// Keeps every byte the tar reader consumes, so they are written out unchanged.
struct Tee<R> {
    inner: R,
    kept: Rc<RefCell<Vec<u8>>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.kept.borrow_mut().extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fn pad(n: u64) -> usize {
    ((512 - n % 512) % 512) as usize
}

/// One ustar header, its data and padding, for the entries this writer adds.
fn added_entry(name: &str, data: &[u8]) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    let mut body = data.to_vec();
    body.resize(data.len() + pad(data.len() as u64), 0);
    Ok((h.as_bytes().to_vec(), body))
}

/// A landmark entry (`name`, one byte as Go writes it), its data in a member of its own (for
/// zstd:chunked a frame of its own, closed: its `endOffset`, as every file's).
fn landmark<W: Write>(
    m: &mut Members<W>,
    toc: &mut Vec<OutEntry>,
    name: &str,
    format: Format,
) -> io::Result<()> {
    let content = [0x0fu8];
    let (h, body) = added_entry(name, &content)?;
    m.write(&h)?;
    let offset = m.close()?;
    m.write(&body)?;
    let end_offset = if format == Format::ZstdChunked { m.close()? } else { 0 };
    let d = Sha256Digest::of(&content).to_string();
    toc.push(OutEntry {
        name: name.into(),
        kind: "reg",
        size: 1,
        mode: 0o644,
        offset,
        end_offset,
        digest: d.clone(),
        chunk_digest: d,
        ..Default::default()
    });
    Ok(())
}

/// Where `.prefetch.landmark` goes (after this many of the input's entries), having written
/// `.no.prefetch.landmark` first when that is asked for.
fn first_landmark<W: Write>(
    m: &mut Members<W>,
    toc: &mut Vec<OutEntry>,
    which: Landmark,
    format: Format,
) -> io::Result<Option<usize>> {
    Ok(match which {
        Landmark::NoPrefetch => {
            landmark(m, toc, NO_PREFETCH_LANDMARK, format)?;
            None
        }
        Landmark::None => None,
        Landmark::PrefetchAfter(n) => Some(n),
    })
}

/// Writes the plain layer tar `tar` to `out` as eStargz.
pub fn write_estargz<R: Read, W: Write>(
    tar: R,
    out: W,
    opts: &EstargzOptions,
) -> Result<(EstargzInfo, W), SeekableError> {
    let w = SeekableError::Write;
    let mut m = Members::new(out, Codec::Gzip(flate2::Compression::new(opts.gzip_level.min(9))));
    let mut toc: Vec<OutEntry> = Vec::new();

    let prefetch_after = first_landmark(&mut m, &mut toc, opts.landmark, Format::Estargz).map_err(w)?;
    walk(tar, &mut m, &mut toc, Format::Estargz, opts.chunk_size, prefetch_after)?;

    let toc_offset = m.close().map_err(w)?;
    let json = toc_json(&toc)?;
    let (h, body) = added_entry(TOC_NAME, &json).map_err(w)?;
    m.write(&h).map_err(w)?;
    m.write(&body).map_err(w)?;
    m.write(&[0u8; 1024]).map_err(w)?;
    m.close().map_err(w)?;
    let mut blob = m.idle.take().ok_or_else(|| w(broken()))?;
    blob.write_all(&footer::estargz_footer(toc_offset)).map_err(w)?;
    let info = EstargzInfo {
        digest: Sha256Digest::from_bytes(&blob.hash.finalize_reset()),
        size: blob.n,
        diff_id: Sha256Digest::from_bytes(&m.diff.finalize()),
        uncompressed_size: m.plain,
        toc_digest: Sha256Digest::of(&json),
        entries: toc.len(),
    };
    Ok((info, blob.inner))
}

/// Writes the plain layer tar `tar` to `out` as zstd:chunked.
pub fn write_zstd_chunked<R: Read, W: Write>(
    tar: R,
    out: W,
    opts: &ZstdChunkedOptions,
) -> Result<(ZstdChunkedInfo, W), SeekableError> {
    let w = SeekableError::Write;
    let ctx = zstd_context(opts.zstd_level).map_err(w)?;
    // Only headers are cut: a chunk is written whole, in one write, into an empty frame.
    let mut m = Members::new(out, Codec::Zstd { ctx: Box::new(ctx), max: MAX_HEADER_FRAME });
    let mut toc: Vec<OutEntry> = Vec::new();
    let prefetch_after = first_landmark(&mut m, &mut toc, opts.landmark, Format::ZstdChunked).map_err(w)?;
    walk(tar, &mut m, &mut toc, Format::ZstdChunked, opts.chunk_size, prefetch_after)?;
    let data_end = m.close().map_err(w)?;
    let json = toc_json(&toc)?;
    let compressed = match &mut m.codec {
        Codec::Zstd { ctx, .. } => ctx.compress(&json).map_err(w)?,
        Codec::Gzip(_) => return Err(w(broken())),
    };
    let mut blob = m.idle.take().ok_or_else(|| w(broken()))?;
    blob.write_all(&footer::skippable_frame(&compressed)?).map_err(w)?;
    // The position names the compressed TOC itself, past its frame's 8-byte header.
    let f = footer::ZstdFooter {
        offset: data_end + 8,
        length: compressed.len() as u64,
        uncompressed: json.len() as u64,
    };
    blob.write_all(&footer::zstd_chunked_footer(f)).map_err(w)?;
    let info = ZstdChunkedInfo {
        digest: Sha256Digest::from_bytes(&blob.hash.finalize_reset()),
        size: blob.n,
        diff_id: Sha256Digest::from_bytes(&m.diff.finalize()),
        uncompressed_size: m.plain,
        toc_digest: Sha256Digest::of(&json),
        toc_checksum: Sha256Digest::of(&compressed),
        toc_offset: f.offset,
        toc_length: f.length,
        toc_uncompressed: f.uncompressed,
        entries: toc.len(),
    };
    Ok((info, blob.inner))
}

/// The TOC JSON; refused when larger than a reader takes.
fn toc_json(toc: &[OutEntry]) -> Result<Vec<u8>, SeekableError> {
    let json = serde_json::to_vec(&serde_json::json!({"version": 1, "entries": toc}))
        .map_err(|e| SeekableError::Write(io::Error::other(e)))?;
    if json.len() as u64 > MAX_TOC_BYTES {
        return Err(SeekableError::TooLarge { what: "TOC", limit: MAX_TOC_BYTES });
    }
    Ok(json)
}

/// The tar's entries into `m`'s frames and `toc`: headers into the open frame, each chunk of
/// a file's data in a frame of its own; `.prefetch.landmark` after `prefetch_after` entries. eStargz stops after the last entry's padding (its end-of-archive blocks are
/// replaced); zstd:chunked writes the rest of the input too.
fn walk<R: Read, W: Write>(
    tar: R,
    m: &mut Members<W>,
    toc: &mut Vec<OutEntry>,
    format: Format,
    chunk_size: u64,
    mut prefetch_after: Option<usize>,
) -> Result<(), SeekableError> {
    let w = SeekableError::Write;
    let bad = |name: &str, reason: &str| SeekableError::TocEntry {
        index: 0,
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let chunk_size = chunk_size.max(1);
    // Entries written so far (for `.prefetch.landmark`'s place).
    let mut written = 0usize;
    let kept = Rc::new(RefCell::new(Vec::new()));
    // The input offset of kept[0], and where the last entry's data (padded) ends.
    let mut kept_start = 0u64;
    let mut entry_end = 0u64;
    // The last entry was left out: its padding is too.
    let mut drop_padding = false;
    let mut ar = tar::Archive::new(Tee { inner: tar, kept: kept.clone() });
    let decode = |e: io::Error| SeekableError::Decompress { what: "layer tar", source: e };
    for entry in ar.entries().map_err(decode)? {
        let mut entry = entry.map_err(decode)?;
        // What was read since the last entry: its padding, then this entry's headers.
        let headers = {
            let mut k = kept.borrow_mut();
            let padding = (entry_end.saturating_sub(kept_start) as usize).min(k.len());
            if !drop_padding {
                m.write(&k[..padding]).map_err(w)?;
            }
            let headers: Vec<u8> = k.drain(..).skip(padding).collect();
            kept_start = entry.raw_file_position();
            drop_padding = false;
            headers
        };
        let name = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| bad("?", "a name that is not UTF-8 (a TOC is JSON)"))?;
        let clean = super::toc::clean_name(&name).map_err(|r| bad(&name, &r))?;
        let size = entry.size();
        let h = entry.header().clone();
        let file_start = entry.raw_file_position();
        entry_end = file_start + size + pad(size) as u64;
        let skip = clean == TOC_NAME || clean == PREFETCH_LANDMARK || clean == NO_PREFETCH_LANDMARK;
        let mut e = OutEntry {
            name: name.clone(),
            mode: h.mode().unwrap_or(0) as u64 & 0o7777,
            ..Default::default()
        };
        e.uid = h.uid().unwrap_or(0);
        e.gid = h.gid().unwrap_or(0);
        let mut mtime = (h.mtime().unwrap_or(0) as i64, 0u32);
        // PAX records parsed by length (the tar crate's iterator splits binary values).
        let ext = &headers[..headers.len().saturating_sub(512)];
        let records =
            crate::tar::pax::records_before(ext).map_err(|r| bad(&name, &format!("PAX header: {r}")))?;
        for (key, value) in records {
            if key.starts_with(b"GNU.sparse.") {
                return Err(bad(&name, &format!("sparse files have no {} form", format.as_str())));
            }
            let num = || std::str::from_utf8(&value).ok().and_then(|v| v.parse::<u64>().ok());
            match key.as_slice() {
                crate::tar::pax::UID => e.uid = num().unwrap_or(e.uid),
                crate::tar::pax::GID => e.gid = num().unwrap_or(e.gid),
                crate::tar::pax::MTIME => {
                    if let Some(t) = crate::tar::pax::parse_time(&value) {
                        mtime = (t.tv_sec, t.tv_nsec.clamp(0, 999_999_999) as u32);
                    }
                }
                _ => {
                    if let Some(x) = crate::tar::pax::xattr_name(&key) {
                        let xname =
                            String::from_utf8(x.to_vec()).map_err(|_| bad(&name, "xattr name not UTF-8"))?;
                        e.xattrs.insert(xname, base64::engine::general_purpose::STANDARD.encode(&value));
                    }
                }
            }
        }
        // eStargz's TOC has whole seconds (Go's writer rounds); containers/storage's has
        // nanoseconds.
        e.modtime = match format {
            Format::Estargz => crate::time::rfc3339(mtime.0),
            Format::ZstdChunked => crate::time::rfc3339_exact(mtime.0, mtime.1),
        };
        let link = || -> Result<String, SeekableError> {
            let l = entry.link_name_bytes().ok_or_else(|| bad(&name, "a link without a target"))?;
            String::from_utf8(l.into_owned()).map_err(|_| bad(&name, "a link target that is not UTF-8"))
        };
        e.kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => "reg",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => {
                e.link_name = link()?;
                "symlink"
            }
            tar::EntryType::Link => {
                e.link_name = link()?;
                "hardlink"
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                e.dev_major = h.device_major().ok().flatten().unwrap_or(0) as u64;
                e.dev_minor = h.device_minor().ok().flatten().unwrap_or(0) as u64;
                if h.entry_type() == tar::EntryType::Char {
                    "char"
                } else {
                    "block"
                }
            }
            tar::EntryType::Fifo => "fifo",
            other => {
                return Err(bad(
                    &name,
                    &format!("entry type {:?} has no {} form", other.as_byte() as char, format.as_str()),
                ))
            }
        };
        if e.kind != "reg" && size != 0 {
            return Err(bad(&name, "a non-file entry with data"));
        }
        if skip {
            // An earlier conversion's TOC or landmark: left out (a new one is written).
            io::copy(&mut entry, &mut io::sink()).map_err(decode)?;
            kept.borrow_mut().clear();
            kept_start = file_start + size;
            drop_padding = true;
            continue;
        }
        if prefetch_after == Some(written) {
            landmark(m, toc, PREFETCH_LANDMARK, format).map_err(w)?;
            prefetch_after = None;
        }
        written += 1;
        m.write(&headers).map_err(w)?;
        if e.kind != "reg" || size == 0 {
            toc.push(e);
            continue;
        }
        e.size = size;
        let first_index = toc.len();
        let mut file_hash = sha2::Sha256::new();
        let mut done = 0u64;
        let mut first = Some(e);
        while done < size {
            let n = chunk_size.min(size - done);
            let offset = m.close().map_err(w)?;
            io::copy(&mut (&mut entry).take(n), &mut io::sink()).map_err(decode)?;
            let data: Vec<u8> = kept.borrow_mut().drain(..).collect();
            kept_start += data.len() as u64;
            if data.len() as u64 != n {
                return Err(decode(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{name}: data cut short"),
                )));
            }
            file_hash.update(&data);
            m.write(&data).map_err(w)?;
            let mut c = first.take().unwrap_or_else(|| OutEntry {
                name: name.clone(),
                kind: "chunk",
                ..Default::default()
            });
            c.offset = offset;
            c.chunk_offset = done;
            // eStargz as Go writes it: the last chunk's size is implied. containers/storage
            // gives every chunk's size when there are several.
            if n == chunk_size || (format == Format::ZstdChunked && n < size) {
                c.chunk_size = n;
            }
            c.chunk_digest = Sha256Digest::of(&data).to_string();
            toc.push(c);
            done += n;
        }
        toc[first_index].digest = Sha256Digest::from_bytes(&file_hash.finalize()).to_string();
        if format == Format::ZstdChunked {
            // The file's last frame ends here: the next headers start a frame of their own.
            toc[first_index].end_offset = m.close().map_err(w)?;
        }
    }
    // The last entry's padding; then, for zstd:chunked, the rest of the tar as it is.
    let mut k = kept.borrow_mut();
    let padding = (entry_end.saturating_sub(kept_start) as usize).min(k.len());
    if !drop_padding {
        m.write(&k[..padding]).map_err(w)?;
    }
    if prefetch_after.is_some() {
        // Fewer entries than asked for: all of them come first.
        landmark(m, toc, PREFETCH_LANDMARK, format).map_err(w)?;
    }
    if format == Format::ZstdChunked {
        let mut rest = k.split_off(padding);
        drop(k);
        ar.into_inner().inner.read_to_end(&mut rest).map_err(decode)?;
        m.write(&rest).map_err(w)?;
    }
    Ok(())
}
