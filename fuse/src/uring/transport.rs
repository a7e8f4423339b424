//! The ring queues: one thread per possible CPU (pinned to it), each with its own io_uring, a
//! few ring entries registered with the kernel, and a fuser session of its own on the other
//! end of a `SOCK_SEQPACKET` socket pair.
//!
//! A queue's thread waits on its ring only: a CQE is either a request the kernel put into an
//! entry (sent on to the session as one packet: the in header, the opcode header, the
//! payload, as `/dev/fuse` would have delivered it) or a reply received from the session (a
//! `Recv` kept armed on the same ring), which is copied into the entry it answers and
//! committed with COMMIT_AND_FETCH. At most `depth` requests of a queue are in flight and the
//! socket buffers hold `depth` of the largest messages, so a send never blocks the thread.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use tracing::{debug, error, warn};

use super::abi::{self, ReqHeader};
use super::forward::{Negotiated, Shared};
use crate::fs::StrataFs;
use crate::stats::{Op, Stats};

const RECV: u64 = u64::MAX;

/// Socket buffer size asked for (root may exceed `net.core.wmem_max`).
fn want_sndbuf(depth: usize) -> usize {
    (depth + 1) * ((1 << 20) + 8192)
}

/// A connected `SOCK_SEQPACKET` pair with send buffers as large as allowed; returns the pair
/// and the largest message each end can send with `depth` of them queued.
fn socket_pair(depth: usize) -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: a valid two-element array.
    if unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut least = usize::MAX;
    for fd in [&a, &b] {
        let want = want_sndbuf(depth) as libc::c_int;
        let set = |opt| {
            // SAFETY: a valid fd and a pointer to an int of the given size.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&want as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(libc::SO_SNDBUFFORCE) != 0 && set(libc::SO_SNDBUF) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut got: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid fd, an int and its size.
        if unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&mut got as *mut libc::c_int).cast(),
                &mut len,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        least = least.min(got.max(0) as usize);
    }
    // Each queued packet also costs its skb's overhead.
    let per = (least / (depth + 1)).saturating_sub(1024);
    Ok((a, b, per))
}

/// The largest message a queue's socket pair carries with `depth` in flight.
pub fn max_message(depth: usize) -> io::Result<usize> {
    socket_pair(depth).map(|(_, _, m)| m)
}

/// Requests in flight per queue and fuser threads per queue session.
#[derive(Debug, Clone, Copy)]
pub struct Rings {
    pub depth: usize,
}

/// Start one queue per possible CPU for the connection `dev` (the `/dev/fuse` fd that
/// negotiated FUSE_OVER_IO_URING). Returns once every queue has registered its entries (the
/// kernel then sends requests through the rings) or the first error.
pub fn start(dev: Arc<OwnedFd>, n: &Negotiated, rings: Rings, acl: fuser::SessionACL) -> io::Result<()> {
    let queues = super::possible_cpus()?;
    let payload = payload_size(n);
    let stats = n.fs.stats();
    let (tx, rx) = std::sync::mpsc::channel::<io::Result<()>>();
    for qid in 0..queues {
        let session = queue_session(n.fs.clone(), n.abi, rings.depth, acl)?;
        let dev = dev.clone();
        let tx = tx.clone();
        let stats = stats.clone();
        std::thread::Builder::new().name(format!("fuse-ring-{qid}")).spawn(move || {
            pin_to_cpu(qid);
            match Queue::new(&dev, qid as u16, rings.depth, payload, session, stats) {
                Ok(mut q) => {
                    let _ = tx.send(Ok(()));
                    if let Err(e) = q.run() {
                        error!("ring queue {qid}: {e}");
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
    }
    for _ in 0..queues {
        rx.recv().map_err(|_| io::Error::other("a ring queue thread ended early"))??;
    }
    debug!(queues, depth = rings.depth, payload, "FUSE over io_uring");
    Ok(())
}

/// The payload buffer the kernel requires of every entry: at least its largest request
/// (`max(FUSE_MIN_READ_BUFFER, max_write, max_pages * PAGE_SIZE)`), and what the socket carries.
fn payload_size(n: &Negotiated) -> usize {
    let fit = (n.max_message.saturating_sub(4096) / 4096 * 4096).max(4096);
    let data = fit.min(1 << 20);
    // A page more than the data: the opcode headers of a WRITE travel in the header buffer,
    // but a READDIRPLUS or xattr reply may round up.
    (data + 4096).max(8192)
}

/// A fuser session serving one queue: started on one end of a socket pair after a FUSE_INIT
/// of the transport's own; returns the other end.
fn queue_session(
    fs: Arc<StrataFs>,
    abi: (u32, u32),
    depth: usize,
    acl: fuser::SessionACL,
) -> io::Result<OwnedFd> {
    let (ours, theirs, _) = socket_pair(depth)?;
    send_all(&ours, &[&abi::init_request(abi.0, abi.1, 1 << 20)])?;
    let mut cfg = fuser::Config::default();
    cfg.acl = acl;
    cfg.n_threads = Some(depth);
    cfg.clone_fd = false;
    let session = fuser::Session::from_fd(Shared::queue(fs), theirs, acl, cfg)?;
    // The INIT reply is the transport's own business.
    let mut b = [0u8; 512];
    // SAFETY: a valid fd and buffer.
    if unsafe { libc::recv(ours.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // The session serves until the process ends: its handle is never joined (dropping it
    // would wait for threads that only end with the process).
    std::mem::forget(session.spawn()?);
    Ok(ours)
}

fn send_all(fd: &OwnedFd, parts: &[&[u8]]) -> io::Result<()> {
    let iov: Vec<libc::iovec> =
        parts.iter().map(|p| libc::iovec { iov_base: p.as_ptr() as *mut _, iov_len: p.len() }).collect();
    // SAFETY: a zeroed msghdr is valid; it points at `iov`, which outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut _;
    msg.msg_iovlen = iov.len();
    loop {
        // SAFETY: a valid fd and msghdr whose buffers are borrowed for the call.
        let r = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity only touch it.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        // An offline CPU: the queue still works, from wherever the thread runs.
        debug!("ring queue {cpu}: pinning: {}", io::Error::last_os_error());
    }
}

/// One ring entry: the buffers the kernel writes requests into and reads replies from.
struct Entry {
    header: Box<ReqHeader>,
    payload: Vec<u8>,
    iov: Box<[libc::iovec; 2]>,
}

struct Queue {
    qid: u16,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    entries: Vec<Entry>,
    /// The session's end of the socket pair.
    sock: OwnedFd,
    recv_buf: Vec<u8>,
    /// Requests sent on to the session and not answered yet: unique -> entry.
    inflight: HashMap<u64, usize>,
    stats: Arc<Stats>,
}

impl Queue {
    fn new(
        dev: &OwnedFd,
        qid: u16,
        depth: usize,
        payload: usize,
        sock: OwnedFd,
        stats: Arc<Stats>,
    ) -> io::Result<Queue> {
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .build((depth + 1).next_power_of_two() as u32)?;
        ring.submitter().register_files(&[dev.as_raw_fd()])?;
        let mut entries = Vec::with_capacity(depth);
        for _ in 0..depth {
            let mut header = Box::<ReqHeader>::default();
            let mut payload = vec![0u8; payload];
            let iov = Box::new([
                libc::iovec {
                    iov_base: (&mut *header as *mut ReqHeader).cast(),
                    iov_len: std::mem::size_of::<ReqHeader>(),
                },
                libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() },
            ]);
            entries.push(Entry { header, payload, iov });
        }
        let recv_buf = vec![0u8; payload + abi::OUT_HEADER + 4096];
        let mut q = Queue { qid, ring, entries, sock, recv_buf, inflight: HashMap::new(), stats };
        for i in 0..depth {
            q.push_register(i)?;
        }
        q.push_recv()?;
        q.ring.submit()?;
        Ok(q)
    }

    fn push(&mut self, e: squeue::Entry128) -> io::Result<()> {
        // SAFETY: every buffer an SQE points at (entry headers, payloads, iovecs, the receive
        // buffer) is owned by this queue, lives on the heap (boxed, or a Vec never resized)
        // and outlives the ring, which is declared before them and so dropped first.
        let r = unsafe { self.ring.submission().push(&e) };
        if r.is_err() {
            self.ring.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&e) }
                .map_err(|_| io::Error::other("submission queue full"))?;
        }
        Ok(())
    }

    fn push_register(&mut self, i: usize) -> io::Result<()> {
        let iov = self.entries[i].iov.as_ptr() as u64;
        let mut e = opcode::UringCmd80::new(types::Fixed(0), abi::CMD_REGISTER)
            .cmd(abi::cmd_req(self.qid, 0))
            .addr(Some(iov))
            .build()
            .user_data(i as u64);
        set_sqe_len(&mut e, 2);
        self.push(e)
    }

    fn push_commit(&mut self, i: usize) -> io::Result<()> {
        let commit_id = self.entries[i].header.ent.commit_id;
        let e = opcode::UringCmd80::new(types::Fixed(0), abi::CMD_COMMIT_AND_FETCH)
            .cmd(abi::cmd_req(self.qid, commit_id))
            .build()
            .user_data(i as u64);
        self.push(e)
    }

    fn push_recv(&mut self) -> io::Result<()> {
        let e = opcode::Recv::new(
            types::Fd(self.sock.as_raw_fd()),
            self.recv_buf.as_mut_ptr(),
            self.recv_buf.len() as u32,
        )
        .build()
        .user_data(RECV);
        self.push(e.into())
    }

    fn run(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let done: Vec<(u64, i32)> = self.ring.completion().map(|c| (c.user_data(), c.result())).collect();
            for (ud, res) in done {
                if ud == RECV {
                    self.on_reply(res)?;
                } else if !self.on_request(ud as usize, res)? {
                    return Ok(());
                }
            }
        }
    }

    /// A CQE of entry `i`. False when the connection is gone.
    fn on_request(&mut self, i: usize, res: i32) -> io::Result<bool> {
        if i >= self.entries.len() {
            return Err(io::Error::other(format!("CQE for unknown entry {i}")));
        }
        if res < 0 {
            return match -res {
                // Unmounted or aborted: the kernel hands the entries back.
                libc::ENOTCONN | libc::ECANCELED | libc::ENODEV => Ok(false),
                libc::EINTR | libc::EAGAIN => {
                    self.push_register(i)?;
                    Ok(true)
                }
                e => Err(io::Error::from_raw_os_error(e)),
            };
        }
        let ent = &self.entries[i];
        let h = abi::in_header(&ent.header.in_out).ok_or_else(|| io::Error::other("short in header"))?;
        let psz = ent.header.ent.payload_sz as usize;
        let op = abi::op_header_len(&h, psz).filter(|_| psz <= ent.payload.len());
        let Some(op) = op else {
            // Not a request this transport can pass on: answer it EIO rather than leave the
            // caller waiting.
            warn!(opcode = h.opcode, len = h.len, psz, "malformed ring request");
            self.reply_error(i, h.unique, libc::EIO);
            return self.push_commit(i).map(|_| true);
        };
        send_all(
            &self.sock,
            &[&ent.header.in_out[..abi::IN_HEADER], &ent.header.op_in[..op], &ent.payload[..psz]],
        )?;
        self.inflight.insert(h.unique, i);
        self.stats.add(Op::Uring);
        Ok(true)
    }

    fn reply_error(&mut self, i: usize, unique: u64, errno: i32) {
        let hd = &mut self.entries[i].header;
        hd.in_out[..abi::OUT_HEADER].fill(0);
        hd.in_out[0..4].copy_from_slice(&(abi::OUT_HEADER as u32).to_ne_bytes());
        hd.in_out[4..8].copy_from_slice(&(-errno).to_ne_bytes());
        hd.in_out[8..16].copy_from_slice(&unique.to_ne_bytes());
        hd.ent.payload_sz = 0;
    }

    /// A reply from the session (`res` bytes in the receive buffer, or an error).
    fn on_reply(&mut self, res: i32) -> io::Result<()> {
        if res < 0 {
            let e = io::Error::from_raw_os_error(-res);
            if e.kind() != io::ErrorKind::Interrupted && e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
            return self.push_recv();
        }
        if res == 0 {
            return Err(io::Error::other("the queue's session closed its socket"));
        }
        let n = res as usize;
        let msg = &self.recv_buf[..n];
        let unique = abi::out_unique(msg);
        match unique.and_then(|u| self.inflight.remove(&u)) {
            Some(i) => {
                let body = &msg[abi::OUT_HEADER..];
                let ent = &mut self.entries[i];
                if body.len() > ent.payload.len() {
                    let u = unique.unwrap_or(0);
                    warn!(len = body.len(), "reply larger than the ring entry");
                    self.reply_error(i, u, libc::EIO);
                } else {
                    ent.payload[..body.len()].copy_from_slice(body);
                    ent.header.in_out[..abi::OUT_HEADER].copy_from_slice(&msg[..abi::OUT_HEADER]);
                    ent.header.ent.payload_sz = body.len() as u32;
                }
                self.push_commit(i)?;
            }
            None => warn!(?unique, len = n, "reply to no request of this queue"),
        }
        self.push_recv()
    }
}

/// Set `sqe->len` of a 128-byte SQE: REGISTER passes the entry's iovec pair as addr + len 2,
/// and `UringCmd80` has no setter for len.
fn set_sqe_len(e: &mut squeue::Entry128, len: u32) {
    // SAFETY: `Entry128` is `#[repr(C)]` over the kernel's `io_uring_sqe` (plus 64 bytes of
    // command area), whose `len` field is a u32 at byte offset 24; the write stays inside the
    // 128-byte value and any bit pattern is a valid u32 there.
    unsafe {
        let p = (e as *mut squeue::Entry128).cast::<u8>().add(24).cast::<u32>();
        p.write_unaligned(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqe_len_lands_in_the_len_field() {
        let mut e = opcode::UringCmd80::new(types::Fixed(0), abi::CMD_REGISTER).addr(Some(0x1000)).build();
        set_sqe_len(&mut e, 2);
        // SAFETY: reading the 128 bytes of a repr(C) plain-data value.
        let b: [u8; 128] = unsafe { std::mem::transmute(e) };
        assert_eq!(u32::from_ne_bytes(b[24..28].try_into().unwrap()), 2);
        assert_eq!(u64::from_ne_bytes(b[16..24].try_into().unwrap()), 0x1000, "addr untouched");
        assert_eq!(b[0], 46, "IORING_OP_URING_CMD");
    }

    #[test]
    fn socket_pairs_carry_large_packets() {
        let (a, b, max) = socket_pair(2).expect("pair");
        assert!(max >= 64 * 1024, "{max}");
        let big = vec![7u8; max.min(1 << 20)];
        send_all(&a, &[&big[..10], &big[10..]]).expect("send");
        let mut buf = vec![0u8; big.len() + 10];
        // SAFETY: a valid fd and buffer.
        let n = unsafe { libc::recv(b.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert_eq!(n as usize, big.len(), "one packet, whole");
    }
}
