//! GNU sparse files in layer tars: parsing and checking the sparse maps, and writing the data
//! extents at their offsets so that holes stay holes (unpack); the 1.0 map block, records and
//! placeholder name commit writes ([`map_block`], [`push_v10_records`], [`placeholder_name`]).
//!
//! # Formats (as GNU tar writes them with `--sparse`)
//! - **old GNU** (`--format=gnu`): typeflag `S`. Up to 4 (offset, numbytes) slots in the header,
//!   21 more in each 512-byte extension block that follows it while `isextended` is set, and the
//!   file's real size in the header. Numbers are octal, or base-256 from 8 GiB on. The header's
//!   size field counts the data bytes only.
//! - **PAX 0.0** (`--format=posix --sparse-version=0.0`): repeated `GNU.sparse.offset` /
//!   `GNU.sparse.numbytes` record pairs, `GNU.sparse.size` (the real size); the ustar name is the
//!   file's name.
//! - **PAX 0.1**: `GNU.sparse.map=off,len,off,len,...`, `GNU.sparse.size`, `GNU.sparse.name`.
//! - **PAX 1.0**: `GNU.sparse.major=1`, `GNU.sparse.minor=0`, `GNU.sparse.name`,
//!   `GNU.sparse.realsize`; the map is at the start of the entry data: decimal numbers, one per
//!   line (the count, then offset and size of each extent), padded to a 512-byte boundary.
//!
//! For 0.1 and 1.0 the ustar name is a placeholder (`GNUSparseFile.<pid>/<name>`): the entry is
//! created under `GNU.sparse.name` (which wins over a PAX `path`, as in GNU tar).
//!
//! In every format the data blocks hold the extents one after the other. GNU tar pads each
//! extent to 512 bytes, other readers (the tar crate, Go, libarchive) read them back to back; the
//! two agree because every extent but the last one holding data is a multiple of 512 bytes,
//! which GNU tar always writes and [`validate`] requires.
//!
//! # What a map must satisfy ([`validate`])
//! Extents in order and not overlapping, each ending at or before the real size, their sizes
//! adding up to exactly the entry's data, at most [`MAX_SPARSE_EXTENTS`] of them, every number a
//! plain non-negative integer no larger than the largest file offset (`i64::MAX`). Old GNU maps
//! must end exactly at the real size (GNU tar writes a last, empty extent there when the file
//! ends in a hole; the tar crate requires it). Anything else is an error naming the entry: two
//! readers must never see two different files in one entry.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use super::pax;

/// The largest number of extents accepted in one sparse map (16 MiB of map in memory). Old GNU
/// and PAX 0.x maps are also bounded by the header data limit
/// ([`crate::unpack::MAX_HEADER_BYTES`]).
pub const MAX_SPARSE_EXTENTS: usize = 1 << 20;

/// One data extent of a sparse file: `len` bytes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

impl Extent {
    fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.len)
    }
}

/// A sparse file's layout: its data extents and its real (apparent) size.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Map {
    pub extents: Vec<Extent>,
    pub realsize: u64,
}

impl Map {
    /// Bytes of data the map lists (the archive bytes the entry holds).
    pub fn data_bytes(&self) -> u64 {
        self.extents.iter().map(|e| e.len).sum()
    }
}

/// The largest offset or size a file can have (`off_t`).
const MAX_OFFSET: u64 = i64::MAX as u64;

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check_count(n: usize) -> Result<(), String> {
    if n > MAX_SPARSE_EXTENTS {
        return Err(format!("sparse map has more than {MAX_SPARSE_EXTENTS} extents"));
    }
    Ok(())
}

/// Check a map against the entry's data size. `end_at_realsize`: the last extent must end
/// exactly at the real size (old GNU maps).
pub fn validate(map: &Map, data_size: u64, end_at_realsize: bool) -> Result<(), String> {
    check_count(map.extents.len())?;
    if map.realsize > MAX_OFFSET {
        return Err(format!("real size {} is beyond the largest file size", map.realsize));
    }
    let mut prev_end = 0u64;
    let mut data = 0u64;
    let last_with_data = map.extents.iter().rposition(|e| e.len > 0);
    for (i, e) in map.extents.iter().enumerate() {
        let end = e.end().filter(|end| *end <= MAX_OFFSET).ok_or_else(|| {
            format!("extent {i} ({} bytes at {}) ends beyond the largest file size", e.len, e.offset)
        })?;
        if e.offset < prev_end {
            return Err(format!(
                "extent {i} at offset {} overlaps or precedes the previous extent, which ends at {prev_end}",
                e.offset
            ));
        }
        if end > map.realsize {
            return Err(format!(
                "extent {i} ({} bytes at {}) ends at {end}, past the real size {}",
                e.len, e.offset, map.realsize
            ));
        }
        if e.len % 512 != 0 && Some(i) != last_with_data {
            return Err(format!(
                "extent {i} ({} bytes at {}) is not a multiple of 512 bytes and is not the last one",
                e.len, e.offset
            ));
        }
        data = data.checked_add(e.len).ok_or("extent sizes overflow")?;
        prev_end = end;
    }
    if data != data_size {
        return Err(format!("sparse map lists {data} bytes of data, the entry holds {data_size}"));
    }
    if end_at_realsize && prev_end != map.realsize {
        return Err(format!("sparse map ends at {prev_end}, not at the real size {}", map.realsize));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Old GNU ('S') headers.

/// Offsets inside a GNU header block.
const GNU_SPARSE: usize = 386;
const GNU_ISEXTENDED: usize = 482;
const GNU_REALSIZE: usize = 483;
const GNU_SLOTS: usize = 4;
/// Extension blocks: 21 slots, then `isextended` at 504.
const EXT_SLOTS: usize = 21;
const EXT_ISEXTENDED: usize = 504;

/// A 12-byte numeric header field: octal text (NUL/space terminated, spaces around allowed), or
/// base-256 (high bit of the first byte set). Stricter than the tar crate, never laxer: whenever
/// this accepts a field, the tar crate reads the same value from it.
fn gnu_number(f: &[u8], what: &str) -> Result<u64, String> {
    if f.first().is_some_and(|b| b & 0x80 != 0) {
        let tail = f.len().saturating_sub(8);
        if f[0] != 0x80 || f[1..tail].iter().any(|b| *b != 0) {
            return Err(format!("{what}: base-256 number out of range"));
        }
        let mut v = 0u64;
        for b in &f[tail..] {
            v = (v << 8) | u64::from(*b);
        }
        return Ok(v);
    }
    let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
    let text = &f[..end];
    let s = std::str::from_utf8(text).ok().map(|s| s.trim_matches(' '));
    match s {
        Some(s) if !s.is_empty() && s.bytes().all(|c| (b'0'..=b'7').contains(&c)) => {
            u64::from_str_radix(s, 8).map_err(|_| format!("{what}: number {s:?} out of range"))
        }
        _ => Err(format!("{what}: {:?} is not a number", lossy(text))),
    }
}

fn isextended(flag: u8, what: &str) -> Result<bool, String> {
    match flag {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(format!("{what}: isextended flag is {b}, neither 0 nor 1")),
    }
}

/// Read the slots of one header block into `out`. Returns whether all slots were used (only
/// then may an extension block follow).
fn gnu_slots(slots: &[u8], n: usize, block: &str, out: &mut Vec<Extent>) -> Result<bool, String> {
    let mut empty_seen = false;
    for i in 0..n {
        let s = &slots[i * 24..(i + 1) * 24];
        let (off, num) = (&s[..12], &s[12..]);
        // The tar crate skips a slot whose offset *or* size starts with NUL, GNU tar stops at a
        // size starting with NUL: only an all-empty tail of slots means the same to both.
        match (off[0] == 0, num[0] == 0) {
            (true, true) => {
                empty_seen = true;
                continue;
            }
            (false, false) if !empty_seen => {}
            (false, false) => return Err(format!("{block}: sparse slot {i} follows an empty slot")),
            _ => return Err(format!("{block}: sparse slot {i} is half empty")),
        }
        let offset = gnu_number(off, &format!("{block}: sparse slot {i} offset"))?;
        let len = gnu_number(num, &format!("{block}: sparse slot {i} size"))?;
        check_count(out.len() + 1)?;
        out.push(Extent { offset, len });
    }
    Ok(!empty_seen)
}

fn block_name(i: usize) -> String {
    if i == 0 {
        "header".into()
    } else {
        format!("extended sparse header {i}")
    }
}

/// Parse an old GNU sparse map: `header` is the entry's 512-byte header, `ext` the bytes that
/// follow it in the stream (its extension blocks, as many as `isextended` announces). Returns
/// the map and the number of extension blocks.
pub fn gnu_map(header: &[u8], ext: &[u8]) -> Result<(Map, usize), String> {
    if header.len() != 512 {
        return Err("short header".into());
    }
    if &header[257..265] != b"ustar  \0" {
        return Err("sparse entry type in a header that is not an old GNU header".into());
    }
    let realsize = gnu_number(&header[GNU_REALSIZE..GNU_REALSIZE + 12], "header: real size")?;
    let mut extents = Vec::new();
    let mut full = gnu_slots(&header[GNU_SPARSE..], GNU_SLOTS, "header", &mut extents)?;
    let mut more = isextended(header[GNU_ISEXTENDED], "header")?;
    let mut blocks = 0;
    while more {
        // GNU tar stops reading the map at an empty slot; the tar crate reads on.
        if !full {
            return Err(format!(
                "{}: has empty slots but announces an extended sparse header",
                block_name(blocks)
            ));
        }
        let name = block_name(blocks + 1);
        let block = ext
            .get(blocks * 512..(blocks + 1) * 512)
            .ok_or_else(|| format!("{name} missing (the stream ends)"))?;
        blocks += 1;
        full = gnu_slots(block, EXT_SLOTS, &name, &mut extents)?;
        more = isextended(block[EXT_ISEXTENDED], &name)?;
    }
    Ok((Map { extents, realsize }, blocks))
}

// ---------------------------------------------------------------------------------------------
// PAX formats.

/// Which PAX sparse format an entry's records use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaxFormat {
    /// 0.0: repeated offset/numbytes records.
    V00,
    /// 0.1: one `GNU.sparse.map` record.
    V01,
    /// 1.0: the map is in the data.
    V10,
}

/// The sparse description in an entry's PAX records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaxSparse {
    pub format: PaxFormat,
    /// `GNU.sparse.name`: the entry's real path.
    pub name: Option<Vec<u8>>,
    pub realsize: u64,
    /// The extents (0.0, 0.1); for 1.0 they are read from the data ([`read_map_v10`]).
    pub extents: Vec<Extent>,
}

/// A decimal number as PAX and 1.0 maps write them: digits only.
fn decimal(v: &[u8], what: &str) -> Result<u64, String> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return Err(format!("{what}: {:?} is not a number", lossy(&v[..v.len().min(40)])));
    }
    let n: u64 = std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what}: {} out of range", lossy(v)))?;
    if n > MAX_OFFSET {
        return Err(format!("{what}: {n} is beyond the largest file size"));
    }
    Ok(n)
}

/// Interpret the `GNU.sparse.*` records of one entry; `None` if there are none.
pub fn pax_sparse(records: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<PaxSparse>, String> {
    let mut any = false;
    let mut major = None;
    let mut minor = None;
    let mut name = None;
    let mut size = None;
    let mut realsize = None;
    let mut numblocks = None;
    let mut map: Option<&[u8]> = None;
    let mut pairs: Vec<Extent> = Vec::new();
    let mut pending_offset: Option<u64> = None;
    let mut v00 = false;
    let once = |slot: &mut Option<u64>, v: &[u8], key: &str| -> Result<(), String> {
        let n = decimal(v, key)?;
        if slot.replace(n).is_some() {
            return Err(format!("{key} given twice"));
        }
        Ok(())
    };
    for (k, v) in records {
        let Some(key) = k.strip_prefix(PAX_PREFIX) else { continue };
        any = true;
        match key {
            b"major" => once(&mut major, v, "GNU.sparse.major")?,
            b"minor" => once(&mut minor, v, "GNU.sparse.minor")?,
            b"size" => once(&mut size, v, "GNU.sparse.size")?,
            b"realsize" => once(&mut realsize, v, "GNU.sparse.realsize")?,
            b"numblocks" => once(&mut numblocks, v, "GNU.sparse.numblocks")?,
            b"name" => {
                if name.replace(v.clone()).is_some() {
                    return Err("GNU.sparse.name given twice".into());
                }
            }
            b"map" => {
                if map.replace(v.as_slice()).is_some() {
                    return Err("GNU.sparse.map given twice".into());
                }
            }
            b"offset" => {
                v00 = true;
                if pending_offset.is_some() {
                    return Err("GNU.sparse.offset without its GNU.sparse.numbytes".into());
                }
                pending_offset = Some(decimal(v, "GNU.sparse.offset")?);
            }
            b"numbytes" => {
                let offset = pending_offset
                    .take()
                    .ok_or("GNU.sparse.numbytes without a GNU.sparse.offset before it")?;
                let len = decimal(v, "GNU.sparse.numbytes")?;
                check_count(pairs.len() + 1)?;
                pairs.push(Extent { offset, len });
            }
            other => return Err(format!("unknown PAX record GNU.sparse.{}", lossy(other))),
        }
    }
    if !any {
        return Ok(None);
    }
    if pending_offset.is_some() {
        return Err("GNU.sparse.offset without its GNU.sparse.numbytes".into());
    }
    let format = match (major, minor) {
        (Some(1), Some(0)) => PaxFormat::V10,
        (Some(0), Some(1)) => PaxFormat::V01,
        (Some(0), Some(0)) => PaxFormat::V00,
        (None, None) if map.is_some() => PaxFormat::V01,
        (None, None) if v00 => PaxFormat::V00,
        (None, None) => return Err("GNU.sparse records without a sparse map".into()),
        (Some(a), Some(b)) => return Err(format!("GNU sparse format {a}.{b} (supported: 0.0, 0.1, 1.0)")),
        _ => return Err("GNU.sparse.major without GNU.sparse.minor or the reverse".into()),
    };
    let forms = usize::from(v00) + usize::from(map.is_some());
    match format {
        PaxFormat::V10 if forms > 0 => {
            return Err("GNU sparse 1.0 entry with a map in its PAX records".into())
        }
        PaxFormat::V00 | PaxFormat::V01 if forms > 1 => {
            return Err("sparse map given in more than one form".into())
        }
        PaxFormat::V01 if map.is_none() => return Err("GNU sparse 0.1 entry without GNU.sparse.map".into()),
        _ => {}
    }
    let realsize = match (size, realsize) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!("GNU.sparse.size {a} and GNU.sparse.realsize {b} disagree"))
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => return Err("sparse file without a real size (GNU.sparse.size/realsize)".into()),
    };
    let extents = match (format, map) {
        (PaxFormat::V01, Some(m)) => {
            let mut out = Vec::new();
            if !m.is_empty() {
                let mut it = m.split(|b| *b == b',');
                while let Some(off) = it.next() {
                    let len = it.next().ok_or("GNU.sparse.map has an odd number of values")?;
                    check_count(out.len() + 1)?;
                    out.push(Extent {
                        offset: decimal(off, "GNU.sparse.map offset")?,
                        len: decimal(len, "GNU.sparse.map size")?,
                    });
                }
            }
            out
        }
        _ => pairs,
    };
    if format != PaxFormat::V10 {
        if let Some(n) = numblocks {
            if n != extents.len() as u64 {
                return Err(format!("GNU.sparse.numblocks is {n}, the map has {} extents", extents.len()));
            }
        }
    }
    if format == PaxFormat::V10 && name.is_none() {
        return Err("GNU sparse 1.0 entry without GNU.sparse.name".into());
    }
    if name.as_ref().is_some_and(|n| n.is_empty()) {
        return Err("empty GNU.sparse.name".into());
    }
    Ok(Some(PaxSparse { format, name, realsize, extents }))
}

/// Why reading a 1.0 map failed.
#[derive(Debug)]
pub enum MapError {
    /// The stream failed (or ended inside the entry).
    Read(io::Error),
    /// The map is malformed.
    Bad(String),
}

impl MapError {
    /// What class of failure this is (see [`crate::error::ErrorKind`]).
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            MapError::Read(e) => crate::error::ErrorKind::of_io(e),
            MapError::Bad(_) => crate::error::ErrorKind::InvalidArgument,
        }
    }
}

/// Read a 1.0 map from the start of the entry data `r` (`data_size` bytes). Returns the
/// extents and the map's size in bytes (whole 512-byte blocks).
pub fn read_map_v10<R: Read + ?Sized>(r: &mut R, data_size: u64) -> Result<(Vec<Extent>, u64), MapError> {
    let bad = |s: String| MapError::Bad(s);
    let mut block = [0u8; 512];
    let mut used = 0u64;
    let mut numbers: Vec<u64> = Vec::new();
    let mut want: Option<u64> = None;
    let mut cur: Vec<u8> = Vec::with_capacity(20);
    loop {
        if used + 512 > data_size {
            return Err(bad(format!("sparse map is longer than the entry data ({data_size} bytes)")));
        }
        r.read_exact(&mut block).map_err(MapError::Read)?;
        used += 512;
        for &b in &block {
            if b != b'\n' {
                if cur.len() >= 20 || !b.is_ascii_digit() {
                    cur.push(b);
                    return Err(bad(format!("sparse map: {:?} is not a number", lossy(&cur))));
                }
                cur.push(b);
                continue;
            }
            let n = decimal(&cur, "sparse map").map_err(bad)?;
            cur.clear();
            match want {
                None => {
                    if n > MAX_SPARSE_EXTENTS as u64 {
                        return Err(bad(format!(
                            "sparse map of {n} extents (more than {MAX_SPARSE_EXTENTS})"
                        )));
                    }
                    want = Some(2 * n);
                }
                Some(_) => numbers.push(n),
            }
            if want == Some(numbers.len() as u64) {
                // The rest of this block is padding.
                let extents = numbers.chunks_exact(2).map(|p| Extent { offset: p[0], len: p[1] }).collect();
                return Ok((extents, used));
            }
        }
    }
}

/// Why writing the extents failed.
#[derive(Debug)]
pub enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl CopyError {
    /// What class of failure this is (see [`crate::error::ErrorKind`]).
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            CopyError::Read(e) | CopyError::Write(e) => crate::error::ErrorKind::of_io(e),
        }
    }
}

/// Copy the extents' data from `r` (back to back) into `file` at their offsets, then set the
/// file's size to the real size. Holes are never written. Returns the data bytes copied.
pub fn write_extents<R: Read + ?Sized>(
    r: &mut R,
    file: &File,
    map: &Map,
    buf: &mut [u8],
) -> Result<u64, CopyError> {
    let mut total = 0u64;
    for e in &map.extents {
        let mut done = 0u64;
        while done < e.len {
            let want = usize::try_from(e.len - done).unwrap_or(usize::MAX).min(buf.len());
            let n = match r.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(CopyError::Read(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("entry data truncated: {total} of {} data bytes", map.data_bytes()),
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Read(e)),
            };
            file.write_all_at(&buf[..n], e.offset + done).map_err(CopyError::Write)?;
            done += n as u64;
            total += n as u64;
        }
    }
    file.set_len(map.realsize).map_err(CopyError::Write)?;
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Writing (commit): PAX 1.0, as `tar --format=posix --sparse` writes it.

/// The prefix of the GNU sparse PAX records.
pub const PAX_PREFIX: &[u8] = b"GNU.sparse.";
/// `GNU.sparse.name`: the real path of a 0.1 or 1.0 entry.
pub const PAX_NAME: &[u8] = b"GNU.sparse.name";

/// Map blocks and extents are counted in 512-byte tar blocks.
pub const BLOCK: u64 = 512;

/// The PAX records of a GNU sparse 1.0 entry: `GNU.sparse.major=1`, `GNU.sparse.minor=0`,
/// `GNU.sparse.name=<path>`, `GNU.sparse.realsize=<size>` (what [`pax_sparse`] reads as
/// [`PaxFormat::V10`]).
pub fn push_v10_records(out: &mut Vec<u8>, name: &[u8], realsize: u64) {
    pax::push_record(out, b"GNU.sparse.major", b"1");
    pax::push_record(out, b"GNU.sparse.minor", b"0");
    pax::push_record(out, PAX_NAME, name);
    pax::push_record(out, b"GNU.sparse.realsize", realsize.to_string().as_bytes());
}

/// The sparse map block: count, then offset and size of each extent, one number a line,
/// zero-padded to 512 bytes (what [`read_map_v10`] reads). A file ending in a hole gets a last,
/// empty extent at its size.
pub fn map_block(extents: &[Extent], size: u64) -> Vec<u8> {
    let mut all = extents.to_vec();
    if all.last().is_none_or(|e| e.offset + e.len < size) {
        all.push(Extent { offset: size, len: 0 });
    }
    let mut out = format!("{}\n", all.len()).into_bytes();
    for e in &all {
        out.extend_from_slice(format!("{}\n{}\n", e.offset, e.len).as_bytes());
    }
    out.resize(out.len().div_ceil(BLOCK as usize) * BLOCK as usize, 0);
    out
}

/// `dir/GNUSparseFile.0/name` for `dir/name` (`GNUSparseFile.0/name` at the top): the ustar
/// name of a 1.0 entry. GNU tar puts its pid where this puts 0, which would make the output
/// differ from run to run.
pub fn placeholder_name(path: &[u8]) -> Vec<u8> {
    let (dir, name) = match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => (&[][..], path),
    };
    let mut out = dir.to_vec();
    out.extend_from_slice(b"GNUSparseFile.0/");
    out.extend_from_slice(name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn numbers() {
        assert_eq!(gnu_number(b"00000001000\0", "f"), Ok(512));
        assert_eq!(gnu_number(b"  1000 \0\0\0\0\0", "f"), Ok(512));
        let mut b = [0u8; 12];
        b[0] = 0x80;
        b[7] = 2;
        b[8] = 0x80;
        assert_eq!(gnu_number(&b, "f"), Ok(10 << 30));
        b[2] = 1;
        assert!(gnu_number(&b, "f").unwrap_err().contains("out of range"));
        assert!(gnu_number(b"0000000x000\0", "f").unwrap_err().contains("not a number"));
        assert!(gnu_number(b"+0000001000\0", "f").is_err());
        assert!(gnu_number(b"\0\0\0\0\0\0\0\0\0\0\0\0", "f").is_err());
        assert_eq!(decimal(b"9223372036854775807", "d"), Ok(i64::MAX as u64));
        assert!(decimal(b"9223372036854775808", "d").is_err());
        assert!(decimal(b"99999999999999999999", "d").is_err());
        assert!(decimal(b"-1", "d").is_err());
        assert!(decimal(b"", "d").is_err());
        assert!(decimal(b" 1", "d").is_err());
    }

    #[test]
    fn validation() {
        let m = |ext: &[(u64, u64)], realsize| Map {
            extents: ext.iter().map(|&(offset, len)| Extent { offset, len }).collect(),
            realsize,
        };
        assert_eq!(validate(&m(&[(0, 512), (4096, 100)], 4196), 612, true), Ok(()));
        assert_eq!(validate(&m(&[(4096, 512), (8192, 0)], 8192), 512, true), Ok(()));
        assert_eq!(validate(&m(&[], 1 << 40), 0, false), Ok(()));
        assert!(validate(&m(&[], 1 << 40), 0, true).unwrap_err().contains("not at the real size"));
        assert!(validate(&m(&[(4096, 512), (0, 512)], 8192), 1024, false).unwrap_err().contains("overlaps"));
        assert!(validate(&m(&[(0, 1024), (512, 512)], 8192), 1536, false).unwrap_err().contains("overlaps"));
        assert!(validate(&m(&[(0, 512)], 100), 512, false).unwrap_err().contains("past the real size"));
        assert!(validate(&m(&[(0, 100), (512, 512)], 1024), 612, false)
            .unwrap_err()
            .contains("multiple of 512"));
        assert!(validate(&m(&[(0, 512)], 512), 1024, false).unwrap_err().contains("the entry holds 1024"));
        assert!(validate(&m(&[(u64::MAX - 1, 512)], u64::MAX), 512, false).is_err());
    }

    #[test]
    fn pax_versions() {
        let v00 = [
            rec("GNU.sparse.size", "10000"),
            rec("GNU.sparse.numblocks", "2"),
            rec("GNU.sparse.offset", "0"),
            rec("GNU.sparse.numbytes", "512"),
            rec("GNU.sparse.offset", "10000"),
            rec("GNU.sparse.numbytes", "0"),
        ];
        let s = pax_sparse(&v00).unwrap().unwrap();
        assert_eq!(s.format, PaxFormat::V00);
        assert_eq!(s.extents, vec![Extent { offset: 0, len: 512 }, Extent { offset: 10000, len: 0 }]);
        let v01 = [
            rec("GNU.sparse.size", "10000"),
            rec("GNU.sparse.name", "a/b"),
            rec("GNU.sparse.map", "0,512,10000,0"),
        ];
        let s = pax_sparse(&v01).unwrap().unwrap();
        assert_eq!((s.format, s.name.as_deref()), (PaxFormat::V01, Some(&b"a/b"[..])));
        assert_eq!(s.extents.len(), 2);
        let v10 = [
            rec("GNU.sparse.major", "1"),
            rec("GNU.sparse.minor", "0"),
            rec("GNU.sparse.name", "x"),
            rec("GNU.sparse.realsize", "10000"),
        ];
        assert_eq!(pax_sparse(&v10).unwrap().unwrap().format, PaxFormat::V10);
        assert_eq!(pax_sparse(&[rec("path", "x")]), Ok(None));
        let e = |recs: &[(Vec<u8>, Vec<u8>)]| pax_sparse(recs).unwrap_err();
        assert!(e(&v10[1..]).contains("major without"));
        assert!(e(&[rec("GNU.sparse.major", "2"), rec("GNU.sparse.minor", "0")]).contains("format 2.0"));
        assert!(e(&v01[..2]).contains("without a sparse map"));
        assert!(e(&[rec("GNU.sparse.size", "1"), rec("GNU.sparse.map", "0,512,1")]).contains("odd number"));
        assert!(e(&[rec("GNU.sparse.size", "1"), rec("GNU.sparse.map", "0,x")]).contains("not a number"));
        assert!(e(&[rec("GNU.sparse.map", "0,1")]).contains("real size"));
        assert!(e(&[rec("GNU.sparse.size", "1"), rec("GNU.sparse.numbytes", "1")])
            .contains("without a GNU.sparse.offset"));
        assert!(e(&v00[..5]).contains("without its"));
        assert!(e(&[&v00[..], &[rec("GNU.sparse.map", "")]].concat()).contains("more than one form"));
        assert!(e(&[
            rec("GNU.sparse.size", "1"),
            rec("GNU.sparse.realsize", "2"),
            rec("GNU.sparse.map", "")
        ])
        .contains("disagree"));
        assert!(e(&[
            rec("GNU.sparse.size", "1"),
            rec("GNU.sparse.numblocks", "3"),
            rec("GNU.sparse.map", "")
        ])
        .contains("numblocks is 3"));
        assert!(e(&[rec("GNU.sparse.bogus", "1")]).contains("unknown PAX record GNU.sparse.bogus"));
        assert!(e(&v10[..2]).contains("without a real size"));
        assert!(e(&[&v10[..], &[rec("GNU.sparse.map", "")]].concat()).contains("map in its PAX records"));
        assert!(e(&[
            rec("GNU.sparse.major", "0"),
            rec("GNU.sparse.minor", "1"),
            rec("GNU.sparse.size", "1")
        ])
        .contains("without GNU.sparse.map"));
    }

    #[test]
    fn map_v10() {
        let mut data = b"2\n0\n512\n4096\n100\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(&[7u8; 612]);
        let (ext, used) = read_map_v10(&mut &data[..], data.len() as u64).unwrap();
        assert_eq!(used, 512);
        assert_eq!(ext, vec![Extent { offset: 0, len: 512 }, Extent { offset: 4096, len: 100 }]);
        // Longer than the data.
        let mut long = b"100\n".to_vec();
        while long.len() < 1024 {
            long.extend_from_slice(b"4096\n");
        }
        match read_map_v10(&mut &long[..], 512) {
            Err(MapError::Bad(s)) => assert!(s.contains("longer than the entry data"), "{s}"),
            other => panic!("{other:?}"),
        }
        // A huge count is refused before anything is allocated for it.
        let mut huge = b"9223372036854775807\n".to_vec();
        huge.resize(512, 0);
        match read_map_v10(&mut &huge[..], 512) {
            Err(MapError::Bad(s)) => assert!(s.contains("extents"), "{s}"),
            other => panic!("{other:?}"),
        }
        let mut junk = b"1\n0x10\n".to_vec();
        junk.resize(512, 0);
        assert!(
            matches!(read_map_v10(&mut &junk[..], 512), Err(MapError::Bad(s)) if s.contains("not a number"))
        );
    }

    #[test]
    fn written_v10_entries_read_back() {
        let ext = [Extent { offset: 0, len: 512 }, Extent { offset: 8192, len: 100 }];
        let block = map_block(&ext, 1 << 20);
        assert_eq!(block.len(), 512);
        let (got, used) = read_map_v10(&mut &block[..], 512).unwrap();
        assert_eq!(used, 512);
        assert_eq!(got, [&ext[..], &[Extent { offset: 1 << 20, len: 0 }]].concat());
        let mut recs = vec![];
        push_v10_records(&mut recs, b"d/s", 1 << 20);
        let recs = pax::parse(&recs).unwrap();
        let s = pax_sparse(&recs).unwrap().unwrap();
        assert_eq!((s.format, s.name.as_deref(), s.realsize), (PaxFormat::V10, Some(&b"d/s"[..]), 1 << 20));
        let map = Map { extents: got, realsize: s.realsize };
        assert_eq!(validate(&map, 612, false), Ok(()));
    }
}
