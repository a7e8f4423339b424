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
//! - `remote_layers(diff_id, blob_digest, media_type, toc_digest, blob_size, bytes_local, source,
//!   tls_verify)`: layers of a lazy pull whose blob is still in the registry (see `remote.rs`); the
//!   TOC blob they name is referenced while they are.
//! - `snapshots`, `snapshot_labels`: see [`snapshots`].
//!
//! Every state change is one transaction; a busy timeout makes concurrent processes wait. The
//! schema carries its version in `PRAGMA user_version`; older state roots are migrated on open,
//! inside one immediate transaction, so concurrent first opens serialize instead of racing.
//!
//! Files: here the database handle ([`Db`]: open, transactions) and [`MetaError`]; `schema.rs`
//! the tables, their versions and migrations; `images.rs`, `containers.rs`, `layers.rs` (layers,
//! blobs, leases) and [`snapshots`] the rows of each.

pub mod snapshots;

mod containers;
mod images;
mod layers;
mod remote;
mod schema;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::digest::Sha256Digest;
pub use containers::{
    container_snapshot_key, delete_container_rows, insert_container_rows, set_container_snapshot,
    ContainerRow,
};
pub use images::{delete_unnamed_chain_rows, put_image_rows, ImageRow, NewImage, RemovedImage};
pub use layers::ImageLayerRow;
pub use remote::RemoteLayerRow;
#[cfg(test)]
pub(crate) use schema::{SCHEMA, SCHEMA_V1, SCHEMA_VERSION};
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
}
