//! Lazily pulled layers arriving ahead of the reads (issue 27): the files before an eStargz
//! layer's `.prefetch.landmark` fetched first, in one request, as strata-fuse mounts it; then
//! the background completion that makes each layer whole, verified, and ordinary. Against the
//! real registry, whose access log lists each GET of a blob with its status and size.

use crate::common;

use std::path::Path;

use common::registry::{Registry, RegistryOpts};
use common::*;

/// GETs of blob `digest` of `repo` in the registry's access log: (status, bytes).
pub(crate) fn gets(log: &str, repo: &str, digest: &str) -> Vec<(u16, u64)> {
    let request = format!("\"GET /v2/{repo}/blobs/{digest} HTTP/1.1\" ");
    log.lines()
        .filter_map(|l| {
            let mut rest = l.split(&request).nth(1)?.split_whitespace();
            Some((rest.next()?.parse().ok()?, rest.next()?.parse().ok()?))
        })
        .collect()
}

/// A one-layer eStargz image with a prefetch landmark, pushed to `reg` as `repo:esgz`: the layer
/// holds `pf/` with `pf/a` (200 KiB of noise) and `pf/b` before `.prefetch.landmark`, then
/// `data/noise` (3 MiB) and `etc/motd`. Returns the layer's blob digest and where the landmark
/// starts in it (the prefetch region is the blob up to there).
fn push_prefetch_image(reg: &Registry, repo: &str) -> (String, u64) {
    use strata::seekable::write::{EstargzOptions, Landmark};
    let (a, noise) = (strata_test_support::noise(200 << 10, 11), strata_test_support::noise(3 << 20, 12));
    let entries: [(&str, &[u8]); 7] = [
        ("pf/", b""),
        ("pf/a", &a),
        ("pf/b", b"prefetched\n"),
        ("data/", b""),
        ("data/noise", &noise),
        ("etc/", b""),
        ("etc/motd", b"after the landmark\n"),
    ];
    let opts = EstargzOptions { landmark: Landmark::PrefetchAfter(3), ..Default::default() };
    let l = common::estargz::push_one_layer(reg, repo, &entries, &opts);
    let mark = l.toc.entries[l.toc.prefetch_landmark().expect("landmark")].chunks[0].blob_offset;
    (l.blob, mark)
}

/// Files before the landmark arrive first: once strata-fuse has mounted the layer, the
/// registry serves one Range request of the blob covering exactly the prefetch region (its
/// start to the landmark), reads of those files wait for it rather than fetching their own
/// chunks, and read again they cost no request.
#[test]
fn prefetch_fetches_the_files_before_the_landmark_in_one_request() {
    if !privileged("prefetch_fetches_the_files_before_the_landmark_in_one_request") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let (blob, mark) = push_prefetch_image(&reg, "lazy/pf");
    let image = format!("{}/lazy/pf:esgz", reg.addr);
    let lazy = Root::new();
    lazy.ok(&["pull", "-q", "--lazy", &image, "--tls-verify=false"]);
    let by_pull = gets(&reg.log(), "lazy/pf", &blob);
    assert!(!by_pull.is_empty() && by_pull.iter().all(|&(s, _)| s == 206), "{by_pull:?}");

    lazy.ok(&["container", "create", "--read-only", &image, "v"]);
    // Background completion off: only the prefetch and the reads fetch.
    let at = lazy.ok(&["--lazy-background=off", "container", "mount", "v"]);
    let at = Path::new(at.trim());
    assert_eq!(std::fs::read(at.join("pf/a")).expect("read pf/a"), strata_test_support::noise(200 << 10, 11));
    assert_eq!(std::fs::read(at.join("pf/b")).expect("read pf/b"), b"prefetched\n");
    let mount_gets = || gets(&reg.log(), "lazy/pf", &blob)[by_pull.len()..].to_vec();
    assert!(wait_for(10, || !mount_gets().is_empty()), "no request since the pull");
    assert_eq!(mount_gets(), vec![(206, mark)], "one Range request of the prefetch region");
    // Read again: from the cache.
    assert_eq!(std::fs::read(at.join("pf/b")).expect("read pf/b"), b"prefetched\n");
    assert_eq!(std::fs::read(at.join("pf/a")).expect("read pf/a").len(), 200 << 10);
    // A file at the blob's end came with the TOC's tail (the pull kept those bytes): no request.
    assert_eq!(std::fs::read(at.join("etc/motd")).expect("read etc/motd"), b"after the landmark\n");
    // One after the landmark is fetched when read, by a request of its own.
    assert_eq!(
        std::fs::read(at.join("data/noise")).expect("read data/noise"),
        strata_test_support::noise(3 << 20, 12)
    );
    assert!(wait_for(10, || mount_gets().len() == 2), "{:?}", mount_gets());
    assert_eq!(mount_gets()[1].0, 206);
    // (Its chunk's end lies in the kept tail: only the rest is asked for.)
    assert!(mount_gets()[1].1 > 2 << 20, "{:?}", mount_gets());
    lazy.ok(&["container", "rm", "--force", "v"]);
}

/// The remote layers of `image` in `root` (`image inspect`'s `local[].remote`).
fn remote(root: &Root, image: &str) -> Vec<bool> {
    lazy_run::local(root, image).iter().map(|l| l["remote"].as_bool().expect("remote")).collect()
}

/// Whether the top mount at `at` is kernel overlay.
fn kernel_mounted(at: &str) -> bool {
    strata::container::backend_at(Path::new(at.trim())) == Some(strata::container::Backend::Kernel)
}

use crate::lazy_run;

/// Background completion: with a container running over a lazily pulled image, strata-fuse
/// fetches the rest of each layer once the first reads have settled, by ranges (no whole-blob
/// GET, no byte twice), verifies it, and the layers become ordinary (`image inspect`: local,
/// whole); the running container still reads, a new one mounts with kernel overlay, and its
/// tree is a plain pull's entry by entry. The same image under `--lazy-background=off`, run as
/// long, fetches nothing but what its process read.
#[test]
fn background_completion_makes_the_layers_ordinary() {
    if !privileged("background_completion_makes_the_layers_ordinary") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let src = Root::new();
    let on_image = format!("{}/lazy/bg:esgz", reg.addr);
    let off_image = format!("{}/lazy/off:esgz", reg.addr);
    let manifest = lazy_run::push_image(&src, &on_image);
    src.ok(&["push", "-q", &on_image, &off_image, "--tls-verify=false"]);
    let blobs = lazy_run::layers(&manifest);
    let (noise_blob, noise_size) = blobs[1].clone();

    let on = Root::new();
    on.ok(&["pull", "-q", "--lazy", &on_image, "--tls-verify=false"]);
    on.ok(&["run", "-d", "--name", "c", &on_image, "--", "sleep", "600"]);
    let off = Root::new();
    off.ok(&["pull", "-q", "--lazy", &off_image, "--tls-verify=false"]);
    let off_pulled = lazy_run::served(&reg.log(), "lazy/off", &noise_blob);
    off.ok(&["--lazy-background=off", "run", "-d", "--name", "c", &off_image, "--", "sleep", "600"]);
    assert_eq!(off.ok(&["exec", "c", "cat", "/etc/motd"]), "lazy motd\n");

    assert!(
        wait_for(120, || remote(&on, &on_image).iter().all(|r| !r)),
        "still remote: {:?}",
        remote(&on, &on_image)
    );
    let log = reg.log();
    for (d, size) in &blobs {
        assert_eq!(lazy_run::whole_gets(&log, "lazy/bg", d), 0, "a whole-blob GET of {d}");
        let served = lazy_run::served(&log, "lazy/bg", d);
        assert!(served >= *size && served <= size + (1 << 20), "{d}: {served} bytes served of {size}");
    }
    for l in lazy_run::local(&on, &on_image) {
        assert_eq!(l["bytes_local"], l["blob_size"], "{l}");
    }
    // Off, as long: the noise file was never read, and none of it was fetched.
    assert_eq!(remote(&off, &off_image), vec![true, true]);
    let by_off = lazy_run::served(&reg.log(), "lazy/off", &noise_blob) - off_pulled;
    assert!(by_off < noise_size / 20, "background off fetched {by_off} bytes of {noise_size}");

    // The running container reads on (through its strata-fuse and what it kept).
    let sum = on.ok(&["exec", "c", "sha256sum", "/data/noise"]);
    assert_eq!(sum.split_whitespace().next(), Some(sha(&lazy_run::noise()).trim_start_matches("sha256:")));
    // A new container mounts with kernel overlay, and sees a plain pull's tree.
    on.ok(&["container", "create", "--read-only", &on_image, "k"]);
    let at = on.ok(&["container", "mount", "k"]);
    assert!(kernel_mounted(&at), "not kernel overlay at {at}");
    let got = capture(Path::new(at.trim()));
    on.ok(&["container", "rm", "--force", "k"]);
    let plain = Root::new();
    plain.ok(&["pull", "-q", &on_image, "--tls-verify=false"]);
    strata_test_support::tree::assert_trees_eq(
        &lazy_run::view(&plain, &on_image),
        &got,
        "completed vs plain pull",
    );
    on.ok(&["container", "rm", "--force", "c"]);
    off.ok(&["container", "rm", "--force", "c"]);
}

/// The union of the ranges in a remote layer's `blob.ranges`, in bytes.
pub(crate) fn kept(root: &Root, diff_id: &str) -> u64 {
    let p = root.path().join("remote").join(diff_id.trim_start_matches("sha256:")).join("blob.ranges");
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let mut ranges: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    ranges.sort();
    let (mut total, mut at) = (0, 0);
    for (a, b) in ranges {
        let a = a.max(at);
        if b > a {
            total += b - a;
            at = b;
        }
    }
    total
}

/// The strata-fuse serving container `name` of `root`, by its command line.
pub(crate) fn fuse_pid(root: &Root, name: &str) -> Option<i32> {
    let marker = format!("{}/containers/{name}", root.path().display());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (cmd.contains("strata-fuse") && cmd.contains(&marker)).then_some(pid)
    })
}

/// kill -9 of strata-fuse in the middle of background completion leaves a consistent store:
/// the layer still remote, its kept bytes recorded; the next run's strata-fuse goes on from
/// there (fetching less than the blob, no whole-blob GET) and completes it, verified: a new
/// container mounts with kernel overlay and sees a plain pull's tree.
#[test]
fn a_killed_background_completion_is_resumed() {
    if !privileged("a_killed_background_completion_is_resumed") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let src = Root::new();
    let image = format!("{}/lazy/kill:esgz", reg.addr);
    let manifest = lazy_run::push_image(&src, &image);
    let (noise_blob, noise_size) = lazy_run::layers(&manifest)[1].clone();
    let lazy = Root::new();
    lazy.ok(&["pull", "-q", "--lazy", &image, "--tls-verify=false"]);
    let diff_id = lazy_run::local(&lazy, &image)[1]["diff_id"].as_str().expect("diff_id").to_string();
    let tail = kept(&lazy, &diff_id);
    assert!(tail > 0 && tail < noise_size / 4, "the pull kept {tail} bytes");

    // A small share: the background rests long between its requests.
    lazy.ok(&["--lazy-background=2", "run", "-d", "--name", "c", &image, "--", "sleep", "600"]);
    assert!(wait_for(60, || kept(&lazy, &diff_id) > tail), "the background fetched nothing");
    let pid = fuse_pid(&lazy, "c").expect("strata-fuse of c");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill -9");
    assert!(wait_for(10, || !Path::new(&format!("/proc/{pid}")).exists()), "strata-fuse {pid} lives on");
    let at_kill = kept(&lazy, &diff_id);
    assert!(at_kill < noise_size, "complete before the kill: {at_kill} of {noise_size}");
    assert!(remote(&lazy, &image)[1], "a layer made ordinary before it was whole");
    lazy.ok(&["container", "rm", "--force", "c"]);

    resumes_and_completes(&lazy, &reg, "lazy/kill", &image, &noise_blob, noise_size, at_kill);
}

/// `STRATA_LAZY_PULL=true` makes `pull` lazy, `--lazy=false` then pulls whole; `build` FROM a
/// lazily pulled image completes its base's remote layers first (its steps mount with kernel
/// overlay) and builds over the whole, verified layers.
#[test]
fn lazy_by_default_and_build_from_a_lazy_image() {
    if !privileged("lazy_by_default_and_build_from_a_lazy_image") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let src = Root::new();
    let image = format!("{}/lazy/build:esgz", reg.addr);
    lazy_run::push_image(&src, &image);
    let pull = |root: &Root, extra: &[&str]| {
        let out = std::process::Command::new(STRATA)
            .arg("--root")
            .arg(root.path())
            .args(["pull", "-q", &image, "--tls-verify=false"])
            .args(extra)
            .env("STRATA_LAZY_PULL", "true")
            .output()
            .expect("strata pull");
        assert!(out.status.success(), "pull: {}", String::from_utf8_lossy(&out.stderr));
    };
    let whole = Root::new();
    pull(&whole, &["--lazy=false"]);
    assert_eq!(remote(&whole, &image), vec![false, false]);
    let lazy = Root::new();
    pull(&lazy, &[]);
    assert_eq!(remote(&lazy, &image), vec![true, true]);
    // A plain pull over a lazy one completes the layers; the kept bytes of their blobs go at
    // the store's next open.
    let over = Root::new();
    pull(&over, &[]);
    let partials = |root: &Root| -> usize {
        let dir = root.path().join("remote");
        std::fs::read_dir(&dir)
            .map_or(0, |rd| rd.flatten().filter(|e| e.path().join("blob.partial").exists()).count())
    };
    assert_eq!(partials(&over), 2, "each remote layer keeps the bytes the pull fetched");
    pull(&over, &["--lazy=false"]);
    assert_eq!(remote(&over, &image), vec![false, false]);
    assert_eq!(partials(&over), 0);

    let ctx = tempfile::tempdir_in(lazy.path()).expect("context");
    std::fs::write(
        ctx.path().join("Containerfile"),
        format!("FROM {image}\nRUN sha256sum /data/noise > /sum && cat /etc/motd >> /sum\n"),
    )
    .expect("Containerfile");
    lazy.ok(&["build", "-q", "-t", "out", ctx.path().to_str().expect("utf8")]);
    assert_eq!(remote(&lazy, &image), vec![false, false], "the base's layers completed");
    let noise = sha(&lazy_run::noise());
    let want = format!("{}  /data/noise\nlazy motd\n", noise.trim_start_matches("sha256:"));
    assert_eq!(lazy.ok(&["run", "--rm", "out", "--", "cat", "/sum"]), want);
}

/// `image ls` adds LOCAL (bytes of the layer blobs here, of their total) while an image is
/// partial, and shows the background's progress: whole once the layers are complete, when the
/// column goes away again.
#[test]
fn image_ls_shows_how_much_of_a_lazy_image_is_local() {
    if !privileged("image_ls_shows_how_much_of_a_lazy_image_is_local") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let src = Root::new();
    let image = format!("{}/lazy/ls:esgz", reg.addr);
    lazy_run::push_image(&src, &image);
    let lazy = Root::new();
    lazy.ok(&["image", "import", &format!("{}:busybox", fixtures().join("oci").display()), "--name", "bb"]);
    let header =
        |out: &str| out.lines().next().unwrap_or_default().split_whitespace().last().map(str::to_string);
    assert_eq!(header(&lazy.ok(&["image", "ls"])).as_deref(), Some("SIZE"), "no LOCAL for whole images");
    lazy.ok(&["pull", "-q", "--lazy", &image, "--tls-verify=false"]);
    let ls = lazy.ok(&["image", "ls"]);
    assert_eq!(header(&ls).as_deref(), Some("LOCAL"), "{ls}");
    let repo = image.split(':').take(2).collect::<Vec<_>>().join(":");
    // LOCAL of each image: (here, total).
    let local = |name: &str| -> (String, String) {
        let f = lazy.ok(&["image", "ls", "--format", "{{.Repository}}|{{.Local}}"]);
        let line =
            f.lines().find(|l| l.starts_with(&format!("{name}|"))).unwrap_or_else(|| panic!("{name} in {f}"));
        let (have, all) = line.split('|').nth(1).and_then(|c| c.split_once('/')).expect("LOCAL a/b");
        (have.to_string(), all.to_string())
    };
    let (have, all) = local(&repo);
    assert_ne!(have, all, "{ls}");
    let (bb_have, bb_all) = local("bb");
    assert_eq!(bb_have, bb_all, "{ls}");

    lazy.ok(&["run", "-d", "--name", "c", &image, "--", "sleep", "600"]);
    assert!(wait_for(120, || remote(&lazy, &image).iter().all(|r| !r)), "still remote");
    let ls = lazy.ok(&["image", "ls"]);
    assert_eq!(header(&ls).as_deref(), Some("SIZE"), "{ls}");
    assert_eq!(local(&repo), (all.clone(), all), "whole");
    lazy.ok(&["container", "rm", "--force", "c"]);
}

/// Mounts under `root` in the kernel's mount table.
fn mounts_under(root: &Root) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = root.path().display().to_string();
    text.lines().filter(|l| l.contains(&root)).map(str::to_string).collect()
}

/// `run --rm` over a lazily pulled image returns once its process has exited, as docker's and
/// podman's do, not once background completion has made the layers whole: behind a slow link
/// (a throttling proxy), with the background fetching when the process exits, the command
/// returns with the noise layer still remote and partly kept, its strata-fuse gone and nothing
/// mounted. The next container's mount resumes from the kept bytes (fetching no byte twice, no
/// whole-blob GET) and completes the layer, verified: a new container mounts it with kernel
/// overlay and sees a plain pull's tree.
#[test]
fn run_rm_returns_before_background_completion_and_the_next_mount_resumes() {
    if !privileged("run_rm_returns_before_background_completion_and_the_next_mount_resumes") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let src = Root::new();
    let manifest = lazy_run::push_image(&src, &format!("{}/lazy/rm:esgz", reg.addr));
    let (noise_blob, noise_size) = lazy_run::layers(&manifest)[1].clone();
    // 256 KiB/s: the 3 MiB noise layer takes over ten seconds to arrive whole.
    let proxy = common::throttle::ThrottleProxy::start(&reg.addr, 256 << 10);
    let image = format!("{}/lazy/rm:esgz", proxy.addr);
    let lazy = Root::new();
    lazy.ok(&["pull", "-q", "--lazy", &image, "--tls-verify=false"]);
    let diff_id = lazy_run::local(&lazy, &image)[1]["diff_id"].as_str().expect("diff_id").to_string();
    let pulled = gets(&reg.log(), "lazy/rm", &noise_blob).len();

    // The process reads its files (`etc/motd` came with the TOC's tail), then lives on while
    // the background fetches (all of the link's time: a share of 100).
    let out = lazy.ok(&[
        "--lazy-background=100",
        "run",
        "--rm",
        "--name",
        "r",
        &image,
        "--",
        "sh",
        "-c",
        "cat /etc/motd; sleep 4",
    ]);
    assert_eq!(out, "lazy motd\n");
    // Returned: the layer is still remote and partial, though the background had started on
    // it (a range of it asked for since the pull); no strata-fuse of the container lives on,
    // nothing is mounted.
    let layer = &lazy_run::local(&lazy, &image)[1];
    assert_eq!(layer["remote"], true, "{layer}");
    assert!(
        gets(&reg.log(), "lazy/rm", &noise_blob).len() > pulled,
        "the background had not started on the noise layer"
    );
    let at_return = kept(&lazy, &diff_id);
    assert!(
        at_return < noise_size,
        "the layer was whole when run --rm returned: {at_return} of {noise_size}"
    );
    assert!(layer["bytes_local"].as_u64().expect("bytes_local") < noise_size, "bytes_local: {layer}");
    assert!(wait_for(10, || fuse_pid(&lazy, "r").is_none()), "strata-fuse of r lives on");
    assert_eq!(mounts_under(&lazy), Vec::<String>::new(), "mounts left");
    assert!(lazy.ok(&["ps", "-a", "-q"]).trim().is_empty(), "container r left");

    // The next mount goes on from the kept bytes and completes the layer.
    resumes_and_completes(&lazy, &reg, "lazy/rm", &image, &noise_blob, noise_size, at_return);
}

/// After an interrupted completion (`kept` of the noise layer's `noise_size` bytes kept): the
/// next mount (a detached run, container `d`) goes on from the kept bytes, fetching no more than
/// the rest and no blob whole, and completes the layers; the noise layer is then all local, a new
/// container mounts with kernel overlay, and its tree equals a plain pull's of `repo:esgz`.
fn resumes_and_completes(
    lazy: &Root,
    reg: &Registry,
    repo: &str,
    image: &str,
    noise_blob: &str,
    noise_size: u64,
    kept: u64,
) {
    let before = lazy_run::served(&reg.log(), repo, noise_blob);
    lazy.ok(&["run", "-d", "--name", "d", image, "--", "sleep", "600"]);
    assert!(wait_for(120, || remote(lazy, image).iter().all(|r| !r)), "still remote");
    let log = reg.log();
    let after = lazy_run::served(&log, repo, noise_blob) - before;
    assert!(
        after <= noise_size - kept,
        "fetched {after} bytes after the interruption; {kept} of {noise_size} were kept"
    );
    assert_eq!(lazy_run::whole_gets(&log, repo, noise_blob), 0);
    let layer = &lazy_run::local(lazy, image)[1];
    assert_eq!(layer["bytes_local"].as_u64(), Some(noise_size), "{layer}");
    lazy.ok(&["container", "create", "--read-only", image, "k"]);
    let at = lazy.ok(&["container", "mount", "k"]);
    assert!(kernel_mounted(&at), "not kernel overlay at {at}");
    let got = capture(Path::new(at.trim()));
    lazy.ok(&["container", "rm", "--force", "k"]);
    lazy.ok(&["container", "rm", "--force", "d"]);
    // The plain pull straight from the registry (`image` may name a slow proxy in front of it).
    let direct = format!("{}/{repo}:esgz", reg.addr);
    let plain = Root::new();
    plain.ok(&["pull", "-q", &direct, "--tls-verify=false"]);
    strata_test_support::tree::assert_trees_eq(
        &lazy_run::view(&plain, &direct),
        &got,
        "resumed vs plain pull",
    );
}
