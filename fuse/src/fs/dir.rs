//! Directory listings answered: READDIR (names) and READDIRPLUS (names with their entries, so a
//! walker that stats each name needs no LOOKUP).

use std::time::Duration;

use fuser::{Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use super::node::kind_of;
use super::{errno_of, StrataFs};

impl StrataFs {
    pub(super) fn readdir_reply(&self, ino: u64, offset: u64, mut reply: ReplyDirectory) {
        let ents = match self.listing_shared(ino, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(errno_of(&e)),
        };
        let mut full = false;
        for (off, name, fmt, child) in ents.iter().filter(|e| e.0 > offset) {
            if reply.add(INodeNo(*child), *off, kind_of(*fmt), name) {
                full = true;
                break;
            }
        }
        if !full {
            self.listing_done(ino);
        }
        reply.ok();
    }

    pub(super) fn readdirplus_reply(&self, ino: u64, offset: u64, mut reply: ReplyDirectoryPlus) {
        let ents = match self.listing_shared(ino, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(errno_of(&e)),
        };
        let mut full = false;
        for (off, name, _fmt, child) in ents.iter().filter(|e| e.0 > offset) {
            let off = *off;
            let _r = self.lock_r();
            if name == "." || name == ".." {
                let st = match self.stat_node(*child) {
                    Ok((st, _, _)) => st,
                    Err(_) => continue,
                };
                let attr = self.attr_of(*child, &st, None);
                if reply.add(INodeNo(*child), off, name, &Duration::ZERO, &attr, Generation(0)) {
                    full = true;
                    break;
                }
                continue;
            }
            // The entry may have gone since the listing was taken: skip it.
            let (st, r, _) = match self.stat_node(*child) {
                Ok(v) => v,
                Err(_) => continue,
            };
            let child = &self.canonical(ino, name, *child, &st, &r, 0);
            let attr = self.attr_of(*child, &st, Some(&r));
            // Count the lookup before the kernel can see the entry.
            if !self.inodes.count_lookup(*child) {
                continue;
            }
            let ttl = self.ttl_of(*child, &st);
            if reply.add(INodeNo(*child), off, name, &ttl, &attr, Generation(0)) {
                self.inodes.forget(*child, 1);
                full = true;
                break;
            }
        }
        if !full {
            self.listing_done(ino);
        }
        reply.ok();
    }
}
