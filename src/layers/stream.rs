//! Streaming one layer blob: read it once (hashing, counting and copying it to the blob file on
//! the way), decompress and hash the tar on a thread of its own, and hand the tar to the unpacker
//! through a channel; then check what was streamed against what the manifest and config state.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use sha2::{Digest as _, Sha256};

use super::{ImportEvent, LayerError, Progress, Result};
use crate::compression::Compression;
use crate::digest::Sha256Digest;
use crate::unpack::{self, UnpackOptions};

/// The size of the chunks read from a blob and handed to the unpacker.
pub const CHUNK: usize = 1 << 20;

/// Reads from the source, hashing and counting every byte, copying to the blob file if any, and
/// refusing to read past the expected size.
struct TeeReader<'a> {
    inner: Box<dyn Read + Send>,
    hasher: Sha256,
    count: u64,
    limit: Option<u64>,
    blob: Option<BufWriter<File>>,
    tap: Tap<'a>,
}

/// What the reading side of one layer reports to, and what stops it.
#[derive(Clone, Copy, Default)]
pub(crate) struct Tap<'a> {
    pub(crate) progress: Option<&'a Progress>,
    pub(crate) index: usize,
    /// Set when another layer of the import failed: stop reading.
    pub(crate) cancel: Option<&'a AtomicBool>,
}

impl Tap<'_> {
    pub(crate) fn emit(&self, e: ImportEvent) {
        if let Some(p) = self.progress {
            p.emit(&e);
        }
    }
}

impl Read for TeeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tap.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(io::Error::other("stopped: another layer of this import failed"));
        }
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if let Some(limit) = self.limit {
            if self.count > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("blob is larger than the {limit} bytes its descriptor states"),
                ));
            }
        }
        self.hasher.update(&buf[..n]);
        if let Some(b) = &mut self.blob {
            b.write_all(&buf[..n])?;
        }
        if n > 0 {
            self.tap.emit(ImportEvent::LayerBytes { index: self.tap.index, bytes: n as u64 });
        }
        Ok(n)
    }
}

/// The receiving end of the decompression thread.
struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Result of streaming one layer blob.
pub(crate) struct Streamed {
    pub(crate) digest: Sha256Digest,
    pub(crate) size: u64,
    pub(crate) diff_id: Sha256Digest,
    pub(crate) compression: Compression,
}

impl Streamed {
    /// Check what was streamed against what the manifest and config state.
    pub(crate) fn verify(
        &self,
        label: &str,
        digest: Option<&Sha256Digest>,
        size: Option<u64>,
        diff_id: &Sha256Digest,
    ) -> Result<()> {
        if let Some(d) = digest {
            if &self.digest != d {
                return Err(LayerError::DigestMismatch {
                    layer: label.to_string(),
                    expected: d.to_string(),
                    actual: self.digest.to_string(),
                });
            }
        }
        if let Some(sz) = size {
            if self.size != sz {
                return Err(LayerError::SizeMismatch {
                    layer: label.to_string(),
                    expected: sz,
                    actual: self.size,
                });
            }
        }
        if &self.diff_id != diff_id {
            return Err(LayerError::DiffIdMismatch {
                layer: label.to_string(),
                expected: diff_id.to_string(),
                actual: self.diff_id.to_string(),
            });
        }
        Ok(())
    }
}

/// Producer side: source -> tee(hash, blob) -> decompress -> hash -> channel (if unpacking).
fn produce(
    src: Box<dyn Read + Send>,
    limit: Option<u64>,
    declared: Option<Compression>,
    blob: Option<File>,
    tx: Option<SyncSender<io::Result<Vec<u8>>>>,
    tap: Tap<'_>,
) -> io::Result<Streamed> {
    let (head, src) = peek(src, 4)?;
    // Trust the bytes over the label: gzip-labelled plain tars exist in the wild.
    let compression = match Compression::sniff(&head) {
        Compression::None => declared.filter(|c| *c == Compression::None).unwrap_or(Compression::None),
        c => c,
    };
    let mut tee = TeeReader {
        inner: src,
        hasher: Sha256::new(),
        count: 0,
        limit,
        blob: blob.map(|f| BufWriter::with_capacity(CHUNK, f)),
        tap,
    };
    let diff_id = {
        let dec = compression.decoder(&mut tee)?;
        let mut hr = crate::hashing::Hashing::new(dec);
        let mut tx = tx;
        loop {
            let mut chunk = vec![0u8; CHUNK];
            let mut filled = 0;
            // Fill whole chunks: fewer channel hand-offs.
            while filled < CHUNK {
                let n = match hr.read(&mut chunk[filled..]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if let Some(t) = &tx {
                            let _ = t.send(Err(io::Error::new(e.kind(), e.to_string())));
                        }
                        return Err(e);
                    }
                };
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            chunk.truncate(filled);
            if let Some(t) = &tx {
                if t.send(Ok(chunk)).is_err() {
                    // The unpacker stopped (error, or end of archive): keep hashing.
                    tx = None;
                }
            }
        }
        hr.finish().1
    };
    // Whatever follows the compressed stream is part of the blob too.
    io::copy(&mut tee, &mut io::sink())?;
    if let Some(mut b) = tee.blob.take() {
        b.flush()?;
        let f = b.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
    }
    Ok(Streamed {
        digest: Sha256Digest::from_bytes(&tee.hasher.finalize()),
        size: tee.count,
        diff_id,
        compression,
    })
}

/// Read a few bytes from the start of a reader without losing them.
fn peek(mut r: Box<dyn Read + Send>, n: usize) -> io::Result<(Vec<u8>, Box<dyn Read + Send>)> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let k = r.read(&mut head[got..])?;
        if k == 0 {
            break;
        }
        got += k;
    }
    head.truncate(got);
    let rest: Box<dyn Read + Send> = Box::new(io::Cursor::new(head.clone()).chain(r));
    Ok((head, rest))
}

/// Run the producer thread and, when unpacking, the unpacker on this thread.
pub(crate) fn stream_layer(
    src: Box<dyn Read + Send>,
    limit: Option<u64>,
    declared: Option<Compression>,
    blob: Option<File>,
    unpack_dir: Option<&Path>,
    tap: Tap<'_>,
    label: &str,
) -> Result<(Streamed, Option<unpack::UnpackStats>)> {
    let layer_err = |source: io::Error| LayerError::Read { layer: label.to_string(), source };
    let Some(dir) = unpack_dir else {
        return produce(src, limit, declared, blob, None, tap).map(|s| (s, None)).map_err(layer_err);
    };
    let (tx, rx) = sync_channel(8);
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || produce(src, limit, declared, blob, Some(tx), tap));
        let reader = ChannelReader { rx, buf: Vec::new(), pos: 0 };
        let unpacked = unpack::unpack_layer(reader, dir, &UnpackOptions::for_this_process());
        // Dropping the reader (inside unpack_layer) lets the producer finish hashing the rest.
        let produced =
            producer.join().unwrap_or_else(|_| Err(io::Error::other("layer reader thread panicked")));
        match (produced, unpacked) {
            // The stream's own failure (corrupt gzip, short blob) explains an unpack failure best.
            (Err(e), _) => Err(layer_err(e)),
            (Ok(_), Err(e)) => Err(LayerError::Unpack { layer: label.to_string(), source: e }),
            (Ok(s), Ok(stats)) => Ok((s, Some(stats))),
        }
    })
}
