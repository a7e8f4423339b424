//! Shared helpers for unpack tests: a hand-rolled tar writer (so malformed and hostile entries
//! can be written, which `tar::Builder` refuses) and a root check.
#![allow(dead_code)]

use tar::{EntryType, Header};

pub const MTIME: u64 = 1_600_000_000;

/// Tests needing root (mknod, chown, trusted xattrs) skip loudly when not root outside CI.
pub fn need_root(what: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok() {
        panic!("{what}: needs root, and CI is set");
    }
    eprintln!("SKIPPED (not root): {what}");
    false
}

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
