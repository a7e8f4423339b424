//! Encoding one layer tar entry: a ustar header, preceded by a PAX extended header when a name,
//! link, id or size does not fit ustar's fields, or when there are xattrs.

use std::io::{self, Read, Write};

/// One PAX record: `"<len> <key>=<value>\n"` where len counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
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

/// Split a path into ustar (prefix, name) fields, if it fits.
fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    if path.len() > 256 {
        return None;
    }
    // The prefix is at most 155 bytes and the name at most 100; split at a slash.
    let lo = path.len().saturating_sub(101);
    (lo..path.len().min(156)).find(|&i| path[i] == b'/' && i + 1 < path.len()).and_then(|i| {
        let (p, n) = (&path[..i], &path[i + 1..]);
        (p.len() <= 155 && n.len() <= 100 && !p.is_empty()).then_some((p, n))
    })
}

fn set_field(dst: &mut [u8], src: &[u8]) {
    dst.fill(0);
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
}

/// The metadata of one tar entry, before encoding.
pub(super) struct EntryMeta<'a> {
    pub(super) path: &'a [u8],
    pub(super) kind: tar::EntryType,
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: u64,
    pub(super) size: u64,
    pub(super) link: Option<&'a [u8]>,
    pub(super) dev: Option<(u32, u32)>,
    pub(super) xattrs: &'a [(Vec<u8>, Vec<u8>)],
    /// For a sparse file ([`super::sparse`]): `path` is the placeholder name, `size` counts the
    /// map block and the data extents.
    pub(super) sparse: Option<Sparse<'a>>,
}

/// What a GNU sparse 1.0 entry records besides its placeholder name.
#[derive(Clone, Copy)]
pub(super) struct Sparse<'a> {
    /// The file's real path.
    pub(super) name: &'a [u8],
    /// The file's real size.
    pub(super) realsize: u64,
}

pub(super) struct LayerWriter<W: Write> {
    pub(super) builder: tar::Builder<W>,
    pub(super) entries: u64,
    pub(super) epoch: Option<i64>,
}

impl<W: Write> LayerWriter<W> {
    /// The entry mtime for a file's `st_mtime`: clamped to the epoch, never before 1970.
    pub(super) fn mtime(&self, st_mtime: i64) -> u64 {
        let mut t = st_mtime;
        if let Some(e) = self.epoch {
            t = t.min(e);
        }
        t.max(0) as u64
    }

    pub(super) fn append(&mut self, m: &EntryMeta<'_>, data: &mut dyn Read) -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        let mut pax = Vec::new();
        if let Some(sp) = m.sparse {
            pax_record(&mut pax, b"GNU.sparse.major", b"1");
            pax_record(&mut pax, b"GNU.sparse.minor", b"0");
            pax_record(&mut pax, b"GNU.sparse.name", sp.name);
            pax_record(&mut pax, b"GNU.sparse.realsize", sp.realsize.to_string().as_bytes());
        }
        match ustar_split(m.path) {
            Some((prefix, name)) => {
                set_field(&mut h.as_old_mut().name, name);
                if let Some(u) = h.as_ustar_mut() {
                    set_field(&mut u.prefix, prefix);
                }
            }
            // A placeholder name that does not fit is cut, as GNU tar does: readers take the
            // name from GNU.sparse.name.
            None if m.sparse.is_some() => {
                set_field(&mut h.as_old_mut().name, &m.path[..m.path.len().min(100)])
            }
            None => {
                pax_record(&mut pax, b"path", m.path);
                set_field(&mut h.as_old_mut().name, &m.path[..m.path.len().min(100)]);
            }
        }
        if let Some(link) = m.link {
            if link.len() <= 100 {
                set_field(&mut h.as_old_mut().linkname, link);
            } else {
                pax_record(&mut pax, b"linkpath", link);
                set_field(&mut h.as_old_mut().linkname, &link[..100]);
            }
        }
        const USTAR_MAX_ID: u64 = 0o7777777;
        if m.uid > USTAR_MAX_ID {
            pax_record(&mut pax, b"uid", m.uid.to_string().as_bytes());
        }
        if m.gid > USTAR_MAX_ID {
            pax_record(&mut pax, b"gid", m.gid.to_string().as_bytes());
        }
        if m.size > 0o77777777777 {
            pax_record(&mut pax, b"size", m.size.to_string().as_bytes());
        }
        for (k, v) in m.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        if !pax.is_empty() {
            let mut ph = tar::Header::new_ustar();
            let base = m.path.rsplit(|b| *b == b'/').next().unwrap_or(m.path);
            let mut pname = b"PaxHeaders.0/".to_vec();
            pname.extend_from_slice(base);
            set_field(&mut ph.as_old_mut().name, &pname[..pname.len().min(100)]);
            ph.set_entry_type(tar::EntryType::XHeader);
            ph.set_mode(0o644);
            ph.set_uid(0);
            ph.set_gid(0);
            ph.set_mtime(0);
            ph.set_size(pax.len() as u64);
            ph.set_cksum();
            self.builder.append(&ph, pax.as_slice())?;
        }
        h.set_entry_type(m.kind);
        h.set_mode(m.mode);
        h.set_uid(m.uid);
        h.set_gid(m.gid);
        h.set_mtime(m.mtime);
        h.set_size(m.size);
        if let Some((major, minor)) = m.dev {
            h.set_device_major(major)?;
            h.set_device_minor(minor)?;
        }
        h.set_cksum();
        self.builder.append(&h, data)?;
        self.entries += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths() {
        for n in [0usize, 1, 5, 85, 86, 90, 95, 96, 990, 995, 996, 1000] {
            let mut v = vec![];
            pax_record(&mut v, b"path", &vec![b'a'; n]);
            let (len, _) = std::str::from_utf8(&v).unwrap().split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), v.len(), "value of {n} bytes");
        }
    }

    #[test]
    fn ustar_splits() {
        assert_eq!(ustar_split(b"a/b"), Some((&b""[..], &b"a/b"[..])));
        let p = format!("{}/{}", "d".repeat(120), "f".repeat(50));
        let (pre, name) = ustar_split(p.as_bytes()).unwrap();
        assert_eq!((pre.len(), name.len()), (120, 50));
        assert_eq!(ustar_split("x".repeat(150).as_bytes()), None);
        let p = format!("{}/{}", "d".repeat(10), "f".repeat(101));
        assert_eq!(ustar_split(p.as_bytes()), None);
    }
}
