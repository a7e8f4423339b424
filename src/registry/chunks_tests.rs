//! On-demand reads of a remote layer's files from an eStargz blob strata wrote.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use super::*;
use crate::seekable::footer::{estargz_toc_range, parse_estargz_footer};
use crate::seekable::write::{write_estargz, EstargzOptions};
use strata_test_support::noise;

/// A blob in memory; every range asked for is logged.
struct Fake {
    blob: Vec<u8>,
    asked: Mutex<Vec<Range<u64>>>,
}

impl RangeSource for Fake {
    fn range(&self, r: Range<u64>) -> Result<Vec<u8>, RegistryError> {
        self.asked.lock().unwrap().push(r.clone());
        Ok(self.blob[r.start as usize..r.end as usize].to_vec())
    }
}

/// A layer of a 10 000-byte file (chunks of 1 000), a small file and a hard link to it, as
/// eStargz, with its verified TOC.
fn layer() -> (Vec<u8>, Toc, Vec<u8>) {
    let big = noise(10_000, 7);
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [("big", &big[..]), ("etc/motd", b"hello\n".as_slice())] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "motd2", "etc/motd").unwrap();
    let tar = b.into_inner().unwrap();
    let opts = EstargzOptions { chunk_size: 1000, ..Default::default() };
    let (info, blob) = write_estargz(&tar[..], Vec::new(), &opts).unwrap();
    let off = parse_estargz_footer(&blob[blob.len() - 51..]).unwrap();
    let r = estargz_toc_range(blob.len() as u64, off).unwrap();
    let toc = Toc::from_estargz(&blob[r.start as usize..r.end as usize], off, &info.toc_digest).unwrap();
    (blob, toc, big)
}

#[test]
fn reads_fetch_adjacent_chunks_once_verified_and_cached() {
    let (blob, toc, big) = layer();
    let t = tempfile::tempdir().unwrap();
    let fake = Fake { blob, asked: Mutex::new(vec![]) };
    let files = RemoteFiles::new(toc, fake, t.path(), "test").unwrap();
    assert_eq!(files.size("big"), Some(10_000));
    assert_eq!(files.size("motd2"), Some(6), "a hard link reads its target");

    // 2 500 bytes across chunks 2..=4 of `big`: one request for the three adjacent chunks.
    let mut buf = vec![0u8; 2500];
    assert_eq!(files.read_at("big", 1500, &mut buf).unwrap(), 2500);
    assert_eq!(buf, big[1500..4000]);
    assert_eq!(files.source.asked.lock().unwrap().len(), 1);
    // Cached: the same bytes again cost nothing, a range overlapping them only the new chunk.
    assert_eq!(files.read_at("big", 1000, &mut buf).unwrap(), 2500);
    assert_eq!(buf, big[1000..3500]);
    assert_eq!(files.source.asked.lock().unwrap().len(), 1);
    assert_eq!(files.read_at("big", 3900, &mut buf[..200]).unwrap(), 200);
    assert_eq!(&buf[..200], &big[3900..4100]);
    assert_eq!(files.source.asked.lock().unwrap().len(), 2);
    // The end of the file: a short read, then nothing.
    assert_eq!(files.read_at("big", 9_900, &mut buf).unwrap(), 100);
    assert_eq!(&buf[..100], &big[9_900..]);
    assert_eq!(files.read_at("big", 10_000, &mut buf).unwrap(), 0);
    let mut small = [0u8; 64];
    assert_eq!(files.read_at("motd2", 0, &mut small).unwrap(), 6);
    assert_eq!(&small[..6], b"hello\n");
    // Only verified chunks, by their digest, are in the cache: no temporary file is left.
    assert_only_verified_chunks(t.path());
    assert_eq!(fs::read_dir(t.path().join("tmp")).unwrap().count(), 0);
    assert!(files.read_at("nothing", 0, &mut small).is_err());
}

#[test]
fn a_corrupted_chunk_is_never_served_nor_cached() {
    let (mut blob, toc, big) = layer();
    let big_entry = toc.entries.iter().find(|e| e.name == "big").unwrap();
    // A byte inside the third chunk's compressed data.
    let c = big_entry.chunks[2].clone();
    let at = ((c.blob_offset + c.blob_end) / 2) as usize;
    blob[at] ^= 0x55;
    let t = tempfile::tempdir().unwrap();
    let state = Arc::new(Recorded::default());
    let files = RemoteFiles::new(toc, Fake { blob, asked: Mutex::new(vec![]) }, t.path(), "test")
        .unwrap()
        .with_state(state.clone());
    // A chunk read before the corruption stays readable.
    let mut buf = vec![0u8; 500];
    assert_eq!(files.read_at("big", 0, &mut buf).unwrap(), 500);
    assert_eq!(buf, big[..500]);
    buf.fill(0);
    let err = files.read_at("big", 2000, &mut buf).unwrap_err();
    let text = crate::error::report(&err);
    assert!(text.contains("test") && text.contains("big"), "{text}");
    assert_eq!(err.kind(), crate::error::ErrorKind::InvalidArgument);
    assert!(buf.iter().all(|&b| b == 0), "nothing reached the reader");
    // The layer is bad from now on: nothing more is fetched, cached chunks still read.
    assert!(state.bad.lock().unwrap().as_ref().is_some_and(|r| r.contains("big")), "the state was told");
    let asked = files.source().asked.lock().unwrap().len();
    let err = files.read_at("big", 9000, &mut buf).unwrap_err();
    assert!(matches!(err, RegistryError::BadLayer { .. }), "{err:?}");
    assert_eq!(files.source().asked.lock().unwrap().len(), asked, "no request for a bad layer");
    assert_eq!(files.read_at("big", 0, &mut buf).unwrap(), 500);
    assert_eq!(buf, big[..500]);
    assert!(!t.path().join("chunks").join(c.digest.hex()).exists(), "the bad chunk is not cached");
    assert_only_verified_chunks(t.path());
}

/// Every file of `<cache>/chunks` is a verified chunk named by its digest.
fn assert_only_verified_chunks(cache: &Path) {
    for e in fs::read_dir(cache.join("chunks")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let data = fs::read(cache.join("chunks").join(&name)).unwrap();
        assert_eq!(crate::digest::Sha256Digest::of(&data).hex(), name);
    }
}

/// What a reader reported.
#[derive(Default)]
struct Recorded {
    fetched: AtomicU64,
    bad: Mutex<Option<String>>,
}

impl LayerState for Recorded {
    fn fetched(&self, bytes: u64) {
        self.fetched.fetch_add(bytes, Ordering::SeqCst);
    }
    fn bad(&self, reason: &str) {
        *self.bad.lock().unwrap() = Some(reason.to_string());
    }
}

/// A source whose first `fail` requests fail as a refused connection would.
struct Flaky {
    blob: Vec<u8>,
    fail: AtomicUsize,
    asked: AtomicUsize,
}

impl RangeSource for Flaky {
    fn range(&self, r: Range<u64>) -> Result<Vec<u8>, RegistryError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            return Err(RegistryError::Connect { host: "fake".into(), reason: "connection refused".into() });
        }
        Ok(self.blob[r.start as usize..r.end as usize].to_vec())
    }
}

fn quick(attempts: u32) -> ReadPolicy {
    ReadPolicy { attempts, backoff: Duration::from_millis(1), ..Default::default() }
}

#[test]
fn failures_that_pass_are_tried_again_then_the_read_fails() {
    let (blob, toc, big) = layer();
    let t = tempfile::tempdir().unwrap();
    let state = Arc::new(Recorded::default());
    let flaky = Flaky { blob, fail: AtomicUsize::new(2), asked: AtomicUsize::new(0) };
    let files = RemoteFiles::new(toc, flaky, t.path(), "test")
        .unwrap()
        .with_policy(quick(3))
        .with_state(state.clone());
    // Two refusals, then the bytes: one read.
    let mut buf = vec![0u8; 100];
    assert_eq!(files.read_at("big", 5000, &mut buf).unwrap(), 100);
    assert_eq!(buf, big[5000..5100]);
    assert_eq!(files.source().asked.load(Ordering::SeqCst), 3);
    let c = toc_chunk(&files, "big", 5000);
    assert_eq!(state.fetched.load(Ordering::SeqCst), c.blob_end - c.blob_offset, "the fetched bytes counted");
    // More refusals than attempts: the read fails with the registry's error, nothing cached,
    // nothing marked bad; a later read, the registry back, succeeds.
    files.source().fail.store(5, Ordering::SeqCst);
    let err = files.read_at("big", 0, &mut buf).unwrap_err();
    assert!(matches!(err, RegistryError::Connect { .. }), "{err:?}");
    assert!(files.bad().is_none() && state.bad.lock().unwrap().is_none());
    files.source().fail.store(0, Ordering::SeqCst);
    assert_eq!(files.read_at("big", 0, &mut buf).unwrap(), 100);
    assert_eq!(buf, big[..100]);
    // A deadline already passed fails the read without a request.
    let t2 = tempfile::tempdir().unwrap();
    let (blob, toc, _) = layer();
    let none = ReadPolicy { deadline: Duration::ZERO, ..quick(3) };
    let files = RemoteFiles::new(
        toc,
        Flaky { blob, fail: AtomicUsize::new(0), asked: AtomicUsize::new(0) },
        t2.path(),
        "test",
    )
    .unwrap()
    .with_policy(none);
    let err = files.read_at("big", 0, &mut buf).unwrap_err();
    assert!(matches!(err, RegistryError::Deadline { .. }), "{err:?}");
    assert_eq!(files.source().asked.load(Ordering::SeqCst), 0);
}

fn toc_chunk<S: RangeSource>(files: &RemoteFiles<S>, name: &str, at: u64) -> Chunk {
    let i = files.files[name];
    files.toc.entries[i]
        .chunks
        .iter()
        .find(|c| c.file_offset <= at && at < c.file_offset + c.size)
        .unwrap()
        .clone()
}

/// A source that holds every request until released, counting those in flight.
struct Gated {
    blob: Vec<u8>,
    now: AtomicUsize,
    most: AtomicUsize,
    open: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl RangeSource for Gated {
    fn range(&self, r: Range<u64>) -> Result<Vec<u8>, RegistryError> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
        drop(open);
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(self.blob[r.start as usize..r.end as usize].to_vec())
    }
}

/// Reads of different chunks run at once, at most `max_requests` requests in flight; all of
/// them get their bytes.
#[test]
fn concurrent_reads_share_a_bounded_number_of_requests() {
    let (blob, toc, big) = layer();
    let t = tempfile::tempdir().unwrap();
    let gated = Gated {
        blob,
        now: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        open: Mutex::new(false),
        cv: Default::default(),
    };
    let policy = ReadPolicy { max_requests: 2, ..quick(1) };
    let files = RemoteFiles::new(toc, gated, t.path(), "test").unwrap().with_policy(policy);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..6u64)
            .map(|i| {
                let files = &files;
                s.spawn(move || {
                    let mut buf = vec![0u8; 10];
                    let n = files.read_at("big", i * 1500, &mut buf).unwrap();
                    (i, buf[..n].to_vec())
                })
            })
            .collect();
        // Two requests are held; the others wait for a slot (given time to show otherwise).
        while files.source().now.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(50));
        *files.source().open.lock().unwrap() = true;
        files.source().cv.notify_all();
        for r in readers {
            let (i, got) = r.join().unwrap();
            let at = (i * 1500) as usize;
            assert_eq!(got, big[at..at + 10]);
        }
    });
    assert_eq!(files.source().most.load(Ordering::SeqCst), 2);
}

/// A layer whose first two files (`first`, 3 000 bytes in chunks of 1 000, and `second`) come
/// before `.prefetch.landmark`, then `after`: as eStargz, with its verified TOC.
fn prefetch_layer() -> (Vec<u8>, Toc) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [("first", noise(3000, 1)), ("second", b"two\n".to_vec()), ("after", noise(2000, 2))]
    {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let opts = EstargzOptions {
        chunk_size: 1000,
        landmark: crate::seekable::write::Landmark::PrefetchAfter(2),
        ..Default::default()
    };
    let (info, blob) = write_estargz(&tar[..], Vec::new(), &opts).unwrap();
    let off = parse_estargz_footer(&blob[blob.len() - 51..]).unwrap();
    let r = estargz_toc_range(blob.len() as u64, off).unwrap();
    let toc = Toc::from_estargz(&blob[r.start as usize..r.end as usize], off, &info.toc_digest).unwrap();
    (blob, toc)
}

/// The files before the landmark are claimed, then fetched in one request from the blob's
/// start to the landmark, verified and cached; a read of one of them while the prefetch runs
/// waits for it instead of asking for its chunk; afterwards they read without a request, and a
/// file after the landmark is fetched as usual. Nothing to prefetch without a landmark.
#[test]
fn prefetch_fetches_the_files_before_the_landmark_in_one_request() {
    let (blob, toc) = prefetch_layer();
    let mark = toc.entries[toc.prefetch_landmark().unwrap()].chunks[0].blob_offset;
    let t = tempfile::tempdir().unwrap();
    let gated = Gated {
        blob: blob.clone(),
        now: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        open: Mutex::new(false),
        cv: Default::default(),
    };
    let state = Arc::new(Recorded::default());
    let files = RemoteFiles::new(toc, gated, t.path(), "test").unwrap().with_state(state.clone());
    let claim = files.claim_prefetch().expect("a landmark");
    assert_eq!((claim.range.clone(), claim.chunks()), (0..mark, 4), "3 chunks of `first`, 1 of `second`");
    assert!(files.claim_prefetch().is_none(), "claimed once");
    let want = noise(3000, 1);
    std::thread::scope(|s| {
        let p = s.spawn(|| files.prefetch(claim).unwrap());
        let r = s.spawn(|| {
            let mut buf = vec![0u8; 100];
            let n = files.read_at("first", 1500, &mut buf).unwrap();
            buf.truncate(n);
            buf
        });
        while files.source().now.load(Ordering::SeqCst) < 1 {
            std::thread::yield_now();
        }
        // Held long enough for the read to ask for its chunk, were it going to.
        std::thread::sleep(Duration::from_millis(50));
        *files.source().open.lock().unwrap() = true;
        files.source().cv.notify_all();
        assert_eq!(p.join().unwrap(), 4);
        assert_eq!(r.join().unwrap(), want[1500..1600]);
    });
    assert_eq!(files.source().most.load(Ordering::SeqCst), 1, "one request in all");
    assert_eq!(state.fetched.load(Ordering::SeqCst), mark, "the region counted once");
    // Cached: no request (a held one would block the test).
    *files.source().open.lock().unwrap() = false;
    let mut buf = vec![0u8; 3000];
    assert_eq!(files.read_at("first", 0, &mut buf).unwrap(), 3000);
    assert_eq!(buf, want);
    assert_eq!(files.read_at("second", 0, &mut buf).unwrap(), 4);
    assert_eq!(&buf[..4], b"two\n");
    assert!(files.claim_prefetch().is_none(), "all cached");
    assert_only_verified_chunks(t.path());

    // No landmark (the default writes `.no.prefetch.landmark`): nothing to claim.
    let (blob, toc, _) = layer();
    let t = tempfile::tempdir().unwrap();
    let files = RemoteFiles::new(toc, Fake { blob, asked: Mutex::new(vec![]) }, t.path(), "test").unwrap();
    assert!(files.claim_prefetch().is_none());
}

/// Kept bytes (the partial blob) serve reads: only the missing part of a range is asked for,
/// and what is fetched is kept; kept bytes that do not verify are fetched again without marking
/// the layer bad. Background completion then fetches the gaps in blob order, a step at a time,
/// until the partial blob is the blob.
#[test]
fn kept_bytes_serve_reads_and_background_completion_fills_the_gaps() {
    let (blob, toc, big) = layer();
    let t = tempfile::tempdir().unwrap();
    let partial = Arc::new(
        crate::registry::partial::PartialBlob::open(&t.path().join("p"), blob.len() as u64).unwrap(),
    );
    let c = toc_chunk_of(&toc, "big", 2500);
    // The chunk's first half is kept.
    let half = (c.blob_offset + c.blob_end) / 2;
    partial.write(c.blob_offset, &blob[c.blob_offset as usize..half as usize]).unwrap();
    let fake = Fake { blob: blob.clone(), asked: Mutex::new(vec![]) };
    let files = RemoteFiles::new(toc.clone(), fake, t.path(), "test").unwrap().with_partial(partial.clone());
    let mut buf = vec![0u8; 100];
    assert_eq!(files.read_at("big", 2500, &mut buf).unwrap(), 100);
    assert_eq!(buf, big[2500..2600]);
    assert_eq!(*files.source().asked.lock().unwrap(), vec![half..c.blob_end], "only the missing half");
    assert_eq!(partial.gaps_in(c.blob_offset..c.blob_end).unwrap(), vec![], "the fetched half kept");

    // Kept bytes of another chunk, wrong: the read fetches the chunk and is served; not bad.
    let d = toc_chunk_of(&toc, "big", 5500);
    partial.write(d.blob_offset, &vec![0x55; (d.blob_end - d.blob_offset) as usize]).unwrap();
    assert_eq!(files.read_at("big", 5500, &mut buf).unwrap(), 100);
    assert_eq!(buf, big[5500..5600]);
    assert!(files.bad().is_none());
    assert_eq!(files.source().asked.lock().unwrap().last(), Some(&(d.blob_offset..d.blob_end)));

    // Background completion: the gaps, in order, none asked twice, each at most a step.
    files.source().asked.lock().unwrap().clear();
    let stats = files.fill(100, Duration::ZERO).unwrap();
    assert!(partial.is_complete());
    let asked = files.source().asked.lock().unwrap().clone();
    assert_eq!(stats.requests, asked.len() as u64);
    assert!(asked.windows(2).all(|w| w[0].end <= w[1].start), "{asked:?}");
    assert!(asked.iter().all(|r| r.end - r.start <= BACKGROUND_STEP));
    // The wrong bytes kept earlier were overwritten by the read's fetch.
    assert_eq!(fs::read(partial.path()).unwrap(), blob);
    assert_eq!(files.fill(100, Duration::ZERO).unwrap(), FillStats::default(), "nothing left");
}

fn toc_chunk_of(toc: &Toc, name: &str, at: u64) -> Chunk {
    let e = toc.entries.iter().find(|e| e.name == name).unwrap();
    e.chunks.iter().find(|c| c.file_offset <= at && at < c.file_offset + c.size).unwrap().clone()
}
