//! Remote lowers (feature `lazy`): a layer stacked as its skeleton (built from its eStargz TOC)
//! whose files are read through a [`RemoteFiles`] over an in-memory blob. The merged tree is the
//! one strata-fuse shows over the plain unpack of the same layer, entry by entry and byte for
//! byte; only the chunks read are fetched; a copy-up reads through the reader; a chunk that does
//! not verify is EIO and never cached.

#![cfg(feature = "lazy")]

mod common;

use std::fs;
use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use strata::registry::chunks::{RangeSource, RemoteFiles};
use strata::registry::RegistryError;
use strata::seekable::footer::{estargz_toc_range, parse_estargz_footer};
use strata::seekable::write::{write_estargz, EstargzOptions};
use strata::seekable::Toc;
use strata::unpack::UnpackOptions;
use strata_fuse::remote::RemoteLower;
use strata_test_support::tree::{assert_trees_eq, Tree};

/// A blob in memory: every range asked for is logged; `corrupt` flips a byte of each answer.
struct Blob {
    data: Vec<u8>,
    asked: Arc<Mutex<Vec<Range<u64>>>>,
    corrupt: Arc<AtomicBool>,
}

impl RangeSource for Blob {
    fn range(&self, r: Range<u64>) -> Result<Vec<u8>, RegistryError> {
        self.asked.lock().expect("asked").push(r.clone());
        let mut out = self.data[r.start as usize..r.end as usize].to_vec();
        if self.corrupt.load(Ordering::SeqCst) {
            let mid = out.len() / 2;
            out[mid] ^= 0x5a;
        }
        Ok(out)
    }
}

fn big() -> Vec<u8> {
    strata_test_support::noise(300_000, 11)
}

/// A layer: a 300 000-byte file (chunks of 64 KiB), small files, a hard link, an empty file, a
/// symlink; as a tar and as eStargz with its verified TOC.
fn layer() -> (Vec<u8>, Vec<u8>, Toc) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, data).expect("tar");
    };
    add("data/big", &big());
    add("etc/motd", b"remote motd\n");
    add("etc/empty", b"");
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    b.append_link(&mut h, "etc/motd-link", "etc/motd").expect("link");
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    b.append_link(&mut h, "etc/to-big", "../data/big").expect("symlink");
    let tar = b.into_inner().expect("tar");
    let opts = EstargzOptions { chunk_size: 64 << 10, ..Default::default() };
    let (info, blob) = write_estargz(&tar[..], Vec::new(), &opts).expect("estargz");
    let off = parse_estargz_footer(&blob[blob.len() - 51..]).expect("footer");
    let r = estargz_toc_range(blob.len() as u64, off).expect("toc range");
    let toc = Toc::from_estargz(&blob[r.start as usize..r.end as usize], off, &info.toc_digest).expect("toc");
    (tar, blob, toc)
}

/// A strata-fuse mount served by this process, unmounted when dropped.
struct Served(Option<fuser::BackgroundSession>);

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            let _ = s.umount_and_join();
        }
    }
}

/// Mount `lowers` (top first) with `upper` and `work` at `mnt`; the lower at `remote` (if any)
/// reads its files through `files`.
fn mount(
    lowers: &[&Path],
    upper: &Path,
    work: &Path,
    mnt: &Path,
    remote: Option<(usize, RemoteFiles<Blob>)>,
) -> Served {
    let lowerdir = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    let o = format!("lowerdir={lowerdir},upperdir={},workdir={}", upper.display(), work.display());
    let mut opts =
        strata_fuse::Options::parse(["-o".to_string(), o, mnt.display().to_string()]).expect("options");
    if let Some((i, files)) = remote {
        opts.fs.contents = vec![None; lowers.len()];
        opts.fs.contents[i] = Some(Arc::new(RemoteLower::new(files)));
    }
    let m = strata_fuse::mount(&opts).expect("mount");
    // Over FUSE over io_uring (scripts/test-fuse-uring.sh) the kernel holds every request until
    // the queues are registered, as strata-fuse's main does before serving.
    if let Some(r) = m.rings {
        r.start().expect("register the io_uring queues");
    }
    Served(Some(m.session.spawn().expect("serve")))
}

struct Setup {
    _t: tempfile::TempDir,
    root: std::path::PathBuf,
    blob: Vec<u8>,
    toc: Toc,
}

fn setup() -> Setup {
    let t = scratch();
    let root = t.path().to_path_buf();
    let (tar, blob, toc) = layer();
    for d in ["skel", "plain", "base", "cache"] {
        fs::create_dir(root.join(d)).expect("mkdir");
    }
    strata::layers::remote::build_tree(
        &toc,
        &root.join("skel.tar"),
        &root.join("skel"),
        &UnpackOptions::default(),
    )
    .expect("skeleton");
    strata::unpack::unpack_layer(&tar[..], &root.join("plain"), &UnpackOptions::default())
        .expect("plain unpack");
    // A plain lower below, with a file the remote layer does not have.
    fs::create_dir(root.join("base/etc")).expect("mkdir");
    fs::write(root.join("base/etc/base-only"), b"from below\n").expect("write");
    Setup { _t: t, root, blob, toc }
}

fn stack(root: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let d = root.join(name);
    for s in ["upper", "work", "mnt"] {
        fs::create_dir_all(d.join(s)).expect("mkdir");
    }
    (d.join("upper"), d.join("work"), d.join("mnt"))
}

#[test]
fn a_remote_lower_reads_through_its_reader_and_merges_as_a_plain_one() {
    if !can_run() {
        return;
    }
    let s = setup();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let blob = Blob { data: s.blob.clone(), asked: asked.clone(), corrupt: Arc::new(AtomicBool::new(false)) };
    let files = RemoteFiles::new(s.toc.clone(), blob, &s.root.join("cache"), "test-layer").expect("files");
    let (upper, work, mnt) = stack(&s.root, "remote");
    let _served = mount(&[&s.root.join("skel"), &s.root.join("base")], &upper, &work, &mnt, Some((0, files)));

    // A small file: one request, for its own chunk only.
    assert_eq!(fs::read(mnt.join("etc/motd")).expect("read motd"), b"remote motd\n");
    assert_eq!(fs::read(mnt.join("etc/motd-link")).expect("read link"), b"remote motd\n");
    let motd = s.toc.entries.iter().find(|e| e.name == "etc/motd").expect("motd entry");
    let first: Vec<Range<u64>> = asked.lock().expect("asked").clone();
    assert_eq!(first, vec![motd.chunks[0].blob_offset..motd.chunks[0].blob_end]);
    assert_eq!(fs::read(mnt.join("etc/empty")).expect("read empty"), b"");
    assert_eq!(fs::read(mnt.join("etc/base-only")).expect("read base"), b"from below\n");

    // The merged tree is strata-fuse's over the plain unpack of the same layer, entry by entry
    // and byte for byte (every file read through the reader).
    let (pu, pw, pm) = stack(&s.root, "plain-stack");
    let want = {
        let _plain = mount(&[&s.root.join("plain"), &s.root.join("base")], &pu, &pw, &pm, None);
        Tree::capture(&pm).expect("capture plain")
    };
    let got = Tree::capture(&mnt).expect("capture remote");
    assert_trees_eq(&want, &got, "remote lower vs plain lower");
    let big_entry = s.toc.entries.iter().find(|e| e.name == "data/big").expect("big entry");
    let fetched: u64 = asked.lock().expect("asked").iter().map(|r| r.end - r.start).sum();
    assert!(fetched < s.blob.len() as u64, "only file data fetched: {fetched} of {}", s.blob.len());
    assert!(big_entry.chunks.len() > 3);

    // A copy-up of a remote file carries its whole content into the upper layer.
    let mut f = fs::OpenOptions::new().append(true).open(mnt.join("data/big")).expect("open for append");
    f.write_all(b"tail").expect("append");
    drop(f);
    let mut want = big();
    want.extend_from_slice(b"tail");
    assert_eq!(fs::read(upper.join("data/big")).expect("upper copy"), want);
    assert_eq!(fs::read(mnt.join("data/big")).expect("read merged"), want);
}

#[test]
fn a_chunk_that_does_not_verify_is_eio_and_never_cached() {
    if !can_run() {
        return;
    }
    let s = setup();
    let corrupt = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let blob = Blob { data: s.blob.clone(), asked: asked.clone(), corrupt: corrupt.clone() };
    let cache = s.root.join("cache");
    let files = RemoteFiles::new(s.toc.clone(), blob, &cache, "test-layer").expect("files");
    let (upper, work, mnt) = stack(&s.root, "remote");
    let _served = mount(&[&s.root.join("skel"), &s.root.join("base")], &upper, &work, &mnt, Some((0, files)));

    assert_eq!(fs::read(mnt.join("etc/motd")).expect("read motd"), b"remote motd\n");
    let before = asked.lock().expect("asked").len();
    corrupt.store(true, Ordering::SeqCst);
    let err = fs::read(mnt.join("data/big")).expect_err("a corrupted chunk was served");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // The layer is bad now: no further fetches; what was cached still reads.
    let n = asked.lock().expect("asked").len();
    corrupt.store(false, Ordering::SeqCst);
    let err = fs::read(mnt.join("data/big")).expect_err("a bad layer fetched again");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(asked.lock().expect("asked").len(), n);
    assert_eq!(fs::read(mnt.join("etc/motd")).expect("read motd"), b"remote motd\n");
    // Only verified chunks are cached (those the corrupted answer held before its bad byte
    // verified): not the one the bad byte fell in.
    let r = asked.lock().expect("asked")[before].clone();
    let bad_at = r.start + (r.end - r.start) / 2;
    let big_entry = s.toc.entries.iter().find(|e| e.name == "data/big").expect("big entry");
    let bad =
        big_entry.chunks.iter().find(|c| c.blob_offset <= bad_at && bad_at < c.blob_end).expect("chunk");
    assert!(!cache.join("chunks").join(bad.digest.hex()).exists(), "the corrupted chunk was cached");
    for e in fs::read_dir(cache.join("chunks")).expect("chunks") {
        let e = e.expect("entry");
        let data = fs::read(e.path()).expect("read chunk");
        assert_eq!(strata::digest::Sha256Digest::of(&data).hex(), e.file_name().to_string_lossy());
    }
    // A copy-up cannot read it either, and leaves nothing in the upper layer.
    let err = fs::OpenOptions::new().append(true).open(mnt.join("data/big")).expect_err("copied up");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(!upper.join("data/big").exists());
}
