//! Bad input through the strata binary: each case fails with a message that names the thing and
//! the reason (never raw input bytes), and writes nothing: no state root, no image row, no DEST,
//! no temp file. And a killed export's temp files are removed by the next export to that place.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::*;
use strata::tree::Tree;

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
fn not_root_is_told_that_root_is_needed() {
    if !privileged("not_root_is_told_that_root_is_needed") {
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
        let err = fails_with(&as_nobody(args), 1, "as nobody");
        assert!(err.contains("strata must run as root (this is uid 65534)"), "{err}");
        assert!(err.contains("rootless mode is not supported yet"), "{err}");
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
    let ls = root.ok(&["image", "ls"]);
    assert!(ls.contains("localhost:5000/team/app:v1.0"), "{ls}");

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
