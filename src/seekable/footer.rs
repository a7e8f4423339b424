//! The footers that locate a seekable layer's TOC.
//!
//! eStargz ends in an empty gzip member whose header's Extra field carries one subfield `SG`
//! holding `%016xSTARGZ`, the TOC's offset in hex (51 bytes; the legacy stargz form, 47 bytes,
//! has the 22 bytes as the whole Extra field). zstd:chunked ends in a zstd skippable frame of 40
//! bytes: the TOC's offset, compressed and uncompressed lengths and type (little-endian u64s) and
//! the magic `GnUlInUx`.

use std::io::Read;
use std::ops::Range;

use super::{SeekableError, MAX_TOC_BYTES};

/// The eStargz footer's size.
pub const ESTARGZ_FOOTER_SIZE: u64 = 51;
/// The legacy stargz footer's size.
pub const LEGACY_FOOTER_SIZE: u64 = 47;
/// The zstd:chunked footer, skippable frame header included.
pub const ZSTD_FOOTER_SIZE: u64 = 48;

const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
const FEXTRA: u8 = 0x04;
const STARGZ_MAGIC: &[u8] = b"STARGZ";
/// A zstd skippable frame's magic (the first of the 16 allowed), little-endian.
pub const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
const ZSTD_CHUNKED_MAGIC: &[u8; 8] = b"GnUlInUx";

fn footer_err(s: &str) -> SeekableError {
    SeekableError::Footer(s.to_string())
}

/// The 51-byte eStargz footer for a TOC at `toc_offset`.
pub fn estargz_footer(toc_offset: u64) -> [u8; ESTARGZ_FOOTER_SIZE as usize] {
    let mut f = [0u8; ESTARGZ_FOOTER_SIZE as usize];
    // Header: magic, deflate, FEXTRA, mtime 0, no extra flags, OS unknown.
    f[..10].copy_from_slice(&[0x1f, 0x8b, 0x08, FEXTRA, 0, 0, 0, 0, 0, 0xff]);
    f[10..12].copy_from_slice(&26u16.to_le_bytes());
    f[12..14].copy_from_slice(b"SG");
    f[14..16].copy_from_slice(&22u16.to_le_bytes());
    let sub = format!("{toc_offset:016x}STARGZ");
    f[16..38].copy_from_slice(sub.as_bytes());
    // An empty final stored block, then CRC32 and length of nothing (zeros).
    f[38..43].copy_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    f
}

/// The TOC offset an eStargz footer (the blob's last 51 bytes, or 47 of a legacy stargz)
/// holds. The footer must be a gzip member that decompresses to nothing.
pub fn parse_estargz_footer(footer: &[u8]) -> Result<u64, SeekableError> {
    if footer.len() as u64 != ESTARGZ_FOOTER_SIZE && footer.len() as u64 != LEGACY_FOOTER_SIZE {
        return Err(footer_err("wrong length"));
    }
    if footer[..3] != GZIP_MAGIC || footer[3] & FEXTRA == 0 {
        return Err(footer_err("not a gzip member with an Extra field"));
    }
    let mut dec = flate2::read::GzDecoder::new(footer);
    let mut rest = Vec::new();
    (&mut dec).take(1).read_to_end(&mut rest).map_err(|e| footer_err(&format!("not gzip: {e}")))?;
    if !rest.is_empty() {
        return Err(footer_err("the footer member is not empty"));
    }
    let extra = dec.header().and_then(|h| h.extra()).ok_or_else(|| footer_err("no Extra field"))?;
    let field = match extra.len() {
        26 if &extra[..2] == b"SG" && extra[2..4] == 22u16.to_le_bytes() => &extra[4..],
        // Legacy stargz: the 22 bytes are the whole Extra field.
        22 => extra,
        _ => return Err(footer_err("unexpected Extra field")),
    };
    if &field[16..] != STARGZ_MAGIC {
        return Err(footer_err("no STARGZ magic"));
    }
    let hex = std::str::from_utf8(&field[..16]).map_err(|_| footer_err("offset is not hex"))?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(footer_err("offset is not hex"));
    }
    u64::from_str_radix(hex, 16).map_err(|_| footer_err("offset is not hex"))
}

/// The bytes of an eStargz blob of `blob_size` bytes that hold its TOC (a gzip member from the
/// offset its footer gave up to the footer), checked to fit and to be at most
/// [`MAX_TOC_BYTES`].
pub fn estargz_toc_range(blob_size: u64, toc_offset: u64) -> Result<Range<u64>, SeekableError> {
    let end = blob_size
        .checked_sub(ESTARGZ_FOOTER_SIZE)
        .ok_or_else(|| footer_err("blob smaller than its footer"))?;
    if toc_offset >= end {
        return Err(footer_err("TOC offset past the footer"));
    }
    if end - toc_offset > MAX_TOC_BYTES {
        return Err(SeekableError::TooLarge { what: "compressed TOC", limit: MAX_TOC_BYTES });
    }
    Ok(toc_offset..end)
}

/// What a zstd:chunked footer says: where the compressed TOC is, its length and its JSON's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZstdFooter {
    pub offset: u64,
    pub length: u64,
    pub uncompressed: u64,
}

/// The 48-byte zstd:chunked footer frame.
pub fn zstd_chunked_footer(f: ZstdFooter) -> [u8; ZSTD_FOOTER_SIZE as usize] {
    let mut out = [0u8; ZSTD_FOOTER_SIZE as usize];
    out[..4].copy_from_slice(&SKIPPABLE_MAGIC);
    out[4..8].copy_from_slice(&40u32.to_le_bytes());
    out[8..16].copy_from_slice(&f.offset.to_le_bytes());
    out[16..24].copy_from_slice(&f.length.to_le_bytes());
    out[24..32].copy_from_slice(&f.uncompressed.to_le_bytes());
    out[32..40].copy_from_slice(&1u64.to_le_bytes());
    out[40..48].copy_from_slice(ZSTD_CHUNKED_MAGIC);
    out
}

/// A zstd:chunked footer frame (the blob's last 48 bytes), checked against a blob of
/// `blob_size` bytes.
pub fn parse_zstd_chunked_footer(frame: &[u8], blob_size: u64) -> Result<ZstdFooter, SeekableError> {
    let bad = |s: &str| footer_err(&format!("zstd:chunked footer: {s}"));
    if frame.len() as u64 != ZSTD_FOOTER_SIZE {
        return Err(bad("wrong length"));
    }
    if frame[..4] != SKIPPABLE_MAGIC || frame[4..8] != 40u32.to_le_bytes() {
        return Err(bad("not a skippable frame of 40 bytes"));
    }
    if &frame[40..48] != ZSTD_CHUNKED_MAGIC {
        return Err(bad("no GnUlInUx magic"));
    }
    let u = |r: Range<usize>| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&frame[r]);
        u64::from_le_bytes(b)
    };
    let f = ZstdFooter { offset: u(8..16), length: u(16..24), uncompressed: u(24..32) };
    if u(32..40) != 1 {
        return Err(bad("unknown TOC type"));
    }
    if f.length > MAX_TOC_BYTES || f.uncompressed > MAX_TOC_BYTES {
        return Err(SeekableError::TooLarge { what: "TOC", limit: MAX_TOC_BYTES });
    }
    let end = f.offset.checked_add(f.length).ok_or_else(|| bad("TOC range overflows"))?;
    if end > blob_size.saturating_sub(ZSTD_FOOTER_SIZE) {
        return Err(bad("TOC range outside the blob"));
    }
    Ok(f)
}

/// A zstd skippable frame around `payload` (how zstd:chunked stores its TOC: a plain zstd
/// decoder skips it, so the layer stays a valid zstd tar).
pub fn skippable_frame(payload: &[u8]) -> Result<Vec<u8>, SeekableError> {
    let len = u32::try_from(payload.len())
        .map_err(|_| SeekableError::TooLarge { what: "skippable frame", limit: u32::MAX as u64 })?;
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&SKIPPABLE_MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}
