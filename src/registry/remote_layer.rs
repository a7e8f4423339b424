//! A remote layer of the store as strata-fuse opens it (`pull --lazy`, see docs/lazy.md): the
//! registry blob its chunks come from ([`RemoteBlob`]), the store's side of its reads
//! ([`StoreState`]), the settings a mount takes from the environment ([`Background`],
//! [`LazyTimeouts`]), and [`open_remote_layer`], which puts them together with the reader
//! ([`RemoteFiles`]).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::chunks::{local, lock, LayerState, RangeSource, ReadPolicy, RemoteFiles};
use super::partial::PartialBlob;
use super::{Client, ClientOptions, RegistryError};
use crate::digest::Sha256Digest;
use crate::store::{RemoteLayerRow, Store};

/// The longest one request of a lazy read may take, whole.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The blob of a remote layer in the registry it was pulled from (`HOST/REPO` of its row, with
/// the TLS verification it was pulled with and the credentials `strata login` stored). The
/// client connects at the first request, and again after a failure to: a registry that is down
/// when a container starts is used once it is back. Each request is bounded by
/// `request_timeout` ([`LazyTimeouts::request`]) and tried once (the reader has a retry policy of
/// its own).
pub struct RemoteBlob {
    host: String,
    repo: String,
    digest: String,
    opts: ClientOptions,
    client: Mutex<Option<Arc<Client>>>,
}

impl RemoteBlob {
    /// The blob of remote layer `row`, each request bounded by `request_timeout`.
    pub fn new(row: &RemoteLayerRow, request_timeout: Duration) -> Result<RemoteBlob, RegistryError> {
        let (host, repo) = row.source.split_once('/').ok_or_else(|| RegistryError::Invalid {
            what: format!("remote layer {}", row.diff_id),
            reason: format!("source {:?} is not HOST/REPO", row.source),
        })?;
        let opts = ClientOptions {
            tls_verify: row.tls_verify,
            request_timeout: Some(request_timeout),
            attempts: 1,
            ..Default::default()
        };
        Ok(RemoteBlob {
            host: host.to_string(),
            repo: repo.to_string(),
            digest: row.blob_digest.to_string(),
            opts,
            client: Mutex::new(None),
        })
    }

    /// The registry client, connected at the first fetch. The connection is made outside the
    /// lock: with a registry that stalls before strata-fuse ever reached it, each read waits for
    /// its own attempt (bounded by the request timeout), not in line behind every other read's.
    /// The first client that connects is kept.
    fn client(&self) -> Result<Arc<Client>, RegistryError> {
        if let Some(c) = &*lock(&self.client) {
            return Ok(c.clone());
        }
        let c = Arc::new(Client::connect(&self.host, &self.repo, &self.opts, "pull")?);
        Ok(lock(&self.client).get_or_insert(c).clone())
    }
}

impl RangeSource for RemoteBlob {
    fn range(&self, range: Range<u64>) -> Result<Vec<u8>, RegistryError> {
        self.client()?.blob_range(&self.digest, range)
    }
}

/// Sets the longest one request of a lazy read may take ([`REQUEST_TIMEOUT`] when unset), in
/// seconds (fractions allowed).
pub const REQUEST_TIMEOUT_ENV: &str = "STRATA_LAZY_REQUEST_TIMEOUT";
/// Sets how long one read may wait for its chunks, its retries included
/// ([`ReadPolicy::default`]'s deadline when unset), in seconds (fractions allowed).
pub const READ_DEADLINE_ENV: &str = "STRATA_LAZY_READ_DEADLINE";

/// How long strata-fuse waits for a remote layer's registry: each request, and each read with
/// its retries. From [`REQUEST_TIMEOUT_ENV`] and [`READ_DEADLINE_ENV`] (slow links, and tests
/// of a stalled registry that should not take half a minute).
#[derive(Debug, Clone)]
pub struct LazyTimeouts {
    /// Bounds one request, connecting and reading its body included.
    pub request: Duration,
    /// The readers' retries and deadline.
    pub policy: ReadPolicy,
}

impl Default for LazyTimeouts {
    fn default() -> LazyTimeouts {
        LazyTimeouts { request: REQUEST_TIMEOUT, policy: ReadPolicy::default() }
    }
}

impl LazyTimeouts {
    /// The defaults, with what the environment sets; a value that is not a positive number of
    /// seconds (at most a day) is an error naming the variable.
    pub fn from_env() -> Result<LazyTimeouts, RegistryError> {
        let mut t = LazyTimeouts::default();
        if let Some(d) = secs_from_env(REQUEST_TIMEOUT_ENV)? {
            t.request = d;
        }
        if let Some(d) = secs_from_env(READ_DEADLINE_ENV)? {
            t.policy.deadline = d;
        }
        Ok(t)
    }
}

/// Seconds in `var` (unset or empty: `None`).
fn secs_from_env(var: &str) -> Result<Option<Duration>, RegistryError> {
    let Some(v) = std::env::var(var).ok().filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    parse_secs(&v).map(Some).ok_or_else(|| RegistryError::Invalid {
        what: var.into(),
        reason: format!("{v:?} is not a number of seconds above 0 (at most 86400)"),
    })
}

/// A positive number of seconds, at most a day.
fn parse_secs(v: &str) -> Option<Duration> {
    let s: f64 = v.trim().parse().ok()?;
    (s.is_finite() && s > 0.0 && s <= 86_400.0).then(|| Duration::from_secs_f64(s))
}

/// Background completion of remote layers, as strata-fuse runs it: `Off`, or `On` taking at
/// most `share` percent of the time (see [`RemoteFiles::fill`]). Set by
/// `STRATA_LAZY_BACKGROUND` (or `strata --lazy-background`): `off`, `on`, or a share `1`..`100`
/// (`%` allowed); strata-fuse takes it as `-o lazy_background=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background {
    Off,
    On { share: u8 },
}

impl Background {
    /// The environment variable that sets it.
    pub const ENV: &'static str = "STRATA_LAZY_BACKGROUND";
    /// The share `on` means.
    pub const DEFAULT_SHARE: u8 = 50;

    /// `off`, `on`, or a share in percent (`1`..`100`, `%` allowed).
    pub fn parse(s: &str) -> Option<Background> {
        match s.trim() {
            "off" | "false" | "0" => Some(Background::Off),
            "on" | "true" => Some(Background::On { share: Self::DEFAULT_SHARE }),
            n => n
                .trim_end_matches('%')
                .parse::<u8>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .map(|share| Background::On { share }),
        }
    }

    /// From [`Background::ENV`]; on, with the default share, when it is unset or empty.
    pub fn from_env() -> Result<Background, RegistryError> {
        match std::env::var(Self::ENV) {
            Ok(v) if !v.trim().is_empty() => Self::parse(&v).ok_or_else(|| RegistryError::Invalid {
                what: Self::ENV.into(),
                reason: format!("{v:?} is not off, on or a share in percent (1-100)"),
            }),
            _ => Ok(Background::On { share: Self::DEFAULT_SHARE }),
        }
    }
}

impl std::fmt::Display for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Background::Off => f.write_str("off"),
            Background::On { share } => write!(f, "{share}"),
        }
    }
}

/// The store's side of a remote layer's reads: fetched bytes added to the layer's
/// `bytes_local` in batches (at most every [`StoreState::BATCH_BYTES`] or
/// [`StoreState::BATCH_TIME`], and at [`StoreState::flush`]), the bad mark recorded at once.
/// The store is opened at the first write, by the process that reads (strata-fuse opens it
/// after it has forked).
pub struct StoreState {
    root: PathBuf,
    diff_id: Sha256Digest,
    pending: Mutex<(u64, Instant)>,
    store: Mutex<Option<Store>>,
}

impl StoreState {
    pub const BATCH_BYTES: u64 = 4 << 20;
    pub const BATCH_TIME: Duration = Duration::from_secs(2);

    pub fn new(root: &Path, diff_id: &Sha256Digest) -> StoreState {
        StoreState {
            root: root.to_path_buf(),
            diff_id: diff_id.clone(),
            pending: Mutex::new((0, Instant::now())),
            store: Mutex::new(None),
        }
    }

    /// Run `f` on the store, opening it first if needed; a failure is logged (the numbers are
    /// informational).
    fn with_store(&self, what: &str, f: impl FnOnce(&mut Store) -> crate::store::Result<()>) {
        let mut g = lock(&self.store);
        if g.is_none() {
            match Store::open(&self.root) {
                Ok(s) => *g = Some(s),
                Err(e) => {
                    tracing::warn!(layer = %self.diff_id, error = %crate::error::report(&e), "{what}: store not opened");
                    return;
                }
            }
        }
        if let Some(s) = g.as_mut() {
            if let Err(e) = f(s) {
                tracing::warn!(layer = %self.diff_id, error = %crate::error::report(&e), "{what} not recorded");
            }
        }
    }

    /// Record the bytes counted so far.
    pub fn flush(&self) {
        let n = {
            let mut p = lock(&self.pending);
            let n = p.0;
            *p = (0, Instant::now());
            n
        };
        if n > 0 {
            self.with_store("bytes fetched", |s| s.add_remote_bytes(&self.diff_id, n));
        }
    }
}

impl LayerState for StoreState {
    fn fetched(&self, bytes: u64) {
        let due = {
            let mut p = lock(&self.pending);
            p.0 += bytes;
            p.0 >= Self::BATCH_BYTES || p.1.elapsed() >= Self::BATCH_TIME
        };
        if due {
            self.flush();
        }
    }

    fn bad(&self, reason: &str) {
        self.with_store("bad layer", |s| s.mark_remote_bad(&self.diff_id, reason));
    }
}

/// A remote layer of the store at `root`, opened for strata-fuse: its skeleton tree, its files
/// read from the registry it was pulled from (cached under its `remote/` directory), and the
/// store state its reads report to. The store is opened here only to read the layer's row and
/// TOC, and closed again (strata-fuse forks after mounting).
pub struct OpenedLayer {
    pub tree: PathBuf,
    pub files: RemoteFiles<RemoteBlob>,
    pub state: Arc<StoreState>,
    /// The layer's directory under `remote/` (its partial blob, its background lock).
    pub dir: PathBuf,
}

/// Open remote layer `diff_id` of the store at `root` (see [`OpenedLayer`]), its registry waited
/// for as `timeouts` say. Fails when the layer is not remote, or its skeleton has not been
/// built ([`crate::layers::remote::skeleton`]).
pub fn open_remote_layer(
    root: &Path,
    diff_id: &Sha256Digest,
    timeouts: &LazyTimeouts,
) -> Result<OpenedLayer, RegistryError> {
    let store = Store::open(root)?;
    let row = store.remote_layer(diff_id)?.ok_or_else(|| RegistryError::Invalid {
        what: format!("layer {diff_id}"),
        reason: "not a remote layer of this store (complete already, or never pulled lazily)".into(),
    })?;
    let tree = store.remote_tree(diff_id);
    if !tree.is_dir() {
        return Err(RegistryError::Invalid {
            what: format!("remote layer {diff_id}"),
            reason: format!("its skeleton {} has not been built", tree.display()),
        });
    }
    let toc = crate::layers::remote::stored_toc(&store, &row).map_err(|e| RegistryError::Invalid {
        what: format!("remote layer {diff_id}"),
        reason: crate::error::report(&e),
    })?;
    let state = Arc::new(StoreState::new(root, diff_id));
    let dir = store.remote_dir(diff_id);
    let partial = PartialBlob::open(&dir, row.blob_size).map_err(|source| local(&dir, source))?;
    let source = RemoteBlob::new(&row, timeouts.request)?;
    let files = RemoteFiles::new(toc, source, &dir, &diff_id.to_string())?
        .with_policy(timeouts.policy.clone())
        .with_state(state.clone())
        .with_bad(row.bad.clone())
        .with_partial(Arc::new(partial));
    Ok(OpenedLayer { tree, files, state, dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_positive_seconds() {
        assert_eq!(parse_secs("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_secs(" 30 "), Some(Duration::from_secs(30)));
        for bad in ["0", "-1", "nan", "inf", "1e9", "ten", ""] {
            assert_eq!(parse_secs(bad), None, "{bad}");
        }
    }
}
