//! Writing eStargz: a plain layer tar (as commit writes it, or a stored layer decompressed) to
//! an eStargz blob.
//!
//! The tar's bytes pass through unchanged (read with the tar crate through a tee that keeps
//! what it consumed); only the gzip member boundaries are placed: each entry's headers go into
//! the open member, each chunk of a regular file's data (at most [`EstargzOptions::chunk_size`])
//! starts a member of its own. The tar's end-of-archive blocks are replaced by the TOC entry
//! (`stargz.index.json`, in a member of its own, followed by the end-of-archive blocks) and the
//! footer. The result is an ordinary gzip tar: its diff_id is that of the tar with the TOC entry
//! (and the landmark, when written) added.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::rc::Rc;

use base64::Engine as _;
use flate2::write::GzEncoder;
use sha2::Digest as _;

use super::{footer, SeekableError, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_NAME};
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

/// The gzip members: plain bytes go into the open member (one is opened when none is).
struct Members<W: Write> {
    idle: Option<Blob<W>>,
    open: Option<GzEncoder<Blob<W>>>,
    level: flate2::Compression,
    diff: sha2::Sha256,
    plain: u64,
}

impl<W: Write> Members<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.open.is_none() {
            let blob = self.idle.take().ok_or_else(|| io::Error::other("eStargz writer broken"))?;
            self.open = Some(GzEncoder::new(blob, self.level));
        }
        if let Some(gz) = &mut self.open {
            gz.write_all(data)?;
        }
        self.diff.update(data);
        self.plain += data.len() as u64;
        Ok(())
    }

    /// Closes the open member; returns the offset where the next one starts.
    fn close(&mut self) -> io::Result<u64> {
        if let Some(gz) = self.open.take() {
            self.idle = Some(gz.finish()?);
        }
        self.idle.as_ref().map(|b| b.n).ok_or_else(|| io::Error::other("eStargz writer broken"))
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

/// A landmark entry (`name`, one byte as Go writes it), its data in a member of its own.
fn landmark<W: Write>(m: &mut Members<W>, toc: &mut Vec<OutEntry>, name: &str) -> io::Result<()> {
    let content = [0x0fu8];
    let (h, body) = added_entry(name, &content)?;
    m.write(&h)?;
    let offset = m.close()?;
    m.write(&body)?;
    let d = Sha256Digest::of(&content).to_string();
    toc.push(OutEntry {
        name: name.into(),
        kind: "reg",
        size: 1,
        mode: 0o644,
        offset,
        digest: d.clone(),
        chunk_digest: d,
        ..Default::default()
    });
    Ok(())
}

/// Writes the plain layer tar `tar` to `out` as eStargz.
pub fn write_estargz<R: Read, W: Write>(
    tar: R,
    out: W,
    opts: &EstargzOptions,
) -> Result<(EstargzInfo, W), SeekableError> {
    let w = |e: io::Error| SeekableError::Write(e);
    let bad = |name: &str, reason: &str| SeekableError::TocEntry {
        index: 0,
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let chunk_size = opts.chunk_size.max(1);
    let mut m = Members {
        idle: Some(Blob { inner: out, n: 0, hash: sha2::Sha256::new() }),
        open: None,
        level: flate2::Compression::new(opts.gzip_level.min(9)),
        diff: sha2::Sha256::new(),
        plain: 0,
    };
    let mut toc: Vec<OutEntry> = Vec::new();

    // Where `.prefetch.landmark` goes: after this many of the input's entries.
    let mut prefetch_after = match opts.landmark {
        Landmark::NoPrefetch => {
            landmark(&mut m, &mut toc, NO_PREFETCH_LANDMARK).map_err(w)?;
            None
        }
        Landmark::None => None,
        Landmark::PrefetchAfter(n) => Some(n),
    };
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
        e.modtime = crate::time::rfc3339(h.mtime().unwrap_or(0) as i64);
        // PAX records parsed by length (the tar crate's iterator splits binary values).
        let ext = &headers[..headers.len().saturating_sub(512)];
        let records =
            crate::tar::pax::records_before(ext).map_err(|r| bad(&name, &format!("PAX header: {r}")))?;
        for (key, value) in records {
            if key.starts_with(b"GNU.sparse.") {
                return Err(bad(&name, "sparse files have no eStargz form"));
            }
            let num = || std::str::from_utf8(&value).ok().and_then(|v| v.parse::<u64>().ok());
            match key.as_slice() {
                crate::tar::pax::UID => e.uid = num().unwrap_or(e.uid),
                crate::tar::pax::GID => e.gid = num().unwrap_or(e.gid),
                _ => {
                    if let Some(x) = crate::tar::pax::xattr_name(&key) {
                        let xname =
                            String::from_utf8(x.to_vec()).map_err(|_| bad(&name, "xattr name not UTF-8"))?;
                        e.xattrs.insert(xname, base64::engine::general_purpose::STANDARD.encode(&value));
                    }
                }
            }
        }
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
                    &format!("entry type {:?} has no eStargz form", other.as_byte() as char),
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
            landmark(&mut m, &mut toc, PREFETCH_LANDMARK).map_err(w)?;
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
            if n == chunk_size {
                c.chunk_size = n;
            }
            c.chunk_digest = Sha256Digest::of(&data).to_string();
            toc.push(c);
            done += n;
        }
        toc[first_index].digest = Sha256Digest::from_bytes(&file_hash.finalize()).to_string();
    }
    // The last entry's padding; the end-of-archive blocks after it are replaced.
    {
        let k = kept.borrow();
        let padding = (entry_end.saturating_sub(kept_start) as usize).min(k.len());
        if !drop_padding {
            m.write(&k[..padding]).map_err(w)?;
        }
    }
    drop(ar);
    if prefetch_after.is_some() {
        // Fewer entries than asked for: all of them come first.
        landmark(&mut m, &mut toc, PREFETCH_LANDMARK).map_err(w)?;
    }

    let toc_offset = m.close().map_err(w)?;
    let json = serde_json::to_vec(&serde_json::json!({"version": 1, "entries": toc}))
        .map_err(|e| SeekableError::Write(io::Error::other(e)))?;
    let (h, body) = added_entry(TOC_NAME, &json).map_err(w)?;
    m.write(&h).map_err(w)?;
    m.write(&body).map_err(w)?;
    m.write(&[0u8; 1024]).map_err(w)?;
    m.close().map_err(w)?;
    let mut blob = m.idle.take().ok_or_else(|| w(io::Error::other("eStargz writer broken")))?;
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
