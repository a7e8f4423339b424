//! The build context: the directory COPY and ADD read from, less what `.containerignore` (or,
//! without one, `.dockerignore`) excludes.
//!
//! Ignore files follow docker's rules (moby's patternmatcher): one pattern a line, `#` lines
//! and blank lines skipped, each pattern cleaned (`./`, `//`, a leading `/` dropped); `*` and `?`
//! match within one path segment, `[...]` a class, `**` any number of segments (none included);
//! `!` makes a pattern an exception. A path is excluded when the last pattern that matches it
//! or one of its parent directories is not an exception.
//!
//! COPY/ADD sources are cleaned, must stay inside the context, and may hold `*`, `?`, `[...]`
//! in any segment. [`Context::digest`] hashes what a set of sources holds, content and metadata
//! (type, mode, owner, size, link target, device, xattrs), never times: the cache key of a COPY.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::overlay_format::{list_xattrs, XattrsOf};

/// What went wrong reading the context.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("{}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{0}: no such file or directory in the build context (or excluded by .containerignore/.dockerignore)"
    )]
    NotFound(String),
    #[error("{0}: outside the build context")]
    Outside(String),
}

impl ContextError {
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            ContextError::Io { source, .. } => ErrorKind::of_io(source),
            ContextError::NotFound(_) => ErrorKind::NotFound,
            ContextError::Outside(_) => ErrorKind::InvalidArgument,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Io { path: path.to_path_buf(), source }
}

/// An ignore file's patterns.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    segments: Vec<String>,
    exception: bool,
}

impl Ignore {
    /// Parses an ignore file's text.
    pub fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let segments = clean(pat);
            if segments.is_empty() {
                continue;
            }
            patterns.push(Pattern { segments, exception });
        }
        Ignore { patterns }
    }

    /// Whether `rel` (a path relative to the context, `/`-separated) is excluded.
    pub fn excludes(&self, rel: &str) -> bool {
        let segs: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for p in &self.patterns {
            // The path or one of its parents.
            if (1..=segs.len()).any(|n| match_segments(&p.segments, &segs[..n])) {
                excluded = !p.exception;
            }
        }
        excluded
    }

    fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }
}

/// A path's segments, `.` and empty ones dropped and `..` applied (never above the top).
fn clean(p: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s.to_string()),
        }
    }
    out
}

fn match_segments(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => (0..=path.len()).any(|k| match_segments(rest, &path[k..])),
        Some((first, rest)) => match path.split_first() {
            Some((p, prest)) => glob(first, p) && match_segments(rest, prest),
            None => false,
        },
    }
}

/// Whether one segment matches a glob (`*`, `?`, `[...]`, `[!...]`/`[^...]`, `\` escapes).
pub fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_at(&p, &n)
}

fn glob_at(p: &[char], n: &[char]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match p.get(pi) {
            Some('*') => {
                while p.get(pi) == Some(&'*') {
                    pi += 1;
                }
                star = Some((pi, ni));
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => class(p, pi, n[ni]),
            Some('\\') if pi + 1 < p.len() => (p[pi + 1] == n[ni]).then_some(pi + 2),
            Some(c) => (*c == n[ni]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ni += 1;
            }
            (None, Some((sp, sn))) => {
                pi = sp;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A `[...]` class at `p[at]` against `c`: the index after the class when it matches.
fn class(p: &[char], at: usize, c: char) -> Option<usize> {
    let mut i = at + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if lo == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            lo
        };
        i += 1;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|h| *h != ']') {
            let hi = p[i + 1];
            i += 2;
            matched |= lo <= c && c <= hi;
        } else {
            matched |= lo == c;
        }
    }
    (matched != negate).then_some(i)
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// A build context directory and its ignore patterns.
#[derive(Debug, Clone)]
pub struct Context {
    root: PathBuf,
    ignore: Ignore,
    /// An image's tree: symlinks on a source's way resolve inside it, as in the container.
    in_root: bool,
}

impl Context {
    /// Opens `root`, reading `.containerignore` or else `.dockerignore`.
    pub fn open(root: &Path) -> Result<Context, ContextError> {
        let root = fs::canonicalize(root).map_err(io_err(root))?;
        let mut ignore = Ignore::default();
        for name in [".containerignore", ".dockerignore"] {
            let p = root.join(name);
            match fs::read(&p) {
                Ok(b) => {
                    ignore = Ignore::parse(&String::from_utf8_lossy(&b));
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
        Ok(Context { root, ignore, in_root: false })
    }

    /// A tree that is no build context (an image's mounted view, a download): no ignore file.
    pub fn tree(root: &Path) -> Result<Context, ContextError> {
        let root = fs::canonicalize(root).map_err(io_err(root))?;
        Ok(Context { root, ignore: Ignore::default(), in_root: true })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ignore(&self) -> &Ignore {
        &self.ignore
    }

    /// The context paths (relative, sorted) one COPY/ADD source names; an error when none.
    /// `.` (or an empty path) is the context itself.
    pub fn sources(&self, src: &str) -> Result<Vec<PathBuf>, ContextError> {
        if src.split('/').filter(|s| *s == "..").count() > 0 {
            let mut depth: i64 = 0;
            for s in src.split('/') {
                match s {
                    "" | "." => {}
                    ".." => depth -= 1,
                    _ => depth += 1,
                }
                if depth < 0 {
                    return Err(ContextError::Outside(src.to_string()));
                }
            }
        }
        let mut found = vec![PathBuf::new()];
        for seg in clean(src) {
            let mut next = Vec::new();
            for base in &found {
                let resolved;
                let base = if self.in_root {
                    resolved = self.resolve_in_root(base, src)?;
                    &resolved
                } else {
                    base
                };
                if has_glob(&seg) {
                    let dir = self.root.join(base);
                    let Ok(rd) = fs::read_dir(&dir) else { continue };
                    for e in rd {
                        let e = e.map_err(io_err(&dir))?;
                        let name = e.file_name();
                        if glob(&seg, &name.to_string_lossy()) {
                            next.push(base.join(name));
                        }
                    }
                } else {
                    next.push(base.join(&seg));
                }
            }
            found = next;
        }
        let mut out = Vec::new();
        for rel in found {
            let path = self.root.join(&rel);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory => {
                    continue
                }
                Err(e) => return Err(io_err(&path)(e)),
            };
            // A symlink on the way must not lead out of the context.
            if let Some(parent) = path.parent() {
                let real = fs::canonicalize(parent).map_err(io_err(parent))?;
                if !real.starts_with(&self.root) {
                    return Err(ContextError::Outside(src.to_string()));
                }
            }
            let excluded = !rel.as_os_str().is_empty() && self.ignore.excludes(&rel.to_string_lossy());
            if !excluded || (meta.is_dir() && self.ignore.has_exceptions()) {
                out.push(rel);
            }
        }
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err(ContextError::NotFound(src.to_string()));
        }
        Ok(out)
    }

    /// `rel` with every symlink in it resolved inside the tree, as a process chrooted there
    /// would: an absolute target starts again at the tree's root, `..` stops at it.
    fn resolve_in_root(&self, rel: &Path, src: &str) -> Result<PathBuf, ContextError> {
        use std::path::Component;
        let mut todo: Vec<std::ffi::OsString> = rel
            .components()
            .rev()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        let mut cur = PathBuf::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == ".." {
                cur.pop();
                continue;
            }
            let next = cur.join(&c);
            let path = self.root.join(&next);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > 40 {
                        return Err(ContextError::Outside(src.to_string()));
                    }
                    let target = fs::read_link(&path).map_err(io_err(&path))?;
                    if target.is_absolute() {
                        cur = PathBuf::new();
                    }
                    for t in target.components().rev() {
                        match t {
                            Component::Normal(n) => todo.push(n.to_os_string()),
                            Component::ParentDir => todo.push("..".into()),
                            _ => {}
                        }
                    }
                }
                _ => cur = next,
            }
        }
        Ok(cur)
    }

    /// Every entry under `rel` (itself first, then its tree in name order) that is not
    /// excluded, as paths relative to the context. Symlinks are entries, never followed.
    pub fn walk(&self, rel: &Path) -> Result<Vec<PathBuf>, ContextError> {
        let mut out = Vec::new();
        self.walk_into(rel, &mut out)?;
        Ok(out)
    }

    fn walk_into(&self, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), ContextError> {
        let path = self.root.join(rel);
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let excluded = !rel.as_os_str().is_empty() && self.ignore.excludes(&rel.to_string_lossy());
        if excluded && !(meta.is_dir() && self.ignore.has_exceptions()) {
            return Ok(());
        }
        if !excluded {
            out.push(rel.to_path_buf());
        }
        if meta.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&path)
                .map_err(io_err(&path))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(io_err(&path))?;
            names.sort();
            for n in names {
                self.walk_into(&rel.join(n), out)?;
            }
        }
        Ok(())
    }

    /// The sha256 (hex) of what `sources` hold: each entry's path below its source, type, mode,
    /// owner, size, content, link target, device numbers and xattrs; no times.
    pub fn digest(&self, sources: &[PathBuf]) -> Result<String, ContextError> {
        let mut h = Sha256::new();
        for src in sources {
            h.update(b"source\0");
            h.update(src.as_os_str().as_encoded_bytes());
            h.update(b"\0");
            for rel in self.walk(src)? {
                self.hash_entry(&mut h, &rel)?;
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    fn hash_entry(&self, h: &mut Sha256, rel: &Path) -> Result<(), ContextError> {
        let path = self.root.join(rel);
        let err = io_err(&path);
        let m = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_file() {
            'f'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            's'
        };
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update(
            format!("\0{kind} {:o} {} {} {} {}\0", m.mode() & 0o7777, m.uid(), m.gid(), m.size(), m.rdev())
                .as_bytes(),
        );
        if ft.is_symlink() {
            let t = fs::read_link(&path).map_err(io_err(&path))?;
            h.update(t.as_os_str().as_encoded_bytes());
        } else if ft.is_file() {
            let mut f = fs::File::open(&path).map_err(io_err(&path))?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = f.read(&mut buf).map_err(io_err(&path))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        h.update(b"\0");
        let fd = rustix::fs::open(
            &path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| err(e.into()))?;
        for (name, value) in
            list_xattrs(XattrsOf::OPath(rustix::fd::AsFd::as_fd(&fd))).map_err(io_err(&path))?
        {
            h.update(&name);
            h.update(b"=");
            h.update(&value);
            h.update(b"\0");
        }
        Ok(())
    }
}

/// `rel` has no `..` and is relative (what [`Context::sources`] returns).
pub fn is_inside(rel: &Path) -> bool {
    rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests;
