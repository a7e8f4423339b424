//! The inode table: FUSE node ids and the names they stand for (parent node and name, several
//! for a hardlinked file), their lookup counts, and the node shared by the names of a file with
//! several links. A node's merged path is its chain of names up to the root ([`Inodes::chain`]).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use tracing::debug;

use crate::sys::err;

/// The root directory's node.
pub(crate) const ROOT: u64 = 1;

type Res<T> = Result<T, io::Error>;

#[derive(Debug)]
struct Node {
    parent: u64,
    name: OsString,
    nlookup: u64,
    attached: bool,
    /// Other names of a hardlinked file (same node, same st_ino).
    aliases: Vec<(u64, OsString)>,
    /// Set when the node's names moved to another node that stands for the same file: a
    /// fresh one because the file was copied up while open in passthrough mode (see
    /// [`Inodes::split`]), or the shared node of a hardlinked file its last name was merged into
    /// (see [`Inodes::merge_name`]). It resolves as that node, so the kernel's references to it
    /// (and requests already under way) keep working.
    split_to: Option<u64>,
    /// The file has (or had, while this node lived) several links: see `StrataFs::ttl_of` and
    /// [`Inodes::uncached`].
    linked: bool,
}

#[derive(Debug, Default)]
struct Table {
    nodes: HashMap<u64, Node>,
    children: HashMap<(u64, OsString), u64>,
}

/// The node table.
#[derive(Debug)]
pub(crate) struct Inodes {
    table: RwLock<Table>,
    next_ino: AtomicU64,
    /// Reported st_ino of hardlinked files, by real (dev, ino).
    hardlinks: Mutex<HashMap<(u64, u64), u64>>,
}

impl Default for Inodes {
    fn default() -> Inodes {
        let mut table = Table::default();
        table.nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: OsString::new(),
                nlookup: 1,
                attached: true,
                aliases: vec![],
                split_to: None,
                linked: false,
            },
        );
        Inodes { table: RwLock::new(table), next_ino: AtomicU64::new(ROOT + 1), hardlinks: Mutex::default() }
    }
}

impl Inodes {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The chain of (ino, name) from the root's child down to `ino`.
    pub(crate) fn chain(&self, ino: u64) -> Res<Vec<(u64, OsString)>> {
        let t = self.read();
        let mut out = Vec::new();
        let mut cur = ino;
        for _ in 0..64 {
            match t.nodes.get(&cur).and_then(|n| n.split_to) {
                Some(to) => cur = to,
                None => break,
            }
        }
        while cur != ROOT {
            let n = t.nodes.get(&cur).ok_or_else(|| err(libc::ENOENT))?;
            if !n.attached {
                return Err(err(libc::ENOENT));
            }
            out.push((cur, n.name.clone()));
            cur = n.parent;
            if out.len() > 4096 {
                return Err(err(libc::ELOOP));
            }
        }
        out.reverse();
        Ok(out)
    }

    pub(crate) fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.read().children.get(&(parent, name.to_os_string())).copied()
    }

    /// Find or create the node for `parent/name`, adding `lookups` to its lookup count.
    pub(crate) fn node_for(&self, parent: u64, name: &OsStr, lookups: u64) -> u64 {
        let key = (parent, name.to_os_string());
        if lookups == 0 {
            if let Some(i) = self.read().children.get(&key) {
                return *i;
            }
        }
        let mut t = self.write();
        if let Some(&i) = t.children.get(&key) {
            if let Some(n) = t.nodes.get_mut(&i) {
                n.nlookup += lookups;
            }
            return i;
        }
        let ino = self.next_ino.fetch_add(1, Ordering::Relaxed);
        t.nodes.insert(
            ino,
            Node {
                parent,
                name: name.to_os_string(),
                nlookup: lookups,
                attached: true,
                aliases: vec![],
                split_to: None,
                linked: false,
            },
        );
        t.children.insert(key, ino);
        ino
    }

    pub(crate) fn detach(&self, parent: u64, name: &OsStr) {
        let mut t = self.write();
        Self::detach_locked(&mut t, parent, name);
    }

    fn detach_locked(t: &mut Table, parent: u64, name: &OsStr) {
        let key = (parent, name.to_os_string());
        if let Some(ino) = t.children.remove(&key) {
            let remove = match t.nodes.get_mut(&ino) {
                Some(n) => {
                    if n.parent == key.0 && n.name == key.1 {
                        if let Some((p, nm)) = n.aliases.pop() {
                            n.parent = p;
                            n.name = nm;
                        } else {
                            n.attached = false;
                        }
                    } else {
                        n.aliases.retain(|a| *a != key);
                    }
                    n.nlookup == 0 && !n.attached
                }
                None => false,
            };
            if remove {
                t.nodes.remove(&ino);
            }
        }
    }

    /// Make `parent/name` another name of node `ino` (a hardlink), replacing whatever node
    /// had that name (a file that is gone). Nothing to do when it is `ino`'s name already; no
    /// name is added to a node that has none left.
    pub(crate) fn add_alias(&self, ino: u64, parent: u64, name: &OsStr) {
        let mut t = self.write();
        if t.children.get(&(parent, name.to_os_string())) == Some(&ino) {
            return;
        }
        Self::detach_locked(&mut t, parent, name);
        Self::alias_locked(&mut t, ino, parent, name);
    }

    fn alias_locked(t: &mut Table, ino: u64, parent: u64, name: &OsStr) -> bool {
        match t.nodes.get_mut(&ino) {
            Some(n) if n.attached => {
                n.aliases.push((parent, name.to_os_string()));
                t.children.insert((parent, name.to_os_string()), ino);
                true
            }
            _ => false,
        }
    }

    /// `parent/name` and node `x` were found to be the same hardlinked file: make the name
    /// one of `x`'s and count `lookups` on `x`. The node that had the name, if it is left
    /// without names, now resolves as `x` (requests on it may be under way). Returns the node
    /// the name now has, `x` unless `x` lost its names meanwhile. One step under the table
    /// lock, so concurrent lookups of the names of one file agree.
    pub(crate) fn merge_name(&self, x: u64, parent: u64, name: &OsStr, lookups: u64) -> Option<u64> {
        let mut t = self.write();
        let key = (parent, name.to_os_string());
        let old = t.children.get(&key).copied();
        if old != Some(x) {
            if !t.nodes.get(&x).is_some_and(|n| n.attached) {
                return None;
            }
            Self::detach_locked(&mut t, parent, name);
            if let Some(o) = old.and_then(|o| t.nodes.get_mut(&o)) {
                if !o.attached && o.split_to.is_none() {
                    o.split_to = Some(x);
                }
            }
            Self::alias_locked(&mut t, x, parent, name);
        }
        if let Some(n) = t.nodes.get_mut(&x) {
            n.nlookup += lookups;
        }
        Some(x)
    }

    /// The node `ino` resolves as now: itself, or where [`Inodes::split`] or
    /// [`Inodes::merge_name`] sent its names.
    pub(crate) fn current(&self, ino: u64) -> u64 {
        let t = self.read();
        let mut cur = ino;
        for _ in 0..64 {
            match t.nodes.get(&cur).and_then(|n| n.split_to) {
                Some(to) => cur = to,
                None => break,
            }
        }
        cur
    }

    pub(crate) fn move_node(&self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr) {
        let mut t = self.write();
        Self::detach_locked(&mut t, newparent, newname);
        let key = (parent, name.to_os_string());
        let nkey = (newparent, newname.to_os_string());
        if let Some(ino) = t.children.remove(&key) {
            if let Some(n) = t.nodes.get_mut(&ino) {
                if n.parent == key.0 && n.name == key.1 {
                    n.parent = newparent;
                    n.name = newname.to_os_string();
                } else {
                    for a in n.aliases.iter_mut() {
                        if *a == key {
                            *a = nkey.clone();
                        }
                    }
                }
            }
            t.children.insert(nkey, ino);
        }
    }

    /// After RENAME_EXCHANGE: the nodes of `parent/name` and `newparent/newname` trade places.
    pub(crate) fn swap_nodes(&self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr) {
        let mut t = self.write();
        let key = (parent, name.to_os_string());
        let nkey = (newparent, newname.to_os_string());
        let a = t.children.remove(&key);
        let b = t.children.remove(&nkey);
        for (ino, from, to) in [(a, &key, &nkey), (b, &nkey, &key)] {
            let Some(ino) = ino else { continue };
            if let Some(n) = t.nodes.get_mut(&ino) {
                if n.parent == from.0 && n.name == from.1 {
                    n.parent = to.0;
                    n.name = to.1.clone();
                } else {
                    for al in n.aliases.iter_mut() {
                        if al == from {
                            *al = to.clone();
                        }
                    }
                }
            }
            t.children.insert(to.clone(), ino);
        }
    }

    pub(crate) fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let mut t = self.write();
        let remove = match t.nodes.get_mut(&ino) {
            Some(node) => {
                node.nlookup = node.nlookup.saturating_sub(n);
                node.nlookup == 0 && !node.attached
            }
            None => false,
        };
        if remove {
            t.nodes.remove(&ino);
        }
    }

    /// Give the names of file node `ino` to a fresh node and leave `ino` to the files already
    /// open on it. Needed when a file open in passthrough mode on its lower copy was copied up:
    /// the kernel allows one backing file per FUSE inode, so opens of the copied-up file need
    /// another inode. The old node keeps resolving, as the new one (as one overlay inode would).
    /// Returns the names that moved: the kernel's cached entries for them still lead to `ino`
    /// (see `StrataFs::forget_names`).
    pub(crate) fn split(&self, ino: u64) -> Vec<(u64, OsString)> {
        let mut t = self.write();
        let Some(n) = t.nodes.get_mut(&ino) else { return Vec::new() };
        if !n.attached || n.split_to.is_some() {
            return Vec::new();
        }
        let fresh = self.next_ino.fetch_add(1, Ordering::Relaxed);
        let moved = Node {
            parent: n.parent,
            name: n.name.clone(),
            nlookup: 0,
            attached: true,
            aliases: std::mem::take(&mut n.aliases),
            split_to: None,
            linked: n.linked,
        };
        n.attached = false;
        n.split_to = Some(fresh);
        let keys: Vec<(u64, OsString)> = std::iter::once((moved.parent, moved.name.clone()))
            .chain(moved.aliases.iter().cloned())
            .collect();
        for k in &keys {
            t.children.insert(k.clone(), fresh);
        }
        t.nodes.insert(fresh, moved);
        drop(t);
        // The shared node of an upper hardlink is now the fresh one.
        for v in self.hardlinks().values_mut() {
            if *v == ino {
                *v = fresh;
            }
        }
        debug!(ino, fresh, "node split after a copy-up under a passthrough open");
        keys
    }

    /// The shared nodes of files with several links, by real (dev, ino).
    pub(crate) fn hardlinks(&self) -> MutexGuard<'_, HashMap<(u64, u64), u64>> {
        self.hardlinks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether node `ino` is in the table and has a name.
    pub(crate) fn is_attached(&self, ino: u64) -> bool {
        self.read().nodes.get(&ino).is_some_and(|n| n.attached)
    }

    /// The parent node of directory `ino` (the root for the root and for a node not known).
    pub(crate) fn parent_of(&self, ino: u64) -> u64 {
        if ino == ROOT {
            ROOT
        } else {
            self.read().nodes.get(&ino).map(|n| n.parent).unwrap_or(ROOT)
        }
    }

    /// Count one lookup of `ino` if it still has a name (false: it has none).
    pub(crate) fn count_lookup(&self, ino: u64) -> bool {
        let mut t = self.write();
        match t.nodes.get_mut(&ino) {
            Some(n) if n.attached => {
                n.nlookup += 1;
                true
            }
            _ => false,
        }
    }

    /// Whether the kernel must not cache node `ino`, a non-directory with `multi` (several)
    /// links now: it has or had several links (remembered for the node's lifetime), or it is
    /// not in the table and has several links.
    pub(crate) fn uncached(&self, ino: u64, multi: bool) -> bool {
        let linked = self.read().nodes.get(&ino).map(|n| n.linked);
        match linked {
            Some(true) => true,
            Some(false) if multi => {
                if let Some(n) = self.write().nodes.get_mut(&ino) {
                    n.linked = true;
                }
                true
            }
            None if multi => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(t: &Inodes, ino: u64) -> Vec<OsString> {
        t.chain(ino).map(|c| c.into_iter().map(|(_, n)| n).collect()).unwrap_or_default()
    }

    #[test]
    fn aliasing_a_name_a_node_has_already_keeps_it() {
        let t = Inodes::default();
        let a = t.node_for(ROOT, OsStr::new("a"), 1);
        t.add_alias(a, ROOT, OsStr::new("a"));
        assert!(t.is_attached(a), "the node lost its only name");
        assert_eq!(t.child(ROOT, OsStr::new("a")), Some(a));
        assert_eq!(names(&t, a), [OsString::from("a")]);
    }

    #[test]
    fn a_merged_node_resolves_as_the_shared_one_and_gives_it_its_lookups() {
        let t = Inodes::default();
        let x = t.node_for(ROOT, OsStr::new("a"), 1);
        // Another lookup made a node for the second name before it was known to be a link.
        let n = t.node_for(ROOT, OsStr::new("b"), 2);
        assert_eq!(t.merge_name(x, ROOT, OsStr::new("b"), 1), Some(x));
        assert_eq!(t.child(ROOT, OsStr::new("b")), Some(x));
        assert!(!t.is_attached(n));
        // A request already under way on n still finds the file, through x.
        assert_eq!(t.current(n), x);
        assert_eq!(names(&t, n), [OsString::from("a")]);
        // Merging again (a concurrent lookup of the same name) changes nothing but the count.
        assert_eq!(t.merge_name(x, ROOT, OsStr::new("b"), 1), Some(x));
        assert_eq!(t.child(ROOT, OsStr::new("b")), Some(x));
        // x's first name goes: the alias takes over.
        t.detach(ROOT, OsStr::new("a"));
        assert_eq!(names(&t, x), [OsString::from("b")]);
        assert_eq!(names(&t, n), [OsString::from("b")]);
        // x has 1 + 1 + 1 lookups: three forgets drop it once it has no name.
        t.detach(ROOT, OsStr::new("b"));
        t.forget(x, 2);
        assert!(t.read().nodes.contains_key(&x));
        t.forget(x, 1);
        assert!(!t.read().nodes.contains_key(&x));
        // n has nothing left to resolve as.
        assert!(t.chain(n).is_err());
    }

    #[test]
    fn no_name_is_merged_into_a_node_without_names() {
        let t = Inodes::default();
        let x = t.node_for(ROOT, OsStr::new("a"), 1);
        let n = t.node_for(ROOT, OsStr::new("b"), 1);
        t.detach(ROOT, OsStr::new("a"));
        assert_eq!(t.merge_name(x, ROOT, OsStr::new("b"), 1), None);
        assert_eq!(t.child(ROOT, OsStr::new("b")), Some(n));
        assert!(t.is_attached(n));
    }

    #[test]
    fn a_split_node_is_current_as_its_successor() {
        let t = Inodes::default();
        let x = t.node_for(ROOT, OsStr::new("a"), 1);
        t.add_alias(x, ROOT, OsStr::new("b"));
        let moved = t.split(x);
        assert_eq!(moved.len(), 2);
        let fresh = t.current(x);
        assert_ne!(fresh, x);
        assert_eq!(t.child(ROOT, OsStr::new("a")), Some(fresh));
        assert_eq!(t.child(ROOT, OsStr::new("b")), Some(fresh));
        // A link made through the old node names the fresh one.
        t.add_alias(t.current(x), ROOT, OsStr::new("c"));
        assert_eq!(t.child(ROOT, OsStr::new("c")), Some(fresh));
    }
}
