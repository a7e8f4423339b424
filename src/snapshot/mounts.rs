//! Mounts derived from a snapshot's parent chain.

use std::path::PathBuf;

use kernel_overlay::OverlaySpec;

use super::{fs_dir, work_dir, Kind, Row, SnapshotError};
use crate::store::Store;

/// A mount as containerd describes it: what a caller passes to mount(2) itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mount {
    /// `bind` or `overlay`.
    #[serde(rename = "type")]
    pub fs_type: String,
    pub source: String,
    pub options: Vec<String>,
}

/// containerd's overlay snapshotter shape: no parent, a bind of the own tree (read-write for an
/// active snapshot); a view of one parent, a read-only bind of that parent's tree; otherwise an
/// overlay of the parents (top first) with the own tree as upper when active. Overlay options
/// come from [`kernel_overlay::mount_spec`]: `index=off`, and no redirects or metacopy, which
/// would trust xattrs found in layers.
pub fn derive(store: &Store, row: &Row, lowers: &[PathBuf]) -> Result<Vec<Mount>, SnapshotError> {
    let bind = |src: PathBuf, ro: bool| Mount {
        fs_type: "bind".into(),
        source: src.display().to_string(),
        options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
    };
    let ro = row.kind != Kind::Active;
    Ok(match (lowers.len(), row.kind) {
        (0, _) => vec![bind(fs_dir(store, row.id), ro)],
        (1, Kind::View) => vec![bind(lowers[0].clone(), true)],
        _ => {
            let spec = overlay_spec(store, row, lowers.to_vec());
            let m = kernel_overlay::mount_spec(&spec)
                .map_err(|source| SnapshotError::Mount { key: row.key.clone(), source })?;
            vec![Mount { fs_type: m.fs_type, source: m.source, options: m.options }]
        }
    })
}

/// The overlay strata mounts itself for a snapshot over `lowers` (top first).
/// In rootless mode with `userxattr`: the `user.overlay.*` markers its layers carry, the only
/// ones a user namespace may use.
pub fn overlay_spec(store: &Store, row: &Row, lowers: Vec<PathBuf>) -> OverlaySpec {
    let mut spec = if row.kind == Kind::Active {
        OverlaySpec::writable(lowers, fs_dir(store, row.id), work_dir(store, row.id))
    } else {
        OverlaySpec::read_only(lowers)
    };
    spec.userxattr = crate::userns::is_rootless();
    spec
}
