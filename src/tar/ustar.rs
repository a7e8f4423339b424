//! ustar header fields: the checksum, the type flag, the name/prefix split and the largest values
//! the octal fields hold. Beyond them commit writes a PAX record ([`super::pax`]); unpack reads
//! headers through the tar crate and checks raw header blocks itself only where it re-reads the
//! extension headers (PAX records, old GNU sparse maps).

/// Offset of the type flag in a header block.
pub const TYPEFLAG: usize = 156;
/// The largest uid or gid ustar's 8-byte octal fields hold; larger ids go in PAX `uid`/`gid`.
pub const MAX_ID: u64 = 0o7777777;
/// The largest size ustar's 12-byte octal field holds; larger sizes go in PAX `size`.
pub const MAX_SIZE: u64 = 0o77777777777;
/// The name field: 100 bytes (also the link name field).
pub const NAME_LEN: usize = 100;
/// The prefix field: 155 bytes.
pub const PREFIX_LEN: usize = 155;

/// True for the type flag of an extension header: PAX local (`x`) or global (`g`), GNU long name
/// (`L`) or long link (`K`).
pub fn is_extension(kind: u8) -> bool {
    matches!(kind, b'x' | b'g' | b'L' | b'K')
}

/// The header in the 512-byte `block`, if its checksum is right.
pub fn checked_header(block: &[u8]) -> Option<tar::Header> {
    let block: &[u8; 512] = block.try_into().ok()?;
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(block);
    let sum: u32 = block[..148].iter().chain(&block[156..]).map(|b| u32::from(*b)).sum::<u32>() + 8 * 32;
    if h.cksum().ok()? != sum {
        return None;
    }
    Some(h)
}

/// Split a path into ustar (prefix, name) fields, if it fits.
pub fn split_name(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= NAME_LEN {
        return Some((&[], path));
    }
    if path.len() > PREFIX_LEN + 1 + NAME_LEN {
        return None;
    }
    // The prefix is at most 155 bytes and the name at most 100; split at a slash.
    let lo = path.len().saturating_sub(NAME_LEN + 1);
    (lo..path.len().min(PREFIX_LEN + 1)).find(|&i| path[i] == b'/' && i + 1 < path.len()).and_then(|i| {
        let (p, n) = (&path[..i], &path[i + 1..]);
        (p.len() <= PREFIX_LEN && n.len() <= NAME_LEN && !p.is_empty()).then_some((p, n))
    })
}

/// Fill a header field with `src`, cut to the field and NUL-padded.
pub fn set_field(dst: &mut [u8], src: &[u8]) {
    dst.fill(0);
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ustar_splits() {
        assert_eq!(split_name(b"a/b"), Some((&b""[..], &b"a/b"[..])));
        let p = format!("{}/{}", "d".repeat(120), "f".repeat(50));
        let (pre, name) = split_name(p.as_bytes()).unwrap();
        assert_eq!((pre.len(), name.len()), (120, 50));
        assert_eq!(split_name("x".repeat(150).as_bytes()), None);
        let p = format!("{}/{}", "d".repeat(10), "f".repeat(101));
        assert_eq!(split_name(p.as_bytes()), None);
    }

    #[test]
    fn checksums() {
        let mut h = tar::Header::new_ustar();
        h.set_path("a").unwrap();
        h.set_cksum();
        let mut b = h.as_bytes().to_vec();
        assert!(checked_header(&b).is_some());
        b[0] = b'b';
        assert!(checked_header(&b).is_none());
        assert!(checked_header(&[0u8; 512]).is_none());
        assert!(checked_header(&b[..511]).is_none());
    }
}
