//! The snapshot core: containerd's snapshot model over strata's store.
//!
//! A snapshot is a directory tree with a parent chain. Its kind is *active* (writable, with a work
//! dir), *view* (read-only) or *committed* (read-only, may be a parent). Images, containers and
//! the front ends (the CLI, a containerd snapshotter) all stand on this one model:
//! - an imported, pulled or committed image is a chain of committed snapshots keyed by chain ID
//!   (see [`chain_ids`]), each backed by its layer's shared directory `layers/sha256/<diff_id>`,
//!   so one unpacked layer serves every chain that contains it;
//! - a container is an active snapshot (a view for `--read-only`) whose parent is fixed when it
//!   is created.
//!
//! On disk every snapshot has a short directory `snapshots/<id>/` (`id` a small number): `fs` is
//! its tree (for a layer-backed committed snapshot a symlink to the layer directory), `work` the
//! overlay work dir of an active one. Mounts name lowers by these short paths, so the option
//! string of a 500-layer stack made relative to `snapshots/` (as containerd compacts it, and as
//! [`kernel_overlay`]'s legacy path does) fits in one page.
//!
//! Metadata lives in the store's database ([`meta`]), one transaction per operation; directories
//! are made before the transaction commits and renamed into place, so a crash leaves either the
//! row and its directory or an orphan directory that [`Snapshots::cleanup`] removes.

pub mod meta;
mod mounts;
#[cfg(test)]
mod tests;

pub use crate::error::ErrorKind;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

pub use mounts::Mount;

use crate::db::DbError;
use crate::digest::Sha256Digest;
use crate::store::{remove_tree, Store};

/// What kind a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    View,
    Active,
    Committed,
}

impl Kind {
    fn code(self) -> i64 {
        match self {
            Kind::View => 1,
            Kind::Active => 2,
            Kind::Committed => 3,
        }
    }

    fn from_code(c: i64) -> Option<Kind> {
        match c {
            1 => Some(Kind::View),
            2 => Some(Kind::Active),
            3 => Some(Kind::Committed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot as containerd's `Info` has it. Times are nanoseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Info {
    pub name: String,
    pub parent: Option<String>,
    pub kind: Kind,
    pub labels: BTreeMap<String, String>,
    pub created: i64,
    pub updated: i64,
}

/// Disk usage of a snapshot's own tree (not its parents'): bytes in blocks, and inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub size: u64,
    pub inodes: u64,
}

/// Snapshot errors. Each message says its own part; the cause, if any, is its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    #[error("parent snapshot {0:?} not found")]
    ParentNotFound(String),
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    #[error("cannot remove snapshot {0:?}: it has children (remove them first)")]
    HasChildren(String),
    #[error("cannot remove snapshot {key:?}: container {container:?} stands on it")]
    InUse { key: String, container: String },
    #[error("snapshot {key:?} is {kind}, not active")]
    NotActive { key: String, kind: Kind },
    #[error("snapshot {0:?} is committed: it has no mounts of its own (mount a view of it)")]
    Committed(String),
    #[error("parent snapshot {parent:?} is {kind}, not committed")]
    ParentNotCommitted { parent: String, kind: Kind },
    #[error("{0}")]
    Invalid(String),
    #[error("snapshot metadata is inconsistent: {0}")]
    Corrupt(String),
    #[error("snapshot {key:?}: mount")]
    Mount { key: String, source: kernel_overlay::Error },
    #[error("snapshot metadata")]
    Db(#[source] DbError),
    #[error("{}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl From<rusqlite::Error> for SnapshotError {
    fn from(e: rusqlite::Error) -> Self {
        SnapshotError::Db(DbError::Sql(e))
    }
}

impl From<DbError> for SnapshotError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Snapshot(s) => *s,
            e => SnapshotError::Db(e),
        }
    }
}

impl SnapshotError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SnapshotError::NotFound(_) | SnapshotError::ParentNotFound(_) => ErrorKind::NotFound,
            SnapshotError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            SnapshotError::HasChildren(_)
            | SnapshotError::InUse { .. }
            | SnapshotError::NotActive { .. }
            | SnapshotError::Committed(_) => ErrorKind::FailedPrecondition,
            SnapshotError::ParentNotCommitted { .. } | SnapshotError::Invalid(_) => {
                ErrorKind::InvalidArgument
            }
            SnapshotError::Mount { .. } => ErrorKind::InvalidArgument,
            SnapshotError::Corrupt(_) | SnapshotError::Db(_) | SnapshotError::Io { .. } => {
                ErrorKind::Internal
            }
        }
    }
}

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io { path: path.to_path_buf(), source }
}

/// Chain IDs of a layer stack, bottom first (OCI image spec: `ChainID(L0) = DiffID(L0)`,
/// `ChainID(L0|..|Ln) = sha256(ChainID(L0|..|Ln-1) + " " + DiffID(Ln))`).
pub fn chain_ids(diff_ids: &[Sha256Digest]) -> Vec<Sha256Digest> {
    let mut out: Vec<Sha256Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Sha256Digest::from_bytes(&Sha256::digest(format!("{prev} {d}").as_bytes())),
        };
        out.push(next);
    }
    out
}

/// The snapshots of a store.
pub struct Snapshots<'s> {
    store: &'s mut Store,
}

impl Store {
    /// The snapshot core over this store.
    pub fn snapshots(&mut self) -> Snapshots<'_> {
        Snapshots { store: self }
    }

    /// `snapshots/`: one short directory per snapshot.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root().join("snapshots")
    }
}

/// A snapshot's directory, `snapshots/<id>`.
pub fn dir(store: &Store, id: i64) -> PathBuf {
    store.snapshots_dir().join(id.to_string())
}

/// A snapshot's tree, `snapshots/<id>/fs`.
pub fn fs_dir(store: &Store, id: i64) -> PathBuf {
    dir(store, id).join("fs")
}

/// An active snapshot's overlay work dir, `snapshots/<id>/work`.
pub fn work_dir(store: &Store, id: i64) -> PathBuf {
    dir(store, id).join("work")
}

impl Snapshots<'_> {
    pub fn store(&self) -> &Store {
        self.store
    }

    /// A new active snapshot over `parent` (committed); returns its mounts.
    pub fn prepare(
        &mut self,
        key: &str,
        parent: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::Active, labels)?;
        self.mounts(key)
    }

    /// A new read-only view of `parent`; returns its mounts.
    pub fn view(
        &mut self,
        key: &str,
        parent: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::View, labels)?;
        self.mounts(key)
    }

    /// Create the row and directory of a new active or view snapshot, in one transaction.
    pub fn create(
        &mut self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        labels: &BTreeMap<String, String>,
    ) -> Result<meta::Row> {
        let snaps = self.store.snapshots_dir();
        self.store
            .db
            .write(|tx| Ok(create_in(tx, &snaps, key, parent, kind, labels)?))
            .map_err(SnapshotError::from)
    }

    /// See [`mounts`].
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        mounts(self.store, key)
    }

    /// See [`overlay_spec`].
    pub fn overlay_spec(&self, key: &str) -> Result<kernel_overlay::OverlaySpec> {
        overlay_spec(self.store, key)
    }

    /// Commit active snapshot `key` as `name`: the same directory, now read-only and usable as
    /// a parent. Its usage is measured and recorded now.
    pub fn commit(&mut self, name: &str, key: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        let row = meta::get(self.store.db.conn(), key)?;
        if row.kind != Kind::Active {
            return Err(SnapshotError::NotActive { key: key.to_string(), kind: row.kind });
        }
        let usage = measure(&fs_dir(self.store, row.id))?;
        let work = work_dir(self.store, row.id);
        self.store
            .db
            .write(|tx| Ok(meta::commit(tx, name, key, usage, labels)?))
            .map_err(SnapshotError::from)?;
        let _ = remove_tree(&work);
        Ok(())
    }

    /// Commit `name` over `parent` as a layer the store already holds, without unpacking it:
    /// when layer chain `chain_id` is one of the store's (an image imported, pulled or committed
    /// through the CLI made its committed snapshot) and `parent` is that chain less its top
    /// layer (the parent's own chain is layer-backed and, with the top layer, hashes to
    /// `chain_id`), `name` becomes a committed snapshot backed by the same layer directory.
    /// `None` when the store does not hold that chain over that parent. This is how a
    /// containerd snapshotter answers a Prepare naming its target chain (`already exists`).
    pub fn commit_known_layer(
        &mut self,
        name: &str,
        parent: Option<&str>,
        chain_id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Option<Info>> {
        self.store
            .db
            .write(|tx| {
                // Chain snapshots are keyed by the chain ID's own text.
                let Some(target) = meta::by_key(tx, chain_id)? else {
                    return Ok(None);
                };
                let (Kind::Committed, Some(diff_id)) = (target.kind, target.diff_id.clone()) else {
                    return Ok(None);
                };
                let mut diff_ids = Vec::new();
                if let Some(p) = parent.filter(|p| !p.is_empty()) {
                    let pr =
                        meta::by_key(tx, p)?.ok_or_else(|| SnapshotError::ParentNotFound(p.to_string()))?;
                    for r in meta::chain(tx, pr.id)?.into_iter().rev() {
                        match r.diff_id {
                            Some(d) => diff_ids.push(d),
                            // Content containerd applied itself: its chain is not known here.
                            None => return Ok(None),
                        }
                    }
                }
                diff_ids.push(diff_id.clone());
                if chain_ids(&diff_ids).last().map(|c| c.to_string()).as_deref() != Some(chain_id) {
                    return Ok(None);
                }
                let row = meta::insert(tx, name, parent, Kind::Committed, Some(&diff_id), labels)?;
                Ok(Some(meta::info(tx, &row)?))
            })
            .map_err(SnapshotError::from)
    }

    /// Remove a snapshot (not one with children, nor one a container stands on). The row goes
    /// first, then the directory in one rename to staging.
    pub fn remove(&mut self, key: &str) -> Result<()> {
        let id = self
            .store
            .db
            .write(|tx| {
                let r = meta::get(tx, key)?;
                if meta::has_children(tx, r.id)? {
                    return Err(SnapshotError::HasChildren(key.to_string()).into());
                }
                if let Some(container) = meta::container_of(tx, r.id)? {
                    return Err(SnapshotError::InUse { key: key.to_string(), container }.into());
                }
                meta::delete(tx, r.id)?;
                Ok(r.id)
            })
            .map_err(SnapshotError::from)?;
        let d = dir(self.store, id);
        drop(
            self.store
                .trash(&d)
                .map_err(|e| SnapshotError::Io { path: d.clone(), source: io::Error::other(e) })?,
        );
        Ok(())
    }

    pub fn stat(&self, key: &str) -> Result<Info> {
        let c = self.store.db.conn();
        meta::info(c, &meta::get(c, key)?)
    }

    /// Change a snapshot's labels, as containerd's Update: with no field paths (or `labels`)
    /// the labels are replaced; `labels.KEY` sets or (absent from `info`) removes one label.
    /// Other fields cannot change.
    pub fn update(&mut self, info: &Info, fieldpaths: &[String]) -> Result<Info> {
        let key = info.name.clone();
        self.store
            .db
            .write(|tx| {
                let r = meta::get(tx, &key)?;
                let mut labels = meta::labels(tx, r.id)?;
                if fieldpaths.is_empty() {
                    labels = info.labels.clone();
                }
                for f in fieldpaths {
                    if f == "labels" {
                        labels = info.labels.clone();
                    } else if let Some(k) = f.strip_prefix("labels.") {
                        match info.labels.get(k) {
                            Some(v) => labels.insert(k.to_string(), v.clone()),
                            None => labels.remove(k),
                        };
                    } else {
                        return Err(SnapshotError::Invalid(format!(
                            "cannot update {f:?} of snapshot {key:?}: only labels can change"
                        ))
                        .into());
                    }
                }
                meta::set_labels(tx, r.id, &labels)?;
                meta::touch(tx, r.id)?;
                Ok(meta::info(tx, &meta::get(tx, &key)?)?)
            })
            .map_err(SnapshotError::from)
    }

    /// Disk usage of the snapshot's own tree: recorded at commit, measured now for an active one.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let c = self.store.db.conn();
        let r = meta::get(c, key)?;
        if let Some(d) = &r.diff_id {
            let (size, entries): (i64, i64) =
                c.query_row("SELECT size, entries FROM layers WHERE diff_id = ?1", [d], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            return Ok(Usage { size: size as u64, inodes: entries as u64 });
        }
        match (r.kind, r.size, r.inodes) {
            (Kind::Committed, Some(size), Some(inodes)) => Ok(Usage { size, inodes }),
            _ => measure(&fs_dir(self.store, r.id)),
        }
    }

    /// Every snapshot, oldest first.
    pub fn walk(&self) -> Result<Vec<Info>> {
        let c = self.store.db.conn();
        meta::all(c)?.iter().map(|r| meta::info(c, r)).collect()
    }

    /// Remove what no row owns under `snapshots/`: directories a crashed create or remove left.
    /// Runs in a write transaction, so no create is between its rename and its commit meanwhile.
    pub fn cleanup(&mut self) -> Result<Vec<PathBuf>> {
        let snaps = self.store.snapshots_dir();
        // A cheap look first (every command recovers on open): only entries that no row owns now
        // need the write transaction.
        let known = meta::ids(self.store.db.conn())?;
        let suspicious = match fs::read_dir(&snaps) {
            Ok(entries) => entries.flatten().any(|e| {
                !e.file_name()
                    .to_str()
                    .and_then(|n| n.parse::<i64>().ok())
                    .is_some_and(|id| known.contains(&id))
            }),
            Err(_) => false,
        };
        if !suspicious {
            return Ok(Vec::new());
        }
        let orphans = self
            .store
            .db
            .write(|tx| {
                let known = meta::ids(tx)?;
                let mut orphans = Vec::new();
                let entries = match fs::read_dir(&snaps) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(orphans),
                    Err(e) => return Err(SnapshotError::Io { path: snaps.clone(), source: e }.into()),
                };
                for e in entries {
                    let e = e.map_err(io_at(&snaps)).map_err(DbError::from)?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.parse::<i64>().is_ok_and(|id| known.contains(&id)) {
                        continue;
                    }
                    // Renamed out of the numeric namespace while no create can run: an id left by
                    // a rolled-back create may be taken again as soon as this transaction ends.
                    let gone = if name.starts_with("gone-") {
                        e.path()
                    } else {
                        let g = snaps.join(format!("gone-{name}-{}", meta::now_ns()));
                        fs::rename(e.path(), &g).map_err(io_at(&e.path())).map_err(DbError::from)?;
                        g
                    };
                    orphans.push(gone);
                }
                Ok(orphans)
            })
            .map_err(SnapshotError::from)?;
        for p in &orphans {
            tracing::info!(path = %p.display(), "removing snapshot directory without metadata");
            drop(
                self.store
                    .trash(p)
                    .map_err(|e| SnapshotError::Io { path: p.clone(), source: io::Error::other(e) })?,
            );
        }
        Ok(orphans)
    }
}

/// The mounts of a snapshot, as containerd's overlay snapshotter derives them from the parent
/// chain: a bind mount for none or one parent, an overlay otherwise.
pub fn mounts(store: &Store, key: &str) -> Result<Vec<Mount>> {
    let (row, lowers) = resolve(store, key)?;
    mounts::derive(store, &row, &lowers)
}

/// The overlay spec strata itself mounts (kernel or strata-fuse) for an active or view snapshot:
/// the parents' trees top first, the own tree as upper of an active one.
pub fn overlay_spec(store: &Store, key: &str) -> Result<kernel_overlay::OverlaySpec> {
    let (row, lowers) = resolve(store, key)?;
    Ok(mounts::overlay_spec(store, &row, lowers))
}

/// [`overlay_spec`] with each lower the directory itself (a layer-backed parent's layer
/// directory, not its `snapshots/<id>/fs` link): what walks the trees reads, and no link is
/// followed or made.
pub fn overlay_spec_real(store: &Store, key: &str) -> Result<kernel_overlay::OverlaySpec> {
    let (row, parents) = mountable(store, key)?;
    let lowers = parents
        .iter()
        .map(|r| match &r.diff_id {
            Some(d) => store.layer_path(d),
            None => fs_dir(store, r.id),
        })
        .collect();
    Ok(mounts::overlay_spec(store, &row, lowers))
}

/// A snapshot's row and the trees of its ancestors (top first), each made reachable first.
fn resolve(store: &Store, key: &str) -> Result<(meta::Row, Vec<PathBuf>)> {
    let (row, parents) = mountable(store, key)?;
    let lowers = parents.iter().map(|r| reachable(store, r)).collect::<Result<Vec<_>>>()?;
    Ok((row, lowers))
}

/// An active or view snapshot's row and its ancestors' rows, nearest first; a committed one has
/// no mounts of its own.
fn mountable(store: &Store, key: &str) -> Result<(meta::Row, Vec<meta::Row>)> {
    let conn = store.db.conn();
    let row = meta::get(conn, key)?;
    if row.kind == Kind::Committed {
        return Err(SnapshotError::Committed(key.to_string()));
    }
    let mut chain = meta::chain(conn, row.id)?;
    chain.remove(0);
    Ok((row, chain))
}

/// `snapshots/<id>/fs` of a snapshot; a layer-backed snapshot's link to its layer is made at its
/// first use (and again if lost).
fn reachable(store: &Store, r: &meta::Row) -> Result<PathBuf> {
    if let Some(d) = &r.diff_id {
        let target = PathBuf::from("../../layers/sha256").join(d.hex());
        link_layer(&dir(store, r.id), &target)?;
    }
    Ok(fs_dir(store, r.id))
}

/// Insert an active or view snapshot and make its directory, in the caller's transaction.
pub(crate) fn create_in(
    tx: &rusqlite::Connection,
    snapshots_dir: &Path,
    key: &str,
    parent: Option<&str>,
    kind: Kind,
    labels: &BTreeMap<String, String>,
) -> Result<meta::Row> {
    if kind == Kind::Committed {
        return Err(SnapshotError::Invalid(format!(
            "snapshot {key:?}: commit an active snapshot to make a committed one"
        )));
    }
    let row = meta::insert(tx, key, parent, kind, None, labels)?;
    make_dir(snapshots_dir, row.id, kind)?;
    Ok(row)
}

/// Make `snapshots/<id>` (with `fs`, and `work` for an active snapshot) under a temporary name,
/// then rename it into place. Called inside the transaction that inserts the row: a directory
/// already at that place belongs to no row (ids are only reused after a rolled-back insert) and
/// is replaced.
fn make_dir(snaps: &Path, id: i64, kind: Kind) -> Result<()> {
    let mut b = fs::DirBuilder::new();
    b.mode(0o700);
    match b.create(snaps) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(SnapshotError::Io { path: snaps.into(), source: e })
        }
        _ => {}
    }
    let tmp = snaps.join(format!("new-{id}-{}", std::process::id()));
    let _ = remove_tree(&tmp);
    let made = (|| -> io::Result<()> {
        b.create(&tmp)?;
        let fs_path = tmp.join("fs");
        b.create(&fs_path)?;
        // The tree becomes "/" of a mount when nothing above it says otherwise (an overlay's
        // root takes the upper's mode): match a conventional root.
        fs::set_permissions(&fs_path, fs::Permissions::from_mode(0o755))?;
        if kind == Kind::Active {
            b.create(tmp.join("work"))?;
        }
        Ok(())
    })();
    if let Err(e) = made {
        let _ = remove_tree(&tmp);
        return Err(SnapshotError::Io { path: tmp, source: e });
    }
    let dst = snaps.join(id.to_string());
    if fs::symlink_metadata(&dst).is_ok() {
        tracing::info!(path = %dst.display(), "replacing snapshot directory without metadata");
        let _ = remove_tree(&dst);
    }
    fs::rename(&tmp, &dst).map_err(|e| {
        let _ = remove_tree(&tmp);
        SnapshotError::Io { path: dst, source: e }
    })
}

/// `dir/fs -> target`, made when missing (concurrent callers agree on the same link).
fn link_layer(dir: &Path, target: &Path) -> Result<()> {
    let link = dir.join("fs");
    if let Ok(t) = fs::read_link(&link) {
        if t == target {
            return Ok(());
        }
        let _ = fs::remove_file(&link);
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(SnapshotError::Io { path: dir.into(), source: e })
        }
        _ => {}
    }
    match std::os::unix::fs::symlink(target, &link) {
        Ok(()) => Ok(()),
        Err(e)
            if e.kind() == io::ErrorKind::AlreadyExists
                && fs::read_link(&link).is_ok_and(|t| t == target) =>
        {
            Ok(())
        }
        Err(e) => Err(SnapshotError::Io { path: link, source: e }),
    }
}

/// Blocks and distinct inodes of a tree (hard links counted once), without following links.
pub fn measure(root: &Path) -> Result<Usage> {
    let mut seen = std::collections::HashSet::new();
    let mut u = Usage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound && p != root => continue,
            Err(e) => return Err(SnapshotError::Io { path: p, source: e }),
        };
        if seen.insert((md.dev(), md.ino())) {
            u.inodes += 1;
            u.size += md.blocks() * 512;
        }
        if md.is_dir() {
            for e in fs::read_dir(&p).map_err(io_at(&p))? {
                stack.push(e.map_err(io_at(&p))?.path());
            }
        }
    }
    Ok(u)
}

#[cfg(test)]
impl Store {
    /// `stat` without a `&mut` borrow, for tests.
    pub(crate) fn snapshots_ref_stat(&self, key: &str) -> Info {
        let c = self.db.conn();
        meta::info(c, &meta::get(c, key).unwrap()).unwrap()
    }
}
