//! Stream accounting: the tar stream is read through a [`BoundedReader`] that counts the bytes
//! consumed, charges what the tar crate reads while it parses an entry's headers to a budget
//! ([`MAX_HEADER_BYTES`]: PAX records, GNU long names and sparse maps cannot make unpack buffer
//! without bound), and keeps those header bytes so that the PAX records can be re-parsed by length
//! ([`crate::tar::pax::records_before`]). A [`DirectReader`] reads an old GNU sparse entry's data
//! behind the tar crate's back; the tar crate's later skip over it is answered from the debt.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::rc::Rc;

/// Upper bound on the header data (PAX records, GNU long names, sparse maps) read for one entry.
pub const MAX_HEADER_BYTES: u64 = 8 << 20;

/// Shared between the reader wrapper and the unpack loop: while `armed`, reads are charged to
/// `budget` (the tar crate is then parsing headers); when it runs out, reads fail.
#[derive(Default)]
pub(super) struct Budget {
    pub(super) armed: Cell<bool>,
    pub(super) left: Cell<u64>,
    pub(super) tripped: Cell<bool>,
    /// Bytes consumed from the stream so far (the tar crate's offsets count the same bytes).
    pub(super) pos: Cell<u64>,
    /// Everything read while armed, starting at stream offset `captured_at`: the extension headers
    /// (PAX, GNU long names) before an entry, which are re-parsed by
    /// [`crate::tar::pax::records_before`].
    pub(super) captured: std::cell::RefCell<Vec<u8>>,
    pub(super) captured_at: Cell<u64>,
    /// Bytes the unpacker read past the tar crate with [`DirectReader`] (the data of an old GNU
    /// sparse entry, which the tar crate would expand with its holes): the tar crate's next
    /// reads are its skip over that data, and are answered from this count without touching
    /// the stream.
    pub(super) debt: Cell<u64>,
}

pub(super) struct BoundedReader<R> {
    pub(super) inner: Rc<RefCell<R>>,
    pub(super) budget: Rc<Budget>,
}

pub(super) fn borrow_inner<R>(inner: &RefCell<R>) -> io::Result<std::cell::RefMut<'_, R>> {
    inner.try_borrow_mut().map_err(|_| io::Error::other("tar stream reader used re-entrantly"))
}

impl<R: Read> Read for BoundedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let debt = self.budget.debt.get();
        if debt > 0 && !buf.is_empty() {
            // The skip over data already consumed directly: not charged, not captured.
            let n = buf.len().min(usize::try_from(debt).unwrap_or(usize::MAX));
            if self.budget.armed.get() {
                if !self.budget.captured.borrow().is_empty() {
                    return Err(io::Error::other("sparse entry data skipped inside a header"));
                }
                self.budget.captured_at.set(self.budget.captured_at.get() + n as u64);
            }
            buf[..n].fill(0);
            self.budget.debt.set(debt - n as u64);
            self.budget.pos.set(self.budget.pos.get() + n as u64);
            return Ok(n);
        }
        let mut inner = borrow_inner(&self.inner)?;
        if !self.budget.armed.get() {
            let got = inner.read(buf)?;
            self.budget.pos.set(self.budget.pos.get() + got as u64);
            return Ok(got);
        }
        let left = self.budget.left.get();
        if left == 0 {
            self.budget.tripped.set(true);
            return Err(io::Error::other("tar header data exceeds limit"));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = inner.read(&mut buf[..n])?;
        self.budget.left.set(left - got as u64);
        self.budget.pos.set(self.budget.pos.get() + got as u64);
        self.budget.captured.borrow_mut().extend_from_slice(&buf[..got]);
        Ok(got)
    }
}

/// Reads the tar stream behind the tar crate's back (see [`Budget::debt`]).
pub(super) struct DirectReader<R> {
    pub(super) inner: Rc<RefCell<R>>,
    pub(super) budget: Rc<Budget>,
}

impl<R: Read> Read for DirectReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = borrow_inner(&self.inner)?.read(buf)?;
        self.budget.debt.set(self.budget.debt.get() + got as u64);
        Ok(got)
    }
}
