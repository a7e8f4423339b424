//! Remote layers (`remote_layers`, schema versions 4 and 5): a layer of a lazily pulled image whose TOC
//! is stored and verified but whose blob is still in the registry. The row goes with its
//! `layers` row (`ON DELETE CASCADE`), and is removed once the layer is complete and unpacked.

use rusqlite::{params, OptionalExtension};

use super::{Db, Result};
use crate::digest::Sha256Digest;

/// A remote layer's row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RemoteLayerRow {
    pub diff_id: Sha256Digest,
    pub blob_digest: Sha256Digest,
    pub media_type: String,
    /// The digest of the stored, verified TOC JSON (a blob in the store).
    pub toc_digest: Sha256Digest,
    pub blob_size: u64,
    /// Bytes of the blob held locally (the TOC's, and chunks fetched since).
    pub bytes_local: u64,
    /// `HOST/REPO` the blob is fetched from.
    pub source: String,
    /// Whether the registry's TLS certificate was verified at the pull (and is again).
    pub tls_verify: bool,
    /// Where the blob's file data ends (the TOC's start, schema version 5): no chunk reaches
    /// past it. 0 when unknown (a version 4 row): the blob's size bounds the chunks then.
    pub data_end: u64,
    /// Why the layer is bad (a chunk that did not match its digest, schema version 5): nothing
    /// more is fetched for it.
    pub bad: Option<String>,
}

/// Version 5: where a remote layer's data ends, and the mark of a bad one.
pub(crate) const SCHEMA_V5: &str = r#"
ALTER TABLE remote_layers ADD COLUMN data_end INTEGER NOT NULL DEFAULT 0;
ALTER TABLE remote_layers ADD COLUMN bad TEXT;
"#;

pub(crate) const SCHEMA_V4: &str = r#"
CREATE TABLE IF NOT EXISTS remote_layers (
    diff_id TEXT PRIMARY KEY REFERENCES layers(diff_id) ON DELETE CASCADE,
    blob_digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    toc_digest TEXT NOT NULL,
    blob_size INTEGER NOT NULL,
    bytes_local INTEGER NOT NULL,
    source TEXT NOT NULL,
    tls_verify INTEGER NOT NULL
);
"#;

impl Db {
    /// Record a remote layer: its `layers` row (`size` and `entries` from the TOC) and its
    /// `remote_layers` row, in one transaction. A layer that has its row already (unpacked, or
    /// remote) is left as it is.
    pub fn insert_remote_layer(&mut self, row: &RemoteLayerRow, size: u64, entries: u64) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "INSERT OR IGNORE INTO layers (diff_id, size, entries, created) VALUES (?1, ?2, ?3, ?4)",
                params![row.diff_id, size as i64, entries as i64, super::now()],
            )?;
            if n == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO remote_layers (diff_id, blob_digest, media_type, toc_digest, blob_size, \
                 bytes_local, source, tls_verify, data_end, bad) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    row.diff_id,
                    row.blob_digest,
                    row.media_type,
                    row.toc_digest,
                    row.blob_size as i64,
                    row.bytes_local as i64,
                    row.source,
                    row.tls_verify,
                    row.data_end as i64,
                    row.bad,
                ],
            )?;
            Ok(true)
        })
    }

    /// The remote row of layer `diff_id`, if it is remote.
    pub fn remote_layer(&self, diff_id: &Sha256Digest) -> Result<Option<RemoteLayerRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT diff_id, blob_digest, media_type, toc_digest, blob_size, bytes_local, source, \
                 tls_verify, data_end, bad FROM remote_layers WHERE diff_id = ?1",
                [diff_id],
                |r| {
                    Ok(RemoteLayerRow {
                        diff_id: r.get(0)?,
                        blob_digest: r.get(1)?,
                        media_type: r.get(2)?,
                        toc_digest: r.get(3)?,
                        blob_size: r.get::<_, i64>(4)? as u64,
                        bytes_local: r.get::<_, i64>(5)? as u64,
                        source: r.get(6)?,
                        tls_verify: r.get(7)?,
                        data_end: r.get::<_, i64>(8)? as u64,
                        bad: r.get(9)?,
                    })
                },
            )
            .optional()?)
    }

    /// `bytes` more of remote layer `diff_id`'s blob are held locally (chunks fetched and
    /// verified); never counted past the blob's size.
    pub fn add_remote_bytes(&mut self, diff_id: &Sha256Digest, bytes: u64) -> Result<()> {
        self.conn.execute(
            "UPDATE remote_layers SET bytes_local = MIN(blob_size, bytes_local + ?2) WHERE diff_id = ?1",
            params![diff_id, bytes.min(i64::MAX as u64) as i64],
        )?;
        Ok(())
    }

    /// Remote layer `diff_id` sent bytes that do not match its TOC: `reason` is kept, and nothing
    /// more is fetched for it. The first reason stays.
    pub fn mark_remote_bad(&mut self, diff_id: &Sha256Digest, reason: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE remote_layers SET bad = COALESCE(bad, ?2) WHERE diff_id = ?1",
            params![diff_id, reason],
        )?;
        Ok(())
    }

    /// Layer `diff_id` is complete (unpacked and verified): it is remote no more.
    pub fn remove_remote_layer(&mut self, diff_id: &Sha256Digest) -> Result<()> {
        self.conn.execute("DELETE FROM remote_layers WHERE diff_id = ?1", [diff_id])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// A version 3 root gains `remote_layers` on open, its rows kept; a remote layer's row goes
    /// with its layer's, and its TOC blob is referenced while it is remote.
    #[test]
    fn a_version_3_root_gains_remote_layers() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("strata.db");
        let d = |n: u8| Sha256Digest::parse(&format!("sha256:{:064x}", n)).unwrap();
        {
            let db = Db::open(&path).unwrap();
            db.conn().execute_batch("DROP TABLE remote_layers; PRAGMA user_version = 3;").unwrap();
            db.conn().execute("INSERT INTO layers VALUES (?1, 10, 1, 0)", [d(1)]).unwrap();
        }
        let has_table = |c: &Connection| -> bool {
            c.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'remote_layers')", [], |r| {
                r.get(0)
            })
            .unwrap()
        };
        assert!(!has_table(&Connection::open(&path).unwrap()));
        let mut db = Db::open(&path).unwrap();
        assert!(has_table(db.conn()));
        let v: i64 = db.conn().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, super::super::schema::SCHEMA_VERSION);
        assert!(db.has_layer(&d(1)).unwrap(), "rows kept");

        let row = RemoteLayerRow {
            diff_id: d(2),
            blob_digest: d(3),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            toc_digest: d(4),
            blob_size: 1000,
            bytes_local: 100,
            source: "localhost:5000/app".into(),
            tls_verify: false,
            data_end: 900,
            bad: None,
        };
        assert!(db.insert_remote_layer(&row, 5000, 3).unwrap());
        assert_eq!(db.remote_layer(&d(2)).unwrap().as_ref(), Some(&row));
        // Fetched bytes count up to the blob's size; the first reason a layer is bad stays.
        db.add_remote_bytes(&d(2), 300).unwrap();
        assert_eq!(db.remote_layer(&d(2)).unwrap().map(|r| r.bytes_local), Some(400));
        db.add_remote_bytes(&d(2), 5000).unwrap();
        assert_eq!(db.remote_layer(&d(2)).unwrap().map(|r| r.bytes_local), Some(1000));
        db.mark_remote_bad(&d(2), "chunk digest mismatch").unwrap();
        db.mark_remote_bad(&d(2), "later").unwrap();
        let got = db.remote_layer(&d(2)).unwrap().unwrap();
        assert_eq!(got.bad.as_deref(), Some("chunk digest mismatch"));
        db.remove_layer_row(&d(2)).unwrap();
        assert!(db.insert_remote_layer(&row, 5000, 3).unwrap());
        assert_eq!(db.layer_size(&d(2)).unwrap(), Some(5000));
        assert!(db.referenced_blobs().unwrap().contains(&d(4)), "the TOC is kept");
        // An unpacked layer is never made remote.
        assert!(!db.insert_remote_layer(&RemoteLayerRow { diff_id: d(1), ..row.clone() }, 1, 1).unwrap());
        assert!(db.remote_layer(&d(1)).unwrap().is_none());
        // The layer's row going takes the remote row with it.
        db.remove_layer_row(&d(2)).unwrap();
        assert!(db.remote_layer(&d(2)).unwrap().is_none());
        assert!(!db.referenced_blobs().unwrap().contains(&d(4)));
        // A completed layer is remote no more.
        db.insert_remote_layer(&row, 5000, 3).unwrap();
        db.remove_remote_layer(&d(2)).unwrap();
        assert!(db.remote_layer(&d(2)).unwrap().is_none() && db.has_layer(&d(2)).unwrap());
        // Nor is one whose directory was unpacked by any path (a plain pull after a lazy one).
        db.remove_layer_row(&d(2)).unwrap();
        db.insert_remote_layer(&row, 5000, 3).unwrap();
        db.insert_layer(&d(2), 4321, 3).unwrap();
        assert!(db.remote_layer(&d(2)).unwrap().is_none());
        assert_eq!(db.layer_size(&d(2)).unwrap(), Some(4321));
    }

    /// A version 4 root's remote rows gain `data_end` (0: unknown) and `bad` (none) on open.
    #[test]
    fn a_version_4_root_gains_data_end_and_bad() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("strata.db");
        let d = |n: u8| Sha256Digest::parse(&format!("sha256:{:064x}", n)).unwrap();
        {
            let db = Db::open(&path).unwrap();
            db.conn()
                .execute_batch(
                    "ALTER TABLE remote_layers DROP COLUMN bad; \
                     ALTER TABLE remote_layers DROP COLUMN data_end; PRAGMA user_version = 4;",
                )
                .unwrap();
            db.conn().execute("INSERT INTO layers VALUES (?1, 10, 1, 0)", [d(1)]).unwrap();
            db.conn()
                .execute(
                    "INSERT INTO remote_layers VALUES (?1, ?2, 'application/vnd.oci.image.layer.v1.tar+gzip', \
                     ?3, 1000, 100, 'localhost:5000/app', 0)",
                    [d(1), d(2), d(3)],
                )
                .unwrap();
        }
        let db = Db::open(&path).unwrap();
        let row = db.remote_layer(&d(1)).unwrap().unwrap();
        assert_eq!((row.data_end, row.bad, row.bytes_local), (0, None, 100));
    }
}
