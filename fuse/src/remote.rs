//! Remote lowers (`-o remote=<diff_id>@<store root>`, feature `lazy`): a layer of a lazily pulled
//! image, stacked as its skeleton tree (`<root>/remote/<diff_id hex>/tree`, one of the
//! `lowerdir`s), its files' contents read through strata's [`RemoteFiles`]: fetched from the
//! registry it was pulled from, verified chunk by chunk, cached under the store's `remote/`
//! directory. A read that cannot get verified bytes answers EIO.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use strata::digest::Sha256Digest;
use strata::registry::chunks::{open_remote_layer, Prefetch, RangeSource, RemoteFiles, StoreState};

use crate::contents::{ChunkReader, Content, LowerContents};
use crate::{Error, RemoteOpt};

/// A remote lower's contents.
pub struct RemoteLower<S> {
    files: Arc<RemoteFiles<S>>,
    state: Option<Arc<StoreState>>,
    /// The chunks before the layer's prefetch landmark, claimed at mount, fetched by
    /// [`LowerContents::start`].
    prefetch: Mutex<Option<Prefetch>>,
}

impl<S> std::fmt::Debug for RemoteLower<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLower").field("layer", &self.files.label()).finish()
    }
}

impl<S: RangeSource + 'static> RemoteLower<S> {
    pub fn new(files: RemoteFiles<S>) -> RemoteLower<S> {
        RemoteLower { files: Arc::new(files), state: None, prefetch: Mutex::new(None) }
    }

    /// Claim the files before the layer's prefetch landmark: from now on a read of one of them
    /// waits for the prefetch [`LowerContents::start`] begins. Lookups never wait: they read the
    /// skeleton.
    pub fn claim_prefetch(&self) {
        let claim = self.files.claim_prefetch();
        if let Some(c) = &claim {
            tracing::info!(
                layer = self.files.label(),
                chunks = c.chunks(),
                bytes = c.range.end,
                "prefetch claimed"
            );
        }
        *self.prefetch.lock().unwrap_or_else(|e| e.into_inner()) = claim;
    }
}

impl<S: RangeSource + 'static> LowerContents for RemoteLower<S> {
    fn open(&self, rel: &Path, real: File) -> io::Result<Content> {
        let name = rel.to_str().unwrap_or_default();
        match self.files.size(name) {
            // Nothing to fetch.
            Some(0) => Ok(Content::Local(real)),
            Some(_) => {
                let reader = Arc::new(RemoteFile { files: self.files.clone(), name: name.to_string() });
                Ok(Content::Remote { file: real, reader })
            }
            None => {
                // The skeleton was built from this TOC: a file it does not list is not served.
                tracing::error!(layer = self.files.label(), file = %rel.display(), "no such file in the layer's TOC");
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
        }
    }

    fn start(&self) {
        let Some(claim) = self.prefetch.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let files = self.files.clone();
        let state = self.state.clone();
        let spawned = std::thread::Builder::new().name("prefetch".into()).spawn(move || {
            match files.prefetch(claim) {
                Ok(n) => tracing::info!(layer = files.label(), chunks = n, "prefetched"),
                Err(e) => tracing::warn!(
                    layer = files.label(),
                    error = %strata::error::report(&e),
                    "prefetch failed: reads fetch what they need"
                ),
            }
            if let Some(s) = &state {
                s.flush();
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(layer = self.files.label(), error = %e, "prefetch not started");
        }
    }

    fn flush(&self) {
        if let Some(s) = &self.state {
            s.flush();
        }
    }
}

/// One open remote file.
struct RemoteFile<S> {
    files: Arc<RemoteFiles<S>>,
    name: String,
}

impl<S: RangeSource> ChunkReader for RemoteFile<S> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.files.read_at(&self.name, offset, buf).map_err(|e| {
            tracing::warn!(
                layer = self.files.label(),
                file = %self.name,
                offset,
                error = %strata::error::report(&e),
                "read failed: EIO"
            );
            io::Error::from_raw_os_error(libc::EIO)
        })
    }
}

/// Give each remote lower of `remotes` its contents in `cfg` (whose lowers are canonical):
/// the lower that is the layer's skeleton tree. Returns the contents, to flush at the end.
pub fn attach(
    cfg: &mut crate::FsConfig,
    remotes: &[RemoteOpt],
) -> Result<Vec<Arc<dyn LowerContents>>, Error> {
    let mut out: Vec<Arc<dyn LowerContents>> = Vec::new();
    for r in remotes {
        let bad = |why: String| {
            Error::BadValue("remote".into(), format!("{}@{}: {why}", r.diff_id, r.root.display()))
        };
        let d = Sha256Digest::parse(&r.diff_id).map_err(|e| bad(e.to_string()))?;
        let opened = open_remote_layer(&r.root, &d).map_err(|e| bad(strata::error::report(&e)))?;
        let tree = std::fs::canonicalize(&opened.tree).map_err(|e| bad(e.to_string()))?;
        let i = cfg
            .lowers
            .iter()
            .position(|l| *l == tree)
            .ok_or_else(|| bad(format!("its skeleton {} is not one of the lowerdirs", tree.display())))?;
        let lower = RemoteLower {
            files: Arc::new(opened.files),
            state: Some(opened.state),
            prefetch: Mutex::new(None),
        };
        lower.claim_prefetch();
        let lower: Arc<dyn LowerContents> = Arc::new(lower);
        if cfg.contents.len() < cfg.lowers.len() {
            cfg.contents.resize(cfg.lowers.len(), None);
        }
        cfg.contents[i] = Some(lower.clone());
        out.push(lower);
    }
    Ok(out)
}
