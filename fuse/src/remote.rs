//! Remote lowers (`-o remote=<diff_id>@<store root>`, feature `lazy`): a layer of a lazily pulled
//! image, stacked as its skeleton tree (`<root>/remote/<diff_id hex>/tree`, one of the
//! `lowerdir`s), its files' contents read through strata's [`RemoteFiles`]: fetched from the
//! registry it was pulled from, verified chunk by chunk, cached under the store's `remote/`
//! directory. A read that cannot get verified bytes answers EIO.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strata::digest::Sha256Digest;
use strata::registry::activity::Activity;
use strata::registry::chunks::{Prefetch, RangeSource, RemoteFiles, SETTLE};
use strata::registry::remote_layer::{open_remote_layer, Background, LazyTimeouts, StoreState};

use crate::contents::{ChunkReader, Content, LowerContents};
use crate::{Error, RemoteOpt};

/// A remote lower's contents.
pub struct RemoteLower<S> {
    files: Arc<RemoteFiles<S>>,
    state: Option<Arc<StoreState>>,
    /// The chunks before the layer's prefetch landmark, claimed at mount, fetched by
    /// [`LowerContents::start`].
    prefetch: Mutex<Option<Prefetch>>,
    /// Background completion, for a layer of a store.
    complete: Option<Completion>,
}

/// What background completion of a store's remote layer needs.
struct Completion {
    background: Background,
    /// The layer's directory under the store's `remote/`.
    dir: PathBuf,
    root: PathBuf,
    diff_id: Sha256Digest,
}

impl<S> std::fmt::Debug for RemoteLower<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLower").field("layer", &self.files.label()).finish()
    }
}

impl<S: RangeSource + 'static> RemoteLower<S> {
    pub fn new(files: RemoteFiles<S>) -> RemoteLower<S> {
        RemoteLower { files: Arc::new(files), state: None, prefetch: Mutex::new(None), complete: None }
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
        let claim = self.prefetch.lock().unwrap_or_else(|e| e.into_inner()).take();
        let complete = self.complete.as_ref().and_then(|c| match c.background {
            Background::Off => {
                tracing::info!(layer = self.files.label(), "background completion off");
                None
            }
            Background::On { share } => Some((share, c.dir.clone(), c.root.clone(), c.diff_id.clone())),
        });
        if claim.is_none() && complete.is_none() {
            return;
        }
        let files = self.files.clone();
        let state = self.state.clone();
        let spawned = std::thread::Builder::new().name("lazy".into()).spawn(move || {
            if let Some(claim) = claim {
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
            }
            if let Some((share, dir, root, diff_id)) = complete {
                complete_in_background(&files, state.as_deref(), share, &dir, &root, &diff_id);
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(layer = self.files.label(), error = %e, "prefetch and background completion not started");
        }
    }

    fn flush(&self) {
        if let Some(s) = &self.state {
            s.flush();
        }
    }
}

/// Fetch the rest of remote layer `diff_id`'s blob (one process at a time: the layer's
/// background lock, which a killed holder lets go of), then verify it and make it an ordinary
/// layer of the store at `root` through strata's one path ([`complete_remote`]).
fn complete_in_background<S: RangeSource>(
    files: &RemoteFiles<S>,
    state: Option<&StoreState>,
    share: u8,
    dir: &Path,
    root: &Path,
    diff_id: &Sha256Digest,
) {
    use std::os::unix::fs::OpenOptionsExt;
    let label = files.label();
    let lock_path = dir.join(strata::registry::partial::BACKGROUND_LOCK);
    let lock =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&lock_path);
    let lock = match lock {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(layer = label, error = %e, "background completion: no lock file");
            return;
        }
    };
    // Another process completing the layer: wait for it to end (or be killed), then go on.
    if let Err(e) = rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive) {
        tracing::warn!(layer = label, error = %e, "background completion: lock");
        return;
    }
    match files.fill(share, SETTLE) {
        Ok(stats) => {
            tracing::info!(
                layer = label,
                requests = stats.requests,
                bytes = stats.bytes,
                "background completion: the blob is here"
            )
        }
        Err(e) => {
            tracing::warn!(layer = label, error = %strata::error::report(&e), "background completion stopped");
            return;
        }
    }
    if let Some(s) = state {
        s.flush();
    }
    match strata::registry::lazy::complete_remote(root, diff_id) {
        Ok(true) => {
            tracing::info!(layer = label, "layer complete and verified: new mounts use its directory")
        }
        Ok(false) => tracing::info!(layer = label, "layer completed already"),
        Err(e) => {
            tracing::warn!(layer = label, error = %strata::error::report(&e), "completing the layer failed")
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
    background: Option<&str>,
) -> Result<Vec<Arc<dyn LowerContents>>, Error> {
    let background = match background {
        None => Background::On { share: Background::DEFAULT_SHARE },
        Some(v) => Background::parse(v).ok_or_else(|| {
            Error::BadValue(
                "lazy_background".into(),
                format!("{v}: not off, on or a share in percent (1-100)"),
            )
        })?,
    };
    // How long reads wait for the registry: strata's environment settings (inherited from the
    // `strata` that mounts).
    let timeouts = if remotes.is_empty() {
        LazyTimeouts::default()
    } else {
        LazyTimeouts::from_env().map_err(|e| Error::BadValue("remote".into(), strata::error::report(&e)))?
    };
    let mut out: Vec<Arc<dyn LowerContents>> = Vec::new();
    // One for the mount: a read of any layer holds off the background of every layer, and the
    // layers' background fetches take turns.
    let activity = Arc::new(Activity::for_mount());
    for r in remotes {
        let bad = |why: String| {
            Error::BadValue("remote".into(), format!("{}@{}: {why}", r.diff_id, r.root.display()))
        };
        let d = Sha256Digest::parse(&r.diff_id).map_err(|e| bad(e.to_string()))?;
        let opened = open_remote_layer(&r.root, &d, &timeouts).map_err(|e| bad(strata::error::report(&e)))?;
        let tree = std::fs::canonicalize(&opened.tree).map_err(|e| bad(e.to_string()))?;
        let i = cfg
            .lowers
            .iter()
            .position(|l| *l == tree)
            .ok_or_else(|| bad(format!("its skeleton {} is not one of the lowerdirs", tree.display())))?;
        let complete = Completion { background, dir: opened.dir, root: r.root.clone(), diff_id: d };
        let lower = RemoteLower {
            files: Arc::new(opened.files.with_activity(activity.clone())),
            state: Some(opened.state),
            prefetch: Mutex::new(None),
            complete: Some(complete),
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
