//! Container rows (`containers`, `container_layers`): a container bound to the manifest and
//! layers its image had at create, and the snapshot it is.

use rusqlite::{params, OptionalExtension};

use super::images::find_image;
use super::layers::{diff_ids, ImageLayerRow, LayerList};
use super::{now, Db, MetaError, Result, Tx};
use crate::digest::Sha256Digest;

/// The key of container `name`'s snapshot. containerd's keys are `NAMESPACE/NUMBER/NAME`, so
/// this form never collides with one.
pub fn container_snapshot_key(name: &str) -> String {
    format!("strata/container/{name}")
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

impl Db {
    /// The layers a container stands on, bottom first.
    pub fn container_layers(&self, name: &str) -> Result<Vec<ImageLayerRow>> {
        self.layer_list(LayerList::Container, name)
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
