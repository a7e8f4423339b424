//! PAX extended header records, `"<len> <key>=<value>\n"` where `len` counts the whole record
//! (its own digits included): the keys strata reads and writes, and both directions of the
//! encoding.
//!
//! Records are parsed by their length, never split at newlines: values are bytes (a
//! `security.capability` xattr holds any byte, a newline included). The tar crate's own PAX
//! iterator splits at newlines, so unpack re-parses the extension headers it read before each
//! entry ([`records_before`]).

use rustix::fs::Timespec;

use super::ustar;

/// One PAX record: (key, value).
pub type PaxRecord = (Vec<u8>, Vec<u8>);

/// `path`: the entry's name when it does not fit ustar's name/prefix fields.
pub const PATH: &[u8] = b"path";
/// `linkpath`: the link target when it does not fit ustar's 100 bytes.
pub const LINKPATH: &[u8] = b"linkpath";
/// `uid` and `gid`: ids beyond [`ustar::MAX_ID`].
pub const UID: &[u8] = b"uid";
pub const GID: &[u8] = b"gid";
/// `size`: entry sizes beyond [`ustar::MAX_SIZE`].
pub const SIZE: &[u8] = b"size";
/// `mtime`: seconds since 1970, with an optional fraction (read; commit writes whole seconds in
/// the ustar field).
pub const MTIME: &[u8] = b"mtime";
/// `SCHILY.xattr.NAME`: one xattr (as GNU tar and Go's `archive/tar` write them).
pub const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// The xattr name a record key carries, if it is an xattr record.
pub fn xattr_name(key: &[u8]) -> Option<&[u8]> {
    key.strip_prefix(XATTR_PREFIX)
}

/// The PAX records of the entry whose header starts at the end of `region` (the bytes read while
/// the tar crate parsed the headers before it). The tar crate's own PAX iterator splits records at
/// newlines, which breaks binary values (e.g. `security.capability` xattrs): records are
/// length-prefixed, so parse them by length.
///
/// The extension headers form a chain of 512-byte-aligned blocks ending at the entry header; the
/// region may start with the previous entry's padding. The earliest offset from which a valid
/// chain of extension headers reaches the end is taken.
pub fn records_before(region: &[u8]) -> Result<Vec<PaxRecord>, String> {
    let blocks = region.len() / 512;
    for k in (1..=blocks).rev() {
        let start = region.len() - 512 * k;
        if let Some(data) = ext_chain(region, start) {
            return data.map_or(Ok(Vec::new()), parse);
        }
    }
    Ok(Vec::new())
}

/// Walk extension headers from `start`; Some(local PAX data, if any) when the chain ends exactly
/// at the end of `region`.
fn ext_chain(region: &[u8], start: usize) -> Option<Option<&[u8]>> {
    let mut p = start;
    let mut pax = None;
    while p < region.len() {
        let block = region.get(p..p + 512)?;
        let h = ustar::checked_header(block)?;
        let kind = block[ustar::TYPEFLAG];
        if !ustar::is_extension(kind) {
            return None;
        }
        let size = usize::try_from(h.entry_size().ok()?).ok()?;
        let data = region.get(p + 512..p + 512 + size)?;
        if kind == b'x' {
            pax = Some(data);
        }
        p = p.checked_add(512 + size.div_ceil(512) * 512)?;
    }
    (p == region.len()).then_some(pax)
}

/// Parse the data of one PAX extended header into its records, in order.
pub fn parse(mut data: &[u8]) -> Result<Vec<PaxRecord>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let sp = data.iter().position(|b| *b == b' ').ok_or("record without a length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("record length is not a number")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(format!("record length {len} does not fit the record"));
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec.iter().position(|b| *b == b'=').ok_or("record without '='")?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// A PAX time value (`mtime`): decimal seconds, optionally negative, with an optional fraction
/// (digits past nanoseconds are dropped). `None` when malformed.
pub fn parse_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    let mut nsec: i64 = 0;
    let mut digits = 0;
    for c in frac.bytes() {
        if !c.is_ascii_digit() {
            return None;
        }
        if digits < 9 {
            nsec = nsec * 10 + i64::from(c - b'0');
            digits += 1;
        }
    }
    while digits < 9 {
        nsec *= 10;
        digits += 1;
    }
    if neg {
        // -1.25 means 1.25 s before the epoch: (-2 s, 0.75e9 ns).
        if nsec == 0 {
            Some(Timespec { tv_sec: -secs, tv_nsec: 0 })
        } else {
            Some(Timespec { tv_sec: -secs - 1, tv_nsec: (1_000_000_000 - nsec) as _ })
        }
    } else {
        Some(Timespec { tv_sec: secs, tv_nsec: nsec as _ })
    }
}

/// The PAX `mtime` value of (`secs`, `nsec`) (a `timespec`: seconds rounded down, `nsec` in
/// `0..1e9`): what [`parse_time`] reads back as the same pair. `-1.25` is (-2 s, 0.75e9 ns).
pub fn format_time(secs: i64, nsec: u32) -> String {
    let nsec = nsec.min(999_999_999);
    let frac = |n: u32| format!("{n:09}").trim_end_matches('0').to_string();
    match (secs < 0, nsec) {
        (false, 0) => secs.to_string(),
        (false, n) => format!("{secs}.{}", frac(n)),
        (true, 0) => secs.to_string(),
        // -(|secs| - 1) - (1e9 - n) / 1e9
        (true, n) => format!("-{}.{}", secs.unsigned_abs() - 1, frac(1_000_000_000 - n)),
    }
}

/// Append one record to `out`: `"<len> <key>=<value>\n"` where len counts the whole record.
pub fn push_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Append an `SCHILY.xattr.NAME` record.
pub fn push_xattr(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let mut key = XATTR_PREFIX.to_vec();
    key.extend_from_slice(name);
    push_record(out, &key, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &[u8], v: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_record(&mut out, k, v);
        out
    }

    #[test]
    fn pax_record_lengths() {
        for n in [0usize, 1, 5, 85, 86, 90, 95, 96, 990, 995, 996, 1000] {
            let mut v = vec![];
            push_record(&mut v, b"path", &vec![b'a'; n]);
            let (len, _) = std::str::from_utf8(&v).unwrap().split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), v.len(), "value of {n} bytes");
        }
    }

    #[test]
    fn parse_good_records_round_trip() {
        // A binary value with a newline and '=' in it, an empty value, a long one.
        let cap = b"\x01\x00\x00\x02\n=\xff";
        let long = vec![b'x'; 1000];
        let data = [
            rec(PATH, b"a/b"),
            rec(b"SCHILY.xattr.security.capability", cap),
            rec(b"k", b""),
            rec(LINKPATH, &long),
        ]
        .concat();
        let got = parse(&data).unwrap();
        assert_eq!(
            got,
            vec![
                (PATH.to_vec(), b"a/b".to_vec()),
                (b"SCHILY.xattr.security.capability".to_vec(), cap.to_vec()),
                (b"k".to_vec(), vec![]),
                (LINKPATH.to_vec(), long),
            ]
        );
        assert_eq!(xattr_name(&got[1].0), Some(&b"security.capability"[..]));
        assert_eq!(xattr_name(&got[0].0), None);
        assert_eq!(parse(b""), Ok(vec![]));
        let mut x = vec![];
        push_xattr(&mut x, b"user.a", b"v");
        assert_eq!(x, b"25 SCHILY.xattr.user.a=v\n");
    }

    #[test]
    fn parse_truncated() {
        let data = rec(PATH, b"some/long/name");
        for cut in 1..data.len() {
            let e = parse(&data[..cut]).unwrap_err();
            assert!(e.contains("does not fit") || e.contains("without a length"), "cut {cut}: {e}");
        }
        // A record whose last byte is not a newline.
        assert!(parse(b"9 path=ab").unwrap_err().contains("does not fit"));
        assert!(parse(b"9 pathab\n").unwrap_err().contains("without '='"));
    }

    #[test]
    fn parse_bad_length_fields() {
        // Longer than the data, far beyond any size, zero, not a number, too short for itself.
        assert!(parse(b"99 path=a\n").unwrap_err().contains("does not fit"));
        assert!(parse(b"99999999999999999999999 path=a\n").unwrap_err().contains("not a number"));
        assert!(parse(b"0 path=a\n").unwrap_err().contains("does not fit"));
        assert!(parse(b"2 \n").unwrap_err().contains("does not fit"));
        assert!(parse(b"x9 path=a\n").unwrap_err().contains("not a number"));
        assert!(parse(b"-9 path=a\n").unwrap_err().contains("not a number"));
        assert!(parse(b"\xff9 path=a\n").unwrap_err().contains("not a number"));
    }

    #[test]
    fn parse_non_utf8_key() {
        // Keys are bytes: a non-UTF-8 key is kept as it is (and matches no known key).
        let data = rec(b"SCHILY.xattr.user.\xff\xfe", b"v");
        let got = parse(&data).unwrap();
        assert_eq!(got, vec![(b"SCHILY.xattr.user.\xff\xfe".to_vec(), b"v".to_vec())]);
        assert_eq!(xattr_name(&got[0].0), Some(&b"user.\xff\xfe"[..]));
    }

    #[test]
    fn times() {
        let t = |s: &[u8]| parse_time(s).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(t(b"1.5"), Some((1, 500_000_000)));
        assert_eq!(t(b"1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(t(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(t(b"-3"), Some((-3, 0)));
        assert_eq!(t(b"1.x"), None);
        assert_eq!(t(b""), None);
        assert_eq!(t(b"\xff"), None);
        for (secs, nsec) in [
            (0, 0),
            (1_700_000_000, 0),
            (1, 500_000_000),
            (-3, 0),
            (-2, 750_000_000),
            (-1, 1),
            (5, 999_999_999),
        ] {
            assert_eq!(t(format_time(secs, nsec).as_bytes()), Some((secs, nsec as _)), "{secs} {nsec}");
        }
        assert_eq!(format_time(-2, 750_000_000), "-1.25");
        assert_eq!(format_time(1, 500_000_000), "1.5");
    }

    fn block(kind: u8, size: usize) -> Vec<u8> {
        let mut h = ::tar::Header::new_ustar();
        h.set_path("PaxHeaders.0/x").unwrap();
        h.set_entry_type(::tar::EntryType::new(kind));
        h.set_size(size as u64);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    #[test]
    fn records_before_an_entry() {
        let data = rec(PATH, b"x\ny");
        let mut region = vec![0u8; 512]; // the previous entry's padding
        region.extend(block(b'x', data.len()));
        region.extend(&data);
        region.resize(region.len().div_ceil(512) * 512, 0);
        assert_eq!(records_before(&region), Ok(vec![(PATH.to_vec(), b"x\ny".to_vec())]));
        // No extension header: no records.
        assert_eq!(records_before(&[0u8; 1024]), Ok(vec![]));
        // A chain that does not reach the entry header: no records.
        let mut short = block(b'x', 2000);
        short.extend(&data);
        assert_eq!(records_before(&short), Ok(vec![]));
    }
}
