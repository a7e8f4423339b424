//! Layer, blob and lease rows (`layers`, `blobs`, `leases`): what is unpacked, what references
//! it, and what gc may take.

use rusqlite::{params, Connection, OptionalExtension};

use super::{now, Db, Result};
use crate::digest::Sha256Digest;

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

/// Which ordered layer list a name has.
#[derive(Clone, Copy)]
pub(super) enum LayerList {
    Image,
    Container,
}

impl Db {
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
    /// The rows of `image_layers` or `container_layers` for `name`, joined with their layer.
    pub(super) fn layer_list(&self, list: LayerList, name: &str) -> Result<Vec<ImageLayerRow>> {
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
             UNION SELECT blob_digest FROM container_layers \
             UNION SELECT toc_digest FROM remote_layers",
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

    /// Record layer `diff_id`, its directory in place and verified: a remote layer (lazy pull)
    /// is remote no more.
    pub fn insert_layer(&mut self, diff_id: &Sha256Digest, size: u64, entries: u64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                // An upsert, not REPLACE: images and snapshots refer to the row.
                "INSERT INTO layers (diff_id, size, entries, created) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(diff_id) DO UPDATE SET size = excluded.size, entries = excluded.entries",
                params![diff_id, size as i64, entries as i64, now()],
            )?;
            tx.execute("DELETE FROM remote_layers WHERE diff_id = ?1", [diff_id])?;
            Ok(())
        })
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

/// The diff_ids of an ordered layer list (`image_layers` or `container_layers`) of `name`.
pub(super) fn diff_ids(c: &Connection, table: &str, name: &str) -> Result<Vec<Sha256Digest>> {
    let mut st = c.prepare_cached(&format!("SELECT diff_id FROM {table} WHERE name = ?1 ORDER BY idx"))?;
    let rows = st.query_map([name], |r| r.get(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
