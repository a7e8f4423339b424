//! FUSE over io_uring (Linux 6.14+): a second transport for the requests of a mount, next to
//! the classic reads of `/dev/fuse`.
//!
//! How the kernel's side works (Documentation/filesystems/fuse-io-uring.rst, the
//! `fuse_uring_*` structs of include/uapi/linux/fuse.h):
//! * The kernel offers `FUSE_OVER_IO_URING` in FUSE_INIT only while the module parameter
//!   `/sys/module/fuse/parameters/enable_uring` is 1; the daemon accepts it in its reply.
//! * The daemon then sends `IORING_OP_URING_CMD` SQEs (128-byte SQEs: the command is a
//!   `fuse_uring_cmd_req` in the SQE's 80-byte command area) on the `/dev/fuse` fd. Each
//!   `FUSE_IO_URING_CMD_REGISTER` lends the kernel one ring entry: an iovec pair (sqe->addr,
//!   sqe->len == 2) of a header buffer (`fuse_uring_req_header`: the in/out header, the opcode's
//!   own header, and `fuse_uring_ent_in_out` with the commit id and the payload size) and a
//!   payload buffer at least as large as the connection's largest request (max_write /
//!   max_pages).
//! * There is one queue per possible CPU (`qid` = CPU number). The kernel switches a connection
//!   over to the ring once every queue has an entry; until then requests still arrive through
//!   `/dev/fuse`. A request is queued on the queue of the CPU its caller runs on, so a ring
//!   thread pinned to that CPU answers it without a cross-CPU wake-up.
//! * A registered entry completes (its CQE) when a request was copied into it. The reply goes
//!   into the same buffers (out header, payload size, payload) and is handed back by
//!   `FUSE_IO_URING_CMD_COMMIT_AND_FETCH` with the entry's commit id, which also lends the
//!   entry again for the next request: one SQE per request, no read(2) and no write(2).
//! * FORGET, INTERRUPT and the daemon's notifications still go through `/dev/fuse`, so the
//!   classic session keeps reading it.
//!
//! How strata-fuse uses it (`uring=auto|on|off`, default auto): fuser 0.18 owns request
//! parsing and the `Reply*` types its handlers answer with, and none of it can be built from a
//! byte buffer (its `ll` module and reply constructors are private). So the ring transport
//! feeds fuser: each queue's thread hands every request it fetches from the ring to a fuser
//! session of its own over a `SOCK_SEQPACKET` socket pair (one request or reply per packet,
//! as on `/dev/fuse`), and commits the reply that comes back. All sessions share one
//! `StrataFs`. This costs a socket round trip per request that a native implementation would
//! not pay, so the figures measure the ring's benefit less purely than libfuse's.

use std::io;
use std::path::Path;

mod abi;
mod forward;
mod transport;

pub use forward::{Negotiated, Shared};
pub use transport::{max_message, start, Rings};

/// Where the kernel says whether FUSE over io_uring is allowed.
pub const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// The `uring=` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Use the ring when the kernel offers it (the module parameter is on and FUSE_INIT
    /// negotiated it), `/dev/fuse` otherwise.
    #[default]
    Auto,
    /// Use the ring; failing to set it up fails the mount.
    On,
    /// Only `/dev/fuse`.
    Off,
}

impl Mode {
    /// `auto`, `on` (also `1`, `yes`, `true`, or the bare option), `off` (`0`, `no`, `false`).
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "auto" => Some(Mode::Auto),
            "on" | "1" | "yes" | "true" => Some(Mode::On),
            "off" | "0" | "no" | "false" => Some(Mode::Off),
            _ => None,
        }
    }
}

/// Whether the kernel's fuse module allows io_uring (its parameter reads `Y`); false when the
/// kernel has no such parameter.
pub fn kernel_enabled() -> bool {
    enabled_at(Path::new(ENABLE_URING))
}

fn enabled_at(p: &Path) -> bool {
    matches!(std::fs::read_to_string(p).as_deref().map(str::trim), Ok("Y") | Ok("1"))
}

/// The number of queues the kernel expects: one per possible CPU (it counts
/// `num_possible_cpus()`, which `/sys/devices/system/cpu/possible` lists as ranges).
pub fn possible_cpus() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    count_cpu_list(s.trim())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("possible CPUs: {s:?}")))
}

/// The number of CPUs in a list like `0-3,8,10-11`.
fn count_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in s.split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("auto"), Some(Mode::Auto));
        assert_eq!(Mode::parse("on"), Some(Mode::On));
        assert_eq!(Mode::parse("0"), Some(Mode::Off));
        assert_eq!(Mode::parse("sometimes"), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-1"), Some(2));
        assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list(""), None);
    }

    #[test]
    fn parameter_values() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("enable_uring");
        assert!(!enabled_at(&p), "missing parameter: not enabled");
        std::fs::write(&p, "N\n").expect("write");
        assert!(!enabled_at(&p));
        std::fs::write(&p, "Y\n").expect("write");
        assert!(enabled_at(&p));
    }
}
