//! Encoding one layer tar entry: a ustar header, preceded by a PAX extended header when a name,
//! link, id or size does not fit ustar's fields ([`super::ustar`]), when there are xattrs, or
//! for a GNU sparse 1.0 file ([`super::sparse`]). Commit's writer.

use std::io::{self, Read, Write};

use super::{pax, sparse, ustar};

/// The metadata of one tar entry, before encoding.
pub(crate) struct EntryMeta<'a> {
    pub(crate) path: &'a [u8],
    pub(crate) kind: tar::EntryType,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: u64,
    /// The exact time (seconds, nanoseconds), when `mtime` does not hold it: written as a PAX
    /// `mtime` record if it has a fraction or falls outside ustar's field (before 1970).
    pub(crate) exact_mtime: Option<(i64, u32)>,
    pub(crate) size: u64,
    pub(crate) link: Option<&'a [u8]>,
    pub(crate) dev: Option<(u32, u32)>,
    /// Written as they are: the caller keeps only what [`super::keeps_xattr`] allows.
    pub(crate) xattrs: &'a [(Vec<u8>, Vec<u8>)],
    /// For a sparse file (`commit/sparse.rs`): `path` is the placeholder name, `size` counts the
    /// map block and the data extents.
    pub(crate) sparse: Option<Sparse<'a>>,
}

/// What a GNU sparse 1.0 entry records besides its placeholder name.
#[derive(Clone, Copy)]
pub(crate) struct Sparse<'a> {
    /// The file's real path.
    pub(crate) name: &'a [u8],
    /// The file's real size.
    pub(crate) realsize: u64,
}

pub(crate) struct LayerWriter<W: Write> {
    pub(crate) builder: tar::Builder<W>,
    pub(crate) entries: u64,
    pub(crate) epoch: Option<i64>,
}

impl<W: Write> LayerWriter<W> {
    /// The entry mtime for a file's `st_mtime`: clamped to the epoch, never before 1970.
    pub(crate) fn mtime(&self, st_mtime: i64) -> u64 {
        let mut t = st_mtime;
        if let Some(e) = self.epoch {
            t = t.min(e);
        }
        t.max(0) as u64
    }

    pub(crate) fn append(&mut self, m: &EntryMeta<'_>, data: &mut dyn Read) -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        let mut pax = Vec::new();
        if let Some(sp) = m.sparse {
            sparse::push_v10_records(&mut pax, sp.name, sp.realsize);
        }
        match ustar::split_name(m.path) {
            Some((prefix, name)) => {
                ustar::set_field(&mut h.as_old_mut().name, name);
                if let Some(u) = h.as_ustar_mut() {
                    ustar::set_field(&mut u.prefix, prefix);
                }
            }
            // A placeholder name that does not fit is cut, as GNU tar does: readers take the
            // name from GNU.sparse.name.
            None if m.sparse.is_some() => {
                ustar::set_field(&mut h.as_old_mut().name, &m.path[..m.path.len().min(ustar::NAME_LEN)])
            }
            None => {
                pax::push_record(&mut pax, pax::PATH, m.path);
                ustar::set_field(&mut h.as_old_mut().name, &m.path[..m.path.len().min(ustar::NAME_LEN)]);
            }
        }
        if let Some(link) = m.link {
            if link.len() <= ustar::NAME_LEN {
                ustar::set_field(&mut h.as_old_mut().linkname, link);
            } else {
                pax::push_record(&mut pax, pax::LINKPATH, link);
                ustar::set_field(&mut h.as_old_mut().linkname, &link[..ustar::NAME_LEN]);
            }
        }
        if m.uid > ustar::MAX_ID {
            pax::push_record(&mut pax, pax::UID, m.uid.to_string().as_bytes());
        }
        if m.gid > ustar::MAX_ID {
            pax::push_record(&mut pax, pax::GID, m.gid.to_string().as_bytes());
        }
        if m.size > ustar::MAX_SIZE {
            pax::push_record(&mut pax, pax::SIZE, m.size.to_string().as_bytes());
        }
        if let Some((secs, nsec)) = m.exact_mtime {
            // The ustar mtime field is as wide as the size field.
            if nsec != 0 || secs < 0 || secs > ustar::MAX_SIZE as i64 {
                pax::push_record(&mut pax, pax::MTIME, pax::format_time(secs, nsec).as_bytes());
            }
        }
        for (k, v) in m.xattrs {
            pax::push_xattr(&mut pax, k, v);
        }
        if !pax.is_empty() {
            let mut ph = tar::Header::new_ustar();
            let base = m.path.rsplit(|b| *b == b'/').next().unwrap_or(m.path);
            let mut pname = b"PaxHeaders.0/".to_vec();
            pname.extend_from_slice(base);
            ustar::set_field(&mut ph.as_old_mut().name, &pname[..pname.len().min(ustar::NAME_LEN)]);
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
