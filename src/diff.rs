//! `strata container diff`: what a container changed, read from its upper directory alone (plus
//! lookups in the lower layers), printed like `docker diff`: `A /x`, `C /x`, `D /x`.
//!
//! Rules (upper dir in kernel overlayfs format; lowers are layer directories, top first):
//! - A whiteout (char device 0:0) whose path is visible in the lowers → `D`. A whiteout hiding
//!   nothing (stale) is not reported.
//! - Any other upper entry → `A` when the path is not visible in the lowers, else `C`.
//!   A directory that exists in the lowers and whose mode, owner and mtime are unchanged (a plain
//!   copy-up) is not reported for itself.
//! - An opaque directory (`trusted.overlay.opaque=y` or `user.overlay.opaque=y`) that replaces a
//!   lower directory → `C /dir`, plus `D /dir/name` for each lower child the upper does not have
//!   (what the container no longer sees). Upper children follow the rules above, but with
//!   visibility judged inside the opaque dir: a child the lower dir also had is `C`. (Docker's
//!   overlay2 driver reports an opaque dir as `D /dir` followed by `A` children, which reads as if
//!   the directory were gone; containerd's `fs.Changes` on the merged views gives what we give,
//!   without comparing contents.)
//! - The parents of every reported entry are reported as `C` (if not already reported).
//! - Sorted by path, bytewise.
//!
//! "Visible in the lowers" honours the lowers' own whiteouts and opaque dirs, as the kernel does.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Diff errors.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

pub type Result<T, E = DiffError> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> DiffError + '_ {
    move |source| DiffError::Io { path: path.to_path_buf(), source }
}

/// The kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum ChangeKind {
    Added,
    Changed,
    Deleted,
}

impl ChangeKind {
    /// `A`, `C` or `D`, as `docker diff` prints.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    /// Absolute path inside the container (`/etc/foo`). Non-UTF-8 bytes are shown lossily.
    pub path: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.letter(), self.path)
    }
}

fn is_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        let mut v = [0u8; 4];
        if let Ok(n) = rustix::fs::lgetxattr(path, name, &mut v) {
            if n == 1 && v[0] == b'y' {
                return true;
            }
        }
    }
    false
}

fn lstat(p: &Path) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(p) {
        Ok(md) => Ok(Some(md)),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(io_at(p)(e)),
    }
}

/// The lower layers, top first, looked up as the kernel merges them.
struct Lowers<'a> {
    layers: &'a [PathBuf],
}

impl Lowers<'_> {
    /// The metadata of `rel` as the merged lowers show it, or None when not visible.
    fn lookup(&self, rel: &Path) -> Result<Option<fs::Metadata>> {
        let comps: Vec<_> = rel.components().collect();
        'layers: for layer in self.layers {
            // Walk the ancestors in this layer: a whiteout or non-directory hides everything below;
            // an opaque directory hides the layers underneath it.
            let mut cur = layer.clone();
            let mut stop_after = false;
            for (i, c) in comps.iter().enumerate() {
                cur.push(c);
                let Some(md) = lstat(&cur)? else {
                    if stop_after {
                        return Ok(None);
                    }
                    continue 'layers;
                };
                if is_whiteout(&md) {
                    return Ok(None);
                }
                if i + 1 == comps.len() {
                    return Ok(Some(md));
                }
                if !md.is_dir() {
                    return Ok(None);
                }
                if is_opaque(&cur) {
                    stop_after = true;
                }
            }
            if stop_after {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Names visible in the merged lower directory `rel`.
    fn children(&self, rel: &Path) -> Result<Vec<std::ffi::OsString>> {
        let mut seen: BTreeMap<std::ffi::OsString, bool> = BTreeMap::new(); // name -> visible
        for layer in self.layers {
            let dir = layer.join(rel);
            let Some(md) = lstat(&dir)? else { continue };
            if !md.is_dir() {
                break;
            }
            for e in fs::read_dir(&dir).map_err(io_at(&dir))? {
                let e = e.map_err(io_at(&dir))?;
                let md = e.metadata().map_err(io_at(&e.path()))?;
                seen.entry(e.file_name()).or_insert(!is_whiteout(&md));
            }
            if is_opaque(&dir) {
                break;
            }
        }
        Ok(seen.into_iter().filter(|(_, v)| *v).map(|(k, _)| k).collect())
    }
}

fn display(rel: &Path) -> String {
    format!("/{}", String::from_utf8_lossy(rel.as_os_str().as_bytes()))
}

/// The changes the upper directory `upper` makes over `lowers` (layer directories, top first).
pub fn diff_upper(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>> {
    let lowers = Lowers { layers: lowers };
    let mut out: BTreeMap<Vec<u8>, (ChangeKind, PathBuf)> = BTreeMap::new();
    let mut record = |rel: &Path, kind: ChangeKind| {
        out.insert(rel.as_os_str().as_bytes().to_vec(), (kind, rel.to_path_buf()));
    };
    // (relative path, lowers hidden by an opaque ancestor in the upper)
    let mut stack: Vec<(PathBuf, bool)> = vec![(PathBuf::new(), false)];
    while let Some((dir_rel, hidden)) = stack.pop() {
        let dir = upper.join(&dir_rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(io_at(&dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(io_at(&dir))?;
        names.sort();
        for name in names {
            let rel = dir_rel.join(&name);
            let abs = upper.join(&rel);
            let Some(md) = lstat(&abs)? else { continue };
            let lower = if hidden { None } else { lowers.lookup(&rel)? };
            if is_whiteout(&md) {
                if lower.is_some() {
                    record(&rel, ChangeKind::Deleted);
                }
                continue;
            }
            if md.is_dir() {
                let opaque = is_opaque(&abs);
                match &lower {
                    None => record(&rel, ChangeKind::Added),
                    Some(l) if opaque && l.is_dir() => {
                        record(&rel, ChangeKind::Changed);
                        // Lower children the container no longer sees.
                        for child in lowers.children(&rel)? {
                            if lstat(&abs.join(&child))?.is_none() {
                                record(&rel.join(&child), ChangeKind::Deleted);
                            }
                        }
                    }
                    Some(l) => {
                        let same = l.is_dir()
                            && l.mode() == md.mode()
                            && l.uid() == md.uid()
                            && l.gid() == md.gid()
                            && l.mtime() == md.mtime()
                            && l.mtime_nsec() == md.mtime_nsec();
                        if !same {
                            record(&rel, ChangeKind::Changed);
                        }
                    }
                }
                // Below an added dir (or one replacing a lower non-directory) only the upper
                // counts. Below an opaque dir lookups still see the lower dir, so a replaced child
                // is reported as `C`, not `A`.
                let child_hidden = hidden || lower.as_ref().is_none_or(|l| !l.is_dir());
                stack.push((rel, child_hidden));
                continue;
            }
            record(&rel, if lower.is_some() { ChangeKind::Changed } else { ChangeKind::Added });
        }
    }
    // Parents of every change are changed too.
    let paths: Vec<PathBuf> = out.values().map(|(_, p)| p.clone()).collect();
    for p in paths {
        let mut a = p.parent();
        while let Some(d) = a {
            if d.as_os_str().is_empty() {
                break;
            }
            out.entry(d.as_os_str().as_bytes().to_vec()).or_insert((ChangeKind::Changed, d.to_path_buf()));
            a = d.parent();
        }
    }
    let mut v: Vec<Change> = out.into_values().map(|(kind, p)| Change { kind, path: display(&p) }).collect();
    v.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::tests::{mknod, need_root, set_mtime, setx};
    use rustix::fs::FileType as T;

    fn copy_times(from: &Path, to: &Path) {
        let md = fs::symlink_metadata(from).unwrap();
        set_mtime(to, md.mtime(), md.mtime_nsec());
    }

    #[test]
    fn docker_style_changes() {
        if !need_root("docker_style_changes (mknod, trusted xattrs)") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (l1, l2, up) = (t.path().join("l1"), t.path().join("l2"), t.path().join("upper"));
        for d in [&l1, &l2, &up] {
            fs::create_dir(d).unwrap();
        }
        // Bottom layer.
        for d in ["etc", "opt", "var/log", "home/user"] {
            fs::create_dir_all(l1.join(d)).unwrap();
        }
        for f in ["etc/passwd", "etc/shadow", "opt/a", "opt/b", "var/log/x"] {
            fs::write(l1.join(f), b"x").unwrap();
        }
        // Top layer: deletes /home, hides /var/log's old contents.
        mknod(&l2.join("home"), T::CharacterDevice, 0, 0);
        fs::create_dir_all(l2.join("var/log")).unwrap();
        setx(&l2.join("var/log"), "trusted.overlay.opaque", b"y");
        fs::write(l2.join("var/log/y"), b"y").unwrap();
        // Upper.
        fs::create_dir(up.join("etc")).unwrap();
        copy_times(&l1.join("etc"), &up.join("etc")); // a plain copy-up
        fs::write(up.join("etc/passwd"), b"changed").unwrap();
        mknod(&up.join("etc/shadow"), T::CharacterDevice, 0, 0);
        fs::write(up.join("etc/new"), b"n").unwrap();
        fs::create_dir(up.join("opt")).unwrap();
        setx(&up.join("opt"), "trusted.overlay.opaque", b"y");
        fs::write(up.join("opt/a"), b"again").unwrap();
        fs::create_dir_all(up.join("tmp/d")).unwrap();
        fs::write(up.join("tmp/d/f"), b"f").unwrap();
        mknod(&up.join("stale"), T::CharacterDevice, 0, 0);
        fs::create_dir(up.join("home")).unwrap();
        fs::create_dir_all(up.join("var/log")).unwrap();
        copy_times(&l2.join("var/log"), &up.join("var/log"));
        copy_times(&l1.join("var"), &up.join("var"));
        mknod(&up.join("var/log/x"), T::CharacterDevice, 0, 0); // hidden by l2's opaque dir: stale
        mknod(&up.join("var/log/y"), T::CharacterDevice, 0, 0);

        let got: Vec<String> =
            diff_upper(&up, &[l2.clone(), l1.clone()]).unwrap().iter().map(|c| c.to_string()).collect();
        assert_eq!(
            got,
            [
                "C /etc",
                "A /etc/new",
                "C /etc/passwd",
                "D /etc/shadow",
                "A /home",
                "C /opt",
                "C /opt/a",
                "D /opt/b",
                "A /tmp",
                "A /tmp/d",
                "A /tmp/d/f",
                "C /var",
                "C /var/log",
                "D /var/log/y",
            ]
        );
        // With no lowers everything is new and whiteouts hide nothing.
        let got: Vec<String> = diff_upper(&up, &[]).unwrap().iter().map(|c| c.to_string()).collect();
        assert!(got.iter().all(|c| c.starts_with("A ")), "{got:?}");
        assert!(!got.iter().any(|c| c.contains("shadow") || c.contains("stale")), "{got:?}");
    }

    #[test]
    fn missing_upper_is_an_error() {
        let e = diff_upper(Path::new("/nonexistent/upper"), &[]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/upper"), "{e}");
    }
}
