//! Image rows: an image name bound to a manifest, a config and its ordered layers
//! (`images`, `image_layers`); finding the image a user means, publishing and removing names, and
//! the layer chains image names keep.

use rusqlite::{params, Connection, OptionalExtension};

use super::layers::{diff_ids, ImageLayerRow, LayerList};
use super::{chain_ids, now, snapshots, Db, MetaError, Result, Tx};
use crate::digest::Sha256Digest;

/// A stored image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageRow {
    pub name: String,
    pub manifest_digest: Sha256Digest,
    pub config_digest: Sha256Digest,
    pub created: i64,
}

impl Db {
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
