//! Image sources: where an image's files come from.
//!
//! All three formats are trees of named files: an OCI layout directory, an oci-archive tar (the same
//! tree inside a tar) and a docker-archive tar. [`Files`] gives uniform read access to either a
//! directory or a tar, whose members are indexed once by offset so each blob is read straight from the
//! archive without extraction.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::{printable, ImageError};

/// Where an image's layer blobs come from, once its metadata is resolved (see
/// [`super::resolve`]): a local layout or archive ([`Files`]), or a registry. Import streams each
/// blob it opens straight through verification and unpacking.
pub trait ImageSource: Send + Sync {
    /// What this is, for messages.
    fn describe(&self) -> String;
    /// Open a layer's blob for streaming; returns the reader and the blob's size.
    fn open_blob(&self, layer: &super::LayerRef) -> Result<(Box<dyn Read + Send>, u64), ImageError>;
}

impl ImageSource for Files {
    fn describe(&self) -> String {
        Files::describe(self)
    }

    fn open_blob(&self, layer: &super::LayerRef) -> Result<(Box<dyn Read + Send>, u64), ImageError> {
        self.open(&layer.file)
    }
}

/// Read access to the files of an image source.
pub enum Files {
    /// A directory on disk.
    Dir(PathBuf),
    /// A tar archive, its regular members indexed: normalised path -> (data offset, size).
    Tar { path: PathBuf, members: HashMap<String, (u64, u64)> },
}

/// Normalise an archive member or relative path: strip `./` and leading `/`; reject `..`.
fn normalise(name: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

impl Files {
    /// Index the regular members of the tar at `path`.
    pub fn tar(path: &Path) -> Result<Files, ImageError> {
        // The tar crate's messages may quote header bytes: printable, and short.
        let bad = |e: io::Error| ImageError::Archive {
            path: path.to_path_buf(),
            reason: printable(&e.to_string(), 200),
        };
        let f = File::open(path).map_err(|e| ImageError::Open { path: path.to_path_buf(), source: e })?;
        let mut ar = tar::Archive::new(f);
        let mut members = HashMap::new();
        for entry in ar.entries_with_seek().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            let et = entry.header().entry_type();
            if !(et.is_file() || et == tar::EntryType::Continuous) {
                continue;
            }
            let name = entry.path().map_err(bad)?;
            let Some(name) = name.to_str().and_then(normalise) else { continue };
            members.insert(name, (entry.raw_file_position(), entry.size()));
        }
        Ok(Files::Tar { path: path.to_path_buf(), members })
    }

    /// What this is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Files::Dir(p) => p.display().to_string(),
            Files::Tar { path, .. } => path.display().to_string(),
        }
    }

    /// Whether a file exists.
    pub fn exists(&self, name: &str) -> bool {
        let Some(n) = normalise(name) else { return false };
        match self {
            Files::Dir(d) => open_beneath(d, &n).and_then(|f| f.metadata()).is_ok_and(|m| m.is_file()),
            Files::Tar { members, .. } => members.contains_key(&n),
        }
    }

    /// Open a file for streaming; returns its size.
    pub fn open(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64), ImageError> {
        let n = normalise(name).ok_or_else(|| ImageError::Invalid {
            what: self.describe(),
            reason: format!("bad file name {name:?}"),
        })?;
        match self {
            Files::Dir(d) => {
                let p = d.join(&n);
                let missing = |e: io::Error| {
                    if e.kind() == io::ErrorKind::NotFound {
                        ImageError::MissingFile { source_name: self.describe(), file: printable(&n, 200) }
                    } else {
                        ImageError::Open { path: p.clone(), source: e }
                    }
                };
                // Never follow a symlink planted in the layout (a file or a directory on the way),
                // never block on a FIFO.
                let f = open_beneath(d, &n).map_err(|e| {
                    if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::EXDEV) {
                        ImageError::Invalid {
                            what: printable(&p.display().to_string(), 300),
                            reason: "reached through a symbolic link inside the image source; refused".into(),
                        }
                    } else {
                        missing(e)
                    }
                })?;
                let md = f.metadata().map_err(missing)?;
                if !md.is_file() {
                    return Err(ImageError::Invalid {
                        what: printable(&p.display().to_string(), 300),
                        reason: "not a regular file".into(),
                    });
                }
                Ok((Box::new(f), md.len()))
            }
            Files::Tar { path, members } => {
                let &(off, size) = members.get(&n).ok_or_else(|| ImageError::MissingFile {
                    source_name: self.describe(),
                    file: printable(&n, 200),
                })?;
                let mut f =
                    File::open(path).map_err(|e| ImageError::Open { path: path.clone(), source: e })?;
                f.seek(SeekFrom::Start(off))
                    .map_err(|e| ImageError::Open { path: path.clone(), source: e })?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    /// Read a whole small file (index, manifest, config), bounded to `limit` bytes.
    pub fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
        let (r, size) = self.open(name)?;
        if size > limit {
            return Err(ImageError::Invalid {
                what: format!("{}: {name}", self.describe()),
                reason: format!("{size} bytes is larger than the {limit}-byte limit for metadata"),
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        r.take(limit).read_to_end(&mut buf).map_err(|source| ImageError::ArchiveRead {
            path: PathBuf::from(format!("{}: {name}", self.describe())),
            source,
        })?;
        Ok(buf)
    }
}

/// Open `rel` below the directory `dir` without following any symlink on the way (and without
/// leaving `dir`), and without blocking: a FIFO planted as a blob must not hang the import, and a
/// symlinked `blobs/` or subdirectory must not read files from elsewhere.
fn open_beneath(dir: &Path, rel: &str) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let d = rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    loop {
        match rustix::fs::openat2(&d, rel, flags, Mode::empty(), resolve) {
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => continue,
            r => return Ok(File::from(r?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn normalises_names() {
        assert_eq!(normalise("./blobs/sha256/ab").as_deref(), Some("blobs/sha256/ab"));
        assert_eq!(normalise("/index.json").as_deref(), Some("index.json"));
        assert_eq!(normalise("a/../b"), None);
        assert_eq!(normalise("."), None);
    }
}
