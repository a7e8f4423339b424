//! The schema and its versions: the tables, each version's changes, and the migration of older
//! roots on open (one immediate transaction, foreign keys checked before it commits).

use rusqlite::{params, Connection, OptionalExtension};

use super::containers::container_snapshot_key;
use super::layers::diff_ids;
use super::{chain_ids, snapshots, Db, Kind, MetaError, Result};

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
pub(crate) const SCHEMA_VERSION: i64 = 5;

impl Db {
    /// Create or upgrade the schema. The version is read again inside an immediate transaction, so
    /// of several processes opening an old (or new) root at once exactly one migrates it.
    pub(super) fn migrate(&mut self) -> Result<()> {
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
            // Version 4: remote layers (lazy pull).
            tx.execute_batch(super::remote::SCHEMA_V4)?;
            if v < 5 {
                tx.execute_batch(super::remote::SCHEMA_V5)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha256Digest;
    use crate::meta::{
        delete_container_rows, delete_unnamed_chain_rows, put_image_rows, ImageLayerRow, NewImage,
        RemovedImage,
    };

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
