//! The resolution cache: the make-up ([`Resolved`]) of each node, valid for one epoch of the
//! layers. Every change of the layers starts a new epoch ([`Invalidate`]), so an entry is never
//! used after a change; a resolution starts from the deepest node of its chain cached in the
//! current epoch.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::inode::ROOT;
use crate::mutate::Invalidate;
use crate::overlay::{Layers, Resolved};
use crate::sys::err;

const SHARDS: usize = 32;

type Shard = Mutex<HashMap<u64, (u64, Arc<Resolved>)>>;

#[derive(Debug)]
pub(crate) struct ResolveCache {
    shards: Vec<Shard>,
    epoch: AtomicU64,
}

impl Default for ResolveCache {
    fn default() -> ResolveCache {
        ResolveCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            epoch: AtomicU64::new(1),
        }
    }
}

impl Invalidate for ResolveCache {
    fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// See [`ResolveCache::scoped`].
pub(crate) struct Scoped<'a> {
    cache: &'a ResolveCache,
    nodes: Vec<u64>,
}

impl Invalidate for Scoped<'_> {
    fn changed(&self) {
        for &n in &self.nodes {
            self.cache.forget(n);
        }
    }
}

impl ResolveCache {
    /// The current epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn get(&self, ino: u64, epoch: u64) -> Option<Arc<Resolved>> {
        let shard = self.shards[(ino as usize) % SHARDS].lock().unwrap_or_else(|e| e.into_inner());
        match shard.get(&ino) {
            Some((e, r)) if *e == epoch => Some(r.clone()),
            _ => None,
        }
    }

    /// Drop the cached resolution of `ino`.
    pub(crate) fn forget(&self, ino: u64) {
        self.shards[(ino as usize) % SHARDS].lock().unwrap_or_else(|e| e.into_inner()).remove(&ino);
    }

    /// An [`Invalidate`] for a change that can alter the resolutions of `nodes` only (a create
    /// or a removal of one entry: that entry, and the directories above it, which a copy-up
    /// may have brought to the upper layer), keeping every other cached resolution, and so
    /// the next walk to a sibling.
    pub(crate) fn scoped(&self, nodes: Vec<u64>) -> Scoped<'_> {
        Scoped { cache: self, nodes }
    }

    pub(crate) fn put(&self, ino: u64, epoch: u64, r: Arc<Resolved>) {
        let mut shard = self.shards[(ino as usize) % SHARDS].lock().unwrap_or_else(|e| e.into_inner());
        shard.insert(ino, (epoch, r));
    }

    /// Merged path and make-up of the node at the end of `chain` (its (node, name) pairs from
    /// the root's child down, see [`crate::inode::Inodes::chain`]), caching every step.
    pub(crate) fn resolve(
        &self,
        chain: &[(u64, OsString)],
        layers: &Layers,
    ) -> io::Result<(PathBuf, Arc<Resolved>)> {
        let epoch = self.epoch();
        let mut start = 0;
        let mut cur = None;
        for i in (0..=chain.len()).rev() {
            let id = if i == 0 { ROOT } else { chain[i - 1].0 };
            if let Some(r) = self.get(id, epoch) {
                cur = Some(r);
                start = i;
                break;
            }
        }
        let mut cur = match cur {
            Some(r) => r,
            None => {
                let r = Arc::new(layers.resolve_root());
                self.put(ROOT, epoch, r.clone());
                r
            }
        };
        let mut path = PathBuf::new();
        for (_, n) in &chain[..start] {
            path.push(n);
        }
        for (id, name) in &chain[start..] {
            if !cur.is_dir() {
                return Err(err(libc::ENOTDIR));
            }
            let r = Arc::new(layers.lookup_in(&cur, &path, name)?.ok_or_else(|| err(libc::ENOENT))?);
            path.push(name);
            self.put(*id, epoch, r.clone());
            cur = r;
        }
        Ok((path, cur))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::Resolved;

    fn dir(top: usize) -> Arc<Resolved> {
        Arc::new(Resolved { top, fmt: libc::S_IFDIR, dirs: vec![top] })
    }

    #[test]
    fn scoped_changes_forget_their_nodes_only_and_keep_the_epoch() {
        let c = ResolveCache::default();
        let e = c.epoch();
        for ino in [2, 3, 4] {
            c.put(ino, e, dir(1));
        }
        c.scoped(vec![3]).changed();
        assert_eq!(c.epoch(), e);
        assert!(c.get(2, e).is_some() && c.get(4, e).is_some());
        assert!(c.get(3, e).is_none());
        c.changed();
        assert!(c.get(2, c.epoch()).is_none(), "a global change drops everything");
    }
}
