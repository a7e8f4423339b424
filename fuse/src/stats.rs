//! Request counts by opcode: what the kernel asked of this mount, for telling which round trips
//! an operation costs (`strata-fuse --stats FILE`, written on SIGUSR1 and at exit; see
//! `scripts/fuse-requests.sh`). Counting is one relaxed atomic increment per request.

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! ops {
    ($($(#[$m:meta])* $v:ident = $name:literal,)*) => {
        /// A request kind: the opcode, and a few outcomes worth telling apart.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Op { $($(#[$m])* $v,)* }

        impl Op {
            pub const ALL: &'static [Op] = &[$(Op::$v,)*];

            /// The kernel's name of the opcode (`FUSE_` left off).
            pub fn name(self) -> &'static str {
                match self { $(Op::$v => $name,)* }
            }
        }
    };
}

ops! {
    Lookup = "LOOKUP",
    /// A LOOKUP answered "no such name" (also counted as a LOOKUP).
    LookupNegative = "LOOKUP(negative)",
    /// Nodes forgotten: fuser 0.18 hands a BATCH_FORGET over as one `forget` per node (its
    /// `ForgetOne` is not public, so `batch_forget` cannot be overridden).
    Forget = "FORGET",
    Getattr = "GETATTR",
    Setattr = "SETATTR",
    Readlink = "READLINK",
    Symlink = "SYMLINK",
    Mknod = "MKNOD",
    Mkdir = "MKDIR",
    Unlink = "UNLINK",
    Rmdir = "RMDIR",
    Rename = "RENAME",
    Link = "LINK",
    Open = "OPEN",
    Read = "READ",
    Write = "WRITE",
    Statfs = "STATFS",
    Release = "RELEASE",
    Fsync = "FSYNC",
    Setxattr = "SETXATTR",
    Getxattr = "GETXATTR",
    Listxattr = "LISTXATTR",
    Removexattr = "REMOVEXATTR",
    Flush = "FLUSH",
    Opendir = "OPENDIR",
    Readdir = "READDIR",
    Fsyncdir = "FSYNCDIR",
    Access = "ACCESS",
    Create = "CREATE",
    Ioctl = "IOCTL",
    Fallocate = "FALLOCATE",
    Readdirplus = "READDIRPLUS",
    /// Requests that came through FUSE over io_uring (each also counted by its opcode).
    Uring = "(io_uring)",
}

/// Counts of requests by [`Op`].
#[derive(Debug)]
pub struct Stats {
    counts: Vec<AtomicU64>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats { counts: Op::ALL.iter().map(|_| AtomicU64::new(0)).collect() }
    }
}

impl Stats {
    /// Count one request of kind `op`.
    pub fn add(&self, op: Op) {
        self.add_n(op, 1);
    }

    pub fn add_n(&self, op: Op, n: u64) {
        self.counts[op as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, op: Op) -> u64 {
        self.counts[op as usize].load(Ordering::Relaxed)
    }

    /// `NAME COUNT` lines, one per kind seen, in the order of [`Op::ALL`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        for &op in Op::ALL {
            let n = self.get(op);
            if n > 0 {
                out.push_str(&format!("{} {n}\n", op.name()));
            }
        }
        out
    }

    /// Write [`Stats::render`] to `path`, atomically (a reader sees the old or the new file).
    pub fn write_to(&self, path: &Path) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(self.render().as_bytes())?;
        drop(f);
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_only_kinds_seen_in_opcode_order() {
        let s = Stats::default();
        s.add(Op::Create);
        s.add(Op::Lookup);
        s.add(Op::Lookup);
        s.add_n(Op::Forget, 7);
        assert_eq!(s.render(), "LOOKUP 2\nFORGET 7\nCREATE 1\n");
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Op::ALL.iter().map(|o| o.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Op::ALL.len());
    }

    #[test]
    fn write_to_replaces_the_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("stats");
        let s = Stats::default();
        s.add(Op::Getattr);
        s.write_to(&p).expect("write");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "GETATTR 1\n");
        s.add(Op::Getattr);
        s.write_to(&p).expect("write");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "GETATTR 2\n");
        assert!(!d.path().join("stats.tmp").exists());
    }
}
