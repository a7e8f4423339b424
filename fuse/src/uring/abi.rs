//! The kernel ABI of FUSE over io_uring (include/uapi/linux/fuse.h, protocol 7.42+) and the
//! few fields of the classic message headers the transport reads or writes.

/// `FUSE_IO_URING_CMD_REGISTER`: lend the kernel an entry (and fetch a request into it).
pub(crate) const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`: hand back a reply and lend the entry again.
pub(crate) const CMD_COMMIT_AND_FETCH: u32 = 2;

/// `fuse_in_header`: len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding.
pub(crate) const IN_HEADER: usize = 40;
/// `fuse_out_header`: len, error, unique.
pub(crate) const OUT_HEADER: usize = 16;
/// `FUSE_URING_IN_OUT_HEADER_SZ`, `FUSE_URING_OP_IN_OUT_SZ`.
pub(crate) const IN_OUT_SZ: usize = 128;
pub(crate) const OP_IN_SZ: usize = 128;
/// `FUSE_INIT`.
pub(crate) const OPCODE_INIT: u32 = 26;

/// `struct fuse_uring_ent_in_out`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EntInOut {
    pub(crate) flags: u64,
    /// The id a reply is committed with (the request's unique).
    pub(crate) commit_id: u64,
    /// Bytes of the payload buffer in use, in either direction.
    pub(crate) payload_sz: u32,
    pub(crate) padding: u32,
    pub(crate) reserved: u64,
}

/// `struct fuse_uring_req_header`: the header buffer of a ring entry.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReqHeader {
    /// `fuse_in_header` of a fetched request, `fuse_out_header` of a committed reply.
    pub(crate) in_out: [u8; IN_OUT_SZ],
    /// The opcode's own header (`in_args[0]`; empty for opcodes without one).
    pub(crate) op_in: [u8; OP_IN_SZ],
    pub(crate) ent: EntInOut,
}

impl Default for ReqHeader {
    fn default() -> ReqHeader {
        ReqHeader { in_out: [0; IN_OUT_SZ], op_in: [0; OP_IN_SZ], ent: EntInOut::default() }
    }
}

/// `struct fuse_uring_cmd_req`, in the 80-byte command area of a 128-byte SQE.
pub(crate) fn cmd_req(qid: u16, commit_id: u64) -> [u8; 80] {
    let mut c = [0u8; 80];
    // flags (u64) stay 0; commit_id at 8, qid at 16.
    c[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    c[16..18].copy_from_slice(&qid.to_ne_bytes());
    c
}

/// The fields of a `fuse_in_header` the transport needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InHeader {
    pub(crate) len: u32,
    pub(crate) opcode: u32,
    pub(crate) unique: u64,
}

pub(crate) fn in_header(b: &[u8]) -> Option<InHeader> {
    let b = b.get(..IN_HEADER)?;
    Some(InHeader {
        len: u32::from_ne_bytes(b[0..4].try_into().ok()?),
        opcode: u32::from_ne_bytes(b[4..8].try_into().ok()?),
        unique: u64::from_ne_bytes(b[8..16].try_into().ok()?),
    })
}

/// The unique of a reply (`fuse_out_header`).
pub(crate) fn out_unique(b: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(8..16)?.try_into().ok()?))
}

/// A `FUSE_INIT` request as the kernel sends it (`fuse_init_in` of protocol 7.36+, 64 bytes),
/// asking for nothing: what a queue's own fuser session reads first.
pub(crate) fn init_request(major: u32, minor: u32, max_readahead: u32) -> Vec<u8> {
    let len = IN_HEADER + 64;
    let mut m = vec![0u8; len];
    m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    m[4..8].copy_from_slice(&OPCODE_INIT.to_ne_bytes());
    m[8..16].copy_from_slice(&1u64.to_ne_bytes());
    let b = IN_HEADER;
    m[b..b + 4].copy_from_slice(&major.to_ne_bytes());
    m[b + 4..b + 8].copy_from_slice(&minor.to_ne_bytes());
    m[b + 8..b + 12].copy_from_slice(&max_readahead.to_ne_bytes());
    m
}

/// The length of a request's opcode header in the ring: what `len` counts beyond the in header
/// and the payload. None when the kernel's numbers do not add up.
pub(crate) fn op_header_len(h: &InHeader, payload_sz: usize) -> Option<usize> {
    let n = (h.len as usize).checked_sub(IN_HEADER + payload_sz)?;
    (n <= OP_IN_SZ).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<EntInOut>(), 32);
        assert_eq!(std::mem::size_of::<ReqHeader>(), 128 + 128 + 32 + 32, "padded to 64");
        assert_eq!(std::mem::offset_of!(ReqHeader, ent), 256);
        let c = cmd_req(3, 0x1122);
        assert_eq!(u64::from_ne_bytes(c[8..16].try_into().unwrap()), 0x1122);
        assert_eq!(u16::from_ne_bytes(c[16..18].try_into().unwrap()), 3);
    }

    #[test]
    fn headers() {
        let m = init_request(7, 45, 4096);
        let h = in_header(&m).expect("header");
        assert_eq!(h, InHeader { len: 104, opcode: OPCODE_INIT, unique: 1 });
        assert_eq!(op_header_len(&h, 0), Some(64));
        assert_eq!(op_header_len(&h, 100), None, "payload larger than the message");
        assert_eq!(op_header_len(&InHeader { len: 40 + 200, opcode: 1, unique: 2 }, 0), None);
        assert_eq!(in_header(&m[..20]), None);
        let mut o = [0u8; 16];
        o[8..16].copy_from_slice(&9u64.to_ne_bytes());
        assert_eq!(out_unique(&o), Some(9));
    }
}
