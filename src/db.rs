//! Metadata: one SQLite database (WAL mode) in the state root.
//!
//! Tables:
//! - `blobs(digest, size, media_type)`: content-addressed files under `blobs/sha256/`.
//! - `layers(diff_id, size, entries, created)`: unpacked layer directories under `layers/sha256/`.
//! - `images(name, manifest_digest, config_digest, created)` and `image_layers(name, idx, diff_id,
//!   blob_digest, media_type, blob_size)`: the image -> layer references. A layer's reference count is
//!   the number of `image_layers` rows (plus leases) naming it; see [`Db::layer_refcount`].
//! - `leases(token, diff_id)`: layers an import in progress holds; a dead import's leases are
//!   released on the next start-up (see `store::Store::recover`).
//! - `containers(...)`: writable snapshots over images.
//!
//! Every state change is one transaction; a busy timeout makes concurrent processes wait.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// Database errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("metadata database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("metadata database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Name(#[from] crate::reference::ReferenceError),
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

const SCHEMA: &str = r#"
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

/// A stored image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageRow {
    pub name: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub created: i64,
}

/// One layer of an image, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageLayerRow {
    pub diff_id: String,
    pub blob_digest: String,
    pub media_type: String,
    pub blob_size: u64,
    /// Unpacked size in bytes.
    pub size: u64,
}

/// A stored container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContainerRow {
    pub name: String,
    pub image: String,
    pub read_only: bool,
    pub volatile: bool,
    pub created: i64,
}

/// The metadata database.
pub struct Db {
    conn: Connection,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Db {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Db> {
        let wrap = |source| DbError::Open { path: path.display().to_string(), source };
        let conn = Connection::open(path).map_err(wrap)?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(wrap)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(wrap)?;
        conn.execute_batch(SCHEMA).map_err(wrap)?;
        Ok(Db { conn })
    }

    /// Run `f` in one immediate (write-locking) transaction.
    pub fn write<T>(&mut self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn has_layer(&self, diff_id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM layers WHERE diff_id = ?1", [diff_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn layer_size(&self, diff_id: &str) -> Result<Option<u64>> {
        Ok(self
            .conn
            .query_row("SELECT size FROM layers WHERE diff_id = ?1", [diff_id], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|s| s as u64))
    }

    /// Number of images and live leases referring to a layer.
    pub fn layer_refcount(&self, diff_id: &str) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT (SELECT COUNT(*) FROM image_layers WHERE diff_id = ?1) + \
                    (SELECT COUNT(*) FROM leases WHERE diff_id = ?1)",
            [diff_id],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    pub fn image(&self, name: &str) -> Result<Option<ImageRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, manifest_digest, config_digest, created FROM images WHERE name = ?1",
                [name],
                |r| {
                    Ok(ImageRow {
                        name: r.get(0)?,
                        manifest_digest: r.get(1)?,
                        config_digest: r.get(2)?,
                        created: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn images(&self) -> Result<Vec<ImageRow>> {
        let mut st = self
            .conn
            .prepare("SELECT name, manifest_digest, config_digest, created FROM images ORDER BY name")?;
        let rows = st.query_map([], |r| {
            Ok(ImageRow {
                name: r.get(0)?,
                manifest_digest: r.get(1)?,
                config_digest: r.get(2)?,
                created: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The layers of an image, bottom first.
    pub fn image_layers(&self, name: &str) -> Result<Vec<ImageLayerRow>> {
        let mut st = self.conn.prepare(
            "SELECT il.diff_id, il.blob_digest, il.media_type, il.blob_size, l.size \
             FROM image_layers il JOIN layers l ON l.diff_id = il.diff_id \
             WHERE il.name = ?1 ORDER BY il.idx",
        )?;
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
                "SELECT name, image, read_only, volatile, created FROM containers WHERE name = ?1",
                [name],
                container_row,
            )
            .optional()?)
    }

    pub fn containers(&self) -> Result<Vec<ContainerRow>> {
        let mut st = self
            .conn
            .prepare("SELECT name, image, read_only, volatile, created FROM containers ORDER BY name")?;
        let rows = st.query_map([], container_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn containers_of_image(&self, image: &str) -> Result<Vec<String>> {
        let mut st = self.conn.prepare("SELECT name FROM containers WHERE image = ?1 ORDER BY name")?;
        let rows = st.query_map([image], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Layers no image and no lease refers to.
    pub fn unreferenced_layers(&self) -> Result<Vec<String>> {
        let mut st = self.conn.prepare(
            "SELECT diff_id FROM layers WHERE diff_id NOT IN (SELECT diff_id FROM image_layers) \
             AND diff_id NOT IN (SELECT diff_id FROM leases)",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn all_layers(&self) -> Result<Vec<String>> {
        let mut st = self.conn.prepare("SELECT diff_id FROM layers")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Blob digests referenced by any image (manifests, configs, layer blobs).
    pub fn referenced_blobs(&self) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        let mut st = self.conn.prepare(
            "SELECT manifest_digest FROM images UNION SELECT config_digest FROM images \
             UNION SELECT blob_digest FROM image_layers",
        )?;
        for r in st.query_map([], |r| r.get::<_, String>(0))? {
            out.insert(r?);
        }
        Ok(out)
    }

    pub fn lease_tokens(&self) -> Result<Vec<String>> {
        let mut st = self.conn.prepare("SELECT DISTINCT token FROM leases")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn add_lease(&mut self, token: &str, diff_id: &str) -> Result<()> {
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

    pub fn insert_layer(&mut self, diff_id: &str, size: u64, entries: u64) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO layers (diff_id, size, entries, created) VALUES (?1, ?2, ?3, ?4)",
            params![diff_id, size as i64, entries as i64, now()],
        )?;
        Ok(())
    }
}

fn container_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ContainerRow> {
    Ok(ContainerRow {
        name: r.get(0)?,
        image: r.get(1)?,
        read_only: r.get::<_, i64>(2)? != 0,
        volatile: r.get::<_, i64>(3)? != 0,
        created: r.get(4)?,
    })
}

/// A new image's rows, written in one transaction with [`Db::put_image`].
pub struct NewImage<'a> {
    pub name: &'a str,
    pub manifest_digest: &'a str,
    pub config_digest: &'a str,
    /// Blobs to record: (digest, size, media type).
    pub blobs: Vec<(String, u64, String)>,
    /// Layers bottom first.
    pub layers: Vec<ImageLayerRow>,
    /// Lease token to release in the same transaction.
    pub lease: Option<&'a str>,
}

impl Db {
    /// Record an image (replacing an image of the same name) and release the import's lease.
    pub fn put_image(&mut self, img: &NewImage<'_>) -> Result<()> {
        crate::reference::validate_image_name(img.name)?;
        self.write(|tx| {
            for (d, s, m) in &img.blobs {
                tx.execute(
                    "INSERT OR IGNORE INTO blobs (digest, size, media_type) VALUES (?1, ?2, ?3)",
                    params![d, *s as i64, m],
                )?;
            }
            tx.execute("DELETE FROM image_layers WHERE name = ?1", [img.name])?;
            tx.execute(
                "INSERT OR REPLACE INTO images (name, manifest_digest, config_digest, created) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![img.name, img.manifest_digest, img.config_digest, now()],
            )?;
            for (i, l) in img.layers.iter().enumerate() {
                tx.execute(
                    "INSERT INTO image_layers (name, idx, diff_id, blob_digest, media_type, blob_size) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![img.name, i as i64, l.diff_id, l.blob_digest, l.media_type, l.blob_size as i64],
                )?;
            }
            if let Some(t) = img.lease {
                tx.execute("DELETE FROM leases WHERE token = ?1", [t])?;
            }
            Ok(())
        })
    }

    /// Remove an image's rows (not its blobs or layers: see gc).
    pub fn remove_image(&mut self, name: &str) -> Result<bool> {
        self.write(|tx| {
            tx.execute("DELETE FROM image_layers WHERE name = ?1", [name])?;
            Ok(tx.execute("DELETE FROM images WHERE name = ?1", [name])? > 0)
        })
    }

    pub fn insert_container(&mut self, c: &ContainerRow) -> Result<()> {
        self.conn.execute(
            "INSERT INTO containers (name, image, read_only, volatile, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![c.name, c.image, c.read_only as i64, c.volatile as i64, c.created],
        )?;
        Ok(())
    }

    pub fn remove_container(&mut self, name: &str) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM containers WHERE name = ?1", [name])? > 0)
    }

    pub fn remove_layer_row(&mut self, diff_id: &str) -> Result<()> {
        self.conn.execute("DELETE FROM layers WHERE diff_id = ?1", [diff_id])?;
        Ok(())
    }

    pub fn remove_blob_row(&mut self, digest: &str) -> Result<()> {
        self.conn.execute("DELETE FROM blobs WHERE digest = ?1", [digest])?;
        Ok(())
    }
}
