//! Paths an attacker can plant: mount targets reached through symlinks, inside the state root or
//! inside another container.

use crate::common;

use std::fs;
use std::process::Command;

use common::*;

/// `container mount NAME TARGET` refuses a TARGET reached through a symlink (it would redirect the
/// mount, over /etc say), inside the state root, or inside another container's mounted rootfs; a
/// plain new directory works.
#[test]
fn mount_targets_are_checked() {
    if !privileged("mount_targets_are_checked") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display())]);
    root.ok(&["container", "create", "busybox", "a"]);
    root.ok(&["container", "create", "busybox", "b"]);
    let outside = Root::new();
    let decoy = outside.path().join("decoy");
    fs::create_dir(&decoy).expect("mkdir");
    fs::write(decoy.join("keep"), b"x").expect("write");
    std::os::unix::fs::symlink(&decoy, outside.path().join("link")).expect("symlink");
    let via_link = outside.path().join("link");
    let err = root.fails(&["container", "mount", "a", via_link.to_str().expect("utf8")]);
    assert!(err.contains("is reached through a symlink"), "{err}");
    let below_link = via_link.join("sub");
    let err = root.fails(&["container", "mount", "a", below_link.to_str().expect("utf8")]);
    assert!(err.contains("is reached through a symlink"), "{err}");
    assert!(mounts_under(outside.path()).is_empty() && !decoy.join("sub").exists());

    let inside = root.path().join("layers/x");
    let err = root.fails(&["container", "mount", "a", inside.to_str().expect("utf8")]);
    assert!(err.contains("is inside the state root"), "{err}");
    assert!(!inside.exists());

    let b_at = outside.path().join("b");
    root.ok(&["container", "mount", "b", b_at.to_str().expect("utf8")]);
    let in_b = b_at.join("mnt");
    let err = root.fails(&["container", "mount", "a", in_b.to_str().expect("utf8")]);
    assert!(err.contains("is inside container \"b\""), "{err}");

    let fine = outside.path().join("new/a");
    let at = root.ok(&["container", "mount", "a", fine.to_str().expect("utf8")]);
    assert_eq!(at.trim(), fine.to_str().expect("utf8"));
    assert!(fine.join("bin/busybox").is_file());
    root.ok(&["container", "umount", "a"]);
    root.ok(&["container", "umount", "b"]);
    assert_eq!(fs::read(decoy.join("keep")).expect("decoy intact"), b"x");
}

/// A state root owned by another user, writable by others, given as a symlink, or with a planted
/// link or foreign directory inside, is refused before anything in it is touched.
#[test]
fn untrusted_state_roots_are_refused() {
    if !privileged("untrusted_state_roots_are_refused") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let base = Root::new();
    let strata = |root: &std::path::Path| {
        Command::new(STRATA).arg("--root").arg(root).args(["image", "ls"]).output().expect("run strata")
    };
    let fails = |root: &std::path::Path, want: &str| {
        let out = strata(root);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success() && err.contains(want), "{}: {err}", root.display());
    };
    // Owned by nobody.
    let foreign = base.path().join("foreign");
    fs::create_dir(&foreign).expect("mkdir");
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("chown");
    fails(&foreign, "is owned by uid 65534, not by uid 0");
    assert_eq!(fs::read_dir(&foreign).expect("ls").count(), 0, "nothing created in a refused root");
    // World-writable.
    let open = base.path().join("open");
    fs::create_dir(&open).expect("mkdir");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
    fails(&open, "is writable by group or others (mode 777)");
    // A symlink to a good root.
    let good = base.path().join("good");
    assert!(strata(&good).status.success());
    let link = base.path().join("link");
    std::os::unix::fs::symlink(&good, &link).expect("symlink");
    fails(&link, "is a symbolic link");
    // A planted link inside: containers/ -> a decoy.
    let decoy = base.path().join("decoy");
    fs::create_dir(&decoy).expect("mkdir");
    fs::write(decoy.join("passwd"), b"keep").expect("write");
    fs::rename(good.join("containers"), base.path().join("old-containers")).expect("move");
    std::os::unix::fs::symlink(&decoy, good.join("containers")).expect("plant");
    fails(&good, "containers is not a directory (planted?)");
    let out = Command::new(STRATA)
        .arg("--root")
        .arg(&good)
        .args(["container", "create", "x", "passwd"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert_eq!(fs::read(decoy.join("passwd")).expect("decoy"), b"keep");
    // A directory inside owned by another user.
    fs::remove_file(good.join("containers")).expect("rm link");
    fs::rename(base.path().join("old-containers"), good.join("containers")).expect("restore");
    std::os::unix::fs::chown(good.join("locks"), Some(65534), None).expect("chown");
    fails(&good, "locks is owned by uid 65534");
    std::os::unix::fs::chown(good.join("locks"), Some(0), None).expect("chown back");
    assert!(strata(&good).status.success());
}

/// Run strata, failing the test instead of hanging if it does not finish in 30 s.
fn bounded(root: &Root, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(STRATA)
        .arg("--root")
        .arg(root.path())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn strata");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("strata {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// A FIFO planted as a layer blob or as index.json fails the import at once (it used to hang,
/// holding the layer lock); a layout whose blobs/ is a symlink, or a docker-archive directory
/// whose config sits under a symlinked subdirectory, is refused rather than read from elsewhere.
#[test]
fn image_sources_never_hang_or_leave_their_directory() {
    if !privileged("image_sources_never_hang_or_leave_their_directory") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let work = Root::new();
    let oci = fx.join("oci");
    let layer = manifest_of(&oci, "busybox")["layers"][0]["digest"].as_str().expect("layer").to_string();
    let mkfifo = |p: &std::path::Path| {
        let _ = fs::remove_file(p);
        rustix::fs::mknodat(rustix::fs::CWD, p, rustix::fs::FileType::Fifo, rustix::fs::Mode::from(0o644), 0)
            .expect("mkfifo");
    };
    // FIFO as the layer blob.
    let l1 = work.path().join("fifo-blob");
    copy_layout(&oci, &l1);
    mkfifo(&blob(&l1, &layer));
    let out = bounded(&root, &["image", "import", &format!("{}:busybox", l1.display())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not a regular file"), "{err}");
    // The layer is not held: a good import of the same layer goes through.
    let out = bounded(&root, &["image", "import", &format!("{}:busybox", oci.display())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // FIFO as index.json.
    let l2 = work.path().join("fifo-index");
    copy_layout(&oci, &l2);
    mkfifo(&l2.join("index.json"));
    let out = bounded(&root, &["image", "import", &format!("{}:busybox", l2.display()), "--name", "x"]);
    assert!(!out.status.success());
    // blobs/ a symlink to a real layout's blobs.
    let l3 = work.path().join("linked-blobs");
    fs::create_dir(&l3).expect("mkdir");
    for f in ["oci-layout", "index.json"] {
        fs::copy(oci.join(f), l3.join(f)).expect("copy");
    }
    std::os::unix::fs::symlink(oci.join("blobs"), l3.join("blobs")).expect("symlink");
    let out = bounded(&root, &["image", "import", &format!("{}:busybox", l3.display()), "--name", "y"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("symbolic link inside the image source"), "{err}");
    // docker-archive directory: Config under a symlinked subdirectory pointing outside.
    let secret_dir = work.path().join("secret");
    fs::create_dir(&secret_dir).expect("mkdir");
    fs::write(
        secret_dir.join("secret.json"),
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    )
    .expect("secret");
    let d = work.path().join("docker-dir");
    fs::create_dir(&d).expect("mkdir");
    std::os::unix::fs::symlink(&secret_dir, d.join("x")).expect("symlink");
    fs::write(d.join("manifest.json"), br#"[{"Config":"x/secret.json","RepoTags":["s:1"],"Layers":[]}]"#)
        .expect("manifest");
    let out = bounded(&root, &["image", "import", d.to_str().expect("utf8"), "--name", "s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("symbolic link inside the image source"), "{err}");
    assert!(!String::from_utf8_lossy(&bounded(&root, &["image", "ls"]).stdout).contains("\ns "));
}

/// Run `strata --root ROOT ARGS` under a shell that waits for a line on stdin before it `exec`s
/// strata, so the PID strata will have is known first: `plant` gets it and plants what the old
/// writer would have opened (`.NAME.tmp-PID`, `.NAME.tmp-PID-N`). Returns strata's output.
fn run_after_planting(
    root: &Root,
    env: &[(&str, &std::path::Path)],
    args: &[&str],
    plant: impl FnOnce(u32),
) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut c = Command::new("sh");
    c.args(["-c", "read _ && exec \"$0\" \"$@\"", STRATA, "--root"]).arg(root.path()).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child =
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn sh");
    plant(child.id());
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("release");
    drop(stdin);
    child.wait_with_output().expect("wait")
}

/// Symlinks to `victim` at every name the old writer would have used for `dest` in process
/// `pid`; returns their names.
fn plant_temp_links(dest: &std::path::Path, pid: u32, victim: &std::path::Path) -> Vec<String> {
    let name = dest.file_name().expect("name").to_str().expect("utf8");
    let mut names = vec![format!(".{name}.tmp-{pid}")];
    names.extend((0..16).map(|n| format!(".{name}.tmp-{pid}-{n}")));
    for n in &names {
        std::os::unix::fs::symlink(victim, dest.with_file_name(n)).expect("plant");
    }
    names
}

/// `container export -o FILE` never follows a symlink planted at FILE or at the temp names next
/// to it: the files they point to keep their content, FILE becomes the tar, and the planted links
/// stay as they were.
#[test]
fn container_export_output_ignores_planted_symlinks() {
    if !privileged("container_export_output_ignores_planted_symlinks") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display())]);
    root.ok(&["container", "create", "busybox", "c"]);
    let (out, outside) = (Root::new(), Root::new());
    let victim = outside.path().join("passwd");
    fs::write(&victim, b"root:x:0:0::/root:/bin/sh\n").expect("write");
    let dest = out.path().join("c.tar");
    std::os::unix::fs::symlink(&victim, &dest).expect("plant");
    let mut planted = vec![];
    let o = run_after_planting(
        &root,
        &[],
        &["container", "export", "c", "-o", dest.to_str().expect("utf8")],
        |pid| planted = plant_temp_links(&dest, pid, &victim),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(&victim).expect("victim"), b"root:x:0:0::/root:/bin/sh\n");
    assert_eq!(fs::read_dir(outside.path()).expect("ls").count(), 1, "nothing new outside");
    let md = fs::symlink_metadata(&dest).expect("dest");
    assert!(md.is_file(), "the link at FILE is replaced by the tar, not followed");
    let listing = Command::new("tar").arg("-tf").arg(&dest).output().expect("tar");
    assert!(String::from_utf8_lossy(&listing.stdout).contains("bin/busybox"), "not the rootfs tar");
    for n in &planted {
        let l = fs::symlink_metadata(out.path().join(n)).expect("planted link");
        assert!(l.file_type().is_symlink(), "{n}");
    }
    assert_eq!(fs::read_dir(out.path()).expect("ls").count(), planted.len() + 1, "no temp file left");
}

/// `logout` (and `login`, through the same writer) never follows a symlink planted at the temp
/// names next to the auth file: the file a link points to keeps its content, the auth file is
/// rewritten in place of the old one (mode 0600), without the entry.
#[test]
fn auth_file_writer_ignores_planted_symlinks() {
    if !privileged("auth_file_writer_ignores_planted_symlinks") {
        return;
    }
    let (root, dir, outside) = (Root::new(), Root::new(), Root::new());
    let victim = outside.path().join("shadow");
    fs::write(&victim, b"secret\n").expect("write");
    let file = dir.path().join("auth.json");
    let text = r#"{"auths":{"reg.example:5000":{"auth":"dTpw"}},"keep":1}"#;
    fs::write(&file, text).expect("write");
    let mut planted = vec![];
    let o = run_after_planting(
        &root,
        &[("REGISTRY_AUTH_FILE", file.as_path())],
        &["logout", "reg.example:5000"],
        |pid| planted = plant_temp_links(&file, pid, &victim),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(&victim).expect("victim"), b"secret\n");
    assert_eq!(fs::read_dir(outside.path()).expect("ls").count(), 1, "nothing new outside");
    let md = fs::symlink_metadata(&file).expect("auth.json");
    assert!(md.is_file());
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777, 0o600);
    let v = json(&file);
    assert_eq!(v["keep"], 1);
    assert!(v["auths"].as_object().expect("auths").is_empty(), "{v}");
    for n in &planted {
        let l = fs::symlink_metadata(dir.path().join(n)).expect("planted link");
        assert!(l.file_type().is_symlink(), "{n}");
    }
    assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), planted.len() + 1, "no temp file left");

    // A symlink planted at the auth file itself is replaced, not written through.
    fs::remove_file(&file).expect("rm");
    let decoy = outside.path().join("decoy.json");
    fs::write(&decoy, text).expect("write");
    std::os::unix::fs::symlink(&decoy, &file).expect("plant");
    let o = run_after_planting(
        &root,
        &[("REGISTRY_AUTH_FILE", file.as_path())],
        &["logout", "reg.example:5000"],
        |_| {},
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read_to_string(&decoy).expect("decoy"), text, "the link's target is untouched");
    assert!(fs::symlink_metadata(&file).expect("auth.json").is_file());
}
