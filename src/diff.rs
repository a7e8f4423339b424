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
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Stat};
use rustix::io::Errno;

use crate::fdwalk::{self, join_rel, DirChain, WalkError};
use crate::overlay_format::{is_opaque, is_whiteout};

/// Diff errors.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("{path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: moved or replaced while the diff read it")]
    Moved { path: PathBuf },
    /// [`container_diff`]: the container (not found, its layers).
    #[error(transparent)]
    Container(Box<crate::container::ContainerError>),
    /// [`container_diff`]: reading its trees.
    #[error("container {name:?}: diff")]
    InContainer { name: String, source: Box<DiffError> },
}

impl DiffError {
    /// What class of failure this is (see [`crate::error::ErrorKind`]).
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            DiffError::Io { source, .. } => crate::error::ErrorKind::of_io(source),
            DiffError::Moved { .. } => crate::error::ErrorKind::FailedPrecondition,
            DiffError::Container(e) => e.kind(),
            DiffError::InContainer { source, .. } => source.kind(),
        }
    }
}

impl From<WalkError> for DiffError {
    fn from(e: WalkError) -> Self {
        match e {
            WalkError::Io { path, source } => DiffError::Io { path, source },
            WalkError::Moved { path } => DiffError::Moved { path },
        }
    }
}

pub type Result<T, E = DiffError> = std::result::Result<T, E>;

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

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// One merged lower directory, as the kernel merges it: the layers' directories at that path that
/// contribute to it, top first, ending at the first opaque one (or where a layer has a whiteout or
/// a non-directory there). Empty where the lowers show nothing. Each is an open descriptor, so
/// lookups name one component (any depth, any path length).
struct LowerDir {
    /// (layer directory, its path for messages)
    dirs: Vec<(OwnedFd, PathBuf)>,
}

fn lower_err(path: &Path, name: &[u8], e: impl Into<io::Error>) -> DiffError {
    DiffError::Io { path: path.join(OsStr::from_bytes(name)), source: e.into() }
}

impl LowerDir {
    /// The merged root of `layers` (top first); a missing layer directory contributes nothing.
    fn roots(layers: &[PathBuf]) -> Result<LowerDir> {
        let mut dirs = Vec::new();
        for l in layers {
            match fdwalk::open_dir(rustix::fs::CWD, l.as_os_str().as_bytes()) {
                Ok(fd) => {
                    let opaque =
                        is_opaque(fd.as_fd()).map_err(|e| DiffError::Io { path: l.clone(), source: e })?;
                    dirs.push((fd, l.clone()));
                    if opaque {
                        break;
                    }
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Err(DiffError::Io { path: l.clone(), source: e.into() }),
            }
        }
        Ok(LowerDir { dirs })
    }

    fn empty() -> LowerDir {
        LowerDir { dirs: Vec::new() }
    }

    /// `name` as the merged lowers show it: the topmost entry and the index of its layer
    /// directory, or None when not visible (missing everywhere, or whited out).
    fn lookup(&self, name: &[u8]) -> Result<Option<(usize, Stat)>> {
        for (i, (fd, path)) in self.dirs.iter().enumerate() {
            match fdwalk::stat_at(fd.as_fd(), name) {
                Ok(None) => continue,
                Ok(Some(st)) if is_whiteout(&st) => return Ok(None),
                Ok(Some(st)) => return Ok(Some((i, st))),
                Err(e) => return Err(lower_err(path, name, e)),
            }
        }
        Ok(None)
    }

    /// The merged lower directory `name`, found (as a directory) in layer directory `top`.
    fn child(&self, top: usize, name: &[u8]) -> Result<LowerDir> {
        let mut dirs = Vec::new();
        for (fd, path) in self.dirs.iter().skip(top) {
            let st = match fdwalk::stat_at(fd.as_fd(), name) {
                Ok(None) => continue,
                Ok(Some(st)) => st,
                Err(e) => return Err(lower_err(path, name, e)),
            };
            if !is_dir(&st) {
                // A whiteout or a non-directory hides the layers below.
                break;
            }
            let dir = fdwalk::open_dir(fd.as_fd(), name).map_err(|e| lower_err(path, name, e))?;
            let opaque = is_opaque(dir.as_fd()).map_err(|e| lower_err(path, name, e))?;
            dirs.push((dir, path.join(OsStr::from_bytes(name))));
            if opaque {
                break;
            }
        }
        Ok(LowerDir { dirs })
    }

    /// Names visible in this merged directory, sorted.
    fn names(&self) -> Result<Vec<Vec<u8>>> {
        let mut seen: BTreeMap<Vec<u8>, bool> = BTreeMap::new(); // name -> visible
        for (fd, path) in &self.dirs {
            let io = |e: Errno| DiffError::Io { path: path.clone(), source: e.into() };
            for name in fdwalk::names(fd.as_fd()).map_err(io)? {
                if seen.contains_key(&name) {
                    continue;
                }
                let Some(st) = fdwalk::stat_at(fd.as_fd(), &name).map_err(|e| lower_err(path, &name, e))?
                else {
                    continue;
                };
                seen.insert(name, !is_whiteout(&st));
            }
        }
        Ok(seen.into_iter().filter(|(_, v)| *v).map(|(k, _)| k).collect())
    }
}

/// Container `name`'s changes against its image (`container diff`): its upper dir over its
/// layers; a read-only view has none.
pub fn container_diff(store: &crate::store::Store, name: &str) -> Result<Vec<Change>> {
    use crate::container;
    let cerr = |e| DiffError::Container(Box::new(e));
    let c = container::get(store, name).map_err(cerr)?;
    if c.read_only {
        return Ok(Vec::new());
    }
    let spec = container::overlay_spec(store, &c).map_err(cerr)?;
    diff_upper(&container::paths(store, &c).upper, &spec.lowers)
        .map_err(|e| DiffError::InContainer { name: name.to_string(), source: Box::new(e) })
}

fn display(rel: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(rel))
}

/// The changes the upper directory `upper` makes over `lowers` (layer directories, top first).
///
/// The upper dir is walked by directory descriptors ([`DirChain`]), each level carrying its
/// merged lower directory, so paths of any length work and each lookup costs one `fstatat` per
/// contributing layer.
pub fn diff_upper(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>> {
    let (mut chain, _) = DirChain::open(upper, LowerDir::roots(lowers)?)?;
    let mut out: BTreeMap<Vec<u8>, ChangeKind> = BTreeMap::new();
    // (depth of its directory, name, lstat), popped in name order.
    let mut stack: Vec<(usize, Vec<u8>, Stat)> = Vec::new();
    let push_children = |chain: &DirChain<LowerDir>, stack: &mut Vec<(usize, Vec<u8>, Stat)>| -> Result<()> {
        let mut children = chain.list(true)?;
        children.sort_by(|a, b| b.0.cmp(&a.0));
        stack.extend(children.into_iter().map(|(n, st)| (chain.depth(), n, st)));
        Ok(())
    };
    push_children(&chain, &mut stack)?;
    while let Some((depth, name, st)) = stack.pop() {
        chain.ascend_to(depth)?;
        let rel = join_rel(chain.rel(), &name);
        let lower = chain.data().lookup(&name)?;
        if is_whiteout(&st) {
            if lower.is_some() {
                out.insert(rel, ChangeKind::Deleted);
            }
            continue;
        }
        if !is_dir(&st) {
            out.insert(rel, if lower.is_some() { ChangeKind::Changed } else { ChangeKind::Added });
            continue;
        }
        // Below an added dir (or one replacing a lower non-directory) only the upper counts.
        // Below an opaque dir lookups still see the lower dir, so a replaced child is reported
        // as `C`, not `A`.
        let child_lower = match &lower {
            Some((top, l)) if is_dir(l) => chain.data().child(*top, &name)?,
            _ => LowerDir::empty(),
        };
        chain.descend(&name, &st, child_lower)?;
        let opaque =
            is_opaque(chain.fd()).map_err(|e| DiffError::Io { path: chain.path_of(&rel), source: e })?;
        match &lower {
            None => {
                out.insert(rel.clone(), ChangeKind::Added);
            }
            Some((_, l)) if opaque && is_dir(l) => {
                out.insert(rel.clone(), ChangeKind::Changed);
                // Lower children the container no longer sees.
                for child in chain.data().names()? {
                    let here = fdwalk::stat_at(chain.fd(), &child).map_err(|e| chain.err_in(&child, e))?;
                    if here.is_none() {
                        out.insert(join_rel(&rel, &child), ChangeKind::Deleted);
                    }
                }
            }
            Some((_, l)) => {
                let same = is_dir(l)
                    && l.st_mode == st.st_mode
                    && l.st_uid == st.st_uid
                    && l.st_gid == st.st_gid
                    && l.st_mtime == st.st_mtime
                    && l.st_mtime_nsec == st.st_mtime_nsec;
                if !same {
                    out.insert(rel.clone(), ChangeKind::Changed);
                }
            }
        }
        push_children(&chain, &mut stack)?;
    }
    // Parents of every change are changed too.
    let paths: Vec<Vec<u8>> = out.keys().cloned().collect();
    for p in paths {
        let mut end = p.len();
        while let Some(i) = p[..end].iter().rposition(|b| *b == b'/') {
            out.entry(p[..i].to_vec()).or_insert(ChangeKind::Changed);
            end = i;
        }
    }
    let mut v: Vec<Change> = out.into_iter().map(|(p, kind)| Change { kind, path: display(&p) }).collect();
    v.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::tests::{mknod, need_root, set_mtime, setx};
    use rustix::fs::FileType as T;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

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

    /// What an opaque upper dir hides is judged as the kernel merges the lowers: a lower layer's
    /// entry under a directory an upper layer made opaque was never visible, so it is not deleted.
    #[test]
    fn opaque_upper_dir_deletes_only_visible_lower_children() {
        if !need_root("opaque_upper_dir_deletes_only_visible_lower_children (trusted xattrs)") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (l1, l2, up) = (t.path().join("l1"), t.path().join("l2"), t.path().join("upper"));
        fs::create_dir_all(l1.join("p/d")).unwrap();
        fs::write(l1.join("p/d/hidden"), b"h").unwrap();
        fs::create_dir_all(l2.join("p/d")).unwrap();
        setx(&l2.join("p"), "trusted.overlay.opaque", b"y");
        fs::write(l2.join("p/d/seen"), b"s").unwrap();
        fs::create_dir_all(up.join("p/d")).unwrap();
        copy_times(&l2.join("p"), &up.join("p"));
        setx(&up.join("p/d"), "trusted.overlay.opaque", b"y");
        let got: Vec<String> = diff_upper(&up, &[l2, l1]).unwrap().iter().map(|c| c.to_string()).collect();
        assert_eq!(got, ["C /p", "C /p/d", "D /p/d/seen"]);
    }

    #[test]
    fn missing_upper_is_an_error() {
        let e = diff_upper(Path::new("/nonexistent/upper"), &[]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/upper"), "{e}");
    }
}
