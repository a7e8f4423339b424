//! A layer tar with some files moved to its front: the files a command read (`image optimize`),
//! as Go's `estargz.Build` moves its prioritized files, so that the writer can put
//! `.prefetch.landmark` right after them ([`super::write::Landmark::PrefetchAfter`]).
//!
//! The tar is read twice from a seekable file: [`plan`] indexes its entries (where each starts,
//! its extension headers included, and where its padded data ends; its name, type and link
//! target) and chooses the order; [`Reordered`] then copies each entry's bytes, unchanged, in
//! that order, followed by the end-of-archive blocks. What a moved entry needs comes with it,
//! first: its parent directories (those the tar holds) and, for a hard link, its target; so the
//! tar still unpacks to the same tree (every entry after its parents, every hard link after its
//! target). All the entries of one name move together and keep their order, so the last one
//! still wins. An earlier conversion's TOC and landmark entries are left out (the writer writes
//! new ones).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Seek, SeekFrom};

use super::{SeekableError, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_NAME};

/// One entry of the input tar.
struct Entry {
    /// Its bytes: from its first header (extension headers included) to its padded data's end.
    start: u64,
    end: u64,
    /// The clean name (see [`super::toc::clean_name`]; the raw one when it is not clean).
    name: String,
    /// A hard link's target, clean.
    link: Option<String>,
}

/// The new order of a tar's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Each entry's bytes in the input, in the new order.
    ranges: Vec<(u64, u64)>,
    /// How many entries come before the rest (the files asked for and what they need): where
    /// `.prefetch.landmark` goes.
    pub front: usize,
    /// The names asked for that the tar does not hold.
    pub missing: Vec<String>,
}

fn clean(raw: &str) -> String {
    super::toc::clean_name(raw).unwrap_or_else(|_| raw.to_string())
}

/// Index `tar` (a plain layer tar) and move the entries named in `first` (layer paths, in the
/// order wanted) to its front, each after what it needs (see the [module](self) docs).
pub fn plan<R: Read + Seek>(tar: &mut R, first: &[String]) -> Result<Plan, SeekableError> {
    let decode = |e: io::Error| SeekableError::Decompress { what: "layer tar", source: e };
    tar.seek(SeekFrom::Start(0)).map_err(decode)?;
    let mut entries = Vec::new();
    let mut ar = tar::Archive::new(&mut *tar);
    let mut prev_end = 0u64;
    for e in ar.entries_with_seek().map_err(decode)? {
        let e = e.map_err(decode)?;
        let size = e.size();
        let end = e.raw_file_position() + size + (512 - size % 512) % 512;
        let name = clean(&String::from_utf8_lossy(&e.path_bytes()));
        let link = (e.header().entry_type() == tar::EntryType::Link)
            .then(|| e.link_name_bytes().map(|l| clean(&String::from_utf8_lossy(&l))))
            .flatten();
        let start = std::mem::replace(&mut prev_end, end);
        if [TOC_NAME, PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK].contains(&name.as_str()) {
            continue;
        }
        entries.push(Entry { start, end, name, link });
    }
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        by_name.entry(e.name.as_str()).or_default().push(i);
    }
    let mut mover =
        Mover { entries: &entries, by_name, moved: vec![false; entries.len()], order: Vec::new() };
    let mut missing = Vec::new();
    for name in first {
        let name = clean(name);
        if !mover.by_name.contains_key(name.as_str()) {
            missing.push(name);
            continue;
        }
        mover.pull(&name, &mut HashSet::new());
    }
    let front = mover.order.len();
    let Mover { order, moved, .. } = mover;
    let rest = (0..entries.len()).filter(|&i| !moved[i]);
    let ranges = order.into_iter().chain(rest).map(|i| (entries[i].start, entries[i].end)).collect();
    Ok(Plan { ranges, front, missing })
}

/// Moves entries to the front, what they need first.
struct Mover<'a> {
    entries: &'a [Entry],
    by_name: HashMap<&'a str, Vec<usize>>,
    moved: Vec<bool>,
    order: Vec<usize>,
}

impl Mover<'_> {
    /// Move the entries named `name` (after its parents and, for hard links, their targets);
    /// `visiting` stops a loop of hard links.
    fn pull(&mut self, name: &str, visiting: &mut HashSet<String>) {
        if !visiting.insert(name.to_string()) {
            return;
        }
        if !name.is_empty() {
            self.pull(name.rsplit_once('/').map_or("", |(parent, _)| parent), visiting);
        }
        let ids = self.by_name.get(name).cloned().unwrap_or_default();
        for i in ids {
            if self.moved[i] {
                continue;
            }
            if let Some(target) = &self.entries[i].link {
                self.pull(target, visiting);
            }
            // A hard link's target may have moved it already (a link to itself).
            if !self.moved[i] {
                self.moved[i] = true;
                self.order.push(i);
            }
        }
    }
}

/// The input tar's entries in a [`Plan`]'s order, then the end-of-archive blocks: a plain
/// layer tar to hand to the seekable writer.
pub struct Reordered<R> {
    inner: R,
    ranges: VecDeque<(u64, u64)>,
    /// Where the range being copied is, and how much of it is left.
    at: u64,
    left: u64,
    /// End-of-archive bytes still to give.
    tail: usize,
}

impl<R: Read + Seek> Reordered<R> {
    pub fn new(inner: R, plan: &Plan) -> Reordered<R> {
        Reordered { inner, ranges: plan.ranges.iter().copied().collect(), at: 0, left: 0, tail: 1024 }
    }
}

impl<R: Read + Seek> Read for Reordered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            match self.ranges.pop_front() {
                Some((start, end)) => {
                    self.inner.seek(SeekFrom::Start(start))?;
                    self.at = start;
                    self.left = end - start;
                }
                None => {
                    let n = self.tail.min(buf.len());
                    buf[..n].fill(0);
                    self.tail -= n;
                    return Ok(n);
                }
            }
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("layer tar cut short at {}", self.at),
            ));
        }
        self.at += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of `(name, kind, data or link target)`: `d` a directory, `f` a file, `h` a hard
    /// link; a long name gets a GNU long-name header of its own.
    fn tar_of(entries: &[(&str, char, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, arg) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            match kind {
                'd' => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, name, &[][..]).expect("dir");
                }
                'h' => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, name, arg).expect("link");
                }
                _ => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(arg.len() as u64);
                    b.append_data(&mut h, name, arg.as_bytes()).expect("file");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    /// The entries of `tar` as (name, content or link target), in order.
    fn listing(tar: &[u8]) -> Vec<(String, String)> {
        let mut ar = tar::Archive::new(tar);
        ar.entries()
            .expect("entries")
            .map(|e| {
                let mut e = e.expect("entry");
                let name = e.path().expect("path").to_string_lossy().into_owned();
                let link = e.link_name().expect("link").map(|l| l.to_string_lossy().into_owned());
                let mut data = String::new();
                e.read_to_string(&mut data).expect("data");
                (name, link.unwrap_or(data))
            })
            .collect()
    }

    fn reorder(tar: &[u8], first: &[&str]) -> (Plan, Vec<u8>) {
        let first: Vec<String> = first.iter().map(|s| s.to_string()).collect();
        let plan = plan(&mut io::Cursor::new(tar), &first).expect("plan");
        let mut out = Vec::new();
        Reordered::new(io::Cursor::new(tar), &plan).read_to_end(&mut out).expect("read");
        (plan, out)
    }

    /// The files asked for come first in the order asked, each after its parent directories and
    /// a hard link after its target; the rest keep their order; every entry's bytes are the
    /// input's (a long name's extension header included), and the tar ends with its two zero
    /// blocks.
    #[test]
    fn moved_files_come_first_with_what_they_need() {
        let long = format!("opt/{}/deep", "x".repeat(150));
        let input = tar_of(&[
            ("./", 'd', ""),
            ("bin/", 'd', ""),
            ("bin/sh", 'f', "shell"),
            ("etc/", 'd', ""),
            ("etc/motd", 'f', "motd"),
            ("etc/hostname", 'f', "host"),
            ("etc/issue", 'f', "issue"),
            ("opt/", 'd', ""),
            (&long, 'f', "long"),
            ("usr/", 'd', ""),
            ("usr/cat", 'h', "bin/sh"),
            ("var/", 'd', ""),
        ]);
        let (plan, out) = reorder(&input, &["etc/issue", "./usr/cat", &long, "nope/x", "etc/motd"]);
        let names: Vec<String> = listing(&out).into_iter().map(|(n, _)| n).collect();
        let want =
            ["./", "etc/", "etc/issue", "usr/", "bin/", "bin/sh", "usr/cat", "opt/", &long, "etc/motd"];
        assert_eq!(names[..want.len()], want.map(String::from));
        assert_eq!(plan.front, want.len());
        assert_eq!(plan.missing, vec!["nope/x".to_string()]);
        // The rest, in the input's order.
        assert_eq!(names[want.len()..], ["etc/hostname", "var/"].map(String::from));
        let mut a = listing(&input);
        let mut b = listing(&out);
        a.sort();
        b.sort();
        assert_eq!(a, b, "the same entries with the same contents");
        assert_eq!(out.len() % 512, 0);
        assert!(out[out.len() - 1024..].iter().all(|&b| b == 0));
    }

    /// Nothing asked for: the input's order; an earlier conversion's TOC and landmark entries
    /// are left out; a name given twice (and a name the tar holds twice) moves once, all its
    /// entries in their order.
    #[test]
    fn order_kept_landmarks_dropped_duplicates_together() {
        let input = tar_of(&[
            (NO_PREFETCH_LANDMARK, 'f', "\x0f"),
            ("a", 'f', "1"),
            ("b", 'f', "first b"),
            ("c", 'f', "c"),
            ("b", 'f', "second b"),
            (TOC_NAME, 'f', "{}"),
        ]);
        let (plan, out) = reorder(&input, &[]);
        assert_eq!(plan.front, 0);
        let names: Vec<String> = listing(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b", "c", "b"]);
        let (plan, out) = reorder(&input, &["b", "b"]);
        assert_eq!(plan.front, 2);
        assert_eq!(
            listing(&out),
            [("b", "first b"), ("b", "second b"), ("a", "1"), ("c", "c")]
                .map(|(n, d)| (n.to_string(), d.to_string()))
        );
    }
}
