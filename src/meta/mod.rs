//! Metadata: one SQLite database (WAL mode) in the state root, and every line of SQL strata runs.
//!
//! The bottom of the stack: it uses no other part of strata's core (only digests, names and
//! times), and its one error type, [`MetaError`], wraps nothing from above. The store
//! ([`crate::store`]) opens it and is its only way in, with the snapshot core
//! ([`crate::snapshot`]), which runs the snapshot tables' functions ([`snapshots`]) inside its
//! transactions and makes the directories that go with the rows.
//!
//! Tables:
//! - `blobs(digest, size, media_type)`: content-addressed files under `blobs/sha256/`.
//! - `layers(diff_id, size, entries, created)`: unpacked layer directories under `layers/sha256/`.
//! - `images(name, manifest_digest, config_digest, created)` and `image_layers(name, idx, diff_id,
//!   blob_digest, media_type, blob_size)`: the image -> layer references. A layer's reference count is
//!   the number of `image_layers` rows (plus leases) naming it; see [`Db::layer_refcount`].
//! - `leases(token, diff_id)`: layers an import in progress holds; a dead import's leases are
//!   released on the next start-up (see `store::Store::recover`).
//! - `containers(name, image, manifest_digest, config_digest, ...)` and `container_layers(name, idx,
//!   diff_id, blob_digest, media_type, blob_size)`: writable snapshots, bound to the manifest and
//!   layers their image had when they were created (a name that later moves to another manifest
//!   changes no container). `container_layers` rows hold layers and blobs against gc as
//!   `image_layers` rows do.
//! - `snapshots`, `snapshot_labels`: see [`snapshots`].
//!
//! Every state change is one transaction; a busy timeout makes concurrent processes wait. The
//! schema carries its version in `PRAGMA user_version`; older state roots are migrated on open,
//! inside one immediate transaction, so concurrent first opens serialize instead of racing.

pub mod snapshots;

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::digest::Sha256Digest;
pub use snapshots::{chain_ids, Info, Kind, Usage};

/// A digest is stored as its `sha256:<hex>` text; a malformed value read back is a conversion error, so a
/// digest taken from the database never reaches a path join unchecked.
impl rusqlite::types::ToSql for Sha256Digest {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.to_string()))
    }
}

impl rusqlite::types::FromSql for Sha256Digest {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let s = v.as_str()?;
        Sha256Digest::parse(s).map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

/// A transaction (or a connection) that meta's functions run in. Only this module writes SQL
/// with it; above, it is passed through.
pub type Tx = Connection;

/// Metadata errors. Each message says its own part; the cause, if any, is its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database {path}")]
    Open { path: String, source: rusqlite::Error },
    #[error("metadata database")]
    Sql(#[from] rusqlite::Error),
    #[error("metadata database has schema version {found}; this strata supports up to {supported}")]
    TooNew { found: i64, supported: i64 },
    #[error("image {0:?} not found")]
    NoImage(String),
    #[error("image ID prefix {prefix:?} is ambiguous: {count} images have IDs that start with it")]
    AmbiguousImage { prefix: String, count: usize },
    #[error("metadata database migration: {0}")]
    Migration(String),
    #[error("container {0:?} already exists")]
    ContainerExists(String),
    #[error(transparent)]
    Name(#[from] crate::reference::ReferenceError),
    #[error("snapshot {0:?} not found")]
    SnapshotNotFound(String),
    #[error("parent snapshot {0:?} not found")]
    ParentNotFound(String),
    #[error("snapshot {0:?} already exists")]
    SnapshotExists(String),
    #[error("snapshot {key:?} is {kind}, not active")]
    NotActive { key: String, kind: Kind },
    #[error("parent snapshot {parent:?} is {kind}, not committed")]
    ParentNotCommitted { parent: String, kind: Kind },
    #[error("{0}")]
    Invalid(String),
    #[error("snapshot metadata is inconsistent: {0}")]
    Corrupt(String),
}

impl MetaError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            MetaError::NoImage(_) | MetaError::SnapshotNotFound(_) | MetaError::ParentNotFound(_) => {
                ErrorKind::NotFound
            }
            MetaError::AmbiguousImage { .. }
            | MetaError::Name(_)
            | MetaError::ParentNotCommitted { .. }
            | MetaError::Invalid(_) => ErrorKind::InvalidArgument,
            MetaError::ContainerExists(_) | MetaError::SnapshotExists(_) => ErrorKind::AlreadyExists,
            MetaError::NotActive { .. } => ErrorKind::FailedPrecondition,
            MetaError::Migration(_)
            | MetaError::Corrupt(_)
            | MetaError::Open { .. }
            | MetaError::Sql(_)
            | MetaError::TooNew { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS layers (
    diff_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    config_digest TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS image_layers (
    name TEXT NOT NULL REFERENCES images(name) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    diff_id TEXT NOT NULL REFERENCES layers(diff_id),
    blob_digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    blob_size INTEGER NOT NULL,
    PRIMARY KEY (name, idx)
);
CREATE INDEX IF NOT EXISTS image_layers_diff_id ON image_layers(diff_id);
CREATE TABLE IF NOT EXISTS leases (
    token TEXT NOT NULL,
    diff_id TEXT NOT NULL,
    PRIMARY KEY (token, diff_id)
);
CREATE TABLE IF NOT EXISTS containers (
    name TEXT PRIMARY KEY,
    image TEXT NOT NULL REFERENCES images(name),
    read_only INTEGER NOT NULL,
    volatile INTEGER NOT NULL,
    created INTEGER NOT NULL
);
"#;

/// Version 1: containers are bound to a manifest and its layers.
pub(crate) const SCHEMA_V1: &str = r#"
ALTER TABLE containers ADD COLUMN manifest_digest TEXT NOT NULL DEFAULT '';
ALTER TABLE containers ADD COLUMN config_digest TEXT NOT NULL DEFAULT '';
CREATE TABLE container_layers (
    name TEXT NOT NULL REFERENCES containers(name) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    diff_id TEXT NOT NULL REFERENCES layers(diff_id),
    blob_digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    blob_size INTEGER NOT NULL,
    PRIMARY KEY (name, idx)
);
CREATE INDEX container_layers_diff_id ON container_layers(diff_id);
-- Containers of an older root stand on what their image name points to now.
UPDATE containers SET
    manifest_digest = (SELECT manifest_digest FROM images WHERE images.name = containers.image),
    config_digest = (SELECT config_digest FROM images WHERE images.name = containers.image);
INSERT INTO container_layers (name, idx, diff_id, blob_digest, media_type, blob_size)
    SELECT c.name, il.idx, il.diff_id, il.blob_digest, il.media_type, il.blob_size
    FROM containers c JOIN image_layers il ON il.name = c.image;
"#;

/// Version 2: snapshots (see [`snapshots`]); containers stand on one.
const SCHEMA_V2: &str = r#"
ALTER TABLE containers ADD COLUMN snapshot INTEGER REFERENCES snapshots(id);
"#;

/// Version 3: a container names the image it was created from for information only (it is
/// bound to a manifest since version 1), so `containers.image` no longer references
/// `images(name)`: a name that moved to another manifest can then be removed. SQLite cannot
/// drop a constraint in place; the table is rebuilt (run with foreign keys off, see
/// [`Db::migrate`]). Image names take their canonical form ([`canonical_names`]).
const SCHEMA_V3: &str = r#"
CREATE TABLE containers_v3 (
    name TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    read_only INTEGER NOT NULL,
    volatile INTEGER NOT NULL,
    created INTEGER NOT NULL,
    manifest_digest TEXT NOT NULL DEFAULT '',
    config_digest TEXT NOT NULL DEFAULT '',
    snapshot INTEGER REFERENCES snapshots(id)
);
INSERT INTO containers_v3 (name, image, read_only, volatile, created, manifest_digest, config_digest, snapshot)
    SELECT name, image, read_only, volatile, created, manifest_digest, config_digest, snapshot FROM containers;
DROP TABLE containers;
ALTER TABLE containers_v3 RENAME TO containers;
"#;

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = 3;

/// The key of container `name`'s snapshot. containerd's keys are `NAMESPACE/NUMBER/NAME`, so
/// this form never collides with one.
pub fn container_snapshot_key(name: &str) -> String {
    format!("strata/container/{name}")
}

/// A stored image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageRow {
    pub name: String,
    pub manifest_digest: Sha256Digest,
    pub config_digest: Sha256Digest,
    pub created: i64,
}

/// One layer of an image, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageLayerRow {
    pub diff_id: Sha256Digest,
    pub blob_digest: Sha256Digest,
    pub media_type: String,
    pub blob_size: u64,
    /// Unpacked size in bytes.
    pub size: u64,
}

/// A stored container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContainerRow {
    pub name: String,
    /// The image name it was created from (`image rm` of that name refuses while it exists).
    pub image: String,
    /// The manifest and config the name pointed to at create: what the container stands on.
    pub manifest_digest: Sha256Digest,
    pub config_digest: Sha256Digest,
    pub read_only: bool,
    pub volatile: bool,
    pub created: i64,
    /// The id of the snapshot it is (active, or a view when read-only); `None` only in a root
    /// written before snapshots, until its migration completes on open.
    #[serde(skip)]
    pub snapshot: Option<i64>,
}

/// The metadata database.
pub struct Db {
    conn: Connection,
}

pub use crate::time::now;

impl Db {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Db> {
        let wrap = |source| MetaError::Open { path: path.display().to_string(), source };
        let conn = Connection::open(path).map_err(wrap)?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(wrap)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(wrap)?;
        let mut db = Db { conn };
        db.migrate().map_err(|e| match e {
            MetaError::Sql(source) => wrap(source),
            e => e,
        })?;
        Ok(db)
    }

    /// Create or upgrade the schema. The version is read again inside an immediate transaction, so
    /// of several processes opening an old (or new) root at once exactly one migrates it.
    fn migrate(&mut self) -> Result<()> {
        let version = |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
        if version(&self.conn)? == SCHEMA_VERSION {
            return Ok(());
        }
        // Version 3 rebuilds `containers`: with foreign keys on, dropping the old table would
        // delete the rows that reference it. They are off for the migration only (the pragma
        // is ignored inside a transaction), and checked before it commits.
        self.conn.pragma_update(None, "foreign_keys", "OFF")?;
        let done = self.migrate_tx(version);
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        done
    }

    fn migrate_tx(&mut self, version: impl Fn(&Connection) -> rusqlite::Result<i64>) -> Result<()> {
        self.write(|tx| -> Result<()> {
            let v = version(tx)?;
            if v > SCHEMA_VERSION {
                return Err(MetaError::TooNew { found: v, supported: SCHEMA_VERSION });
            }
            tx.execute_batch(SCHEMA)?;
            if v < 1 {
                tx.execute_batch(SCHEMA_V1)?;
            }
            tx.execute_batch(snapshots::SCHEMA)?;
            if v < 2 {
                tx.execute_batch(SCHEMA_V2)?;
                migrate_to_snapshots(tx)?;
            }
            if v < 3 {
                tx.execute_batch(SCHEMA_V3)?;
                canonical_names(tx)?;
            }
            let broken: Option<String> =
                tx.query_row("PRAGMA foreign_key_check", [], |r| r.get(0)).optional()?;
            if let Some(table) = broken {
                return Err(MetaError::Migration(format!("a row of {table} references a missing row")));
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            Ok(())
        })
    }

    /// Run `f` in one immediate (write-locking) transaction.
    /// `f`'s error may be the caller's own (the snapshot core's), so that what it finds wrong
    /// inside the transaction keeps its type.
    pub fn write<T, E: From<MetaError>>(&mut self, f: impl FnOnce(&Tx) -> Result<T, E>) -> Result<T, E> {
        let tx =
            self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(MetaError::from)?;
        let out = f(&tx)?;
        tx.commit().map_err(MetaError::from)?;
        Ok(out)
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn has_layer(&self, diff_id: &Sha256Digest) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM layers WHERE diff_id = ?1", [diff_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn layer_size(&self, diff_id: &Sha256Digest) -> Result<Option<u64>> {
        Ok(self
            .conn
            .query_row("SELECT size FROM layers WHERE diff_id = ?1", [diff_id], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|s| s as u64))
    }

    /// Number of images, containers and live leases referring to a layer.
    pub fn layer_refcount(&self, diff_id: &Sha256Digest) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT (SELECT COUNT(*) FROM image_layers WHERE diff_id = ?1) + \
                    (SELECT COUNT(*) FROM container_layers WHERE diff_id = ?1) + \
                    (SELECT COUNT(*) FROM snapshots WHERE diff_id = ?1) + \
                    (SELECT COUNT(*) FROM leases WHERE diff_id = ?1)",
            [diff_id],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// The image a user means by `name`: see [`find_image`].
    pub fn image(&self, name: &str) -> Result<Option<ImageRow>> {
        find_image(&self.conn, name)
    }

    pub fn images(&self) -> Result<Vec<ImageRow>> {
        let mut st = self
            .conn
            .prepare("SELECT name, manifest_digest, config_digest, created FROM images ORDER BY name")?;
        let rows = st.query_map([], image_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The layers of an image (found as [`Db::image`] finds it), bottom first; none for a name
    /// that is no image.
    pub fn image_layers(&self, name: &str) -> Result<Vec<ImageLayerRow>> {
        match self.image(name)? {
            Some(row) => self.layer_list(LayerList::Image, &row.name),
            None => Ok(vec![]),
        }
    }

    /// The layers a container stands on, bottom first.
    pub fn container_layers(&self, name: &str) -> Result<Vec<ImageLayerRow>> {
        self.layer_list(LayerList::Container, name)
    }

    /// The rows of `image_layers` or `container_layers` for `name`, joined with their layer.
    fn layer_list(&self, list: LayerList, name: &str) -> Result<Vec<ImageLayerRow>> {
        let table = match list {
            LayerList::Image => "image_layers",
            LayerList::Container => "container_layers",
        };
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT t.diff_id, t.blob_digest, t.media_type, t.blob_size, l.size \
             FROM {table} t JOIN layers l ON l.diff_id = t.diff_id \
             WHERE t.name = ?1 ORDER BY t.idx"
        ))?;
        let rows = st.query_map([name], |r| {
            Ok(ImageLayerRow {
                diff_id: r.get(0)?,
                blob_digest: r.get(1)?,
                media_type: r.get(2)?,
                blob_size: r.get::<_, i64>(3)? as u64,
                size: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn container(&self, name: &str) -> Result<Option<ContainerRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, image, manifest_digest, config_digest, read_only, volatile, created, \
                 snapshot FROM containers WHERE name = ?1",
                [name],
                container_row,
            )
            .optional()?)
    }

    pub fn containers(&self) -> Result<Vec<ContainerRow>> {
        let mut st = self.conn.prepare(
            "SELECT name, image, manifest_digest, config_digest, read_only, volatile, created, \
             snapshot FROM containers ORDER BY name",
        )?;
        let rows = st.query_map([], container_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Layers no image, no container and no lease refers to.
    pub fn unreferenced_layers(&self) -> Result<Vec<Sha256Digest>> {
        let mut st = self.conn.prepare(
            "SELECT diff_id FROM layers WHERE diff_id NOT IN (SELECT diff_id FROM image_layers) \
             AND diff_id NOT IN (SELECT diff_id FROM container_layers) \
             AND diff_id NOT IN (SELECT diff_id FROM snapshots WHERE diff_id IS NOT NULL) \
             AND diff_id NOT IN (SELECT diff_id FROM leases)",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn all_layers(&self) -> Result<Vec<Sha256Digest>> {
        let mut st = self.conn.prepare("SELECT diff_id FROM layers")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Blob digests referenced by any image or container (manifests, configs, layer blobs).
    pub fn referenced_blobs(&self) -> Result<std::collections::HashSet<Sha256Digest>> {
        let mut out = std::collections::HashSet::new();
        let mut st = self.conn.prepare(
            "SELECT manifest_digest FROM images UNION SELECT config_digest FROM images \
             UNION SELECT blob_digest FROM image_layers \
             UNION SELECT manifest_digest FROM containers UNION SELECT config_digest FROM containers \
             UNION SELECT blob_digest FROM container_layers",
        )?;
        for r in st.query_map([], |r| r.get::<_, Sha256Digest>(0))? {
            out.insert(r?);
        }
        Ok(out)
    }

    pub fn lease_tokens(&self) -> Result<Vec<String>> {
        let mut st = self.conn.prepare("SELECT DISTINCT token FROM leases")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn add_lease(&mut self, token: &str, diff_id: &Sha256Digest) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO leases (token, diff_id) VALUES (?1, ?2)",
            params![token, diff_id],
        )?;
        Ok(())
    }

    pub fn drop_leases(&mut self, token: &str) -> Result<()> {
        self.conn.execute("DELETE FROM leases WHERE token = ?1", [token])?;
        Ok(())
    }

    pub fn insert_layer(&mut self, diff_id: &Sha256Digest, size: u64, entries: u64) -> Result<()> {
        self.conn.execute(
            // An upsert, not REPLACE: images and snapshots refer to the row.
            "INSERT INTO layers (diff_id, size, entries, created) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT(diff_id) DO UPDATE SET size = excluded.size, entries = excluded.entries",
            params![diff_id, size as i64, entries as i64, now()],
        )?;
        Ok(())
    }
}

/// The image a user means by `name`, as docker finds it: the name as stored, else its
/// canonical form ([`crate::reference::canonical`]: `busybox` finds `busybox:latest`), else
/// a unique prefix of an image ID (the config digest, with or without `sha256:`). Use the
/// returned row's `name` for everything after.
pub fn find_image(c: &Tx, name: &str) -> Result<Option<ImageRow>> {
    if let Some(row) = image_named(c, name)? {
        return Ok(Some(row));
    }
    if let Some(canonical) = crate::reference::canonical(name).filter(|c| c != name) {
        if let Some(row) = image_named(c, &canonical)? {
            return Ok(Some(row));
        }
    }
    image_by_id_prefix(c, name)
}

fn image_named(c: &Tx, name: &str) -> Result<Option<ImageRow>> {
    Ok(c.query_row(
        "SELECT name, manifest_digest, config_digest, created FROM images WHERE name = ?1",
        [name],
        image_row,
    )
    .optional()?)
}

/// The image whose ID (config digest) starts with `prefix`; names sharing one ID are one
/// image (the first name is returned). An error when the prefix fits several IDs.
fn image_by_id_prefix(c: &Tx, prefix: &str) -> Result<Option<ImageRow>> {
    let hex = prefix.strip_prefix("sha256:").unwrap_or(prefix);
    let is_hex = hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex.is_empty() || hex.len() > 64 || !is_hex {
        return Ok(None);
    }
    let mut st = c.prepare(
        "SELECT name, manifest_digest, config_digest, created FROM images \
         WHERE substr(config_digest, 8, ?2) = ?1 AND config_digest LIKE 'sha256:%' ORDER BY name",
    )?;
    let rows = st.query_map(params![hex, hex.len() as i64], image_row)?.collect::<Result<Vec<_>, _>>()?;
    let ids: std::collections::BTreeSet<&Sha256Digest> = rows.iter().map(|r| &r.config_digest).collect();
    if ids.len() > 1 {
        return Err(MetaError::AmbiguousImage { prefix: prefix.to_string(), count: ids.len() });
    }
    Ok(rows.into_iter().next())
}

fn image_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRow> {
    Ok(ImageRow { name: r.get(0)?, manifest_digest: r.get(1)?, config_digest: r.get(2)?, created: r.get(3)? })
}

fn container_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ContainerRow> {
    Ok(ContainerRow {
        name: r.get(0)?,
        image: r.get(1)?,
        manifest_digest: r.get(2)?,
        config_digest: r.get(3)?,
        read_only: r.get::<_, i64>(4)? != 0,
        volatile: r.get::<_, i64>(5)? != 0,
        created: r.get(6)?,
        snapshot: r.get(7)?,
    })
}

/// The diff_ids of an ordered layer list (`image_layers` or `container_layers`) of `name`.
fn diff_ids(c: &Connection, table: &str, name: &str) -> Result<Vec<Sha256Digest>> {
    let mut st = c.prepare_cached(&format!("SELECT diff_id FROM {table} WHERE name = ?1 ORDER BY idx"))?;
    let rows = st.query_map([name], |r| r.get(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Version 1 -> 2: every image's layer chain becomes committed snapshots, every container a
/// snapshot over its own chain. The container's directories move under `snapshots/` when the
/// store opens ([`crate::store::Store::open`]).
fn migrate_to_snapshots(tx: &Connection) -> Result<()> {
    let names = |sql: &str| -> Result<Vec<String>> {
        let mut st = tx.prepare(sql)?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    };
    for image in names("SELECT name FROM images")? {
        snapshots::ensure_chain(tx, &diff_ids(tx, "image_layers", &image)?)?;
    }
    let mut st = tx.prepare("SELECT name, read_only FROM containers WHERE snapshot IS NULL")?;
    let containers = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? != 0)))?
        .collect::<Result<Vec<_>, _>>()?;
    for (name, read_only) in containers {
        let chain = diff_ids(tx, "container_layers", &name)?;
        snapshots::ensure_chain(tx, &chain)?;
        let parent = chain_ids(&chain).pop().map(|c| c.to_string());
        let kind = if read_only { Kind::View } else { Kind::Active };
        let snap = snapshots::insert(
            tx,
            &container_snapshot_key(&name),
            parent.as_deref(),
            kind,
            None,
            &Default::default(),
        )?;
        tx.execute("UPDATE containers SET snapshot = ?1 WHERE name = ?2", params![snap.id, name])?;
    }
    Ok(())
}

/// Version 2 -> 3: every stored image name takes its canonical form (`busybox` becomes
/// `busybox:latest`, see [`crate::reference::canonical`]) unless that form is taken already; the
/// containers created from it follow. A name that is no reference stays as it is.
fn canonical_names(tx: &Connection) -> Result<()> {
    let mut st = tx.prepare("SELECT name FROM images")?;
    let names = st.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
    for name in names {
        let Some(c) = crate::reference::canonical(&name).filter(|c| *c != name) else { continue };
        let taken: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM images WHERE name = ?1)", [&c], |r| r.get(0))?;
        if taken {
            continue;
        }
        tx.execute("UPDATE images SET name = ?1 WHERE name = ?2", [&c, &name])?;
        tx.execute("UPDATE image_layers SET name = ?1 WHERE name = ?2", [&c, &name])?;
        tx.execute("UPDATE containers SET image = ?1 WHERE image = ?2", [&c, &name])?;
    }
    Ok(())
}

/// The containers standing on `manifest` when `name` is its only name (sorted).
fn image_users(c: &Connection, name: &str, manifest: &Sha256Digest) -> Result<Vec<String>> {
    let others: bool = c.query_row(
        "SELECT EXISTS (SELECT 1 FROM images WHERE manifest_digest = ?1 AND name != ?2)",
        params![manifest, name],
        |r| r.get(0),
    )?;
    if others {
        return Ok(vec![]);
    }
    let mut st = c.prepare("SELECT name FROM containers WHERE manifest_digest = ?1 ORDER BY name")?;
    let users = st.query_map([manifest], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
    Ok(users)
}

/// Which ordered layer list a name has.
#[derive(Clone, Copy)]
enum LayerList {
    Image,
    Container,
}

/// What [`Db::remove_image`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemovedImage {
    /// The name as it was stored.
    Removed(String),
    NotFound,
    /// Containers created from the name (sorted).
    InUse(Vec<String>),
}

/// A new image's rows, written with [`put_image_rows`].
#[derive(Clone)]
pub struct NewImage<'a> {
    pub name: &'a str,
    pub manifest_digest: &'a Sha256Digest,
    pub config_digest: &'a Sha256Digest,
    /// Blobs to record: (digest, size, media type).
    pub blobs: Vec<(Sha256Digest, u64, String)>,
    /// Layers bottom first.
    pub layers: Vec<ImageLayerRow>,
    /// Lease token to release in the same transaction.
    pub lease: Option<&'a str>,
}

/// Record an image's rows (replacing an image of the same name) and release the import's lease,
/// in the caller's transaction; the snapshot core adds the image's layer chain in the same one
/// (see `crate::snapshot::Snapshots::publish_image`). The name is stored in its canonical form
/// ([`crate::reference::canonical`]), which is returned.
pub fn put_image_rows(tx: &Tx, img: &NewImage<'_>) -> Result<String> {
    crate::reference::validate_image_name(img.name)?;
    let name = crate::reference::canonical(img.name).unwrap_or_else(|| img.name.to_string());
    for (d, s, m) in &img.blobs {
        tx.execute(
            "INSERT OR IGNORE INTO blobs (digest, size, media_type) VALUES (?1, ?2, ?3)",
            params![d, *s as i64, m],
        )?;
    }
    tx.execute("DELETE FROM image_layers WHERE name = ?1", [&name])?;
    // An upsert, not REPLACE: the row (which containers name) is updated in place.
    tx.execute(
        "INSERT INTO images (name, manifest_digest, config_digest, created) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT(name) DO UPDATE SET \
         manifest_digest = excluded.manifest_digest, config_digest = excluded.config_digest, \
         created = excluded.created",
        params![name, img.manifest_digest, img.config_digest, now()],
    )?;
    for (i, l) in img.layers.iter().enumerate() {
        tx.execute(
            "INSERT INTO image_layers (name, idx, diff_id, blob_digest, media_type, blob_size) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![name, i as i64, l.diff_id, l.blob_digest, l.media_type, l.blob_size as i64],
        )?;
    }
    if let Some(t) = img.lease {
        tx.execute("DELETE FROM leases WHERE token = ?1", [t])?;
    }
    Ok(name)
}

impl Db {
    /// Remove an image name (found as [`Db::image`] finds it) and its rows, not its blobs or
    /// layers (see gc). As `docker rmi`, it refuses when containers stand on the image (its
    /// manifest) and this is its last name; a name that has moved to another manifest since
    /// a container was created from it is free. Checked in the same transaction, so a racing
    /// `container create` either comes first (and the removal refuses) or finds no image.
    pub fn remove_image(&mut self, name: &str) -> Result<RemovedImage> {
        let Some(row) = self.image(name)? else { return Ok(RemovedImage::NotFound) };
        self.write(|tx| {
            let manifest: Option<Sha256Digest> = tx
                .query_row("SELECT manifest_digest FROM images WHERE name = ?1", [&row.name], |r| r.get(0))
                .optional()?;
            let Some(manifest) = manifest else { return Ok(RemovedImage::NotFound) };
            let users = image_users(tx, &row.name, &manifest)?;
            if !users.is_empty() {
                return Ok(RemovedImage::InUse(users));
            }
            tx.execute("DELETE FROM image_layers WHERE name = ?1", [&row.name])?;
            tx.execute("DELETE FROM images WHERE name = ?1", [&row.name])?;
            Ok(RemovedImage::Removed(row.name.clone()))
        })
    }

    /// The containers that keep image `name` from being removed (see [`Db::remove_image`]).
    #[cfg(test)]
    pub fn image_users(&self, name: &str) -> Result<Vec<String>> {
        match image_named(&self.conn, name)? {
            Some(row) => image_users(&self.conn, &row.name, &row.manifest_digest),
            None => Ok(vec![]),
        }
    }

    pub fn remove_layer_row(&mut self, diff_id: &Sha256Digest) -> Result<()> {
        self.conn.execute("DELETE FROM layers WHERE diff_id = ?1", [diff_id])?;
        Ok(())
    }

    pub fn remove_blob_row(&mut self, digest: &Sha256Digest) -> Result<()> {
        self.conn.execute("DELETE FROM blobs WHERE digest = ?1", [digest])?;
        Ok(())
    }
}

/// Record a container over what image `image` (found as [`Db::image`] finds names) names now,
/// in the caller's transaction: the manifest, config and layer list are copied from the image's
/// rows, so the container keeps them whatever later happens to the name. Returns the row as
/// stored (its snapshot not set yet, see [`set_container_snapshot`]) and its layers' diff_ids,
/// bottom first. Run in the transaction that creates the container's snapshot: a racing `image
/// rm` has either removed the image (NoImage, as the user typed it) or finds the container.
pub fn insert_container_rows(
    tx: &Tx,
    name: &str,
    image: &str,
    read_only: bool,
    volatile: bool,
) -> Result<(ContainerRow, Vec<Sha256Digest>)> {
    let found = find_image(tx, image)?.ok_or_else(|| MetaError::NoImage(image.to_string()))?;
    let exists =
        tx.query_row("SELECT 1 FROM containers WHERE name = ?1", [name], |_| Ok(())).optional()?.is_some();
    if exists {
        return Err(MetaError::ContainerExists(name.to_string()));
    }
    let row = ContainerRow {
        name: name.to_string(),
        image: found.name.clone(),
        manifest_digest: found.manifest_digest,
        config_digest: found.config_digest,
        read_only,
        volatile,
        created: now(),
        snapshot: None,
    };
    tx.execute(
        "INSERT INTO containers \
         (name, image, manifest_digest, config_digest, read_only, volatile, created) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            row.name,
            row.image,
            row.manifest_digest,
            row.config_digest,
            row.read_only as i64,
            row.volatile as i64,
            row.created
        ],
    )?;
    tx.execute(
        "INSERT INTO container_layers (name, idx, diff_id, blob_digest, media_type, blob_size) \
         SELECT ?1, idx, diff_id, blob_digest, media_type, blob_size FROM image_layers \
         WHERE name = ?2",
        params![name, found.name],
    )?;
    let chain = diff_ids(tx, "container_layers", name)?;
    Ok((row, chain))
}

/// Bind container `name` to snapshot `id`.
pub fn set_container_snapshot(tx: &Tx, name: &str, id: i64) -> Result<()> {
    tx.execute("UPDATE containers SET snapshot = ?1 WHERE name = ?2", params![id, name])?;
    Ok(())
}

/// Remove a container's rows (its layer references go with them), in the caller's transaction.
/// Returns whether it existed and its snapshot's id, whose row and directory the snapshot core
/// removes.
pub fn delete_container_rows(tx: &Tx, name: &str) -> Result<(bool, Option<i64>)> {
    let snap: Option<Option<i64>> =
        tx.query_row("SELECT snapshot FROM containers WHERE name = ?1", [name], |r| r.get(0)).optional()?;
    tx.execute("DELETE FROM container_layers WHERE name = ?1", [name])?;
    let removed = tx.execute("DELETE FROM containers WHERE name = ?1", [name])? > 0;
    Ok((removed, snap.flatten()))
}

/// Delete the rows of committed chain snapshots that no image's chain names and nothing stands
/// on (leaves first, until none is left); returns their ids, whose directories the snapshot core
/// removes.
pub fn delete_unnamed_chain_rows(tx: &Tx) -> Result<Vec<i64>> {
    let keep: std::collections::HashSet<String> =
        image_chains(tx)?.iter().flat_map(|c| chain_ids(c)).map(|c| c.to_string()).collect();
    let mut removed = Vec::new();
    loop {
        let doomed: Vec<i64> = snapshots::chain_leaves(tx)?
            .into_iter()
            .filter(|(_, k)| !keep.contains(k))
            .map(|(id, _)| id)
            .collect();
        if doomed.is_empty() {
            return Ok(removed);
        }
        for id in doomed {
            snapshots::delete(tx, id)?;
            removed.push(id);
        }
    }
}

/// The layer lists (diff_ids, bottom first) of every image: the chains image names keep.
pub fn image_chains(tx: &Tx) -> Result<Vec<Vec<Sha256Digest>>> {
    let images: Vec<String> = {
        let mut st = tx.prepare("SELECT name FROM images")?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    images.iter().map(|image| diff_ids(tx, "image_layers", image)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the snapshot core's image publish writes: the image's rows and its chain.
    fn put_image(db: &mut Db, img: &NewImage<'_>) -> Result<String> {
        let chain: Vec<Sha256Digest> = img.layers.iter().map(|l| l.diff_id.clone()).collect();
        db.write(|tx| {
            let name = put_image_rows(tx, img)?;
            snapshots::ensure_chain(tx, &chain)?;
            Ok(name)
        })
    }

    /// The rows the snapshot core removes with a container.
    fn remove_container(db: &mut Db, name: &str) -> Result<bool> {
        db.write(|tx| {
            let (removed, snap) = delete_container_rows(tx, name)?;
            if let Some(id) = snap {
                snapshots::delete(tx, id)?;
            }
            Ok(removed)
        })
    }

    /// The rows the snapshot core's chain pruning removes: leaves of chains no image names.
    fn prune_image_chains(db: &mut Db) -> Result<Vec<i64>> {
        db.write(delete_unnamed_chain_rows)
    }

    /// A state root written before containers were bound to manifests (schema version 0) is
    /// migrated on open: each container stands on what its image name pointed to, and from then on
    /// a name moving to another manifest changes none of its containers.
    #[test]
    fn an_old_root_is_migrated() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("strata.db");
        // Digests named by what they stand for.
        let d =
            |what: &str| Sha256Digest::from_bytes(&<sha2::Sha256 as sha2::Digest>::digest(what.as_bytes()));
        let [l1, l2, m1, c1, b1, b2, m2, c2] = ["l1", "l2", "m1", "c1", "b1", "b2", "m2", "c2"].map(d);
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA).unwrap();
            c.execute_batch(&format!(
                "INSERT INTO layers VALUES ('{l1}', 10, 1, 0), ('{l2}', 20, 2, 0);
                 INSERT INTO images VALUES ('app', '{m1}', '{c1}', 0);
                 INSERT INTO image_layers VALUES ('app', 0, '{l1}', '{b1}', 'mt', 5),
                                                 ('app', 1, '{l2}', '{b2}', 'mt', 6);
                 INSERT INTO containers VALUES ('old', 'app', 0, 0, 0);"
            ))
            .unwrap();
        }
        let mut db = Db::open(&path).unwrap();
        let v: i64 = db.conn().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let old = db.container("old").unwrap().unwrap();
        assert_eq!((&old.manifest_digest, &old.config_digest), (&m1, &c1));
        let layers: Vec<Sha256Digest> =
            db.container_layers("old").unwrap().into_iter().map(|l| l.diff_id).collect();
        assert_eq!(layers, [l1.clone(), l2.clone()]);
        // The name moves to a one-layer manifest: the container keeps both layers, and gc keeps
        // them and their blobs.
        put_image(
            &mut db,
            &NewImage {
                name: "app",
                manifest_digest: &m2,
                config_digest: &c2,
                blobs: vec![],
                layers: vec![ImageLayerRow {
                    diff_id: l1.clone(),
                    blob_digest: b1.clone(),
                    media_type: "mt".into(),
                    blob_size: 5,
                    size: 10,
                }],
                lease: None,
            },
        )
        .unwrap();
        assert_eq!(db.container_layers("old").unwrap().len(), 2);
        assert!(db.unreferenced_layers().unwrap().is_empty());
        let blobs = db.referenced_blobs().unwrap();
        for b in [&m1, &c1, &b2, &m2] {
            assert!(blobs.contains(b), "{b} referenced");
        }
        // "old" stands on m1; "app" names m2 now, so nothing keeps the name.
        assert!(db.image_users("app").unwrap().is_empty());
        // Opening again is a no-op; removing the container releases l2.
        drop(db);
        let mut db = Db::open(&path).unwrap();
        // The container became a snapshot over the chain it stood on.
        let chain = chain_ids(&[l1.clone(), l2.clone()]);
        let snap = snapshots::get(db.conn(), &container_snapshot_key("old")).unwrap();
        assert_eq!(Some(snap.id), db.container("old").unwrap().unwrap().snapshot);
        let parents: Vec<String> =
            snapshots::chain(db.conn(), snap.id).unwrap().into_iter().skip(1).map(|r| r.key).collect();
        assert_eq!(parents, [chain[1].to_string(), chain[0].to_string()]);
        assert!(remove_container(&mut db, "old").unwrap());
        assert!(snapshots::by_key(db.conn(), &container_snapshot_key("old")).unwrap().is_none());
        // The old two-layer chain is now named by nothing: pruning it releases l2.
        assert_eq!(prune_image_chains(&mut db).unwrap().len(), 1);
        assert_eq!(db.unreferenced_layers().unwrap(), [l2]);
        assert_eq!(db.remove_image("app").unwrap(), RemovedImage::Removed("app:latest".into()));
        assert_eq!(db.remove_image("app").unwrap(), RemovedImage::NotFound);
    }
}

#[cfg(test)]
mod canonical_names {
    use super::*;

    /// Version 2 -> 3 renames a name to its canonical form only when that form is free: of
    /// `busybox` and `busybox:latest`, both stay, and each is still found as it is written.
    #[test]
    fn canonical_names_never_collide() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("strata.db");
        let hex = |n: u8| format!("sha256:{:064x}", n);
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.execute_batch(snapshots::SCHEMA).unwrap();
            c.execute_batch(SCHEMA_V2).unwrap();
            c.pragma_update(None, "user_version", 2).unwrap();
            c.execute_batch(&format!(
                "INSERT INTO images VALUES ('busybox', '{}', '{}', 0), ('busybox:latest', '{}', '{}', 0),
                                           ('docker.io/library/alpine:3', '{}', '{}', 0), ('Odd Name', '{}', '{}', 0);",
                hex(1), hex(2), hex(3), hex(4), hex(5), hex(6), hex(7), hex(8)
            ))
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        let names: Vec<String> = db.images().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["Odd Name", "alpine:3", "busybox", "busybox:latest"]);
        assert_eq!(db.image("busybox").unwrap().unwrap().manifest_digest.to_string(), hex(1));
        assert_eq!(db.image("busybox:latest").unwrap().unwrap().manifest_digest.to_string(), hex(3));
        assert_eq!(db.image("docker.io/library/alpine:3").unwrap().unwrap().name, "alpine:3");
        assert_eq!(db.image("Odd Name").unwrap().unwrap().name, "Odd Name");
    }
}
