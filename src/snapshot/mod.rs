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
//! The snapshot core is the only code that creates or removes snapshot rows together with their
//! directories. Rows live in the store's database (the SQL is `crate::meta::snapshots`), one
//! transaction per operation; directories are made before the transaction commits and renamed into
//! place, so a crash leaves either the row and its directory or an orphan directory that
//! [`Snapshots::cleanup`] (and every store's recovery) removes. Containers and image chains are
//! written through it too: [`Snapshots::create_container`], [`Snapshots::remove_container`],
//! [`Snapshots::publish_image`], [`Snapshots::prune_image_chains`], each one transaction for the
//! caller's rows and the snapshots' together.
//!
//! Below it: the store (paths, staging, trash) and meta (rows). It knows nothing above.

mod mounts;
#[cfg(test)]
mod tests;

pub use crate::error::ErrorKind;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use crate::meta::{chain_ids, Info, Kind, Usage};

/// The key of container `name`'s snapshot. containerd's keys are `NAMESPACE/NUMBER/NAME`, so
/// this form never collides with one.
pub fn container_key(name: &str) -> String {
    crate::meta::container_snapshot_key(name)
}
pub use mounts::Mount;

use crate::digest::Sha256Digest;
use crate::meta::snapshots as rows;
use crate::meta::snapshots::Row;
use crate::meta::MetaError;
use crate::store::{remove_tree, Store, StoreError};

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
    Meta(#[source] MetaError),
    /// What the rows written with snapshots (an image's, a container's) failed with, as meta
    /// says it.
    #[error(transparent)]
    Rows(MetaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl From<MetaError> for SnapshotError {
    /// What meta found wrong with a snapshot becomes the snapshot error it stands for; the rest
    /// (the database, an image or container row) is the cause of a metadata error.
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::SnapshotNotFound(k) => SnapshotError::NotFound(k),
            MetaError::ParentNotFound(p) => SnapshotError::ParentNotFound(p),
            MetaError::SnapshotExists(k) => SnapshotError::AlreadyExists(k),
            MetaError::NotActive { key, kind } => SnapshotError::NotActive { key, kind },
            MetaError::ParentNotCommitted { parent, kind } => {
                SnapshotError::ParentNotCommitted { parent, kind }
            }
            MetaError::Invalid(m) => SnapshotError::Invalid(m),
            MetaError::Corrupt(m) => SnapshotError::Corrupt(m),
            e => SnapshotError::Meta(e),
        }
    }
}

/// An error of an operation that writes an image's or a container's rows with snapshots: meta's
/// own failures are said as meta says them ([`SnapshotError::Rows`]).
fn rows_err(e: SnapshotError) -> SnapshotError {
    match e {
        SnapshotError::Meta(m) => SnapshotError::Rows(m),
        e => e,
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
            SnapshotError::Meta(e) | SnapshotError::Rows(e) => e.kind(),
            SnapshotError::Store(e) => e.kind(),
            SnapshotError::Corrupt(_) | SnapshotError::Io { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io { path: path.to_path_buf(), source }
}

/// The snapshots of a store.
pub struct Snapshots<'s> {
    store: &'s mut Store,
}

/// A snapshot's directory, `snapshots/<id>`.
pub fn dir(store: &Store, id: i64) -> PathBuf {
    store.snapshot_dir(id)
}

/// A snapshot's tree, `snapshots/<id>/fs`.
pub fn fs_dir(store: &Store, id: i64) -> PathBuf {
    dir(store, id).join("fs")
}

/// An active snapshot's overlay work dir, `snapshots/<id>/work`.
pub fn work_dir(store: &Store, id: i64) -> PathBuf {
    dir(store, id).join("work")
}

impl<'s> Snapshots<'s> {
    /// The snapshot core over `store`.
    pub fn new(store: &'s mut Store) -> Snapshots<'s> {
        Snapshots { store }
    }

    pub fn store(&self) -> &Store {
        self.store
    }

    /// The store, for a caller that records layers before it commits snapshots on them (a
    /// remote snapshotter's Prepare).
    pub fn store_mut(&mut self) -> &mut Store {
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
    ) -> Result<Row> {
        let snaps = self.store.snapshots_dir();
        self.store.meta_mut().write(|tx| create_in(tx, &snaps, key, parent, kind, labels))
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
        let row = rows::get(self.store.meta().conn(), key)?;
        if row.kind != Kind::Active {
            return Err(SnapshotError::NotActive { key: key.to_string(), kind: row.kind });
        }
        let usage = measure(&fs_dir(self.store, row.id))?;
        let work = work_dir(self.store, row.id);
        self.store.meta_mut().write(|tx| -> Result<_> { Ok(rows::commit(tx, name, key, usage, labels)?) })?;
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
        self.store.meta_mut().write(|tx| -> Result<_> {
            // Chain snapshots are keyed by the chain ID's own text.
            let Some(target) = rows::by_key(tx, chain_id)? else {
                return Ok(None);
            };
            let (Kind::Committed, Some(diff_id)) = (target.kind, target.diff_id.clone()) else {
                return Ok(None);
            };
            commit_layer_in(tx, name, parent, chain_id, &diff_id, labels)
        })
    }

    /// The committed snapshot over `parent` (none: a bottom one) labelled `label` = `value`,
    /// if there is one; `None` too when `parent` does not exist. This is how a containerd
    /// snapshotter finds a layer chain another containerd namespace unpacked: containerd's
    /// unpacker labels each layer's snapshot with its chain ID (`containerd.io/snapshot.ref`),
    /// once it has checked the applied layer's diff ID.
    pub fn committed_labelled(&self, parent: Option<&str>, label: &str, value: &str) -> Result<Option<Info>> {
        let c = self.store.meta().conn();
        let parent_id = match parent.filter(|p| !p.is_empty()) {
            None => None,
            Some(p) => match rows::by_key(c, p)? {
                Some(r) => Some(r.id),
                None => return Ok(None),
            },
        };
        match rows::committed_labelled(c, parent_id, label, value)? {
            Some(r) => Ok(Some(rows::info(c, &r)?)),
            None => Ok(None),
        }
    }

    /// Commit `name` over `parent` backed by layer `diff_id`, which the store holds (unpacked,
    /// or remote: a remote snapshotter's layer just recorded), when `parent`'s chain with that
    /// layer is chain `chain_id`; `None` otherwise (a parent whose content containerd applied
    /// itself has no known chain).
    pub fn commit_layer(
        &mut self,
        name: &str,
        parent: Option<&str>,
        chain_id: &str,
        diff_id: &Sha256Digest,
        labels: &BTreeMap<String, String>,
    ) -> Result<Option<Info>> {
        self.store.meta_mut().write(|tx| commit_layer_in(tx, name, parent, chain_id, diff_id, labels))
    }

    /// Remove a snapshot (not one with children, nor one a container stands on). The row goes
    /// first, then the directory in one rename to staging.
    pub fn remove(&mut self, key: &str) -> Result<()> {
        let id = self.store.meta_mut().write(|tx| -> Result<_> {
            let r = rows::get(tx, key)?;
            if rows::has_children(tx, r.id)? {
                return Err(SnapshotError::HasChildren(key.to_string()));
            }
            if let Some(container) = rows::container_of(tx, r.id)? {
                return Err(SnapshotError::InUse { key: key.to_string(), container });
            }
            rows::delete(tx, r.id)?;
            Ok(r.id)
        })?;
        let d = dir(self.store, id);
        drop(self.store.trash(&d)?);
        Ok(())
    }

    pub fn stat(&self, key: &str) -> Result<Info> {
        let c = self.store.meta().conn();
        Ok(rows::info(c, &rows::get(c, key)?)?)
    }

    /// Change a snapshot's labels, as containerd's Update: with no field paths (or `labels`)
    /// the labels are replaced; `labels.KEY` sets or (absent from `info`) removes one label.
    /// Other fields cannot change.
    pub fn update(&mut self, info: &Info, fieldpaths: &[String]) -> Result<Info> {
        let key = info.name.clone();
        self.store.meta_mut().write(|tx| -> Result<_> {
            let r = rows::get(tx, &key)?;
            let mut labels = rows::labels(tx, r.id)?;
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
                    )));
                }
            }
            rows::set_labels(tx, r.id, &labels)?;
            rows::touch(tx, r.id)?;
            Ok(rows::info(tx, &rows::get(tx, &key)?)?)
        })
    }

    /// Disk usage of the snapshot's own tree: recorded at commit, measured now for an active one.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let c = self.store.meta().conn();
        let r = rows::get(c, key)?;
        if let Some(d) = &r.diff_id {
            return Ok(rows::layer_usage(c, d)?);
        }
        match (r.kind, r.size, r.inodes) {
            (Kind::Committed, Some(size), Some(inodes)) => Ok(Usage { size, inodes }),
            _ => measure(&fs_dir(self.store, r.id)),
        }
    }

    /// Every snapshot, oldest first.
    pub fn walk(&self) -> Result<Vec<Info>> {
        let c = self.store.meta().conn();
        rows::all(c)?.iter().map(|r| Ok(rows::info(c, r)?)).collect()
    }

    /// Remove what no row owns under `snapshots/`: directories a crashed create or remove left
    /// (every store's recovery does it too, see [`Store::recover`]).
    pub fn cleanup(&mut self) -> Result<Vec<PathBuf>> {
        Ok(self.store.remove_orphan_snapshot_dirs()?)
    }

    /// Make sure the committed snapshots of a layer chain exist, in the caller's transaction:
    /// each keyed by its chain ID and backed by its layer's directory (linked at first use, see
    /// [`mounts`]), so no directory is made here. Returns the top one's key, `None` for no layers.
    pub(crate) fn ensure_chain(tx: &crate::meta::Tx, diff_ids: &[Sha256Digest]) -> Result<Option<String>> {
        Ok(rows::ensure_chain(tx, diff_ids)?.map(|_| chain_key(diff_ids)))
    }

    /// Publish an image: its rows (name, manifest, config, blobs, layers; the import's lease
    /// released) and its layer chain's committed snapshots, in one transaction. Returns the name
    /// as stored (its canonical form).
    pub fn publish_image(&mut self, img: &crate::meta::NewImage<'_>) -> Result<String> {
        let chain: Vec<Sha256Digest> = img.layers.iter().map(|l| l.diff_id.clone()).collect();
        self.store
            .meta_mut()
            .write(|tx| -> Result<_> {
                let name = crate::meta::put_image_rows(tx, img)?;
                Self::ensure_chain(tx, &chain)?;
                Ok(name)
            })
            .map_err(rows_err)
    }

    /// Create container `name` over what image `image` names now: its rows (bound to the image's
    /// manifest and layers) and its snapshot (an active one, or a view when `read_only`) over the
    /// top of the image's chain, in one transaction. The snapshot's directory is made inside it,
    /// before the commit, and removed again when the commit fails; a crash in between leaves an
    /// orphan directory that recovery removes.
    pub fn create_container(
        &mut self,
        name: &str,
        image: &str,
        read_only: bool,
        volatile: bool,
    ) -> Result<crate::meta::ContainerRow> {
        let snaps = self.store.snapshots_dir();
        let key = crate::meta::container_snapshot_key(name);
        let kind = if read_only { Kind::View } else { Kind::Active };
        let made = std::cell::Cell::new(None);
        let done = self
            .store
            .meta_mut()
            .write(|tx| -> Result<_> {
                let (mut row, chain) =
                    crate::meta::insert_container_rows(tx, name, image, read_only, volatile)?;
                let parent = Self::ensure_chain(tx, &chain)?;
                let snap = create_in(tx, &snaps, &key, parent.as_deref(), kind, &BTreeMap::new())?;
                made.set(Some(snap.id));
                crate::meta::set_container_snapshot(tx, name, snap.id)?;
                row.snapshot = Some(snap.id);
                Ok(row)
            })
            .map_err(rows_err);
        if let (Err(_), Some(id)) = (&done, made.get()) {
            // The directory was made for a row that was never committed.
            let _ = self.store.trash(&dir(self.store, id));
        }
        done
    }

    /// Remove container `name`'s rows and its snapshot (row, then directory in one rename to
    /// staging), in one transaction. Returns whether it existed.
    pub fn remove_container(&mut self, name: &str) -> Result<bool> {
        let (removed, snap) = self
            .store
            .meta_mut()
            .write(|tx| -> Result<_> {
                let (removed, snap) = crate::meta::delete_container_rows(tx, name)?;
                if let Some(id) = snap {
                    rows::delete(tx, id)?;
                }
                Ok((removed, snap))
            })
            .map_err(rows_err)?;
        if let Some(id) = snap {
            drop(self.store.trash(&dir(self.store, id))?);
        }
        Ok(removed)
    }

    /// Remove the committed snapshots of layer chains that no image names any more (and that
    /// nothing stands on: a container, a longer chain, a containerd snapshot), in one
    /// transaction, then their directories. Returns their ids.
    pub fn prune_image_chains(&mut self) -> Result<Vec<i64>> {
        let removed = self
            .store
            .meta_mut()
            .write(|tx| Ok::<_, SnapshotError>(crate::meta::delete_unnamed_chain_rows(tx)?))
            .map_err(rows_err)?;
        for id in &removed {
            drop(self.store.trash(&dir(self.store, *id))?);
        }
        Ok(removed)
    }
}

/// See [`Snapshots::commit_layer`]; in the caller's transaction.
fn commit_layer_in(
    tx: &crate::meta::Tx,
    name: &str,
    parent: Option<&str>,
    chain_id: &str,
    diff_id: &Sha256Digest,
    labels: &BTreeMap<String, String>,
) -> Result<Option<Info>> {
    let mut diff_ids = Vec::new();
    if let Some(p) = parent.filter(|p| !p.is_empty()) {
        let pr = rows::by_key(tx, p)?.ok_or_else(|| SnapshotError::ParentNotFound(p.to_string()))?;
        for r in rows::chain(tx, pr.id)?.into_iter().rev() {
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
    let row = rows::insert(tx, name, parent, Kind::Committed, Some(diff_id), labels)?;
    Ok(Some(rows::info(tx, &row)?))
}

/// The key of a layer chain's top committed snapshot: its chain ID.
fn chain_key(diff_ids: &[Sha256Digest]) -> String {
    chain_ids(diff_ids).pop().map(|c| rows::chain_key(&c)).unwrap_or_default()
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

/// The overlay of an active or view snapshot whose ancestors hold remote layers (a lazily pulled
/// image's chain), and those layers (top first); `None` when none is remote, and the ordinary
/// [`mounts`] serve. Each lower is the directory itself, a remote layer's its skeleton tree
/// (`remote/<diff_id>/tree`, which the caller makes): only strata-fuse, told which lowers are
/// remote, can serve such a stack (the kernel would show empty files). A view of one parent
/// gets the snapshot's own empty tree as the second lower a read-only overlay needs.
pub fn remote_overlay(
    store: &Store,
    key: &str,
) -> Result<Option<(kernel_overlay::OverlaySpec, Vec<crate::store::RemoteLayerRow>)>> {
    let (row, parents) = mountable(store, key)?;
    let mut remote = Vec::new();
    let mut lowers = Vec::with_capacity(parents.len());
    for r in &parents {
        lowers.push(match &r.diff_id {
            Some(d) => match store.remote_layer(d)? {
                Some(rl) => {
                    remote.push(rl);
                    store.remote_tree(d)
                }
                None => store.layer_path(d),
            },
            None => fs_dir(store, r.id),
        });
    }
    if remote.is_empty() {
        return Ok(None);
    }
    let mut spec = mounts::overlay_spec(store, &row, lowers);
    spec.empty_lower = Some(fs_dir(store, row.id));
    Ok(Some((spec, remote)))
}

/// A snapshot's row and the trees of its ancestors (top first), each made reachable first.
fn resolve(store: &Store, key: &str) -> Result<(Row, Vec<PathBuf>)> {
    let (row, parents) = mountable(store, key)?;
    let lowers = parents.iter().map(|r| reachable(store, r)).collect::<Result<Vec<_>>>()?;
    Ok((row, lowers))
}

/// An active or view snapshot's row and its ancestors' rows, nearest first; a committed one has
/// no mounts of its own.
fn mountable(store: &Store, key: &str) -> Result<(Row, Vec<Row>)> {
    let conn = store.meta().conn();
    let row = rows::get(conn, key)?;
    if row.kind == Kind::Committed {
        return Err(SnapshotError::Committed(key.to_string()));
    }
    let mut chain = rows::chain(conn, row.id)?;
    chain.remove(0);
    Ok((row, chain))
}

/// `snapshots/<id>/fs` of a snapshot; a layer-backed snapshot's link to its layer is made at its
/// first use (and again if lost).
fn reachable(store: &Store, r: &Row) -> Result<PathBuf> {
    if let Some(d) = &r.diff_id {
        let target = PathBuf::from("../../layers/sha256").join(d.hex());
        link_layer(&dir(store, r.id), &target)?;
    }
    Ok(fs_dir(store, r.id))
}

/// Insert an active or view snapshot and make its directory, in the caller's transaction.
fn create_in(
    tx: &crate::meta::Tx,
    snapshots_dir: &Path,
    key: &str,
    parent: Option<&str>,
    kind: Kind,
    labels: &BTreeMap<String, String>,
) -> Result<Row> {
    if kind == Kind::Committed {
        return Err(SnapshotError::Invalid(format!(
            "snapshot {key:?}: commit an active snapshot to make a committed one"
        )));
    }
    let row = rows::insert(tx, key, parent, kind, None, labels)?;
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
        let c = self.meta().conn();
        rows::info(c, &rows::get(c, key).unwrap()).unwrap()
    }
}
