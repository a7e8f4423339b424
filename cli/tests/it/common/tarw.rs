//! Shared helpers for unpack tests: a hand-rolled tar writer (so malformed and hostile entries
//! can be written, which `tar::Builder` refuses) and the root check.
#![allow(dead_code)]

use tar::{EntryType, Header};

pub const MTIME: u64 = 1_600_000_000;

/// Tests needing root (mknod, chown, trusted xattrs) skip loudly when not root outside CI.
#[allow(unused_imports)]
pub use strata_test_support::privileged as need_root;

/// One tar entry description.
#[derive(Clone)]
pub struct E {
    pub name: Vec<u8>,
    pub kind: u8,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub dev: (u32, u32),
    /// PAX records written in an `x` header before the entry.
    pub pax: Vec<(String, Vec<u8>)>,
}

impl E {
    pub fn new(kind: u8, name: impl AsRef<[u8]>) -> E {
        E {
            name: name.as_ref().to_vec(),
            kind,
            data: vec![],
            link: vec![],
            mode: if kind == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: MTIME,
            dev: (0, 0),
            pax: vec![],
        }
    }
    pub fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> E {
        let mut e = E::new(b'0', name);
        e.data = data.as_ref().to_vec();
        e
    }
    pub fn dir(name: impl AsRef<[u8]>) -> E {
        E::new(b'5', name)
    }
    pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
        let mut e = E::new(b'2', name);
        e.link = target.as_ref().to_vec();
        e.mode = 0o777;
        e
    }
    pub fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
        let mut e = E::new(b'1', name);
        e.link = target.as_ref().to_vec();
        e
    }
    pub fn dev(kind: u8, name: impl AsRef<[u8]>, major: u32, minor: u32) -> E {
        let mut e = E::new(kind, name);
        e.dev = (major, minor);
        e
    }
    pub fn mode(mut self, m: u32) -> E {
        self.mode = m;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> E {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, t: u64) -> E {
        self.mtime = t;
        self
    }
    pub fn pax(mut self, k: &str, v: impl AsRef<[u8]>) -> E {
        self.pax.push((k.to_string(), v.as_ref().to_vec()));
        self
    }
}

/// A tar stream under construction.
#[derive(Default, Clone)]
pub struct T {
    pub buf: Vec<u8>,
}

fn pad(buf: &mut Vec<u8>) {
    let rem = buf.len() % 512;
    if rem != 0 {
        buf.resize(buf.len() + 512 - rem, 0);
    }
}

/// A PAX record `"<len> key=value\n"`.
pub fn pax_record(k: &str, v: &[u8]) -> Vec<u8> {
    let body = k.len() + v.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {k}=").into_bytes();
    r.extend_from_slice(v);
    r.push(b'\n');
    r
}

/// A raw GNU header. Names longer than 100 bytes are truncated (use PAX or GNU long names).
pub fn header(name: &[u8], kind: u8, size: u64, link: &[u8], e: Option<&E>) -> Header {
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        let n = name.len().min(100);
        old.name[..n].copy_from_slice(&name[..n]);
        let l = link.len().min(100);
        old.linkname[..l].copy_from_slice(&link[..l]);
    }
    h.set_entry_type(EntryType::new(kind));
    h.set_size(size);
    if let Some(e) = e {
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        if e.kind == b'3' || e.kind == b'4' {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
    } else {
        h.set_mode(0o644);
        h.set_mtime(MTIME);
    }
    h.set_cksum();
    h
}

impl T {
    pub fn new() -> T {
        T::default()
    }
    pub fn raw(&mut self, bytes: &[u8]) -> &mut T {
        self.buf.extend_from_slice(bytes);
        self
    }
    /// An `x` header carrying `records`.
    pub fn pax_header(&mut self, records: &[(String, Vec<u8>)]) -> &mut T {
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend_from_slice(&pax_record(k, v));
        }
        let h = header(b"././@PaxHeader", b'x', data.len() as u64, b"", None);
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(&data);
        pad(&mut self.buf);
        self
    }
    /// A GNU `L` (long name) or `K` (long link) header.
    pub fn gnu_long(&mut self, kind: u8, name: &[u8]) -> &mut T {
        let mut data = name.to_vec();
        data.push(0);
        let h = header(b"././@LongLink", kind, data.len() as u64, b"", None);
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(&data);
        pad(&mut self.buf);
        self
    }
    pub fn add(&mut self, e: E) -> &mut T {
        if !e.pax.is_empty() {
            self.pax_header(&e.pax);
        }
        let h = header(&e.name, e.kind, e.data.len() as u64, &e.link, Some(&e));
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(&e.data);
        pad(&mut self.buf);
        self
    }
    pub fn finish(&self) -> Vec<u8> {
        let mut b = self.buf.clone();
        b.extend_from_slice(&[0u8; 1024]);
        b
    }
}

/// A tar from entries.
pub fn tar(entries: impl IntoIterator<Item = E>) -> Vec<u8> {
    let mut t = T::new();
    for e in entries {
        t.add(e);
    }
    t.finish()
}

// ---- GNU sparse entries ----

/// A 12-byte numeric field as GNU tar writes it: octal, or base-256 from 8 GiB on.
pub fn num12(v: u64) -> [u8; 12] {
    let mut f = [0u8; 12];
    if v < 1 << 33 {
        let s = format!("{v:011o}");
        f[..11].copy_from_slice(s.as_bytes());
    } else {
        f[0] = 0x80;
        f[4..].copy_from_slice(&v.to_be_bytes());
    }
    f
}

/// One (offset, numbytes) slot of an old GNU sparse map.
pub fn slot(offset: u64, len: u64) -> [u8; 24] {
    let mut s = [0u8; 24];
    s[..12].copy_from_slice(&num12(offset));
    s[12..].copy_from_slice(&num12(len));
    s
}

/// Recompute the checksum of a 512-byte header block.
pub fn fix_cksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(s.as_bytes());
}

/// The header and extension blocks of an old GNU sparse (`S`) entry: the first 4 slots in the
/// header, 21 per extension block, `isextended` set where more follow. `size` is the header's
/// size field (the data bytes). Patch bytes and call [`fix_cksum`] (header only) for hostile
/// variants.
pub fn gnu_sparse_headers(name: &[u8], slots: &[[u8; 24]], realsize: u64, size: u64) -> Vec<u8> {
    let mut h = header(name, b'S', size, b"", None);
    h.set_uid(0);
    h.set_gid(0);
    let b = h.as_mut_bytes();
    for (i, s) in slots.iter().take(4).enumerate() {
        b[386 + 24 * i..386 + 24 * (i + 1)].copy_from_slice(s);
    }
    b[482] = u8::from(slots.len() > 4);
    b[483..495].copy_from_slice(&num12(realsize));
    fix_cksum(b);
    let mut out = b.to_vec();
    let rest: Vec<_> = slots.iter().skip(4).collect();
    let chunks: Vec<_> = rest.chunks(21).collect();
    for (k, chunk) in chunks.iter().enumerate() {
        let mut ext = [0u8; 512];
        for (i, s) in chunk.iter().enumerate() {
            ext[24 * i..24 * (i + 1)].copy_from_slice(*s);
        }
        ext[504] = u8::from(k + 1 < chunks.len());
        out.extend_from_slice(&ext);
    }
    out
}

/// Deterministic bytes for extent `i` (different per extent, never all zero).
pub fn extent_bytes(i: usize, len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x as u8) | 1
        })
        .collect()
}

/// The extents' data back to back, as the archive holds it.
pub fn extents_data(extents: &[(u64, u64)]) -> Vec<u8> {
    extents.iter().enumerate().flat_map(|(i, &(_, len))| extent_bytes(i, len as usize)).collect()
}

/// The expected content of a sparse file (small real sizes only).
pub fn sparse_content(extents: &[(u64, u64)], realsize: u64) -> Vec<u8> {
    let mut out = vec![0u8; realsize as usize];
    for (i, &(off, len)) in extents.iter().enumerate() {
        out[off as usize..(off + len) as usize].copy_from_slice(&extent_bytes(i, len as usize));
    }
    out
}

impl T {
    /// A well-formed old GNU sparse entry holding `extents` (data from [`extent_bytes`]).
    pub fn gnu_sparse(&mut self, name: &[u8], extents: &[(u64, u64)], realsize: u64) -> &mut T {
        let slots: Vec<_> = extents.iter().map(|&(o, l)| slot(o, l)).collect();
        let data = extents_data(extents);
        self.raw(&gnu_sparse_headers(name, &slots, realsize, data.len() as u64));
        self.raw(&data);
        pad(&mut self.buf);
        self
    }
}

/// The data of a PAX 1.0 sparse entry: the map (count, then offset and size per line, padded to
/// 512 bytes), then the extents' data.
pub fn sparse_v10_data(extents: &[(u64, u64)]) -> Vec<u8> {
    let mut map = format!("{}\n", extents.len());
    for (o, l) in extents {
        map.push_str(&format!("{o}\n{l}\n"));
    }
    let mut out = map.into_bytes();
    pad(&mut out);
    out.extend_from_slice(&extents_data(extents));
    out
}

/// A PAX sparse entry in format `version` ("0.0", "0.1", "1.0") as GNU tar writes it: for 0.1
/// and 1.0 the ustar name is a `GNUSparseFile.0/...` placeholder and the real name is in
/// `GNU.sparse.name`.
pub fn pax_sparse(version: &str, name: &str, extents: &[(u64, u64)], realsize: u64) -> E {
    let base = name.rsplit('/').next().unwrap_or(name);
    let placeholder = format!("GNUSparseFile.0/{base}");
    let mut e = match version {
        "0.0" => {
            let mut e = E::file(name, extents_data(extents))
                .pax("GNU.sparse.size", realsize.to_string())
                .pax("GNU.sparse.numblocks", extents.len().to_string());
            for (o, l) in extents {
                e = e.pax("GNU.sparse.offset", o.to_string()).pax("GNU.sparse.numbytes", l.to_string());
            }
            e
        }
        "0.1" => {
            let map: Vec<String> = extents.iter().flat_map(|(o, l)| [o.to_string(), l.to_string()]).collect();
            E::file(&placeholder, extents_data(extents))
                .pax("GNU.sparse.size", realsize.to_string())
                .pax("GNU.sparse.numblocks", extents.len().to_string())
                .pax("GNU.sparse.name", name)
                .pax("GNU.sparse.map", map.join(","))
        }
        "1.0" => E::file(&placeholder, sparse_v10_data(extents))
            .pax("GNU.sparse.major", "1")
            .pax("GNU.sparse.minor", "0")
            .pax("GNU.sparse.name", name)
            .pax("GNU.sparse.realsize", realsize.to_string()),
        v => panic!("sparse version {v}"),
    };
    e.mode = 0o644;
    e
}
