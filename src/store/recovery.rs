//! Recovery on every open (staging entries of dead processes, their leases and what only they
//! held; directories no row owns; a root written before snapshots), and the removal of layers
//! and blobs nothing references.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::locks::lock_file;
use super::staging::{staging_live, token_pid_alive, LOCK_NEW};
use super::{remove_tree, IoContext, Lock, Result, Store};
use crate::digest::Sha256Digest;

/// Whether anything is mounted at or below `dir` (a container directory must never be removed
/// from under a mount).
fn is_mount_point_below(dir: &Path) -> bool {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    kernel_overlay::mountinfo::parse(&text).iter().any(|m| m.mount_point.starts_with(dir))
}

impl Store {
    /// Clean up after interrupted operations: staging entries of dead processes, their leases, and
    /// layers (directories and rows) only those leases held.
    pub fn recover(&mut self) -> Result<()> {
        let staging = self.root.join("staging");
        // Other commands may be creating staging entries while this runs: an entry is dead only
        // if its lock file is free (or gone) when looked at, never because an earlier listing
        // did not show it.
        let mut live = std::collections::HashSet::new();
        let mut dead_tokens = Vec::new();
        for e in fs::read_dir(&staging).at(&staging)? {
            let e = e.at(&staging)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(token) = name.strip_suffix(".lock") {
                if let Some(_guard) = lock_file(&e.path(), false)? {
                    let _ = remove_tree(&staging.join(token));
                    let _ = fs::remove_file(e.path());
                    dead_tokens.push(token.to_string());
                } else {
                    live.insert(token.to_string());
                }
            }
        }
        for e in fs::read_dir(&staging).at(&staging)? {
            let e = e.at(&staging)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".lock") {
                continue;
            }
            let keep = if let Some(token) = name.strip_suffix(LOCK_NEW) {
                token_pid_alive(token)
            } else if let Some(token) = name.strip_prefix("blob-") {
                // Blob temp files carry the token after "blob-".
                token_pid_alive(token)
            } else {
                live.contains(&name) || staging_live(&staging, &name)?
            };
            if !keep {
                let _ = remove_tree(&e.path());
            }
        }
        // Leases of imports that are gone.
        for token in self.db.lease_tokens()? {
            if !live.contains(&token) && !staging_live(&staging, &token)? {
                self.db.drop_leases(&token)?;
                dead_tokens.push(token);
            }
        }
        if !dead_tokens.is_empty() {
            self.remove_unreferenced_layers()?;
        }
        // Layer directories without a row: an import died between rename and insert.
        let layers = self.root.join("layers/sha256");
        let known: std::collections::HashSet<Sha256Digest> = self.db.all_layers()?.into_iter().collect();
        for e in fs::read_dir(&layers).at(&layers)? {
            let e = e.at(&layers)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(d) = Sha256Digest::from_hex(&name) else {
                let _ = remove_tree(&e.path());
                continue;
            };
            if !known.contains(&d) {
                // Only if nobody is importing it right now.
                if let Some(_g) = self.try_lock(Lock::Layer(&d))? {
                    if !self.db.has_layer(&d)? {
                        tracing::info!(layer = %d, "removing layer directory without metadata");
                        drop(self.trash(&e.path())?);
                    }
                }
            }
        }
        self.recover_remote()?;
        self.recover_containers()?;
        self.remove_orphan_snapshot_dirs()?;
        Ok(())
    }

    /// `remote/<hex>/`: removed when its layer has no row (gc removed it, or a lazy pull died);
    /// in the others, chunks a dead reader was writing (`tmp/<pid>-...`), never used, removed,
    /// and the partial blob of a layer that is complete.
    fn recover_remote(&mut self) -> Result<()> {
        let remote = self.root.join("remote");
        let Ok(rd) = fs::read_dir(&remote) else { return Ok(()) };
        for e in rd {
            let e = e.at(&remote)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(d) = Sha256Digest::from_hex(&name) else {
                let _ = remove_tree(&e.path());
                continue;
            };
            if !self.db.has_layer(&d)? {
                if let Some(_g) = self.try_lock(Lock::Layer(&d))? {
                    if !self.db.has_layer(&d)? {
                        drop(self.trash(&e.path())?);
                    }
                }
                continue;
            }
            if self.db.remote_layer(&d)?.is_none() && self.layer_path(&d).is_dir() {
                // Complete by another path (a plain pull): the kept bytes of its blob are not
                // needed any more (a strata-fuse still reading them holds them open).
                for f in super::PARTIAL_BLOB_FILES {
                    let _ = fs::remove_file(e.path().join(f));
                }
            }
            let tmp = e.path().join("tmp");
            let Ok(temps) = fs::read_dir(&tmp) else { continue };
            for t in temps.flatten() {
                if !token_pid_alive(&t.file_name().to_string_lossy()) {
                    let _ = fs::remove_file(t.path());
                }
            }
        }
        Ok(())
    }

    /// A root written before snapshots keeps a container's upper and work dirs under
    /// `containers/<name>/`; its migration (in the database, on open) gave each container a
    /// snapshot, and this moves the dirs there, each in one rename, under the container's lock.
    /// A crash between the renames is finished by the next open.
    pub(super) fn migrate_container_dirs(&mut self) -> Result<()> {
        for c in self.db.containers()? {
            let Some(id) = c.snapshot else { continue };
            let old = self.containers_dir().join(&c.name);
            let sdir = self.snapshot_dir(id);
            let moves = [(old.join("upper"), sdir.join("fs")), (old.join("work"), sdir.join("work"))];
            let pending = !sdir.is_dir() || moves.iter().any(|(from, _)| fs::symlink_metadata(from).is_ok());
            if !pending {
                continue;
            }
            let _g = self.lock(Lock::Container(&c.name))?;
            let mut b = fs::DirBuilder::new();
            b.mode(0o700);
            match b.create(&sdir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e).at(&sdir),
                _ => {}
            }
            for (from, to) in &moves {
                if fs::symlink_metadata(from).is_ok() && fs::symlink_metadata(to).is_err() {
                    tracing::info!(container = %c.name, from = %from.display(), to = %to.display(), "moving into the container's snapshot");
                    fs::rename(from, to).at(from)?;
                }
            }
            let fs_dir = sdir.join("fs");
            if fs::symlink_metadata(&fs_dir).is_err() {
                b.create(&fs_dir).at(&fs_dir)?;
                fs::set_permissions(&fs_dir, fs::Permissions::from_mode(0o755)).at(&fs_dir)?;
            }
            let work = sdir.join("work");
            if !c.read_only && fs::symlink_metadata(&work).is_err() {
                b.create(&work).at(&work)?;
            }
        }
        Ok(())
    }

    /// Container directories without a row: a `container rm` died after removing the row (it
    /// removes the row first, so a container is listed whole or not at all), or a `container
    /// create` died before writing it. Taken under the container's lock, as create holds it.
    fn recover_containers(&mut self) -> Result<()> {
        let dir = self.containers_dir();
        let known: std::collections::HashSet<String> =
            self.db.containers()?.into_iter().map(|c| c.name).collect();
        for e in fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if known.contains(&name) {
                continue;
            }
            if let Some(_g) = self.try_lock(Lock::Container(&name))? {
                if self.db.container(&name)?.is_none() && !is_mount_point_below(&e.path()) {
                    tracing::info!(container = %name, "removing container directory without metadata");
                    drop(self.trash(&e.path())?);
                }
            }
        }
        Ok(())
    }

    /// Remove layers (rows and directories) that no image, container or lease references.
    pub fn remove_unreferenced_layers(&mut self) -> Result<Vec<Sha256Digest>> {
        let mut removed = Vec::new();
        for diff_id in self.db.unreferenced_layers()? {
            let d = diff_id.clone();
            let _g = self.lock(Lock::Layer(&d))?;
            // Re-check under the lock: an import may have leased it meanwhile.
            if self.db.layer_refcount(&diff_id)? > 0 {
                continue;
            }
            // The row goes first, then the directory in one rename: a kill at any point leaves
            // the layer whole with its row, or a directory without a row (recovery removes it),
            // never a half-deleted directory that an import would take for the layer.
            self.db.remove_layer_row(&diff_id)?;
            drop(self.trash(&self.layer_path(&d))?);
            drop(self.trash(&self.remote_dir(&d))?);
            removed.push(diff_id);
        }
        Ok(removed)
    }

    /// Remove the blobs no image or container references (none while an import holds a lease:
    /// its blobs are not referenced yet). Part of gc (`crate::images::gc`), under its lock.
    pub(crate) fn remove_unreferenced_blobs(&mut self) -> Result<Vec<Sha256Digest>> {
        let referenced = self.db.referenced_blobs()?;
        let mut blobs = Vec::new();
        let dir = self.root.join("blobs/sha256");
        let leased = !self.db.lease_tokens()?.is_empty();
        for e in fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(digest) = Sha256Digest::from_hex(&name) else { continue };
            // While an import runs, its blobs are not referenced yet: leave blobs alone then.
            if !referenced.contains(&digest) && !leased {
                fs::remove_file(e.path()).at(e.path())?;
                self.db.remove_blob_row(&digest)?;
                blobs.push(digest);
            }
        }
        Ok(blobs)
    }

    /// Remove what no row owns under `snapshots/`: directories a crashed snapshot create or
    /// remove left. Runs in a write transaction, so no create is between its rename and its
    /// commit meanwhile.
    pub(crate) fn remove_orphan_snapshot_dirs(&mut self) -> Result<Vec<PathBuf>> {
        let snaps = self.snapshots_dir();
        // A cheap look first (every command recovers on open): only entries that no row owns now
        // need the write transaction.
        let known = crate::meta::snapshots::ids(self.db.conn())?;
        let suspicious = match fs::read_dir(&snaps) {
            Ok(entries) => entries.flatten().any(|e| {
                !e.file_name()
                    .to_str()
                    .and_then(|n| n.parse::<i64>().ok())
                    .is_some_and(|id| known.contains(&id))
            }),
            Err(_) => false,
        };
        if !suspicious {
            return Ok(Vec::new());
        }
        let orphans = self.db.write(|tx| -> Result<_> {
            let known = crate::meta::snapshots::ids(tx)?;
            let mut orphans = Vec::new();
            let entries = match fs::read_dir(&snaps) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(orphans),
                Err(e) => return Err(e).at(&snaps),
            };
            for e in entries {
                let e = e.at(&snaps)?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.parse::<i64>().is_ok_and(|id| known.contains(&id)) {
                    continue;
                }
                // Renamed out of the numeric namespace while no create can run: an id left by
                // a rolled-back create may be taken again as soon as this transaction ends.
                let gone = if name.starts_with("gone-") {
                    e.path()
                } else {
                    let g = snaps.join(format!("gone-{name}-{}", crate::meta::snapshots::now_ns()));
                    fs::rename(e.path(), &g).at(e.path())?;
                    g
                };
                orphans.push(gone);
            }
            Ok(orphans)
        })?;
        for p in &orphans {
            tracing::info!(path = %p.display(), "removing snapshot directory without metadata");
            drop(self.trash(p)?);
        }
        Ok(orphans)
    }
}
