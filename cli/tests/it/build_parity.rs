//! `strata build` against `buildah bud --layers` of the same Containerfile: the final images'
//! trees (umoci unpack of each export) entry by entry, and their configs field by field; then
//! the strata image pushed to the loopback registry, pulled and run by podman.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::registry::{Registry, RegistryOpts};
use common::*;
use serde_json::Value;

const CONTAINERFILE: &str = r#"# syntax is docker's; every instruction the parity covers
ARG BASE=busybox
FROM $BASE AS builder
ARG GREETING=hello
ENV APP=/app
RUN mkdir -p $APP/sub && echo "$GREETING" > $APP/sub/greet && ln $APP/sub/greet $APP/sub/hard \
 && chown -R 33:44 $APP && chmod 0750 $APP/sub && ln -s $APP /abs
RUN mkdir -p /opq/keep && echo keep > /opq/keep/x && echo gone > /etc/gone && mkdir /etc/gone.d

FROM builder AS second
RUN rm /etc/gone && rm -rf /etc/gone.d /bin/ar && rm -rf /opq && mkdir /opq && echo new > /opq/new

FROM $BASE
ARG GREETING
LABEL org.test.one=yes org.test.two="a b"
ENV GREETING=${GREETING:-none} OTHER=$GREETING
COPY --from=builder /app /app
COPY --from=second /opq /opq
COPY --from=builder /abs/sub/greet /via-abs/
COPY --chown=1000:1000 data/ /data/
COPY --chown=1234 one.txt /one.txt
COPY --chmod=0640 xattr.bin links /files/
ADD layer.tar /added/
ADD wh.tar /
RUN echo "$GREETING $OTHER" > /env.txt && rm /bin/vi
USER 1000
WORKDIR /home/u/w
RUN touch made-by-user
USER 0
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGTERM
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /env.txt"]
"#;

/// The build context: plain files, a directory, hardlinks, an xattr, a tar, an ignored file.
fn make_context(ctx: &Path) {
    fs::write(ctx.join("Containerfile"), CONTAINERFILE).unwrap();
    fs::create_dir_all(ctx.join("data/deep")).unwrap();
    fs::write(ctx.join("data/a.txt"), "a\n").unwrap();
    fs::write(ctx.join("data/deep/b.sh"), "#!/bin/sh\necho b\n").unwrap();
    fs::set_permissions(ctx.join("data/deep/b.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(ctx.join("data/ignored.log"), "secret\n").unwrap();
    fs::write(ctx.join("one.txt"), "one\n").unwrap();
    fs::write(ctx.join("xattr.bin"), "with an xattr\n").unwrap();
    rustix::fs::setxattr(
        ctx.join("xattr.bin"),
        "user.strata.test",
        b"value",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("user xattrs on the test's filesystem");
    fs::create_dir(ctx.join("links")).unwrap();
    fs::write(ctx.join("links/first"), "linked\n").unwrap();
    fs::hard_link(ctx.join("links/first"), ctx.join("links/second")).unwrap();
    std::os::unix::fs::symlink("first", ctx.join("links/sym")).unwrap();
    fs::write(ctx.join(".dockerignore"), "**/*.log\nnot-there\n").unwrap();
    let t = tarw::tar([
        tarw::E::dir("t/").mode(0o755).owner(5, 6).mtime(1_600_000_000),
        tarw::E::file("t/in-tar.txt", "from the tar\n").mode(0o600).owner(7, 8).mtime(1_600_000_000),
        tarw::E::symlink("t/link", "in-tar.txt").owner(7, 8).mtime(1_600_000_000),
        // A hardlink entry's own mode and owner go to the inode it shares (buildah).
        tarw::E::hardlink("t/hard", "t/in-tar.txt").mode(0o640).owner(9, 10).mtime(1_600_000_000),
        tarw::E::file("t/.wh.never-there", ""),
    ]);
    fs::write(ctx.join("layer.tar"), t).unwrap();
    // Whiteouts in an ADDed tar apply to what the tree had (buildah): one file removed, one
    // directory's former entries hidden (opaque), a new entry beside them.
    let wh = tarw::tar([
        tarw::E::dir("data/").mode(0o755).owner(1000, 1000).mtime(1_600_000_000),
        tarw::E::file("data/.wh.a.txt", ""),
        tarw::E::dir("data/deep/").mode(0o755).owner(1000, 1000).mtime(1_600_000_000),
        tarw::E::file("data/deep/.wh..wh..opq", ""),
        tarw::E::file("data/deep/c.txt", "c\n").mode(0o644).mtime(1_600_000_000),
    ]);
    fs::write(ctx.join("wh.tar"), wh).unwrap();
}

fn buildah(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("buildah")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("runroot"))
        .args(["--storage-driver", "vfs"])
        .args(args)
        .output()
        .expect("run buildah");
    assert!(
        out.status.success(),
        "buildah {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tree as both builders must agree on it: no times (RUN writes at build time), and without
/// the mount points buildah's RUN leaves behind where the base had none (empty /etc/hosts,
/// /etc/resolv.conf, /run).
fn comparable(rootfs: &Path) -> strata_test_support::tree::Tree {
    let mut t = capture(rootfs);
    t.retain(|p, e| {
        e.mtime = None;
        !["etc/hosts", "etc/resolv.conf", "run"].iter().any(|m| p == Path::new(m))
    });
    t
}

fn config_of(layout: &Path, tag: &str) -> Value {
    let m = manifest_of(layout, tag);
    json(&blob(layout, m["config"]["digest"].as_str().unwrap()))
}

#[test]
fn build_matches_buildah_and_runs_in_podman() {
    if !privileged("build_matches_buildah") {
        return;
    }
    if Command::new("buildah").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("!!! build_matches_buildah: SKIPPED: no buildah");
        return;
    }
    let root = Root::new();
    let fx = fixtures();
    let base = format!("oci:{}:busybox", fx.join("oci").display());
    root.ok(&["image", "import", &base, "--name", "busybox"]);
    let t = tempfile::Builder::new().prefix("parity-").tempdir_in(repo().join("target/test-roots")).unwrap();
    let ctx = t.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    make_context(&ctx);
    let ctx_s = ctx.to_string_lossy().into_owned();

    let id = root.ok(&["build", "-q", "-t", "parity", "--build-arg", "GREETING=hi there", &ctx_s]);
    let b = t.path().join("buildah");
    fs::create_dir(&b).unwrap();
    let bbase = format!("BASE={base}");
    buildah(
        &b,
        &[
            "bud",
            "--layers",
            "-q",
            "-t",
            "parity",
            "--build-arg",
            "GREETING=hi there",
            "--build-arg",
            &bbase,
            &ctx_s,
        ],
    );

    let ours = t.path().join("ours");
    root.ok(&["image", "export", "parity", &format!("{}:parity", ours.display())]);
    let theirs = t.path().join("theirs");
    buildah(&b, &["push", "-q", "parity", &format!("oci:{}:parity", theirs.display())]);

    // The trees, entry by entry.
    let (_a, ra) = umoci_unpack(&ours, "parity");
    let (_b, rb) = umoci_unpack(&theirs, "parity");
    let (ta, tb) = (comparable(&ra), comparable(&rb));
    let diff = ta.diff(&tb);
    assert!(diff.is_empty(), "strata vs buildah:\n{}", diff.join("\n"));
    // What the Containerfile says is there, there (so an empty comparison proves something).
    assert_eq!(fs::read_to_string(ra.join("env.txt")).unwrap(), "hi there hi there\n");
    assert!(!ra.join("bin/vi").exists() && !ra.join("data/ignored.log").exists());
    assert_eq!(fs::read_to_string(ra.join("opq/new")).unwrap(), "new\n");
    assert!(!ra.join("opq/keep").exists());
    assert_eq!(fs::read_to_string(ra.join("added/t/hard")).unwrap(), "from the tar\n");
    // Through an absolute symlink of the source image, resolved inside it.
    assert_eq!(fs::read_to_string(ra.join("via-abs/greet")).unwrap(), "hi there\n");
    let hard = fs::symlink_metadata(ra.join("added/t/in-tar.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((hard.mode() & 0o7777, hard.uid(), hard.gid()), (0o640, 9, 10), "the hardlink entry's attrs");
    assert!(!ra.join("added/t/.wh.never-there").exists() && !ra.join("added/t/never-there").exists());
    assert!(!ra.join("data/a.txt").exists() && !ra.join("data/deep/b.sh").exists(), "whiteouts of the tar");
    assert_eq!(fs::read_to_string(ra.join("data/deep/c.txt")).unwrap(), "c\n");

    // The configs, field by field (buildah adds its version label).
    let (ca, cb) = (config_of(&ours, "parity"), config_of(&theirs, "parity"));
    for k in ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "StopSignal"] {
        assert_eq!(ca["config"][k], cb["config"][k], "config.{k}");
    }
    let mut lb = cb["config"]["Labels"].clone();
    if let Some(l) = lb.as_object_mut() {
        l.remove("io.buildah.version");
    }
    assert_eq!(ca["config"]["Labels"], lb, "config.Labels");
    let empties = |c: &Value| -> Vec<bool> {
        c["history"].as_array().unwrap().iter().map(|h| h["empty_layer"].as_bool().unwrap_or(false)).collect()
    };
    assert_eq!(empties(&ca), empties(&cb), "history empty_layer");
    assert_eq!(
        ca["rootfs"]["diff_ids"].as_array().unwrap().len(),
        cb["rootfs"]["diff_ids"].as_array().unwrap().len()
    );

    // A second build is all cache and the same image.
    assert_eq!(root.ok(&["build", "-q", "-t", "parity", "--build-arg", "GREETING=hi there", &ctx_s]), id);

    push_and_run_in_podman(&root, t.path());
}

fn push_and_run_in_podman(root: &Root, tmp: &Path) {
    if Command::new("podman").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("!!! build_matches_buildah: podman part SKIPPED: podman cannot run here");
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let dest = format!("{}/strata/built:1", reg.addr);
    root.ok(&["push", "parity", &dest]);
    let run = tempfile::Builder::new().prefix("strata-build-").tempdir_in("/run").expect("runroot in /run");
    let proot: PathBuf = tmp.join("podman");
    let podman = |args: &[&str]| common::podman_at(&proot, run.path(), args);
    podman(&["pull", "-q", "--tls-verify=false", &dest]);
    let limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "none"];
    let mut args = vec!["run", "--rm"];
    args.extend(limits);
    args.push(dest.as_str());
    // ENTRYPOINT sh -c with the image's CMD.
    assert_eq!(podman(&args), "hi there hi there\n");
    for p in mounts_under(run.path()).into_iter().rev() {
        let _ = kernel_overlay::unmount(&p, kernel_overlay::UnmountMode::Detach);
    }
}
