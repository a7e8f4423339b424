//! The cgroup directories of strata's containers.
//!
//! runc creates one directory per container in every hierarchy it manages (on a hybrid machine
//! each v1 controller's, `name=systemd`'s and the unified v2 one) at the spec's
//! `linux.cgroupsPath`, which strata sets to `/<runc id>` ([`crate::container::runc_id`]): a name
//! that holds a tag of the state root, so two roots never share a cgroup. `runc delete` removes
//! them, but not when it never runs (a container killed behind runc's back, a `strata run` killed
//! with its runc child); [`remove`] removes them directly, in every hierarchy mounted.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mount points of every cgroup (v1) and cgroup2 filesystem, from `/proc/self/mountinfo`.
pub fn hierarchies() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let set: BTreeSet<PathBuf> = kernel_overlay::mountinfo::parse(&text)
        .into_iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
        .collect();
    set.into_iter().collect()
}

/// The directories named `leaf` at the top of any hierarchy (the ones that exist).
pub fn dirs(leaf: &str) -> Vec<PathBuf> {
    if leaf.is_empty() || leaf.contains('/') || leaf == "." || leaf == ".." {
        return Vec::new();
    }
    hierarchies().into_iter().map(|h| h.join(leaf)).filter(|d| d.is_dir()).collect()
}

/// Names of the directories at the top of any hierarchy that start with `prefix`.
pub fn top_level_with_prefix(prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for h in hierarchies() {
        let Ok(rd) = fs::read_dir(&h) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) && e.file_type().is_ok_and(|t| t.is_dir()) {
                out.insert(name);
            }
        }
    }
    out
}

/// A cgroup directory that could not be removed.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}")]
pub struct CgroupError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// How long [`remove`] waits for killed processes to leave a cgroup.
const DRAIN: Duration = Duration::from_secs(5);

/// Remove the directory `leaf` (and any below it) from the top of every hierarchy. Processes
/// still in it are killed first (SIGKILL): call this only for a container that must no longer
/// run. Nothing there is not an error.
pub fn remove(leaf: &str) -> Result<(), CgroupError> {
    for d in dirs(leaf) {
        remove_dir(&d)?;
    }
    Ok(())
}

/// Remove one cgroup directory, children first (a cgroup is removed with rmdir, its control
/// files going with it).
fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    let err = |path: &Path, source| CgroupError { path: path.to_path_buf(), source };
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_dir(&e.path())?;
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(dir, e)),
    }
    let until = Instant::now() + DRAIN;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // Busy: processes are still in it (or exiting). Kill what is listed, then retry.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < until => {
                kill_members(dir);
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(err(dir, e)),
        }
    }
}

/// SIGKILL every process listed in the cgroup's `cgroup.procs`.
fn kill_members(dir: &Path) {
    let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) else { return };
    for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()).filter(|p| *p > 1) {
        tracing::info!(pid, cgroup = %dir.display(), "killing a process left in a removed container's cgroup");
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_path_escapes_the_hierarchy_roots() {
        assert!(dirs("").is_empty());
        assert!(dirs("..").is_empty());
        assert!(dirs(".").is_empty());
        assert!(dirs("a/../..").is_empty());
    }
}
