//! The contents of a lower layer's regular files. A plain lower directory has none of its own
//! (`None` in [`crate::FsConfig::contents`]): its files are served from their real descriptors,
//! passthrough when the kernel allows, at no extra cost per read. A *remote* lower (a layer of a
//! lazy pull, see docs/lazy.md) is a skeleton directory whose regular files are sparse: only
//! opening and reading them goes through its [`LowerContents`], whose readers fetch, verify and
//! cache what is missing. Names, attributes, listings and the whole overlay merge stay the
//! skeleton's.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// The contents of one lower layer's regular files.
pub trait LowerContents: Send + Sync + std::fmt::Debug {
    /// How to serve `rel` (a regular file of this layer, as resolved by the overlay), whose
    /// real file in the layer's directory is open as `real`.
    fn open(&self, rel: &Path, real: File) -> io::Result<Content>;

    /// Start what runs beside the reads (a remote lower's prefetch and background completion):
    /// called once the process serves (threads made before the daemon forks would not survive).
    fn start(&self) {}

    /// Record what is pending (the filesystem is done).
    fn flush(&self) {}
}

/// How an open lower file is served.
pub enum Content {
    /// From this descriptor (passthrough and the kernel's page cache allowed).
    Local(File),
    /// Through `reader`, which fetches and verifies what is missing first; `file` is the real
    /// (skeleton) file, for its attributes. No passthrough, no FOPEN_KEEP_CACHE.
    Remote { file: File, reader: Arc<dyn ChunkReader> },
}

/// The bytes of one remote file.
pub trait ChunkReader: Send + Sync {
    /// Read from `offset` into `buf`; fewer bytes only at the end of the file. An error is the
    /// reader's answer (EIO when the bytes could not be fetched or verified).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

/// Copy all `size` bytes of `reader` into `out` (a copy-up of a remote file), synced when
/// `durable`.
pub(crate) fn copy_from_reader(
    reader: &dyn ChunkReader,
    out: &File,
    size: u64,
    durable: bool,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < size {
        let want = (size - at).min(buf.len() as u64) as usize;
        let n = reader.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "remote file shorter than its size"));
        }
        out.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    if durable {
        out.sync_data()?;
    }
    Ok(())
}
