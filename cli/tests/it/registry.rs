//! `strata pull` against a real registry (Debian's docker-registry, distribution 2.8) on
//! loopback: images pushed there by skopeo pull into trees equal to umoci's unpack of the same
//! image; by digest, by platform; over TLS with a CA from a certs.d dir; with Basic auth from an
//! auth.json; errors a user can act on; nothing fetched twice; an interrupted pull leaves nothing.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::registry::{Fault, FaultRegistry, Registry, RegistryOpts, StallProxy};
use common::*;

/// strata with this root and environment: credentials and CAs only from what the test gives.
fn strata(root: &Root, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let none = root.path().join("no-auth.json");
    let mut c = Command::new(STRATA);
    c.arg("--root").arg(root.path()).args(args);
    c.env("REGISTRY_AUTH_FILE", &none).env("STRATA_CERTS_D", root.path().join("no-certs.d"));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run strata")
}

fn ok(root: &Root, env: &[(&str, &Path)], args: &[&str]) -> String {
    let out = strata(root, env, args);
    assert!(out.status.success(), "strata {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn fails(root: &Root, env: &[(&str, &Path)], args: &[&str]) -> String {
    let out = strata(root, env, args);
    assert!(!out.status.success(), "strata {args:?} unexpectedly succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The digest the fixture layout names for `tag`.
fn fixture_digest(layout: &Path, tag: &str) -> String {
    let index = json(&layout.join("index.json"));
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("tag {tag}"))["digest"]
        .as_str()
        .expect("digest")
        .to_string()
}

/// The merged view of image `name` equals umoci's unpack of `layout:tag`, entry by entry.
fn assert_matches_umoci(root: &Root, name: &str, layout: &Path, tag: &str) {
    let (_keep, reference) = umoci_unpack(layout, tag);
    let c =
        format!("v-{}", fixture_digest(layout, tag).trim_start_matches("sha256:").get(..12).expect("hex"));
    root.ok(&["container", "create", "--read-only", name, &c]);
    let at = root.ok(&["container", "mount", &c]);
    strata_test_support::tree::assert_trees_eq(
        &capture_reference(&reference),
        &capture(Path::new(at.trim())),
        name,
    );
    root.ok(&["container", "rm", "--force", &c]);
}

fn layer_dirs(root: &Root) -> Vec<String> {
    let Ok(dir) = fs::read_dir(root.path().join("layers/sha256")) else { return Vec::new() };
    dir.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect()
}

fn db_count(root: &Root, table: &str) -> i64 {
    let c = rusqlite::Connection::open(root.path().join("strata.db")).expect("db");
    c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).expect("count")
}

/// After the next command: no layer, no row, no staging debris.
fn assert_clean(root: &Root) {
    root.ok(&["image", "ls"]);
    assert!(layer_dirs(root).is_empty(), "layer dirs left: {:?}", layer_dirs(root));
    let staging: Vec<PathBuf> =
        fs::read_dir(root.path().join("staging")).expect("staging").map(|e| e.expect("e").path()).collect();
    assert!(staging.is_empty(), "staging left: {staging:?}");
    for t in ["layers", "images", "leases"] {
        assert_eq!(db_count(root, t), 0, "{t} rows left");
    }
}

fn layer_digests(layout: &Path, tag: &str) -> Vec<String> {
    manifest_of(layout, tag)["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

/// skopeo-pushed images pull into the trees umoci unpacks; by tag and by digest; the default
/// name is the reference; a second pull fetches no layer (the registry no longer has them).
#[test]
fn pull_matches_umoci_and_fetches_nothing_twice() {
    if !privileged("pull_matches_umoci_and_fetches_nothing_twice") {
        return;
    }
    let fx = fixtures();
    let oci = fx.join("oci");
    let reg = Registry::start(RegistryOpts::default());
    let root = Root::new();
    for (tag, dest) in [("multi", "multi:1"), ("busybox", "lib/busybox:latest")] {
        reg.push(&format!("oci:{}:{tag}", oci.display()), dest, false);
        let r = format!("{}/{dest}", reg.addr);
        let d = ok(&root, &[], &["pull", &r]);
        assert_eq!(d, fixture_digest(&oci, tag), "{r}: the manifest digest");
        assert_matches_umoci(&root, &r, &oci, tag);
    }
    let names = root.ok(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(names.contains(&format!("{}/multi:1", reg.addr)), "{names}");
    // A second name in registry form: the same manifest, no blob copied; it outlives the first.
    let blobs = || fs::read_dir(root.path().join("blobs/sha256")).expect("blobs").count();
    let before = blobs();
    let first = format!("{}/lib/busybox:latest", reg.addr);
    assert_eq!(root.ok(&["image", "tag", &first, "localhost:5000/app:v1"]).trim(), "localhost:5000/app:v1");
    assert_eq!(blobs(), before);
    let digest_of = |n: &str| {
        let v: serde_json::Value = serde_json::from_str(&root.ok(&["image", "inspect", n])).expect("json");
        v["digest"].as_str().expect("digest").to_string()
    };
    assert_eq!(digest_of("localhost:5000/app:v1"), fixture_digest(&oci, "busybox"));
    root.ok(&["image", "rm", &first]);
    assert_matches_umoci(&root, "localhost:5000/app:v1", &oci, "busybox");
    let err = root.fails(&["image", "tag", "localhost:5000/app:v1", "Bad Name"]);
    assert!(err.contains("Bad Name"), "{err}");
    // Pull by digest, under another name: every layer is present already, so the registry
    // is not asked for one (their bytes are gone from its storage).
    let want = fixture_digest(&oci, "multi");
    for l in layer_digests(&oci, "multi") {
        fs::remove_file(reg.blob_data(&l)).expect("remove blob data");
    }
    let by_digest = format!("{}/multi@{want}", reg.addr);
    let out = strata(&root, &[], &["pull", &by_digest, "--name", "again"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("0 unpacked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_matches_umoci(&root, "again", &oci, "multi");
    // A digest the repository does not have; a tag it does not have.
    let missing = format!("{}/multi@sha256:{}", reg.addr, "0".repeat(64));
    let err = fails(&root, &[], &["pull", &missing]);
    assert!(err.contains("not found") && err.contains("manifest unknown"), "{err}");
    let err = fails(&root, &[], &["pull", &format!("{}/multi:nosuchtag", reg.addr)]);
    assert!(err.contains("multi:nosuchtag: not found: manifest unknown"), "{err}");
    // -q prints the digest alone.
    let out = strata(&root, &[], &["pull", "-q", &format!("{}/lib/busybox", reg.addr), "--name", "bb"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), fixture_digest(&oci, "busybox"));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// An index pushed with `skopeo copy --all`: --platform picks the manifest; a platform the
/// index lacks is refused with the ones it has.
#[test]
fn pull_index_by_platform() {
    if !privileged("pull_index_by_platform") {
        return;
    }
    let fx = fixtures();
    let idx = fx.join("oci-index");
    let reg = Registry::start(RegistryOpts::default());
    reg.push(&format!("oci:{}:multi-arch", idx.display()), "arch:1", true);
    let root = Root::new();
    let r = format!("{}/arch:1", reg.addr);
    for (p, tag) in [("linux/arm64", "multi-arch-arm64"), ("linux/amd64", "multi-arch-amd64")] {
        let d = ok(&root, &[], &["pull", &r, "--platform", p, "--name", tag]);
        assert_eq!(d, fixture_digest(&idx, tag), "{p}");
        assert_matches_umoci(&root, tag, &idx, tag);
    }
    let err = fails(&root, &[], &["pull", &r, "--platform", "linux/s390x", "--name", "x"]);
    assert!(err.contains("no manifest for platform linux/s390x") && err.contains("linux/arm64"), "{err}");
}

/// TLS: refused without the CA (the error names the host and the certificate problem);
/// accepted with the CA in a certs.d dir; `--tls-verify=false` skips verification.
#[test]
fn pull_over_tls_with_certs_d() {
    if !privileged("pull_over_tls_with_certs_d") {
        return;
    }
    let fx = fixtures();
    let oci = fx.join("oci");
    let reg = Registry::start(RegistryOpts { tls: true, ..Default::default() });
    reg.push(&format!("oci:{}:busybox", oci.display()), "bb:1", false);
    let root = Root::new();
    let r = format!("{}/bb:1", reg.addr);
    let err = fails(&root, &[], &["pull", &r]);
    assert!(err.contains(&format!("{}: TLS:", reg.addr)), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // The hint names the directory this strata searched (STRATA_CERTS_D here), not a default.
    let searched = root.path().join("no-certs.d").join(&reg.addr);
    assert!(err.contains(&format!("goes in {} as a *.crt file", searched.display())), "{err}");
    let certs = reg.certs_d();
    let d = ok(&root, &[("STRATA_CERTS_D", &certs)], &["pull", &r]);
    assert_eq!(d, fixture_digest(&oci, "busybox"));
    let d = ok(&root, &[], &["pull", &r, "--tls-verify=false", "--name", "insecure"]);
    assert_eq!(d, fixture_digest(&oci, "busybox"));
}

/// htpasswd Basic auth: the registry's message without credentials, the refusal of a wrong
/// password, a pull with credentials from an auth.json named by REGISTRY_AUTH_FILE.
#[test]
fn pull_with_basic_auth_from_auth_json() {
    if !privileged("pull_with_basic_auth_from_auth_json") {
        return;
    }
    let fx = fixtures();
    let oci = fx.join("oci");
    let reg = Registry::start(RegistryOpts {
        basic: Some(("tester".into(), "s3cret".into())),
        ..Default::default()
    });
    reg.push(&format!("oci:{}:busybox", oci.display()), "private/bb:1", false);
    let root = Root::new();
    let r = format!("{}/private/bb:1", reg.addr);
    let err = fails(&root, &[], &["pull", &r]);
    // The registry's own message, then what to do.
    assert!(
        err.contains(&format!("{}: unauthorized: authentication required (no credentials", reg.addr)),
        "{err}"
    );
    assert!(err.contains(&format!("strata login {}", reg.addr)), "{err}");
    let auth = |user: &str, pw: &str| {
        use base64::Engine as _;
        let f = root.path().join(format!("auth-{user}-{pw}.json"));
        let a = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        fs::write(&f, serde_json::json!({"auths": {reg.addr.clone(): {"auth": a}}}).to_string())
            .expect("auth.json");
        f
    };
    let wrong = auth("tester", "wrong");
    let err = fails(&root, &[("REGISTRY_AUTH_FILE", &wrong)], &["pull", &r]);
    assert!(
        err.contains("unauthorized: authentication required")
            && err.contains("\"tester\"")
            && err.contains("were refused"),
        "{err}"
    );
    let right = auth("tester", "s3cret");
    let d = ok(&root, &[("REGISTRY_AUTH_FILE", &right)], &["pull", &r]);
    assert_eq!(d, fixture_digest(&oci, "busybox"));

    // login checks the password against the registry before it writes the file; logout removes it.
    let file = root.path().join("login/auth.json");
    let env = [("REGISTRY_AUTH_FILE", file.as_path())];
    let login = |pw: &str| {
        let mut c = Command::new(STRATA);
        c.args(["login", &reg.addr, "-u", "tester", "--password-stdin"])
            .envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = c
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("login");
        use std::io::Write as _;
        child.stdin.take().expect("stdin").write_all(format!("{pw}\n").as_bytes()).expect("password");
        child.wait_with_output().expect("login")
    };
    let out = login("wrong");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unauthorized") && err.contains("from --password-stdin were refused"), "{err}");
    assert!(!file.exists(), "a refused login writes nothing");
    let out = login("s3cret");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&file).expect("auth.json").permissions());
    assert_eq!(mode & 0o077, 0, "auth.json is private: {mode:o}");
    ok(&root, &env, &["pull", &r, "--name", "after-login"]);
    ok(&root, &env, &["logout", &reg.addr]);
    let err = fails(&root, &env, &["pull", &r, "--name", "after-logout"]);
    assert!(err.contains("unauthorized"), "{err}");
    let err = fails(&root, &env, &["logout", &reg.addr]);
    assert!(err.contains("not logged in"), "{err}");

    // On a terminal, what is missing is asked for, as docker login does (script(1) gives it one).
    let prompt = |typed: &str| {
        let cmd = format!("{STRATA} login {}", reg.addr);
        let mut child = Command::new("timeout")
            .args(["30", "script", "-qec", &cmd, "/dev/null"])
            .env("REGISTRY_AUTH_FILE", &file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("script");
        use std::io::Write as _;
        child.stdin.take().expect("stdin").write_all(typed.as_bytes()).expect("type");
        let out = child.wait_with_output().expect("script");
        (out.status, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (status, text) = prompt("tester\nwrong\n");
    assert!(!status.success(), "{text}");
    assert!(text.contains("Username: ") && text.contains("Password: "), "{text}");
    assert!(text.contains("from the terminal were refused"), "{text}");
    let (status, text) = prompt("tester\ns3cret\n");
    assert!(status.success() && text.contains("Login Succeeded"), "{text}");
    ok(&root, &env, &["pull", &r, "--name", "after-prompted-login"]);
    // Without a terminal, a missing user name is an error that says so, not a wait.
    let err = fails(&root, &env, &["login", &reg.addr]);
    assert!(err.contains("-u USER"), "{err}");
}

/// Errors name what to act on: a refused connection names the host; a registry that serves
/// the wrong bytes for a layer fails naming the layer, and leaves nothing behind.
#[test]
fn pull_errors_name_host_and_layer() {
    if !privileged("pull_errors_name_host_and_layer") {
        return;
    }
    let fx = fixtures();
    let oci = fx.join("oci");
    let root = Root::new();
    let closed =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    let err = fails(&root, &[], &["pull", &format!("{closed}/x:1")]);
    assert!(err.contains(&format!("{closed}: cannot connect: connection refused")), "{err}");
    let reg = Registry::start(RegistryOpts::default());
    reg.push(&format!("oci:{}:multi", oci.display()), "multi:1", false);
    let top = layer_digests(&oci, "multi").pop().expect("layer");
    let data = reg.blob_data(&top);
    let mut bytes = fs::read(&data).expect("blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&data, &bytes).expect("corrupt blob");
    let err = fails(&root, &[], &["pull", &format!("{}/multi:1", reg.addr)]);
    assert!(err.contains(&format!("layer {top}")), "{err}");
    assert_clean(&root);
}

/// kill -9 while a layer is mid-body (a proxy stalls the stream): the next command leaves a
/// clean store, and a second pull completes.
#[test]
fn killed_pull_leaves_nothing_and_pull_again_completes() {
    if !privileged("killed_pull_leaves_nothing_and_pull_again_completes") {
        return;
    }
    let fx = fixtures();
    let oci = fx.join("oci");
    let reg = Registry::start(RegistryOpts::default());
    reg.push(&format!("oci:{}:multi", oci.display()), "multi:1", false);
    let proxy = StallProxy::start(&reg.addr, 2 << 20);
    let root = Root::new();
    let mut child = Command::new(STRATA)
        .arg("--root")
        .arg(root.path())
        .args(["pull", &format!("{}/multi:1", proxy.addr), "--name", "m"])
        .env("REGISTRY_AUTH_FILE", root.path().join("none.json"))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proxy.stalled.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the pull never reached the stall");
        assert!(child.try_wait().expect("wait").is_none(), "the pull ended before the stall");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    let staged = fs::read_dir(root.path().join("staging")).expect("staging").count();
    assert!(staged > 0, "the killed pull had staging state");
    assert_clean(&root);
    drop(proxy);
    let d = ok(&root, &[], &["pull", &format!("{}/multi:1", reg.addr), "--name", "m"]);
    assert_eq!(d, fixture_digest(&oci, "multi"));
    assert_matches_umoci(&root, "m", &oci, "multi");
}

/// 429 (Retry-After honoured), 5xx and a connection closed before the response are retried,
/// boundedly: a pull through three such faults completes; an endless 503 gives up saying so;
/// a body cut short fails naming the layer and leaves a clean store.
#[test]
fn transient_failures_are_retried_boundedly() {
    if !privileged("transient_failures_are_retried_boundedly") {
        return;
    }
    let fx = fixtures();
    let oci = fx.join("oci");
    let root = Root::new();
    let faults = vec![Fault::Status(429, Some(1)), Fault::Status(500, None), Fault::Reset];
    let reg = FaultRegistry::start(&oci, faults);
    let t = Instant::now();
    let d = ok(&root, &[], &["pull", &format!("{}/multi:multi", reg.addr), "--name", "m"]);
    assert_eq!(d, fixture_digest(&oci, "multi"));
    assert!(t.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was not waited for");
    drop(reg);

    let reg = FaultRegistry::start(&oci, vec![Fault::Status(503, None); 10]);
    let err = fails(&root, &[], &["pull", &format!("{}/busybox:busybox", reg.addr)]);
    assert!(err.contains(&format!("{}: HTTP 503 after 4 tries", reg.addr)), "{err}");
    let asked = reg.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(asked <= 6, "{asked} requests: retries are bounded");
    drop(reg);

    // Manifest and config pass; the first layer's body is cut short (a close mid-body).
    let clean = Root::new();
    let reg = FaultRegistry::start(&oci, vec![Fault::Pass, Fault::Pass, Fault::Truncate]);
    let first = layer_digests(&oci, "busybox").remove(0);
    let err = fails(&clean, &[], &["pull", &format!("{}/busybox:busybox", reg.addr)]);
    assert!(err.contains(&format!("layer {first}")), "{err}");
    assert_clean(&clean);
}

/// `skopeo inspect` of `docker://REF` (plain HTTP): its manifest digest.
fn skopeo_digest(reference: &str, creds: Option<&str>) -> String {
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--tls-verify=false"]);
    if let Some(cr) = creds {
        c.arg(format!("--creds={cr}"));
    }
    let out = c.arg(format!("docker://{reference}")).output().expect("skopeo");
    assert!(out.status.success(), "skopeo inspect {reference}: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("skopeo json");
    v["Digest"].as_str().expect("Digest").to_string()
}

/// Requests with `method` in the registry's access log.
fn logged(reg: &Registry, method: &str) -> usize {
    reg.log().matches(&format!("\"{method} /v2/")).count()
}

/// A busybox root with a container `c` that wrote /x, committed as `committed`; its digest.
fn committed_image(root: &Root) -> String {
    root.ok(&["image", "import", &format!("{}:busybox", fixtures().join("oci").display())]);
    root.ok(&["run", "busybox", "--name", "c", "--backend", "kernel", "--", "sh", "-c", "echo hi > /x"]);
    root.ok(&["container", "commit", "c", "committed"]).trim().to_string()
}

/// A strata commit pushed to a registry: skopeo sees the same manifest digest, its copy unpacked
/// by umoci equals strata's view, a pull into a fresh root gives the same digest and tree; a
/// second push uploads nothing; a push to another repository mounts the blobs.
#[test]
fn push_commit_round_trips() {
    if !privileged("push_commit_round_trips") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let root = Root::new();
    let digest = committed_image(&root);
    let dest = format!("{}/strata/app:v1", reg.addr);
    let out = strata(&root, &[], &["push", "committed", &dest, "--tls-verify=false"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest);
    // busybox's layer, the commit's layer and the config.
    assert!(err.contains("3 blobs uploaded, 0 mounted, 0 already present"), "{err}");
    assert_eq!(skopeo_digest(&dest, None), digest);

    let layout = tempfile::tempdir_in(root.path()).expect("tempdir");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false", &format!("docker://{dest}")])
        .arg(format!("oci:{}:app", layout.path().display()))
        .output()
        .expect("skopeo copy");
    assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fixture_digest(layout.path(), "app"), digest, "skopeo copied the same manifest");
    assert_matches_umoci(&root, "committed", layout.path(), "app");
    let at = PathBuf::from(root.ok(&["container", "mount", "c"]).trim());
    assert_eq!(fs::read(at.join("x")).expect("/x"), b"hi\n");

    // Pulled back into a fresh root: the same digest and tree.
    let fresh = Root::new();
    assert_eq!(ok(&fresh, &[], &["pull", &dest]), digest);
    assert_matches_umoci(&fresh, &dest, layout.path(), "app");

    // Again: only HEADs and the manifest PUT; nothing uploaded.
    let (posts, puts) = (logged(&reg, "POST"), logged(&reg, "PUT"));
    let out = strata(&root, &[], &["push", "-q", "committed", &dest]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest);
    assert!(out.stderr.is_empty(), "-q: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(logged(&reg, "POST"), posts, "no upload started:\n{}", reg.log());
    assert_eq!(logged(&reg, "PUT"), puts + 1, "only the manifest PUT:\n{}", reg.log());

    // A name in registry form pushes there by default; to another repository of the same
    // registry its blobs are mounted from the repository the name points into.
    root.ok(&["image", "tag", "committed", &dest]);
    let err = String::from_utf8_lossy(&strata(&root, &[], &["push", &dest]).stderr).into_owned();
    assert!(err.contains("0 blobs uploaded, 0 mounted, 3 already present"), "{err}");
    let other = format!("{}/other/app:v2", reg.addr);
    let out = strata(&root, &[], &["push", &dest, &other]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("0 blobs uploaded, 3 mounted, 0 already present"), "{err}");
    assert!(reg.log().contains("mount=sha256:"), "{}", reg.log());
    assert_eq!(skopeo_digest(&other, None), digest);

    // A short name names no registry: refused, naming what to give.
    let err = fails(&root, &[], &["push", "committed"]);
    assert!(err.contains("give the destination HOST[:PORT]/REPO[:TAG]"), "{err}");
    let err = fails(&root, &[], &["push", "nosuch", &dest]);
    assert!(err.contains("\"nosuch\" not found"), "{err}");
}

/// htpasswd Basic auth: a push without credentials fails with the registry's own message; with
/// an auth.json from REGISTRY_AUTH_FILE it works.
#[test]
fn push_with_basic_auth() {
    if !privileged("push_with_basic_auth") {
        return;
    }
    let reg = Registry::start(RegistryOpts {
        basic: Some(("tester".into(), "s3cret".into())),
        ..Default::default()
    });
    let root = Root::new();
    let digest = committed_image(&root);
    let dest = format!("{}/private/app:1", reg.addr);
    let err = fails(&root, &[], &["push", "committed", &dest]);
    assert!(
        err.contains(&format!("{}: unauthorized: authentication required (no credentials", reg.addr)),
        "{err}"
    );
    use base64::Engine as _;
    let f = root.path().join("auth.json");
    let a = base64::engine::general_purpose::STANDARD.encode("tester:s3cret");
    fs::write(&f, serde_json::json!({"auths": {reg.addr.clone(): {"auth": a}}}).to_string()).expect("auth");
    assert_eq!(ok(&root, &[("REGISTRY_AUTH_FILE", &f)], &["push", "committed", &dest]), digest);
    assert_eq!(skopeo_digest(&dest, Some("tester:s3cret")), digest);
}

/// podman pulls a strata push and runs it (storage and run root private to the test; the run
/// root is short and under /run, as containers/storage wants).
#[test]
fn podman_pulls_and_runs_a_strata_push() {
    if !privileged("podman_pulls_and_runs_a_strata_push") {
        return;
    }
    if Command::new("podman").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("!!! podman_pulls_and_runs_a_strata_push: SKIPPED: podman cannot run here");
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let root = Root::new();
    let digest = committed_image(&root);
    let dest = format!("{}/strata/podman:1", reg.addr);
    assert_eq!(ok(&root, &[], &["push", "committed", &dest]), digest);
    let run = tempfile::Builder::new().prefix("strata-push-").tempdir_in("/run").expect("runroot in /run");
    let podman = |args: &[&str]| common::podman_at(&root.path().join("podman"), run.path(), args);
    podman(&["pull", "-q", "--tls-verify=false", &dest]);
    let d = podman(&["image", "inspect", "--format", "{{.Digest}}", &dest]);
    assert_eq!(d.trim(), digest);
    let limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "none"];
    let mut args = vec!["run", "--rm"];
    args.extend(limits);
    args.extend([dest.as_str(), "cat", "/x"]);
    assert_eq!(podman(&args), "hi\n");
    for p in mounts_under(run.path()).into_iter().rev() {
        let _ = kernel_overlay::unmount(&p, kernel_overlay::UnmountMode::Detach);
    }
}

/// Token auth (the Bearer flow): docker-registry trusts a token server in the harness; strata
/// pulls what skopeo pushed and pushes a commit through it, asking for pull and push.
#[test]
fn pull_and_push_through_token_auth() {
    if !privileged("pull_and_push_through_token_auth") {
        return;
    }
    let fx = fixtures();
    let oci = fx.join("oci");
    let reg = Registry::start(RegistryOpts { token: true, ..Default::default() });
    reg.push(&format!("oci:{}:busybox", oci.display()), "lib/bb:1", false);
    let root = Root::new();
    let src = format!("{}/lib/bb:1", reg.addr);
    assert_eq!(ok(&root, &[], &["pull", &src]), fixture_digest(&oci, "busybox"));
    assert_matches_umoci(&root, &src, &oci, "busybox");
    let digest = committed_image(&root);
    let dest = format!("{}/strata/app:1", reg.addr);
    assert_eq!(ok(&root, &[], &["push", "committed", &dest]), digest);
    assert_eq!(skopeo_digest(&dest, None), digest);
    let scopes = reg.tokens.as_ref().expect("token server").scopes.lock().expect("scopes").clone();
    assert!(scopes.contains(&"repository:lib/bb:pull".to_string()), "{scopes:?}");
    assert!(scopes.contains(&"repository:strata/app:pull,push".to_string()), "{scopes:?}");
    // A mount from the repository the name points into: the token allows pulling from it.
    root.ok(&["image", "tag", "committed", &dest]);
    let other = format!("{}/other/app:1", reg.addr);
    let out = strata(&root, &[], &["push", &dest, &other]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0 blobs uploaded, 3 mounted, 0 already present"), "{err}");
    let scopes = reg.tokens.as_ref().expect("token server").scopes.lock().expect("scopes").clone();
    assert!(scopes.contains(&"repository:strata/app:pull".to_string()), "{scopes:?}");
    assert_eq!(skopeo_digest(&other, None), digest);
    // Without a token the registry refuses, with its own challenge.
    use std::io::{Read as _, Write as _};
    let mut c = std::net::TcpStream::connect(&reg.addr).expect("connect");
    write!(c, "GET /v2/strata/app/manifests/1 HTTP/1.0\r\nHost: {}\r\n\r\n", reg.addr).expect("request");
    let mut text = String::new();
    c.read_to_string(&mut text).expect("response");
    assert!(text.starts_with("HTTP/1.0 401") && text.contains("Bearer realm="), "{text}");
}

/// Push over TLS: refused without the CA, naming the host; accepted with `--cert-dir`; a closed
/// port is named.
#[test]
fn push_over_tls_with_cert_dir() {
    if !privileged("push_over_tls_with_cert_dir") {
        return;
    }
    let reg = Registry::start(RegistryOpts { tls: true, ..Default::default() });
    let root = Root::new();
    let digest = committed_image(&root);
    let dest = format!("{}/tls/app:1", reg.addr);
    let err = fails(&root, &[], &["push", "committed", &dest]);
    assert!(err.contains(&format!("{}: TLS:", reg.addr)) && err.contains("UnknownIssuer"), "{err}");
    let dir = reg.certs_d().join(&reg.addr);
    let d = ok(&root, &[], &["push", "committed", &dest, "--cert-dir", dir.to_str().expect("utf8")]);
    assert_eq!(d, digest);
    assert_eq!(skopeo_digest(&dest, None), digest);
    let closed =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    let err = fails(&root, &[], &["push", "committed", &format!("{closed}/x:1")]);
    assert!(err.contains(&format!("{closed}: cannot connect: connection refused")), "{err}");
}

/// 429 (Retry-After honoured) and 5xx on a push's HEAD, upload start, blob PUT and manifest
/// PUT are retried: the push completes with the right digest; an endless 503 gives up saying so.
#[test]
fn push_retries_transient_failures_boundedly() {
    if !privileged("push_retries_transient_failures_boundedly") {
        return;
    }
    use common::registry::FaultProxy;
    let reg = Registry::start(RegistryOpts::default());
    let root = Root::new();
    let digest = committed_image(&root);
    let faults = vec![
        ("HEAD", "/blobs/", 429, Some(1)),
        ("POST", "/blobs/uploads/", 503, None),
        ("PUT", "digest=", 500, None),
        ("PUT", "/manifests/", 502, None),
    ];
    let proxy = FaultProxy::start(&reg.addr, faults);
    let t = Instant::now();
    let dest = format!("{}/retry/app:1", proxy.addr);
    assert_eq!(ok(&root, &[], &["push", "committed", &dest]), digest);
    assert!(t.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was not waited for");
    assert_eq!(skopeo_digest(&format!("{}/retry/app:1", reg.addr), None), digest);
    let seen = proxy.seen.lock().expect("seen").clone();
    // Three blobs, each fault retried once.
    let count = |m: &str, p: &str| seen.iter().filter(|s| s.starts_with(m) && s.contains(p)).count();
    assert_eq!(count("HEAD ", "/blobs/"), 4, "{seen:?}");
    assert_eq!(count("POST ", "/blobs/uploads/"), 4, "{seen:?}");
    assert_eq!(count("PUT ", "digest="), 4, "{seen:?}");
    assert_eq!(count("PUT ", "/manifests/"), 2, "{seen:?}");
    drop(proxy);

    let proxy = FaultProxy::start(&reg.addr, vec![("POST", "/blobs/uploads/", 503, None); 10]);
    let err = fails(&root, &[], &["push", "committed", &format!("{}/retry/other:1", proxy.addr)]);
    assert!(err.contains(&format!("{}: HTTP 503 after 4 tries", proxy.addr)), "{err}");
    let posts = proxy.seen.lock().expect("seen").iter().filter(|s| s.starts_with("POST")).count();
    assert_eq!(posts, 4, "retries are bounded");
}

/// Blobs over --chunk-size go up in PATCH chunks: a chunk answered 500 is sent again alone, a
/// chunk cut half way (the registry saw part of it) is resumed, and the image arrives whole.
#[test]
fn push_in_chunks_retries_and_resumes_one_chunk() {
    if !privileged("push_in_chunks_retries_and_resumes_one_chunk") {
        return;
    }
    use common::registry::FaultProxy;
    let reg = Registry::start(RegistryOpts::default());
    let root = Root::new();
    let digest = committed_image(&root);
    let chunk: u64 = 256 << 10;
    let m: serde_json::Value =
        serde_json::from_str(&root.ok(&["image", "inspect", "committed"])).expect("json");
    let mut sizes: Vec<u64> = m["manifest"]["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["size"].as_u64().expect("size"))
        .collect();
    sizes.push(m["manifest"]["config"]["size"].as_u64().expect("config size"));
    let chunks: u64 = sizes.iter().filter(|s| **s > chunk).map(|s| s.div_ceil(chunk)).sum();
    assert!(chunks >= 3, "the busybox layer spans several chunks: {sizes:?}");

    let faults = vec![("PATCH", "/blobs/uploads/", 500, None), ("PATCH", "/blobs/uploads/", 0, None)];
    let proxy = FaultProxy::start(&reg.addr, faults);
    let dest = format!("{}/chunked/app:1", proxy.addr);
    let out = strata(&root, &[], &["push", "committed", &dest, "--chunk-size", &chunk.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest);
    let seen = proxy.seen.lock().expect("seen").clone();
    let patches = seen.iter().filter(|s| s.starts_with("PATCH ")).count() as u64;
    // Every chunk once, the two faulted ones again; a resume re-sends at most the cut chunk.
    assert!(
        patches >= chunks + 2 && patches <= chunks + 3,
        "{patches} PATCHes for {chunks} chunks: {seen:?}"
    );
    let monolithic = seen.iter().filter(|s| s.starts_with("PUT ") && s.contains("digest=")).count();
    assert_eq!(monolithic, sizes.len(), "one closing PUT per blob: {seen:?}");
    drop(proxy);
    assert_eq!(skopeo_digest(&format!("{}/chunked/app:1", reg.addr), None), digest);
    let fresh = Root::new();
    assert_eq!(ok(&fresh, &[], &["pull", &format!("{}/chunked/app:1", reg.addr)]), digest);
    let err = fails(&root, &[], &["push", "committed", &dest, "--chunk-size", "0"]);
    assert!(err.contains("--chunk-size must be at least 1 byte"), "{err}");
}
