//! `container commit`: a container's upper dir committed over the image it was created from,
//! the container paused meanwhile when it runs.

use crate::container::{self, ContainerError};
use crate::runtime::runc;
use crate::store::Store;

use super::{commit, CommitError, CommitOptions, Committed, Parent, Result};

/// Commit a container's changes as image `new_name`, over the manifest and layers the container
/// was created from. A running container is paused (runc pause, the cgroup freezer) while its
/// upper dir is read, as `docker commit` does, unless `pause` is false; it is resumed whatever
/// the commit's outcome. Rootless mode has no freezer: `pause` on a running container is
/// refused there (front ends default to a live commit rootless, as podman does).
pub fn commit_container(
    store: &mut Store,
    name: &str,
    new_name: &str,
    opts: &CommitOptions,
    pause: bool,
) -> Result<Committed> {
    let cerr = |e: ContainerError| CommitError::Container(Box::new(e));
    let _g = container::lock(store, name).map_err(cerr)?;
    let c = container::get(store, name).map_err(cerr)?;
    if c.read_only {
        return Err(cerr(ContainerError::ReadOnly(name.to_string())));
    }
    let parent = Parent {
        name: c.image.clone(),
        config_digest: c.config_digest.clone(),
        layers: store.container_layers(name).map_err(|e| cerr(e.into()))?,
    };
    let (state, id) = container::runc_ids(store, name);
    let rt = |source| cerr(ContainerError::Runtime { name: name.to_string(), source });
    let paused = pause
        && container::running(store, name).map_err(cerr)?.is_some()
        && runc::runc_status(&state, &id).as_deref() == Some("running");
    if paused && crate::userns::is_rootless() {
        let hint = "; --pause=false commits it live (rootless mode's default, as podman's)";
        return Err(cerr(ContainerError::NoFreezer { name: name.to_string(), verb: "paused", hint }));
    }
    if paused {
        runc::runc_pause(&state, &id).map_err(rt)?;
    }
    let upper = container::paths(store, &c).upper;
    // The mount points strata made for the files it bind-mounts never land in an image.
    let placeholders = container::placeholders(store, name);
    let with_skips;
    let opts = if placeholders.is_empty() {
        opts
    } else {
        let mut o = opts.clone();
        o.layer.skip_empty.extend(placeholders);
        with_skips = o;
        &with_skips
    };
    let done = commit(store, &upper, &parent, new_name, opts);
    if paused {
        if let Err(e) = runc::runc_verb(&state, "resume", &id, &[]) {
            // Gone meanwhile (killed, or exited as it was thawed) is not an error of the commit.
            if runc::runc_status(&state, &id).is_some_and(|s| s == "paused") {
                return Err(rt(e));
            }
        }
    }
    done
}
