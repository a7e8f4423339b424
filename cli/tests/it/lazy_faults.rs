//! Faults under lazily pulled layers (issue 27), end to end: a real registry behind the
//! harness's [`FlakyProxy`], a container's rootfs mounted by `strata container mount` (strata-fuse
//! over the layer's skeleton), its files read by this process so each outcome is checked by
//! errno. A connection dropped mid-body, a registry that stalls, a token that expires, and a
//! strata-fuse killed in the middle of a read. After each: the reader got the file's exact bytes
//! or EIO (never a hang, never a wrong byte), every cached chunk is its verified digest's bytes,
//! and every range kept of the blob is the registry's bytes.
//! (The corrupted chunk and the vanished registry are in `lazy_run.rs`, a killed background
//! completion in `lazy_complete.rs`.)

use crate::common;
use crate::lazy_complete::{fuse_pid, kept};
use crate::lazy_run::verified_chunks;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::flaky::{FlakyProxy, Flaw};
use common::registry::{Registry, RegistryOpts};
use common::*;

/// A one-layer eStargz image pushed to `reg` as `repo:esgz`, its files cut into 256 KiB chunks.
struct Image {
    /// The layer's blob digest and bytes, its diff_id, its TOC.
    blob: String,
    bytes: Vec<u8>,
    diff_id: String,
    toc: strata::seekable::Toc,
    files: Vec<(&'static str, Vec<u8>)>,
}

const CHUNK: u64 = 256 << 10;

impl Image {
    fn file(&self, name: &str) -> &[u8] {
        &self.files.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no {name}")).1
    }

    fn chunks(&self, name: &str) -> &[strata::seekable::Chunk] {
        &self.toc.entries.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("{name} in TOC")).chunks
    }
}

/// The layer: `data/small` and `data/other` (100 KiB of noise each, one chunk), `data/big`
/// (2 MiB, 8 chunks), `etc/motd` (in the blob's tail, which the pull keeps with the TOC).
fn push_image(reg: &Registry, repo: &str) -> Image {
    use strata::seekable::write::EstargzOptions;
    let files: Vec<(&'static str, Vec<u8>)> = vec![
        ("data/small", strata_test_support::noise(100 << 10, 21)),
        ("data/other", strata_test_support::noise(100 << 10, 22)),
        ("data/big", strata_test_support::noise(2 << 20, 23)),
        ("etc/motd", b"faults\n".to_vec()),
    ];
    let entries: Vec<(&str, &[u8])> = [("data/", &[][..]), ("etc/", &[][..])]
        .into_iter()
        .chain(files.iter().map(|(p, d)| (*p, d.as_slice())))
        .collect();
    let opts = EstargzOptions { chunk_size: CHUNK, ..Default::default() };
    let l = common::estargz::push_one_layer(reg, repo, &entries, &opts);
    Image { blob: l.blob, bytes: l.bytes, diff_id: l.diff_id, toc: l.toc, files }
}

/// Timeouts that make a stalled registry cost a read seconds, not half a minute.
const QUICK: &[(&str, &str)] = &[("STRATA_LAZY_REQUEST_TIMEOUT", "1"), ("STRATA_LAZY_READ_DEADLINE", "3")];

/// `strata ARGS` with `root` and `env`; requires success, returns stdout.
fn strata_env(root: &Root, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = std::process::Command::new(STRATA)
        .arg("--root")
        .arg(root.path())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run strata");
    assert!(out.status.success(), "strata {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pull `image` lazily into a fresh root and mount a read-only container `v` of it (background
/// completion off: only reads fetch), strata-fuse started with `env`. Returns root and mount.
fn pull_and_mount(image: &str, env: &[(&str, &str)]) -> (Root, PathBuf) {
    let root = Root::new();
    root.ok(&["pull", "-q", "--lazy", image, "--tls-verify=false"]);
    root.ok(&["container", "create", "--read-only", image, "v"]);
    let at = mount(&root, env);
    (root, at)
}

fn mount(root: &Root, env: &[(&str, &str)]) -> PathBuf {
    PathBuf::from(strata_env(root, env, &["--lazy-background=off", "container", "mount", "v"]).trim())
}

/// A file's bytes, or the errno reading it failed with.
fn read(p: &Path) -> Result<Vec<u8>, i32> {
    std::fs::read(p).map_err(|e| e.raw_os_error().unwrap_or(0))
}

/// Read `p` on a thread of its own; the receiver gets the outcome.
fn read_in_background(p: PathBuf) -> mpsc::Receiver<Result<Vec<u8>, i32>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(read(&p)));
    rx
}

/// The store holds nothing unverified of `img`'s layer: every cached chunk is its digest's
/// bytes (returns how many), and every range `blob.ranges` records holds the blob's bytes.
fn assert_verified(root: &Root, img: &Image) -> usize {
    let dir = root.path().join("remote").join(img.diff_id.trim_start_matches("sha256:"));
    let ranges = std::fs::read_to_string(dir.join("blob.ranges")).unwrap_or_default();
    let partial = std::fs::read(dir.join("blob.partial")).unwrap_or_default();
    for l in ranges.lines() {
        let (a, b) = l.split_once(' ').expect("START END");
        let (a, b): (usize, usize) = (a.parse().expect("start"), b.parse().expect("end"));
        assert!(partial.get(a..b) == img.bytes.get(a..b), "kept range {a}..{b} is not the blob's");
    }
    verified_chunks(root, &img.diff_id)
}

/// Unmount the view, remove it, and check nothing stays mounted under the root.
fn remove(root: &Root) {
    root.ok(&["container", "rm", "--force", "v"]);
    assert_eq!(mounts_under(root.path()), Vec::<PathBuf>::new(), "mounts left");
}

/// The registry drops the connection mid-body (after 64 KiB of a chunk's Range response) for
/// the first two requests: the read tries again and gets the file's exact bytes. Dropped
/// every time, a read fails with EIO once its attempts are spent (it returns); nothing
/// unverified is kept; once the registry behaves, the same file reads.
#[test]
fn a_dropped_connection_is_retried_then_eio() {
    if !privileged("a_dropped_connection_is_retried_then_eio") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let img = push_image(&reg, "lazy/drop");
    let proxy = FlakyProxy::start(&reg.addr, &img.blob);
    let (lazy, at) = pull_and_mount(&format!("{}/lazy/drop:esgz", proxy.addr), &[]);

    proxy.set(Flaw::Cut(64 << 10), Some(2));
    assert_eq!(sha(&read(&at.join("data/big")).expect("data/big")), sha(img.file("data/big")));
    assert_eq!(proxy.cut(), 2, "{:?}", proxy.seen());
    let log = std::fs::read_to_string(lazy.path().join("containers/v/fuse.log")).expect("fuse.log");
    assert!(log.contains("retrying"), "{log}");

    proxy.set(Flaw::Cut(64 << 10), None);
    let cut = proxy.cut();
    let rx = read_in_background(at.join("data/other"));
    let got = rx.recv_timeout(Duration::from_secs(60)).expect("the read returned");
    assert_eq!(got.err(), Some(libc::EIO));
    assert!(proxy.cut() > cut, "{:?}", proxy.seen());
    let cached = assert_verified(&lazy, &img);
    assert_eq!(cached, img.chunks("data/big").len(), "data/big's chunks and none of data/other");

    proxy.set(Flaw::Pass, None);
    assert_eq!(read(&at.join("data/other")).expect("data/other"), img.file("data/other"));
    assert_eq!(assert_verified(&lazy, &img), cached + 1);
    remove(&lazy);
}

/// The registry stalls: it accepts a chunk's request and sends nothing, or sends the head and
/// a little of the body and then nothing. Each time the read fails with EIO once the request
/// timeout and retries are spent (`STRATA_LAZY_REQUEST_TIMEOUT`/`STRATA_LAZY_READ_DEADLINE`
/// make that seconds); while it waits, a cached file of the same mount reads; nothing partial
/// is cached or kept. Then the registry behaves and the file reads.
#[test]
fn a_stalled_registry_is_eio_and_cached_files_read_meanwhile() {
    if !privileged("a_stalled_registry_is_eio_and_cached_files_read_meanwhile") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let img = push_image(&reg, "lazy/stall");
    let proxy = FlakyProxy::start(&reg.addr, &img.blob);
    let (lazy, at) = pull_and_mount(&format!("{}/lazy/stall:esgz", proxy.addr), QUICK);
    assert_eq!(read(&at.join("data/small")).expect("data/small"), img.file("data/small"));
    assert_eq!(read(&at.join("etc/motd")).expect("etc/motd"), b"faults\n");
    let cached = assert_verified(&lazy, &img);
    assert_eq!(cached, 2);
    let kept_before = kept(&lazy, &img.diff_id);

    for flaw in [Flaw::Stall(0), Flaw::Stall(1024)] {
        proxy.set(flaw, None);
        let stalls = proxy.stalls();
        let rx = read_in_background(at.join("data/other"));
        assert!(wait_for(20, || proxy.stalls() > stalls), "{flaw:?}: no request stalled");
        for _ in 0..3 {
            assert_eq!(read(&at.join("data/small")).expect("data/small"), img.file("data/small"));
            assert_eq!(read(&at.join("etc/motd")).expect("etc/motd"), b"faults\n");
        }
        // Those reads were served while the stalled one waited.
        assert!(rx.try_recv().is_err(), "{flaw:?}: the stalled read was over before the cached ones");
        let got = rx.recv_timeout(Duration::from_secs(60)).expect("the stalled read returned");
        assert_eq!(got.err(), Some(libc::EIO), "{flaw:?}");
        // A timed-out request is tried again before the read gives up.
        assert!(proxy.stalls() - stalls >= 2, "{flaw:?}: {} requests", proxy.stalls() - stalls);
        assert_eq!(assert_verified(&lazy, &img), cached, "{flaw:?}: a chunk cached");
        assert_eq!(kept(&lazy, &img.diff_id), kept_before, "{flaw:?}: bytes kept");
    }

    proxy.set(Flaw::Pass, None);
    assert_eq!(read(&at.join("data/other")).expect("data/other"), img.file("data/other"));
    assert_eq!(assert_verified(&lazy, &img), cached + 1);
    remove(&lazy);
}

/// Token auth: strata-fuse's bearer token stops being accepted (the proxy expires every token
/// it has seen, as a registry refuses one past its lifetime): the registry's 401 makes it ask
/// the token server for a fresh one, and the read gets the file's bytes.
#[test]
fn an_expired_token_is_refreshed() {
    if !privileged("an_expired_token_is_refreshed") {
        return;
    }
    let reg = Registry::start(RegistryOpts { token: true, ..Default::default() });
    let img = push_image(&reg, "lazy/token");
    let proxy = FlakyProxy::start(&reg.addr, &img.blob);
    let (lazy, at) = pull_and_mount(&format!("{}/lazy/token:esgz", proxy.addr), &[]);
    // strata-fuse connects and gets its token at its first fetch.
    assert_eq!(read(&at.join("data/small")).expect("data/small"), img.file("data/small"));
    let scopes = || reg.tokens.as_ref().expect("token server").scopes.lock().expect("scopes").clone();
    let asked = scopes().len();

    proxy.expire_tokens();
    assert_eq!(read(&at.join("data/other")).expect("data/other"), img.file("data/other"));
    assert!(proxy.refused() >= 1, "no request with the expired token: {:?}", proxy.seen());
    let fresh = scopes()[asked..].to_vec();
    assert!(fresh.contains(&"repository:lazy/token:pull".to_string()), "no fresh token asked for: {fresh:?}");
    assert_eq!(assert_verified(&lazy, &img), 2);
    remove(&lazy);
}

/// kill -9 of strata-fuse while a read waits for its chunk (the registry stalled mid-body):
/// the reader gets an error, not a hang; after `container umount --force` the next mount of the
/// same container works: the file reads back whole and exact, the chunks verified before the
/// kill are used (not fetched again), a temporary chunk file the dead daemon left is removed,
/// never used, and the cache holds only verified chunks.
#[test]
fn kill_9_of_strata_fuse_mid_read() {
    if !privileged("kill_9_of_strata_fuse_mid_read") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let img = push_image(&reg, "lazy/kill9");
    let proxy = FlakyProxy::start(&reg.addr, &img.blob);
    // Default timeouts: the read is still waiting when the daemon dies.
    let (lazy, at) = pull_and_mount(&format!("{}/lazy/kill9:esgz", proxy.addr), &[]);
    let big = img.file("data/big");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(at.join("data/big")).expect("open data/big");
        let mut head = vec![0u8; 2 * CHUNK as usize];
        f.read_exact_at(&mut head, 0).expect("read the first two chunks");
        assert!(head == big[..head.len()], "data/big's first chunks");
    }
    let cached = assert_verified(&lazy, &img);
    assert!(cached >= 2, "{cached} chunks cached");

    proxy.set(Flaw::Stall(100 << 10), None);
    let rx = read_in_background(at.join("data/big"));
    assert!(wait_for(20, || proxy.stalls() > 0), "the read never reached the registry");
    let pid = fuse_pid(&lazy, "v").expect("strata-fuse of v");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill -9");
    assert!(wait_for(10, || !Path::new(&format!("/proc/{pid}")).exists()), "strata-fuse {pid} lives on");
    let got = rx.recv_timeout(Duration::from_secs(60)).expect("the read returned after the kill");
    let errno = got.err();
    assert!(matches!(errno, Some(libc::ECONNABORTED | libc::ENOTCONN)), "{errno:?}");
    proxy.set(Flaw::Pass, None);

    // What a kill in the middle of writing a chunk to the cache leaves: a torn temporary file.
    let third = &img.chunks("data/big")[2];
    let dir = lazy.path().join("remote").join(img.diff_id.trim_start_matches("sha256:"));
    let torn = dir.join("tmp").join(format!("{pid}-{}-0", third.digest.hex()));
    std::fs::write(&torn, &big[2 * CHUNK as usize..][..1000]).expect("torn chunk");

    lazy.ok(&["container", "umount", "--force", "v"]);
    assert_eq!(mounts_under(lazy.path()), Vec::<PathBuf>::new(), "the dead mount stays");
    let requests = proxy.seen().len();
    let at = mount(&lazy, &[]);
    assert!(!torn.exists(), "the dead daemon's temporary chunk was kept");
    assert_eq!(sha(&read(&at.join("data/big")).expect("data/big")), sha(big));
    // The two chunks verified before the kill came from the cache.
    let first = img.chunks("data/big")[..2].iter().map(|c| c.blob_offset..c.blob_end).collect::<Vec<_>>();
    for r in &proxy.seen()[requests..] {
        let Some((a, b)) = r.rsplit_once("bytes=").and_then(|(_, s)| s.split_once('-')) else { continue };
        let (a, b): (u64, u64) = (a.parse().expect("start"), b.parse().expect("end"));
        assert!(first.iter().all(|c| b < c.start || a >= c.end), "fetched again: {r} ({first:?})");
    }
    assert_eq!(assert_verified(&lazy, &img), img.chunks("data/big").len());
    remove(&lazy);
}
