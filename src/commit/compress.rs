//! The stream stages of a layer write: hashing (sha256 and a byte count) and compressing
//! (gzip on every core, zstd, or none).

use std::io::{self, Write};

use super::LayerOptions;
use crate::image::Compression;

/// Gzip on every core: the stream is cut into fixed blocks, each compressed on a worker thread as a
/// gzip member of its own (mtime 0, no name), and the members are written in order. Multi-member
/// gzip is standard (RFC 1952; gzip, pigz, Go's reader and flate2's `MultiGzDecoder` read it), the
/// fixed block size keeps the output deterministic, and 1 MiB blocks cost well under 1% in size.
/// Dropped unfinished (an error), the closed channels end the workers.
pub(super) struct ParallelGzip<W: Write> {
    out: W,
    buf: Vec<u8>,
    next_seq: u64,
    next_write: u64,
    done: std::collections::BTreeMap<u64, io::Result<Vec<u8>>>,
    jobs: Option<std::sync::mpsc::SyncSender<(u64, Vec<u8>)>>,
    results: std::sync::mpsc::Receiver<(u64, io::Result<Vec<u8>>)>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

const GZIP_BLOCK: usize = 1 << 20;

fn gzip_member(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::with_capacity(data.len() / 2 + 64), flate2::Compression::new(level));
    e.write_all(data)?;
    e.finish()
}

impl<W: Write> ParallelGzip<W> {
    fn new(out: W, level: u32) -> Self {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 16);
        let (jtx, jrx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(n);
        let jrx = std::sync::Arc::new(std::sync::Mutex::new(jrx));
        let (rtx, rrx) = std::sync::mpsc::channel();
        let workers = (0..n)
            .map(|_| {
                let jrx = jrx.clone();
                let rtx = rtx.clone();
                std::thread::spawn(move || loop {
                    let job = match jrx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, data)) = job else { return };
                    if rtx.send((seq, gzip_member(&data, level))).is_err() {
                        return;
                    }
                })
            })
            .collect();
        ParallelGzip {
            out,
            buf: Vec::with_capacity(GZIP_BLOCK),
            next_seq: 0,
            next_write: 0,
            done: Default::default(),
            jobs: Some(jtx),
            results: rrx,
            workers,
        }
    }

    /// Write finished members in order; wait for results while more than `max_pending` are out.
    fn drain(&mut self, max_pending: u64) -> io::Result<()> {
        loop {
            while let Some(r) = self.done.remove(&self.next_write) {
                self.out.write_all(&r?)?;
                self.next_write += 1;
            }
            if self.next_seq - self.next_write <= max_pending {
                return Ok(());
            }
            let (seq, r) = self.results.recv().map_err(|_| io::Error::other("gzip worker exited"))?;
            self.done.insert(seq, r);
        }
    }

    fn submit(&mut self) -> io::Result<()> {
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(GZIP_BLOCK));
        let jobs = self.jobs.as_ref().ok_or_else(|| io::Error::other("gzip stream finished"))?;
        jobs.send((self.next_seq, block)).map_err(|_| io::Error::other("gzip worker exited"))?;
        self.next_seq += 1;
        while let Ok((seq, r)) = self.results.try_recv() {
            self.done.insert(seq, r);
        }
        let pending = 2 * self.workers.len() as u64;
        self.drain(pending)
    }

    fn finish(mut self) -> io::Result<W> {
        // An empty stream is still one (empty) gzip member.
        if !self.buf.is_empty() || self.next_seq == 0 {
            self.submit()?;
        }
        self.drain(0)?;
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(GZIP_BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == GZIP_BLOCK {
            self.submit()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(super) enum Compressor<W: Write> {
    None(W),
    Gzip(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    pub(super) fn new(w: W, opts: &LayerOptions) -> io::Result<Self> {
        Ok(match opts.compression {
            Compression::None => Compressor::None(w),
            // mtime 0, no file name: the same tar always gives the same gzip bytes.
            Compression::Gzip => Compressor::Gzip(ParallelGzip::new(w, opts.gzip_level.min(9))),
            Compression::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(w, opts.zstd_level)?),
        })
    }
    pub(super) fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
        }
    }
}
