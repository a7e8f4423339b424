//! The snapshot tables, in the store's one SQLite database, and the snapshot model's plain types
//! ([`Kind`], [`Info`], [`Usage`], [`chain_ids`]). Every function here runs inside the caller's
//! transaction, so the image and container rows that name snapshots are written in the same
//! transaction as the snapshots themselves. Only rows: the snapshot core
//! ([`crate::snapshot`]) makes and removes their directories.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest as _, Sha256};

use super::MetaError;
use crate::digest::Sha256Digest;

/// What kind a snapshot is. Stored as a number ([`Kind::code`]); SQL names it only as a
/// parameter, never as a literal.
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

/// The tables (schema version 2).
pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    parent INTEGER REFERENCES snapshots(id),
    kind INTEGER NOT NULL,
    diff_id TEXT REFERENCES layers(diff_id),
    size INTEGER,
    inodes INTEGER,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
CREATE INDEX IF NOT EXISTS snapshots_diff_id ON snapshots(diff_id);
CREATE TABLE IF NOT EXISTS snapshot_labels (
    id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (id, key)
);
"#;

/// A snapshot row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    pub key: String,
    pub parent: Option<i64>,
    pub kind: Kind,
    /// For a committed snapshot whose content is a shared layer directory: that layer.
    pub diff_id: Option<Sha256Digest>,
    /// Recorded at commit.
    pub size: Option<u64>,
    pub inodes: Option<u64>,
    pub created: i64,
    pub updated: i64,
}

const COLUMNS: &str = "id, key, parent, kind, diff_id, size, inodes, created, updated";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let kind: i64 = r.get(3)?;
    Ok(Row {
        id: r.get(0)?,
        key: r.get(1)?,
        parent: r.get(2)?,
        kind: Kind::from_code(kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Integer,
                "snapshot kind".into(),
            )
        })?,
        diff_id: r.get(4)?,
        size: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        inodes: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        created: r.get(7)?,
        updated: r.get(8)?,
    })
}

/// Nanoseconds since the epoch (containerd's timestamps carry nanoseconds).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub fn by_key(c: &Connection, key: &str) -> Result<Option<Row>, MetaError> {
    let mut st = c.prepare_cached(&format!("SELECT {COLUMNS} FROM snapshots WHERE key = ?1"))?;
    Ok(st.query_row([key], row).optional()?)
}

pub fn by_id(c: &Connection, id: i64) -> Result<Option<Row>, MetaError> {
    let mut st = c.prepare_cached(&format!("SELECT {COLUMNS} FROM snapshots WHERE id = ?1"))?;
    Ok(st.query_row([id], row).optional()?)
}

pub fn get(c: &Connection, key: &str) -> Result<Row, MetaError> {
    by_key(c, key)?.ok_or_else(|| MetaError::SnapshotNotFound(key.to_string()))
}

pub fn all(c: &Connection) -> Result<Vec<Row>, MetaError> {
    let mut st = c.prepare_cached(&format!("SELECT {COLUMNS} FROM snapshots ORDER BY id"))?;
    let rows = st.query_map([], row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The ids of every snapshot (what owns a directory under `snapshots/`).
pub fn ids(c: &Connection) -> Result<std::collections::HashSet<i64>, MetaError> {
    let mut st = c.prepare_cached("SELECT id FROM snapshots")?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The snapshot and its ancestors, nearest first (`chain[0]` is `id` itself).
pub fn chain(c: &Connection, id: i64) -> Result<Vec<Row>, MetaError> {
    let mut out = Vec::new();
    let mut next = Some(id);
    while let Some(id) = next {
        let r = by_id(c, id)?.ok_or_else(|| MetaError::Corrupt(format!("snapshot id {id} is missing")))?;
        next = r.parent;
        out.push(r);
        if out.len() > 100_000 {
            return Err(MetaError::Corrupt(format!("snapshot id {id}: parent cycle")));
        }
    }
    Ok(out)
}

pub fn labels(c: &Connection, id: i64) -> Result<BTreeMap<String, String>, MetaError> {
    let mut st = c.prepare_cached("SELECT key, value FROM snapshot_labels WHERE id = ?1")?;
    let rows = st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<BTreeMap<_, _>, _>>()?)
}

pub fn set_labels(c: &Connection, id: i64, labels: &BTreeMap<String, String>) -> Result<(), MetaError> {
    c.execute("DELETE FROM snapshot_labels WHERE id = ?1", [id])?;
    let mut st = c.prepare_cached("INSERT INTO snapshot_labels (id, key, value) VALUES (?1, ?2, ?3)")?;
    for (k, v) in labels {
        st.execute(params![id, k, v])?;
    }
    Ok(())
}

pub fn has_children(c: &Connection, id: i64) -> Result<bool, MetaError> {
    Ok(c.query_row("SELECT 1 FROM snapshots WHERE parent = ?1 LIMIT 1", [id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The container standing on snapshot `id`, if any.
pub fn container_of(c: &Connection, id: i64) -> Result<Option<String>, MetaError> {
    Ok(c.query_row("SELECT name FROM containers WHERE snapshot = ?1", [id], |r| r.get(0)).optional()?)
}

/// A committed snapshot over `parent` (`None`: a bottom one) labelled `label` = `value`; the
/// oldest when there are several.
pub fn committed_labelled(
    c: &Connection,
    parent: Option<i64>,
    label: &str,
    value: &str,
) -> Result<Option<Row>, MetaError> {
    let cols = COLUMNS.split(", ").map(|col| format!("s.{col}")).collect::<Vec<_>>().join(", ");
    let mut st = c.prepare_cached(&format!(
        "SELECT {cols} FROM snapshots s JOIN snapshot_labels l ON l.id = s.id \
         WHERE s.kind = ?1 AND s.parent IS ?2 AND l.key = ?3 AND l.value = ?4 ORDER BY s.id LIMIT 1"
    ))?;
    Ok(st.query_row(params![Kind::Committed.code(), parent, label, value], row).optional()?)
}

/// Insert a new snapshot. The key must be free and the parent committed.
pub fn insert(
    c: &Connection,
    key: &str,
    parent: Option<&str>,
    kind: Kind,
    diff_id: Option<&Sha256Digest>,
    labels: &BTreeMap<String, String>,
) -> Result<Row, MetaError> {
    if key.is_empty() {
        return Err(MetaError::Invalid("empty snapshot key".into()));
    }
    if by_key(c, key)?.is_some() {
        return Err(MetaError::SnapshotExists(key.to_string()));
    }
    let parent_id = match parent.filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => {
            let pr = by_key(c, p)?.ok_or_else(|| MetaError::ParentNotFound(p.to_string()))?;
            if pr.kind != Kind::Committed {
                return Err(MetaError::ParentNotCommitted { parent: p.to_string(), kind: pr.kind });
            }
            Some(pr.id)
        }
    };
    let now = now_ns();
    c.execute(
        "INSERT INTO snapshots (key, parent, kind, diff_id, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![key, parent_id, kind.code(), diff_id, now],
    )?;
    let id = c.last_insert_rowid();
    set_labels(c, id, labels)?;
    Ok(Row {
        id,
        key: key.to_string(),
        parent: parent_id,
        kind,
        diff_id: diff_id.cloned(),
        size: None,
        inodes: None,
        created: now,
        updated: now,
    })
}

/// Turn active snapshot `key` into committed snapshot `name` (same id, same directory).
pub fn commit(
    c: &Connection,
    name: &str,
    key: &str,
    usage: Usage,
    labels: &BTreeMap<String, String>,
) -> Result<Row, MetaError> {
    let r = get(c, key)?;
    if r.kind != Kind::Active {
        return Err(MetaError::NotActive { key: key.to_string(), kind: r.kind });
    }
    if by_key(c, name)?.is_some() {
        return Err(MetaError::SnapshotExists(name.to_string()));
    }
    // A committed snapshot is a new snapshot to containerd: created and updated both now.
    let now = now_ns();
    c.execute(
        "UPDATE snapshots SET key = ?1, kind = ?2, size = ?3, inodes = ?4, created = ?5, updated = ?5 \
         WHERE id = ?6",
        params![name, Kind::Committed.code(), usage.size as i64, usage.inodes as i64, now, r.id],
    )?;
    set_labels(c, r.id, labels)?;
    get(c, name)
}

pub fn delete(c: &Connection, id: i64) -> Result<(), MetaError> {
    c.execute("DELETE FROM snapshot_labels WHERE id = ?1", [id])?;
    c.execute("DELETE FROM snapshots WHERE id = ?1", [id])?;
    Ok(())
}

pub fn touch(c: &Connection, id: i64) -> Result<i64, MetaError> {
    let now = now_ns();
    c.execute("UPDATE snapshots SET updated = ?1 WHERE id = ?2", params![now, id])?;
    Ok(now)
}

/// The public view of a row.
pub fn info(c: &Connection, r: &Row) -> Result<Info, MetaError> {
    let parent = match r.parent {
        Some(p) => Some(
            by_id(c, p)?
                .ok_or_else(|| MetaError::Corrupt(format!("snapshot {:?}: parent id {p} is missing", r.key)))?
                .key,
        ),
        None => None,
    };
    Ok(Info {
        name: r.key.clone(),
        parent,
        kind: r.kind,
        labels: labels(c, r.id)?,
        created: r.created,
        updated: r.updated,
    })
}

/// The key of the committed snapshot of a layer chain: its chain ID.
pub fn chain_key(chain_id: &Sha256Digest) -> String {
    chain_id.to_string()
}

/// Make sure the committed snapshots of an image's layer chain exist (each backed by its layer's
/// directory, keyed by its chain ID); returns the id of the top one, `None` for no layers.
pub fn ensure_chain(c: &Connection, diff_ids: &[Sha256Digest]) -> Result<Option<i64>, MetaError> {
    let mut parent: Option<Row> = None;
    for (i, chain_id) in chain_ids(diff_ids).into_iter().enumerate() {
        let key = chain_key(&chain_id);
        let r = match by_key(c, &key)? {
            Some(r) => {
                if r.kind != Kind::Committed || r.diff_id.as_ref() != Some(&diff_ids[i]) {
                    return Err(MetaError::Corrupt(format!(
                        "snapshot {key:?} exists but is not layer {}'s committed snapshot",
                        diff_ids[i]
                    )));
                }
                r
            }
            None => insert(
                c,
                &key,
                parent.as_ref().map(|p| p.key.as_str()),
                Kind::Committed,
                Some(&diff_ids[i]),
                &BTreeMap::new(),
            )?,
        };
        parent = Some(r);
    }
    Ok(parent.map(|p| p.id))
}

/// The layer-backed committed snapshots (chain snapshots, keyed by a chain ID) that nothing stands
/// on: no child, so no container and no longer chain. Returns (id, key).
pub fn chain_leaves(c: &Connection) -> Result<Vec<(i64, String)>, MetaError> {
    let mut st = c.prepare_cached(
        "SELECT s.id, s.key FROM snapshots s WHERE s.kind = ?1 AND s.diff_id IS NOT NULL \
         AND s.key LIKE 'sha256:%' \
         AND NOT EXISTS (SELECT 1 FROM snapshots c WHERE c.parent = s.id)",
    )?;
    let rows = st.query_map([Kind::Committed.code()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The usage of a layer-backed snapshot: its layer's recorded size and entries.
pub fn layer_usage(c: &Connection, diff_id: &Sha256Digest) -> Result<Usage, MetaError> {
    let (size, entries): (i64, i64) =
        c.query_row("SELECT size, entries FROM layers WHERE diff_id = ?1", [diff_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok(Usage { size: size as u64, inodes: entries as u64 })
}
