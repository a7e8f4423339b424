//! Bad input through the strata binary: each case fails with a message that names the thing and
//! the reason (never raw input bytes), and writes nothing: no state root, no image row, no DEST,
//! no temp file. And a killed export's temp files are removed by the next export to that place.

use crate::common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use strata_test_support::tree::Tree;

/// Run strata with state root `root`.
fn strata(root: &Path, args: &[&str]) -> Output {
    Command::new(STRATA).arg("--root").arg(root).args(args).output().expect("run strata")
}

/// Require failure with exit status `code`; returns stderr, checked to be printable UTF-8 with no
/// control character but the final newline, and one line.
fn fails_with(out: &Output, code: i32, what: &str) -> String {
    let err = String::from_utf8(out.stderr.clone())
        .unwrap_or_else(|_| panic!("{what}: stderr is not UTF-8: {:?}", out.stderr));
    assert_eq!(out.status.code(), Some(code), "{what}: status {}; stderr: {err}", out.status);
    let body = err.strip_suffix('\n').unwrap_or(&err);
    assert!(!body.chars().any(|c| c.is_control()), "{what}: control characters in stderr: {err:?}");
    assert!(body.starts_with("strata: error: "), "{what}: {err}");
    body.to_string()
}

fn tree(p: &Path) -> Tree {
    Tree::capture(p).expect("capture tree")
}

/// Names in `dir` that look like temp files (`.NAME.tmp-...`).
fn temp_files(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else { return vec![] };
    let mut v: Vec<String> = rd
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    v.sort();
    v
}

/// A state root that holds images `busybox` (from the fixtures) and `other` (busybox and one
/// more layer).
fn store_with_images() -> Root {
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display())]);
    root.ok(&["container", "create", "busybox", "base"]);
    root.ok(&["container", "commit", "base", "other"]);
    root
}

/// A ustar header block for `name` with raw `size` field bytes, checksummed.
fn raw_header(name: &[u8], size_field: &[u8; 12]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(size_field);
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

#[test]
fn import_of_what_is_not_an_image_says_what_it_is() {
    if !privileged("import_of_what_is_not_an_image_says_what_it_is") {
        return;
    }
    let fx = fixtures();
    let t = Root::new();
    let d = t.path();
    let state = d.join("state");
    // A gzip-compressed oci-archive, a zstd one, random bytes (with escapes), an empty file, a
    // plain tar of something else, a JSON file, a directory that is not a layout.
    let mut oci_tar = tar::Builder::new(Vec::new());
    for (name, data) in [("oci-layout", &br#"{"imageLayoutVersion":"1.0.0"}"#[..]), ("index.json", b"{}")] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        oci_tar.append_data(&mut h, name, data).expect("tar");
    }
    let oci_tar = oci_tar.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&oci_tar).expect("gzip");
    fs::write(d.join("img.tar.gz"), gz.finish().expect("gzip")).expect("write");
    fs::write(d.join("img.tar.zst"), zstd::encode_all(&oci_tar[..], 1).expect("zstd")).expect("write");
    let mut noise = Vec::new();
    let mut x: u32 = 12345;
    for i in 0..8192 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        noise.push(if i % 97 == 0 { 0x1b } else { (x >> 16) as u8 });
    }
    fs::write(d.join("noise.bin"), &noise).expect("write");
    fs::write(d.join("empty"), b"").expect("write");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "etc/hello", &b"hello"[..]).expect("tar");
    fs::write(d.join("plain.tar"), b.into_inner().expect("tar")).expect("write");
    fs::copy(fx.join("oci/index.json"), d.join("index.json")).expect("copy");
    fs::create_dir(d.join("notalayout")).expect("mkdir");
    fs::write(d.join("notalayout/README"), b"hi").expect("write");

    let expected = "expected an OCI image layout directory, an oci-archive tar or a docker-archive tar";
    for (file, what) in [
        ("img.tar.gz", "gzip-compressed data"),
        ("img.tar.zst", "zstd-compressed data"),
        ("noise.bin", "not a tar archive (8192 bytes of other data)"),
        ("empty", "an empty file"),
        ("plain.tar", "a tar archive without oci-layout, index.json or manifest.json"),
        ("index.json", "a JSON file"),
        ("notalayout", "a directory without oci-layout, index.json or manifest.json"),
    ] {
        let p = d.join(file);
        let err = fails_with(&strata(&state, &["image", "import", p.to_str().expect("utf8")]), 1, file);
        assert!(err.contains(&format!("{}: {what}; {expected}", p.display())), "{file}: {err}");
        if file.contains(".tar.") {
            assert!(err.ends_with("(decompress it first)"), "{err}");
        }
        assert!(!state.exists(), "{file}: the state root was created");
    }
}

#[test]
fn names_from_inside_archives_are_escaped() {
    if !privileged("names_from_inside_archives_are_escaped") {
        return;
    }
    let t = Root::new();
    let d = t.path();
    let state = d.join("state");
    // A tar whose second header carries terminal escapes and bytes that are not UTF-8: the tar
    // parser's message quotes them.
    let mut data = raw_header(b"ok", b"00000000000\0").to_vec();
    data.extend_from_slice(&raw_header(b"\x1b]0;pwned\x07\x1b[2J\xff\xfe", b"\x1b[31m\xff\xfe\x9b1m\0\0"));
    data.extend_from_slice(&[0u8; 1024]);
    fs::write(d.join("evil.tar"), &data).expect("write");
    let err = fails_with(
        &strata(&state, &["image", "import", d.join("evil.tar").to_str().expect("utf8")]),
        1,
        "evil",
    );
    assert!(err.contains("evil.tar: not a readable archive"), "{err}");

    // A docker-archive whose manifest.json names its config and tags with escapes.
    let manifest = serde_json::json!([{ "Config": "\u{1b}[2Jcfg.json", "RepoTags": ["x\u{1b}[31m:latest"], "Layers": [] }]);
    let mut b = tar::Builder::new(Vec::new());
    let m = serde_json::to_vec(&manifest).expect("json");
    let mut h = tar::Header::new_ustar();
    h.set_size(m.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "manifest.json", &m[..]).expect("tar");
    fs::write(d.join("docker.tar"), b.into_inner().expect("tar")).expect("write");
    let p = d.join("docker.tar");
    let err = fails_with(&strata(&state, &["image", "import", p.to_str().expect("utf8")]), 1, "docker");
    assert!(err.contains("missing file \\u{1b}[2Jcfg.json"), "{err}");
    let err =
        fails_with(&strata(&state, &["image", "import", &format!("{}:nope", p.display())]), 1, "docker tag");
    assert!(err.contains("no image tagged \"nope\"; available: x\\u{1b}[31m:latest"), "{err}");
    assert!(!state.exists());
}

#[test]
fn not_root_without_a_runtime_dir_is_told_what_to_set() {
    if !privileged("not_root_without_a_runtime_dir_is_told_what_to_set") {
        return;
    }
    let t = Root::new();
    // A copy of the binary that user nobody can execute, wherever the build tree is.
    let bin = t.path().join("strata");
    fs::copy(STRATA, &bin).expect("copy binary");
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let state = t.path().join("state");
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .env_remove("XDG_RUNTIME_DIR")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(args)
            .output()
            .expect("run setpriv")
    };
    let st = state.to_str().expect("utf8");
    for args in
        [&["--root", st, "image", "ls"][..], &["--root", st, "image", "import", "/nonexistent"], &["gc"]]
    {
        // Rootless mode needs a runtime directory of the user's own (docs/rootless.md).
        let err = fails_with(&as_nobody(args), 1, "as nobody");
        assert!(err.contains("entering rootless mode's user namespace: XDG_RUNTIME_DIR is not set"), "{err}");
        assert!(err.contains("export XDG_RUNTIME_DIR="), "{err}");
    }
    assert!(!state.exists());
    // --help and --version need no root.
    for args in [&["--version"][..], &["--help"], &["image", "export", "--help"]] {
        let out = as_nobody(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn a_state_root_that_is_a_file_is_named() {
    if !privileged("a_state_root_that_is_a_file_is_named") {
        return;
    }
    let t = Root::new();
    let file = t.path().join("file");
    fs::write(&file, b"precious").expect("write");
    let err = fails_with(&strata(&file, &["image", "ls"]), 1, "file root");
    assert!(
        err.ends_with(&format!("state root {} is not a directory (it is a regular file)", file.display())),
        "{err}"
    );
    let under = file.join("sub/root");
    let err = fails_with(&strata(&under, &["image", "ls"]), 1, "under a file");
    assert!(
        err.ends_with(&format!(
            "state root {} is not a directory ({} is a regular file)",
            under.display(),
            file.display()
        )),
        "{err}"
    );
    assert_eq!(fs::read(&file).expect("read"), b"precious");
    // Missing parents are created, as before.
    let deep = t.path().join("a/b/c");
    let out = strata(&deep, &["image", "ls"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(deep.join("strata.db").is_file());
}

#[test]
fn export_refuses_to_replace_without_force() {
    if !privileged("export_refuses_to_replace_without_force") {
        return;
    }
    let root = store_with_images();
    let out = root.path().join("out");
    fs::create_dir(&out).expect("mkdir");
    for format in ["oci-archive", "docker-archive"] {
        let dest = out.join(format!("{format}.tar"));
        let d = dest.to_str().expect("utf8");
        fs::write(&dest, b"precious").expect("write");
        let err = fails_with(&root.cmd(&["image", "export", "busybox", d, "--format", format]), 1, format);
        assert!(err.ends_with(&format!("{d}: already exists; use --force to replace it")), "{err}");
        assert_eq!(fs::read(&dest).expect("read"), b"precious", "{format}: DEST changed");
        assert_eq!(temp_files(&out), Vec::<String>::new());
        root.ok(&["image", "export", "busybox", d, "--format", format, "--force"]);
        let transport = format!("{format}:{d}");
        let o = Command::new("skopeo").args(["inspect", "--raw", &transport]).output().expect("skopeo");
        assert!(o.status.success(), "skopeo {transport}: {}", String::from_utf8_lossy(&o.stderr));
        // A directory at DEST is refused, --force or not.
        let dir = out.join(format!("{format}.dir"));
        fs::create_dir(&dir).expect("mkdir");
        let dd = dir.to_str().expect("utf8");
        let err = fails_with(
            &root.cmd(&["image", "export", "busybox", dd, "--format", format, "--force"]),
            1,
            "dir",
        );
        assert!(err.ends_with(&format!("{dd}: is a directory")), "{err}");
    }
    assert_eq!(temp_files(&out), Vec::<String>::new());

    // An OCI layout takes new tags; a tag naming another manifest is replaced only with --force.
    let layout = out.join("layout");
    let l = layout.to_str().expect("utf8");
    root.ok(&["image", "export", "busybox", &format!("{l}:v1")]);
    root.ok(&["image", "export", "busybox", &format!("{l}:v1")]);
    let before = tree(&layout);
    let index_before = fs::read(layout.join("index.json")).expect("index");
    let err = fails_with(&root.cmd(&["image", "export", "other", &format!("{l}:v1")]), 1, "tag");
    assert!(err.contains(&format!("{l}: already holds tag \"v1\" for manifest sha256:")), "{err}");
    assert!(err.ends_with("use --force to replace it"), "{err}");
    assert_eq!(tree(&layout), before, "a refused export changed the layout");
    assert_eq!(fs::read(layout.join("index.json")).expect("index"), index_before);
    root.ok(&["image", "export", "other", &format!("{l}:v2")]);
    root.ok(&["image", "export", "other", &format!("{l}:v1"), "--force"]);
    let m = manifest_of(&layout, "v1");
    assert_eq!(m, manifest_of(&layout, "v2"));
    let index = json(&layout.join("index.json"));
    assert_eq!(index["manifests"].as_array().expect("manifests").len(), 2, "{index}");

    // A directory that is neither empty nor a layout is refused, --force or not; a file too.
    let other = out.join("other");
    fs::create_dir(&other).expect("mkdir");
    fs::write(other.join("notes.txt"), b"mine").expect("write");
    let before = tree(&other);
    let o = other.to_str().expect("utf8");
    let err = fails_with(&root.cmd(&["image", "export", "busybox", o, "--force"]), 1, "non-layout dir");
    assert!(
        err.contains(&format!("{o}: a directory that is neither empty nor an OCI image layout")),
        "{err}"
    );
    assert_eq!(tree(&other), before);
    let file = out.join("oci-archive.tar");
    let f = file.to_str().expect("utf8");
    let err = fails_with(&root.cmd(&["image", "export", "busybox", f]), 1, "file as layout");
    assert!(err.contains(&format!("{f}: exists and is not a directory")), "{err}");
    // An empty directory becomes a layout.
    let empty = out.join("empty");
    fs::create_dir(&empty).expect("mkdir");
    root.ok(&["image", "export", "busybox", &format!("{}:e", empty.display())]);
    assert!(empty.join("oci-layout").is_file());
}

#[test]
fn export_to_a_missing_directory_or_a_symlink() {
    if !privileged("export_to_a_missing_directory_or_a_symlink") {
        return;
    }
    let root = store_with_images();
    let out = root.path().join("out");
    fs::create_dir(&out).expect("mkdir");
    let missing = out.join("no/such");
    for format in ["oci", "oci-archive", "docker-archive"] {
        let dest = missing.join("dest");
        let d = dest.to_str().expect("utf8");
        let err = fails_with(&root.cmd(&["image", "export", "busybox", d, "--format", format]), 1, format);
        assert!(err.ends_with(&format!("{}: no such directory", missing.display())), "{format}: {err}");
        assert!(!err.contains(".tmp-"), "{err}");
    }
    assert!(!out.join("no").exists());

    // A symlink at DEST is not followed, whatever it points to, --force or not.
    let target_file = out.join("target.tar");
    fs::write(&target_file, b"precious").expect("write");
    let target_dir = out.join("target-dir");
    fs::create_dir(&target_dir).expect("mkdir");
    std::os::unix::fs::symlink(&target_file, out.join("link.tar")).expect("symlink");
    std::os::unix::fs::symlink(&target_dir, out.join("link-dir")).expect("symlink");
    let link = out.join("link.tar");
    let l = link.to_str().expect("utf8");
    for format in ["oci-archive", "docker-archive"] {
        let err = fails_with(
            &root.cmd(&["image", "export", "busybox", l, "--format", format, "--force"]),
            1,
            format,
        );
        assert!(
            err.ends_with(&format!("{l}: is a symbolic link; not following it (give the path it points to)")),
            "{err}"
        );
    }
    let ld = out.join("link-dir");
    let err =
        fails_with(&root.cmd(&["image", "export", "busybox", &format!("{}:t", ld.display())]), 1, "oci");
    assert!(err.contains(&format!("{}: is a symbolic link", ld.display())), "{err}");
    assert_eq!(fs::read(&target_file).expect("read"), b"precious");
    assert_eq!(fs::read_dir(&target_dir).expect("read_dir").count(), 0);
    assert!(fs::symlink_metadata(&link).expect("link").file_type().is_symlink());
    assert_eq!(temp_files(&out), Vec::<String>::new());
}

#[test]
fn platform_that_a_single_manifest_image_does_not_match() {
    if !privileged("platform_that_a_single_manifest_image_does_not_match") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let state = root.path().join("state");
    let busybox = format!("{}:busybox", fx.join("oci").display());
    let docker = fx.join("multi.docker.tar");
    for src in [busybox.as_str(), docker.to_str().expect("utf8")] {
        let out = strata(&state, &["image", "import", src, "--name", "x", "--platform", "linux/s390x"]);
        let err = fails_with(&out, 1, src);
        assert!(err.contains("no manifest for platform linux/s390x; available: linux/amd64"), "{err}");
        let out = strata(&state, &["image", "import", src, "--name", "x", "--platform", "linux/amd64/v9"]);
        let err = fails_with(&out, 1, src);
        assert!(err.contains("no manifest for platform linux/amd64/v9; available: linux/amd64"), "{err}");
    }
    assert!(!state.exists(), "a refused import created the state root");
    // The platform it states is accepted, and no --platform takes it whatever it is.
    let out = strata(&state, &["image", "import", &busybox, "--platform", "linux/amd64"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn image_names_follow_the_reference_grammar() {
    if !privileged("image_names_follow_the_reference_grammar") {
        return;
    }
    let fx = fixtures();
    let root = store_with_images();
    let src = format!("{}:busybox", fx.join("oci").display());
    let long = "a".repeat(10 * 1024);
    // A container with a change to commit.
    root.ok(&["container", "create", "busybox", "c1"]);
    let at = root.ok(&["container", "mount", "c1"]);
    fs::write(Path::new(at.trim()).join("new-file"), b"x").expect("write in container");
    root.ok(&["container", "umount", "c1"]);
    let before = tree(root.path());
    for (name, reason) in [
        ("", "image name is empty"),
        ("Busybox", "image name \"Busybox\": repository name must be lowercase"),
        ("a\nb", "image name \"a\\nb\": character '\\n' is not allowed in a repository name"),
        ("x\u{1b}[31m", "image name \"x\\u{1b}[31m\": character '\\u{1b}' is not allowed"),
        (
            "../../x",
            "image name \"../../x\": path component \"..\" must start and end with a letter or digit",
        ),
        ("-x", "image name \"-x\": path component \"-x\" must start and end with a letter or digit"),
        ("x:-tag", "tag \"-tag\" must be 1-128 characters"),
        (long.as_str(), "10240 characters, longer than the 255 allowed before the tag"),
    ] {
        let err = fails_with(&root.cmd(&["image", "import", &src, &format!("--name={name}")]), 1, name);
        assert!(err.contains(reason), "{name:?}: {err}");
        assert!(err.len() < 400, "{err}");
        // Commit checks NEW_IMAGE before it writes a layer.
        let err = fails_with(&root.cmd(&["container", "commit", "c1", "--", name]), 1, name);
        assert!(err.starts_with("strata: error: committing container c1 as "), "{err}");
        assert!(err.contains(reason), "{name:?}: {err}");
    }
    assert_eq!(tree(root.path()), before, "refused names changed the state root");
    root.ok(&["container", "commit", "c1", "localhost:5000/team/app:v1.0"]);
    let ls = root.ok(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(ls.lines().any(|l| l == "localhost:5000/team/app:v1.0"), "{ls}");

    // A name taken from the source's tag is checked too; --name overrides it.
    let layout = root.path().join("layout");
    copy_layout(&fx.join("oci"), &layout);
    let m = manifest_of(&layout, "busybox");
    set_tag(&layout, "Upper", &serde_json::to_vec(&m).expect("json"));
    let l = format!("{}:Upper", layout.display());
    let err = fails_with(&root.cmd(&["image", "import", &l]), 1, "tag name");
    assert!(err.ends_with("image name \"Upper\": repository name must be lowercase (the name comes from the source's tag; give --name)"), "{err}");
    root.ok(&["image", "import", &l, "--name", "upper"]);
}

#[test]
fn run_of_a_missing_command_exits_127() {
    if !privileged("run_of_a_missing_command_exits_127") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display())]);
    for (cmd, code, msg) in [
        ("nope", 127, "executable file not found in $PATH: nope"),
        ("/no/such", 127, "executable file not found: /no/such"),
        (
            "/etc/passwd",
            126,
            "permission denied: cannot execute /etc/passwd: no execute permission (mode 0644)",
        ),
        ("/bin", 126, "permission denied: cannot execute /bin: a directory"),
    ] {
        let out = root.cmd(&["run", "busybox", "--rm", "--name", "badinput-r", "--", cmd]);
        let err = fails_with(&out, code, cmd);
        assert_eq!(err, format!("strata: error: container badinput-r: {msg}"), "{cmd}");
        assert!(!root.path().join("containers/badinput-r").exists(), "--rm left the container");
    }
    // A command that runs and fails keeps its own status.
    let out = root.cmd(&["run", "busybox", "--rm", "--", "sh", "-c", "exit 1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    // When only runc can tell (a relative $PATH entry), its log says so: 127 still.
    root.ok(&["container", "create", "busybox", "base"]);
    root.ok(&["container", "commit", "base", "relpath", "-c", "ENV PATH=bin:/bin"]);
    let out = root.cmd(&["run", "relpath", "--name", "badinput-r2", "--", "nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{err}");
    assert!(
        err.ends_with("strata: error: container badinput-r2: executable file not found in $PATH: nope\n"),
        "{err}"
    );
}

/// Spawn `strata image export` and SIGKILL it as soon as a temp file of it shows up in `dir`;
/// returns whether it was killed mid-export (false: it finished first).
fn kill_export_mid_write(root: &Root, args: &[&str], dir: &Path) -> bool {
    // Only the big blob's temp gets past 1 MB: killed then, the export is inside that write.
    let big = |n: &String| fs::metadata(dir.join(n)).is_ok_and(|m| m.len() > 1 << 20);
    let mut child = Command::new(STRATA)
        .arg("--root")
        .arg(root.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn export");
    let mine = format!(".tmp-{}", child.id());
    let mine =
        |n: &String| n.rsplit_once(&mine).is_some_and(|(_, rest)| rest.is_empty() || rest.starts_with('-'));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if temp_files(dir).iter().any(|n| mine(n) && big(n)) {
            child.kill().expect("kill -9");
            child.wait().expect("wait");
            return true;
        }
        if child.try_wait().expect("try_wait").is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Two exported layouts hold the same entries, and the same bytes in each file.
fn assert_same_layout(a: &Path, b: &Path) {
    let (ta, tb) = (tree(a), tree(b));
    assert_eq!(ta.entries.keys().collect::<Vec<_>>(), tb.entries.keys().collect::<Vec<_>>());
    for (p, e) in &ta.entries {
        if e.kind == strata_test_support::tree::Kind::File {
            assert!(
                fs::read(a.join(p)).expect("read") == fs::read(b.join(p)).expect("read"),
                "{}",
                p.display()
            );
        }
    }
}

#[test]
fn a_killed_exports_temp_files_are_removed_by_the_next_export() {
    if !privileged("a_killed_exports_temp_files_are_removed_by_the_next_export") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display())]);
    // A large-ish image (32 MB uncompressed layer) so that an export takes a while.
    root.ok(&["container", "create", "busybox", "c"]);
    let at = root.ok(&["container", "mount", "c"]);
    let mut data = vec![0u8; 32 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    fs::write(Path::new(at.trim()).join("big"), &data).expect("write big");
    root.ok(&["container", "umount", "c"]);
    root.ok(&["container", "commit", "c", "big", "--compression", "none"]);
    let out = root.path().join("out");
    let clean = root.path().join("clean");
    fs::create_dir(&out).expect("mkdir");
    fs::create_dir(&clean).expect("mkdir");

    // oci-archive: a real kill -9 mid-write, plus a planted temp of a dead export, one of a
    // live export (locked by this process), and look-alikes that are not strata's.
    let dest = out.join("big.tar");
    let d = dest.to_str().expect("utf8");
    let killed = (0..5).any(|_| {
        let _ = fs::remove_file(&dest);
        kill_export_mid_write(&root, &["image", "export", "big", d, "--format", "oci-archive"], &out)
    });
    assert!(killed, "no export was caught mid-write");
    assert!(!dest.exists(), "a killed export left DEST");
    let debris = temp_files(&out);
    assert_eq!(debris.len(), 1, "{debris:?}");
    fs::write(out.join(".big.tar.tmp-4194999-0"), b"half an archive").expect("plant");
    let live = fs::File::create(out.join(".big.tar.tmp-1-0")).expect("plant");
    rustix::fs::flock(&live, rustix::fs::FlockOperation::LockExclusive).expect("lock");
    // The lock decides, not the PID: pid 1 is alive, but nothing holds this one's lock.
    fs::write(out.join(".big.tar.tmp-1-1"), b"unlocked").expect("plant");
    let keep = [".big.tar.tmp-x", ".other.tar.tmp-4194999-0"];
    for k in keep {
        fs::write(out.join(k), b"not strata's debris").expect("plant");
    }
    root.ok(&["image", "export", "big", d, "--format", "oci-archive"]);
    let mut want: Vec<String> =
        keep.iter().map(|s| s.to_string()).chain([".big.tar.tmp-1-0".into()]).collect();
    want.sort();
    assert_eq!(temp_files(&out), want, "only the dead exports' temp files go");
    root.ok(&[
        "image",
        "export",
        "big",
        clean.join("big.tar").to_str().expect("utf8"),
        "--format",
        "oci-archive",
    ]);
    assert!(
        fs::read(&dest).expect("read") == fs::read(clean.join("big.tar")).expect("read"),
        "not a clean export"
    );
    let o = Command::new("skopeo").args(["inspect", &format!("oci-archive:{d}")]).output().expect("skopeo");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    drop(live);

    // OCI layout: killed while copying the big blob; the next export into it cleans up.
    let layout = out.join("layout");
    let l = format!("{}:big", layout.display());
    let blobs = layout.join("blobs/sha256");
    let killed = (0..5).any(|_| {
        let _ = fs::remove_dir_all(&layout);
        kill_export_mid_write(&root, &["image", "export", "big", &l], &blobs)
    });
    assert!(killed, "no layout export was caught mid-copy");
    assert_eq!(temp_files(&blobs).len(), 1, "{:?}", temp_files(&blobs));
    fs::write(layout.join(".index.json.tmp-4194999-3"), b"{").expect("plant");
    root.ok(&["image", "export", "big", &l]);
    assert_eq!(temp_files(&blobs), Vec::<String>::new());
    assert_eq!(temp_files(&layout), Vec::<String>::new());
    let clean_layout = clean.join("layout");
    root.ok(&["image", "export", "big", &format!("{}:big", clean_layout.display())]);
    assert_same_layout(&layout, &clean_layout);
    let (_keep, rootfs) = umoci_unpack(&layout, "big");
    assert!(fs::read(rootfs.join("big")).expect("big") == data, "umoci unpacks other content");
}
