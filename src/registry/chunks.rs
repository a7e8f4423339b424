//! Reading a remote layer's files on demand (`pull --lazy`, see docs/lazy.md): a file's chunks,
//! as its verified TOC locates them, fetched by byte ranges, each verified against its digest
//! before any byte of it is returned, and cached content-addressed.
//!
//! - **Requests.** The missing chunks of a read that are adjacent in the blob go in one Range
//!   request (up to [`MAX_REQUEST`] bytes). Reads run on their callers' threads (strata-fuse's
//!   request threads): reads of different files proceed at once, at most
//!   [`ReadPolicy::max_requests`] requests are in flight, and a chunk another read is fetching
//!   is waited for, not fetched twice.
//! - **Failures.** A request that fails for a reason that may pass (connection refused, reset,
//!   5xx, timeout) is tried again, a few times with backoff, within a deadline per read
//!   ([`ReadPolicy`]); then the read fails. It never hangs: the source bounds each request (see
//!   [`RemoteBlob`], whose client has a whole-request timeout).
//! - **Verification.** A chunk whose bytes do not decode to its digest is never served, never
//!   cached: the read fails, a log line names the layer and the file, and the layer is marked bad
//!   ([`LayerState::bad`]): no further fetches for it, cached chunks still read.
//! - **Cache.** `<cache>/chunks/<chunk digest hex>`: written under `<cache>/tmp/<pid>-...`
//!   (never read), synced, renamed. A chunk is cached exactly when its file, named by its verified
//!   digest, exists; a killed reader leaves at most a temporary file (store recovery removes
//!   those of dead processes).
//! - **Accounting.** Each verified chunk's compressed size is handed to [`LayerState::fetched`];
//!   the store's implementation ([`super::remote_layer::StoreState`]) adds them to the layer's
//!   `bytes_local` in batches.
//!
//! The byte source is a trait ([`RangeSource`]: [`super::remote_layer::RemoteBlob`] for the
//! registry a layer was pulled from, anything for tests).
//! [`super::remote_layer::open_remote_layer`] puts it together for strata-fuse.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::activity::Activity;
use super::partial::PartialBlob;
use super::{Client, RegistryError};
use crate::digest::Sha256Digest;
use crate::seekable::chunk::decode_chunk_to_vec;
use crate::seekable::{Chunk, EntryKind, SeekableError, Toc};

/// The most bytes one request fetches when it joins adjacent chunks.
pub const MAX_REQUEST: u64 = 4 << 20;

/// Where a remote layer's bytes come from.
pub trait RangeSource: Send + Sync {
    /// Exactly the blob's bytes `range`.
    fn range(&self, range: Range<u64>) -> Result<Vec<u8>, RegistryError>;
}

/// A blob of a registry repository, through a client the caller holds.
pub struct RegistryBlob<'a> {
    pub client: &'a Client,
    pub digest: String,
}

impl RangeSource for RegistryBlob<'_> {
    fn range(&self, range: Range<u64>) -> Result<Vec<u8>, RegistryError> {
        self.client.blob_range(&self.digest, range)
    }
}

/// How a read waits for the registry.
#[derive(Debug, Clone)]
pub struct ReadPolicy {
    /// Attempts of one request (a failure that may pass is tried again).
    pub attempts: u32,
    /// The wait before the second attempt (doubled for each next one).
    pub backoff: Duration,
    /// A read that has not got its chunks by then fails (a request under way finishes first,
    /// bounded by the source's own timeout).
    pub deadline: Duration,
    /// Requests of this layer in flight at once.
    pub max_requests: usize,
}

impl Default for ReadPolicy {
    fn default() -> ReadPolicy {
        ReadPolicy {
            attempts: 3,
            backoff: Duration::from_millis(250),
            deadline: Duration::from_secs(30),
            max_requests: 4,
        }
    }
}

/// What a remote layer's reader reports: verified bytes fetched, and a layer gone bad.
pub trait LayerState: Send + Sync {
    /// `bytes` more of the blob were fetched, verified and cached.
    fn fetched(&self, bytes: u64);
    /// The layer sent bytes that do not match its TOC (`reason` says which): nothing more is to
    /// be fetched for it.
    fn bad(&self, reason: &str);
}

/// The most bytes a prefetch fetches in one request (the region before the landmark; a bigger
/// one is fetched in runs of [`MAX_REQUEST`]).
pub const MAX_PREFETCH: u64 = 64 << 20;

/// Chunks claimed for a prefetch ([`RemoteFiles::claim_prefetch`]): the blob's
/// `range` (from its start to the landmark), and the chunks in it to cache (entry and chunk
/// indexes in the TOC).
#[derive(Debug)]
pub struct Prefetch {
    pub range: Range<u64>,
    chunks: Vec<(usize, usize)>,
}

impl Prefetch {
    /// Chunks claimed.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }
}

/// How long background completion waits after the last read that fetched.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Bytes background completion asks for in one request (a read that needs a chunk partly
/// fetched asks only for the rest).
pub const BACKGROUND_STEP: u64 = 1 << 20;

/// What background completion fetched.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FillStats {
    pub requests: u64,
    pub bytes: u64,
}

/// The regular files of a remote layer, read by name and offset.
pub struct RemoteFiles<S> {
    toc: Toc,
    /// Regular files (and hard links, resolved to their target) by name: their TOC index.
    files: HashMap<String, usize>,
    source: S,
    chunks: PathBuf,
    tmp: PathBuf,
    /// Names the layer in errors and logs.
    label: String,
    policy: ReadPolicy,
    state: Option<Arc<dyn LayerState>>,
    /// Why the layer is bad, once it is.
    bad: Mutex<Option<String>>,
    /// Chunks being fetched (by their digest), and the signal that some landed or failed.
    inflight: Mutex<HashSet<Sha256Digest>>,
    landed: Condvar,
    /// Requests in flight, and the signal that one ended.
    requests: Mutex<usize>,
    slot: Condvar,
    seq: AtomicU64,
    /// The blob's bytes fetched so far, by anyone ([`PartialBlob`]): ranges it holds are read
    /// from it (and verified) instead of fetched, and fetched ranges are added to it.
    partial: Option<Arc<PartialBlob>>,
    /// Reads fetching (or waiting for) chunks: background completion runs only while there
    /// are none. Shared by the layers of one process ([`RemoteFiles::with_activity`]).
    activity: Arc<Activity>,
}

/// Why a range could not be served from the partial blob.
enum Kept {
    /// Fetching (or verifying what was fetched, or caching it) failed.
    Fetch(RegistryError),
    /// What it holds does not verify (or cannot be read): the range is fetched whole.
    Unusable(String),
}

impl Kept {
    fn into_error(self) -> RegistryError {
        match self {
            Kept::Fetch(e) => e,
            Kept::Unusable(reason) => RegistryError::Invalid { what: "kept bytes".into(), reason },
        }
    }
}

/// A request slot, given back when dropped.
struct Permit<'a> {
    count: &'a Mutex<usize>,
    slot: &'a Condvar,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *lock(self.count) -= 1;
        self.slot.notify_one();
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<S> RemoteFiles<S> {
    /// The label given to [`RemoteFiles::new`].
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Why the layer is bad, if it is.
    pub fn bad(&self) -> Option<String> {
        lock(&self.bad).clone()
    }

    /// The source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The size of regular file `name`, if the layer has it.
    pub fn size(&self, name: &str) -> Option<u64> {
        self.files.get(name).map(|&i| self.toc.entries[i].size)
    }
}

impl<S: RangeSource> RemoteFiles<S> {
    /// Files of the layer `label` whose verified TOC is `toc`, fetched from `source`, verified
    /// chunks cached under `cache` (`chunks/` and `tmp/` made when missing).
    pub fn new(toc: Toc, source: S, cache: &Path, label: &str) -> Result<Self, RegistryError> {
        let (chunks, tmp) = (cache.join("chunks"), cache.join("tmp"));
        for d in [&chunks, &tmp] {
            fs::create_dir_all(d).map_err(|source| local(d, source))?;
        }
        let mut files = HashMap::new();
        for (i, e) in toc.entries.iter().enumerate() {
            if e.kind == EntryKind::Reg {
                files.insert(e.name.clone(), i);
            }
        }
        for e in &toc.entries {
            if e.kind == EntryKind::Hardlink {
                if let Some(&i) = files.get(&e.link_name) {
                    files.insert(e.name.clone(), i);
                }
            }
        }
        Ok(RemoteFiles {
            toc,
            files,
            source,
            chunks,
            tmp,
            label: label.to_string(),
            policy: ReadPolicy::default(),
            state: None,
            bad: Mutex::new(None),
            inflight: Mutex::new(HashSet::new()),
            landed: Condvar::new(),
            requests: Mutex::new(0),
            slot: Condvar::new(),
            seq: AtomicU64::new(0),
            partial: None,
            activity: Arc::new(Activity::new(Duration::ZERO)),
        })
    }

    /// Keep fetched ranges in `partial`, and read what it holds from it.
    pub fn with_partial(mut self, partial: Arc<PartialBlob>) -> Self {
        self.partial = Some(partial);
        self
    }

    /// Count reads in, and run background completion, with `activity` (shared by the layers of
    /// one process) instead of an activity of this layer's own, whose background starts at once.
    pub fn with_activity(mut self, activity: Arc<Activity>) -> Self {
        self.activity = activity;
        self
    }

    /// Read with `policy` instead of [`ReadPolicy::default`].
    pub fn with_policy(mut self, policy: ReadPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Report to `state`.
    pub fn with_state(mut self, state: Arc<dyn LayerState>) -> Self {
        self.state = Some(state);
        self
    }

    /// A layer marked bad earlier (its row says why): nothing is fetched, cached chunks read.
    pub fn with_bad(self, reason: Option<String>) -> Self {
        *lock(&self.bad) = reason;
        self
    }

    /// Read file `name` from `offset` into `buf`: what is missing of the chunks covering it is
    /// fetched and verified first. Returns the bytes read (fewer only at the end of the file).
    pub fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<usize, RegistryError> {
        let &i = self.files.get(name).ok_or_else(|| RegistryError::Invalid {
            what: format!("layer {}", self.label),
            reason: format!("no regular file {name:?}"),
        })?;
        let entry = &self.toc.entries[i];
        let end = entry.size.min(offset.saturating_add(buf.len() as u64));
        if offset >= end {
            return Ok(0);
        }
        let wanted: Vec<&Chunk> =
            entry.chunks.iter().filter(|c| c.file_offset < end && c.file_offset + c.size > offset).collect();
        let t0 = Instant::now();
        self.ensure(name, &wanted, t0 + self.policy.deadline)?;
        let waited = t0.elapsed();
        if waited > Duration::from_millis(1) {
            tracing::debug!(layer = %self.label, file = name, offset, len = buf.len(), ms = waited.as_millis() as u64, "read waited for its chunks");
        }
        let mut done = 0usize;
        for c in wanted {
            let path = self.chunk_path(c);
            let f = File::open(&path).map_err(|source| local(&path, source))?;
            let len = f.metadata().map_err(|source| local(&path, source))?.len();
            if len != c.size {
                return Err(RegistryError::Invalid {
                    what: format!("layer {}: {name}", self.label),
                    reason: format!("cached chunk {} has {len} bytes, not {}", c.digest, c.size),
                });
            }
            let from = offset.max(c.file_offset);
            let to = end.min(c.file_offset + c.size);
            let at = (from - offset) as usize;
            let dst = &mut buf[at..at + (to - from) as usize];
            f.read_exact_at(dst, from - c.file_offset).map_err(|source| local(&path, source))?;
            done = done.max(at + dst.len());
        }
        Ok(done)
    }

    fn chunk_path(&self, c: &Chunk) -> PathBuf {
        self.chunks.join(c.digest.hex())
    }

    fn is_cached(&self, c: &Chunk) -> bool {
        self.chunk_path(c).is_file()
    }

    fn bad_error(&self, reason: String) -> RegistryError {
        RegistryError::BadLayer { layer: self.label.clone(), reason }
    }

    /// Make sure the chunks of `wanted` are cached by `deadline`: those nobody fetches are
    /// fetched here, those another read fetches are waited for (and fetched here if it failed).
    fn ensure(&self, name: &str, wanted: &[&Chunk], deadline: Instant) -> Result<(), RegistryError> {
        let mut busy = None;
        loop {
            let missing: Vec<&Chunk> = wanted.iter().copied().filter(|c| !self.is_cached(c)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if busy.is_none() {
                busy = Some(self.activity.enter());
            }
            if let Some(reason) = self.bad() {
                return Err(self.bad_error(reason));
            }
            if Instant::now() >= deadline {
                return Err(self.late(name));
            }
            let (mine, theirs): (Vec<&Chunk>, Vec<&Chunk>) = {
                let mut f = lock(&self.inflight);
                let mut mine = Vec::new();
                let mut theirs = Vec::new();
                for c in missing {
                    if f.insert(c.digest.clone()) {
                        mine.push(c);
                    } else {
                        theirs.push(c);
                    }
                }
                (mine, theirs)
            };
            let items: Vec<(&str, &Chunk)> = mine.iter().map(|&c| (name, c)).collect();
            let fetched = if mine.is_empty() { Ok(()) } else { self.fetch(&items, deadline) };
            {
                let mut f = lock(&self.inflight);
                for c in &mine {
                    f.remove(&c.digest);
                }
            }
            self.landed.notify_all();
            fetched?;
            let mut f = lock(&self.inflight);
            while theirs.iter().any(|c| f.contains(&c.digest)) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.late(name));
                }
                f = self.landed.wait_timeout(f, left).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
    }

    fn late(&self, name: &str) -> RegistryError {
        RegistryError::Deadline {
            what: format!("layer {}: {name}", self.label),
            secs: self.policy.deadline.as_secs(),
        }
    }

    /// Fetch `items` (missing chunks, claimed by the caller, with their files' names): runs of
    /// chunks adjacent in the blob in one request each (at most [`MAX_REQUEST`] bytes), each
    /// chunk verified, then cached.
    fn fetch(&self, items: &[(&str, &Chunk)], deadline: Instant) -> Result<(), RegistryError> {
        let mut sorted = items.to_vec();
        sorted.sort_by_key(|(_, c)| c.blob_offset);
        sorted.dedup_by_key(|(_, c)| c.blob_offset);
        let mut k = 0;
        while k < sorted.len() {
            let mut run = vec![sorted[k]];
            k += 1;
            while k < sorted.len() {
                let (last, next) = (run[run.len() - 1].1, sorted[k].1);
                if next.blob_offset != last.blob_end || next.blob_end - run[0].1.blob_offset > MAX_REQUEST {
                    break;
                }
                run.push(sorted[k]);
                k += 1;
            }
            let range = run[0].1.blob_offset..run[run.len() - 1].1.blob_end;
            self.fetch_span(range, &run, deadline)?;
        }
        Ok(())
    }

    /// Fetch `range` of the blob in one request, and verify and cache the chunks of `items`
    /// (all inside it).
    fn fetch_span(
        &self,
        range: Range<u64>,
        items: &[(&str, &Chunk)],
        deadline: Instant,
    ) -> Result<(), RegistryError> {
        if let Some(p) = &self.partial {
            match self.with_kept(p, &range, items, deadline) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(Kept::Fetch(e)) => return Err(e),
                Err(Kept::Unusable(why)) => tracing::warn!(
                    layer = %self.label,
                    range = ?range,
                    error = %why,
                    "kept bytes do not verify: fetching the range again"
                ),
            }
        }
        let bytes = self.request(range.clone(), deadline)?;
        self.decode_all(&bytes, range.start, items, &|_| true).map_err(Kept::into_error)?;
        self.keep(range.start, &bytes);
        Ok(())
    }

    /// Serve `range` with what the partial blob holds of it, fetching only the rest: `false`
    /// when it holds none of it; the chunks of `items` verified and cached when `true`.
    fn with_kept(
        &self,
        p: &PartialBlob,
        range: &Range<u64>,
        items: &[(&str, &Chunk)],
        deadline: Instant,
    ) -> Result<bool, Kept> {
        let unusable = |e: io::Error| Kept::Unusable(e.to_string());
        let gaps = p.gaps_in(range.clone()).map_err(unusable)?;
        if gaps.first() == Some(range) {
            return Ok(false);
        }
        let mut bytes = p.read_raw(range.clone()).map_err(unusable)?;
        let mut fetched = Vec::new();
        for g in gaps {
            let got = self.request(g.clone(), deadline).map_err(Kept::Fetch)?;
            let at = (g.start - range.start) as usize;
            let dst = bytes.get_mut(at..at + got.len()).filter(|_| got.len() as u64 == g.end - g.start);
            let Some(dst) = dst else {
                return Err(Kept::Fetch(RegistryError::Invalid {
                    what: format!("layer {}", self.label),
                    reason: "the registry sent a short range".into(),
                }));
            };
            dst.copy_from_slice(&got);
            fetched.push((g.start, got));
        }
        // A chunk with bytes just fetched that does not verify is the registry's doing (the
        // layer is bad); one made only of kept bytes is fetched again.
        let fresh = |c: &Chunk| {
            fetched.iter().any(|(at, got)| c.blob_offset < at + got.len() as u64 && *at < c.blob_end)
        };
        self.decode_all(&bytes, range.start, items, &fresh)?;
        for (at, got) in fetched {
            self.keep(at, &got);
        }
        Ok(true)
    }

    /// Fetched `bytes` from `offset`: added to the partial blob and counted.
    fn keep(&self, offset: u64, bytes: &[u8]) {
        if let Some(p) = &self.partial {
            if let Err(e) = p.write(offset, bytes) {
                tracing::warn!(layer = %self.label, error = %e, "keeping fetched bytes in the partial blob");
            }
        }
        if let Some(s) = &self.state {
            s.fetched(bytes.len() as u64);
        }
    }

    /// Verify and cache the chunks of `items` from `bytes` (the blob's from `start`). A chunk
    /// that does not verify marks the layer bad when bytes of it were just fetched (`fresh`);
    /// one of kept bytes only is [`Kept::Unusable`] (it is fetched again).
    fn decode_all(
        &self,
        bytes: &[u8],
        start: u64,
        items: &[(&str, &Chunk)],
        fresh: &dyn Fn(&Chunk) -> bool,
    ) -> Result<(), Kept> {
        for &(name, c) in items {
            let part = (c.blob_offset.checked_sub(start))
                .and_then(|from| bytes.get(from as usize..(c.blob_end - start) as usize))
                .ok_or_else(|| {
                    Kept::Fetch(RegistryError::Invalid {
                        what: format!("layer {}: {name}", self.label),
                        reason: "the registry sent a short range".into(),
                    })
                })?;
            let data = decode_chunk_to_vec(self.toc.format, part, name, c).map_err(|e| {
                if fresh(c) {
                    Kept::Fetch(self.corrupt(name, e))
                } else {
                    Kept::Unusable(crate::error::report(&e))
                }
            })?;
            self.cache_chunk(c, &data).map_err(Kept::Fetch)?;
        }
        Ok(())
    }

    /// Background completion: fetch every range of the blob the partial blob lacks, in blob
    /// order, [`BACKGROUND_STEP`] bytes per request, never while a read is
    /// fetching: each request waits until no read (of any layer sharing the activity) has
    /// fetched for `settle` (and, on a mount, for its first reads: [`Activity::for_mount`]),
    /// and after each the task rests so that it takes at most `share` percent of the time (100:
    /// no rest). Request and rest hold the activity's one background slot: the layers of a
    /// mount complete by turns, their share together `share`. A failed
    /// request is tried again after a pause that grows (the registry may be away). Returns once
    /// the partial blob is complete (then [`super::lazy::complete_layers`] verifies it and makes
    /// the layer ordinary); fails when the layer is bad or has no partial blob.
    pub fn fill(&self, share: u8, settle: Duration) -> Result<FillStats, RegistryError> {
        let Some(p) = &self.partial else {
            return Err(RegistryError::Invalid {
                what: format!("layer {}", self.label),
                reason: "no partial blob to complete".into(),
            });
        };
        let share = u32::from(share.clamp(1, 100));
        let mut stats = FillStats::default();
        let mut pause = Duration::from_secs(1);
        loop {
            if let Some(reason) = self.bad() {
                return Err(self.bad_error(reason));
            }
            p.refresh().map_err(|source| local(p.path(), source))?;
            let Some(gap) = p.first_gap() else {
                return Ok(stats);
            };
            let end = gap.end.min(gap.start.saturating_add(BACKGROUND_STEP));
            let _slot = self.activity.background_slot();
            self.activity.wait_quiet(settle);
            let t0 = Instant::now();
            let got = self.source.range(gap.start..end);
            tracing::debug!(layer = %self.label, range = ?(gap.start..end), ms = t0.elapsed().as_millis() as u64, ok = got.is_ok(), "fetched in the background");
            match got {
                Ok(bytes) if bytes.len() as u64 == end - gap.start => {
                    self.keep(gap.start, &bytes);
                    stats.requests += 1;
                    stats.bytes += bytes.len() as u64;
                    pause = Duration::from_secs(1);
                    if share < 100 {
                        std::thread::sleep(t0.elapsed() * (100 - share) / share);
                    }
                }
                got => {
                    let why = match got {
                        Ok(b) => format!("{} bytes where {} were asked for", b.len(), end - gap.start),
                        Err(e) => crate::error::report(&e),
                    };
                    tracing::warn!(layer = %self.label, range = ?(gap.start..end), error = %why, "background fetch failed; trying again later");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Claim the chunks before the layer's `.prefetch.landmark` (eStargz's files to fetch
    /// first) that are not cached yet: a read of one of them from now on waits for
    /// [`RemoteFiles::prefetch`] instead of fetching it. `None` when the layer has no landmark
    /// (or `.no.prefetch.landmark`), or all of it is cached. Cheap, and no I/O but the cache's
    /// `stat`s: strata-fuse claims before it serves, and fetches from a thread once it does.
    pub fn claim_prefetch(&self) -> Option<Prefetch> {
        let i = self.toc.prefetch_landmark()?;
        let mark = self.toc.entries[i].chunks.first()?.blob_offset;
        let mut f = lock(&self.inflight);
        let mut chunks = Vec::new();
        for (ei, e) in self.toc.entries.iter().enumerate() {
            if e.kind != EntryKind::Reg {
                continue;
            }
            for (ci, c) in e.chunks.iter().enumerate() {
                if c.blob_end <= mark && !self.is_cached(c) && f.insert(c.digest.clone()) {
                    chunks.push((ei, ci));
                }
            }
        }
        if chunks.is_empty() {
            return None;
        }
        Some(Prefetch { range: 0..mark, chunks })
    }

    /// Fetch what `claim` claimed: the prefetch region in one request (when it is at most
    /// [`MAX_PREFETCH`] bytes; by runs as reads fetch otherwise), every chunk verified and
    /// cached; the claims are released either way (a read then fetches what failed). Returns the
    /// chunks cached.
    pub fn prefetch(&self, claim: Prefetch) -> Result<usize, RegistryError> {
        // Reads wait for it: background completion too.
        let _busy = self.activity.enter();
        let deadline = Instant::now() + self.policy.deadline;
        let items: Vec<(&str, &Chunk)> = claim
            .chunks
            .iter()
            .map(|&(e, c)| (self.toc.entries[e].name.as_str(), &self.toc.entries[e].chunks[c]))
            .collect();
        let res = if claim.range.end - claim.range.start <= MAX_PREFETCH {
            self.fetch_span(claim.range.clone(), &items, deadline)
        } else {
            self.fetch(&items, deadline)
        };
        {
            let mut f = lock(&self.inflight);
            for (_, c) in &items {
                f.remove(&c.digest);
            }
        }
        self.landed.notify_all();
        res.map(|()| items.len())
    }

    /// One range of the blob, with the policy's attempts within `deadline`.
    fn request(&self, range: Range<u64>, deadline: Instant) -> Result<Vec<u8>, RegistryError> {
        let mut wait = self.policy.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let got = {
                let _permit = self.permit(deadline)?;
                if let Some(reason) = self.bad() {
                    return Err(self.bad_error(reason));
                }
                let t0 = Instant::now();
                let got = self.source.range(range.clone());
                tracing::debug!(layer = %self.label, range = ?range, ms = t0.elapsed().as_millis() as u64, ok = got.is_ok(), "fetched on demand");
                got
            };
            match got {
                Ok(b) => return Ok(b),
                Err(e)
                    if attempt < self.policy.attempts.max(1)
                        && passing(&e)
                        && Instant::now() + wait < deadline =>
                {
                    tracing::warn!(layer = %self.label, range = ?range, error = %crate::error::report(&e), "retrying");
                    std::thread::sleep(wait);
                    wait *= 2;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A slot for one request, waited for until `deadline`.
    fn permit(&self, deadline: Instant) -> Result<Permit<'_>, RegistryError> {
        let mut n = lock(&self.requests);
        while *n >= self.policy.max_requests.max(1) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RegistryError::Deadline {
                    what: format!("layer {}", self.label),
                    secs: self.policy.deadline.as_secs(),
                });
            }
            n = self.slot.wait_timeout(n, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        *n += 1;
        Ok(Permit { count: &self.requests, slot: &self.slot })
    }

    /// A chunk that does not decode to its digest: logged, the layer marked bad.
    fn corrupt(&self, name: &str, e: SeekableError) -> RegistryError {
        let what = format!("layer {}: {name}", self.label);
        let reason = format!("{name}: {}", crate::error::report(&e));
        tracing::error!(layer = %self.label, file = name, error = %reason, "chunk does not match the TOC: not served, layer marked bad");
        {
            let mut b = lock(&self.bad);
            if b.is_none() {
                *b = Some(reason.clone());
            }
        }
        if let Some(s) = &self.state {
            s.bad(&reason);
        }
        match e {
            SeekableError::ChunkDigest { expected, actual, file_offset, .. } => {
                RegistryError::DigestMismatch {
                    what: format!("{what}: chunk at {file_offset}"),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                }
            }
            e => RegistryError::Invalid { what, reason: crate::error::report(&e) },
        }
    }

    /// Store a verified chunk under its digest: a temporary file, synced, renamed.
    fn cache_chunk(&self, c: &Chunk, data: &[u8]) -> Result<(), RegistryError> {
        let dst = self.chunk_path(c);
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}-{}-{n}", std::process::id(), c.digest.hex()));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, &dst)
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&tmp);
            local(&dst, source)
        })
    }
}

/// Whether a failed request may succeed when tried again.
fn passing(e: &RegistryError) -> bool {
    matches!(
        e,
        RegistryError::Connect { .. }
            | RegistryError::ConnectIo { .. }
            | RegistryError::Transport { .. }
            | RegistryError::ReadBody { .. }
            | RegistryError::GaveUp { .. }
    ) || matches!(e, RegistryError::Status { status, .. } if *status >= 500)
}

pub(super) fn local(path: &Path, source: io::Error) -> RegistryError {
    RegistryError::Local { path: path.display().to_string(), source }
}

#[cfg(test)]
#[path = "chunks_tests.rs"]
mod tests;
