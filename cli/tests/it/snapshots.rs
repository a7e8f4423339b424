//! The snapshot core mounted for real, in the manner of containerd's `snapshots/testsuite`: one
//! suite, run once with the kernel (the snapshot's mounts performed as containerd performs them:
//! mount(8) with the option string, lowerdirs made relative to their common directory) and once
//! with strata-fuse. Each case applies the same operations to a plain directory and to a mounted
//! snapshot, then compares the two trees entry by entry.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{privileged, repo};
use strata::snapshot::{ErrorKind, Kind, Mount, Snapshots};
use strata::store::Store;

#[derive(Clone, Copy, Debug)]
enum Mounter {
    /// containerd's way: the snapshot's `Mounts`, performed with mount(8).
    Kernel,
    /// strata-fuse over the snapshot's overlay spec.
    Fuse,
}

struct Env {
    _t: tempfile::TempDir,
    store: Store,
    base: PathBuf,
    mounter: Mounter,
    n: usize,
}

fn env(mounter: Mounter) -> Env {
    let base = repo().join("target/test-roots");
    fs::create_dir_all(&base).expect("test roots");
    let t = tempfile::Builder::new().prefix("snap-").tempdir_in(base).expect("tempdir");
    let store = Store::open(&t.path().join("root")).expect("open store");
    let base = t.path().to_path_buf();
    Env { _t: t, store, base, mounter, n: 0 }
}

use common::Unmount as Mounted;

fn labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

impl Env {
    fn target(&mut self) -> PathBuf {
        self.n += 1;
        let t = self.base.join(format!("mnt-{}", self.n));
        fs::create_dir_all(&t).expect("mkdir target");
        t
    }

    fn mount(&mut self, key: &str) -> (Mounted, PathBuf) {
        let target = self.target();
        match self.mounter {
            Mounter::Kernel => {
                let mounts = Snapshots::new(&mut self.store).mounts(key).expect("mounts");
                assert_eq!(mounts.len(), 1, "{mounts:?}");
                perform(&mounts[0], &target);
            }
            Mounter::Fuse => {
                let spec = Snapshots::new(&mut self.store).overlay_spec(key).expect("spec");
                let resolve = |p: &Path| fs::canonicalize(p).expect("resolve lower");
                let mut lowers: Vec<PathBuf> = spec.lowers.iter().map(|p| resolve(p)).collect();
                if lowers.is_empty() {
                    let empty = self.base.join("empty");
                    fs::create_dir_all(&empty).expect("empty lower");
                    lowers.push(empty);
                }
                let join = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
                let mut opts = format!("lowerdir={join}");
                if let (Some(u), Some(w)) = (&spec.upper, &spec.work) {
                    opts.push_str(&format!(",upperdir={},workdir={}", u.display(), w.display()));
                }
                let out = Command::new(strata::container::fuse_binary())
                    .args(["-o", &opts])
                    .arg(&target)
                    .output()
                    .expect("run strata-fuse");
                assert!(out.status.success(), "strata-fuse: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        (Mounted(target.clone()), target)
    }
}

/// Perform a containerd mount as containerd's mount package does: a bind (then a read-only
/// remount when asked), or an overlay whose lowerdirs are made relative to their common
/// directory, the mount running there, when the option string would overflow a page.
fn perform(m: &Mount, target: &Path) {
    let mut cmd = Command::new("mount");
    match m.fs_type.as_str() {
        "bind" => {
            let st = Command::new("mount").args(["--rbind", &m.source]).arg(target).status().expect("mount");
            assert!(st.success(), "bind {m:?}");
            if m.options.iter().any(|o| o == "ro") {
                let st = Command::new("mount")
                    .args(["-o", "remount,bind,ro"])
                    .arg(target)
                    .status()
                    .expect("remount");
                assert!(st.success(), "remount ro {m:?}");
            }
            return;
        }
        "overlay" => {
            let mut opts = m.options.clone();
            let joined = opts.join(",");
            if joined.len() >= kernel_overlay::LEGACY_OPTIONS_MAX {
                let lower = opts.iter().position(|o| o.starts_with("lowerdir=")).expect("lowerdir");
                let value = opts[lower]["lowerdir=".len()..].to_string();
                let dirs: Vec<&str> = value.split(':').collect();
                let common = Path::new(dirs[0]).parent().and_then(Path::parent).expect("snapshots dir");
                let rel: Vec<String> = dirs
                    .iter()
                    .map(|d| Path::new(d).strip_prefix(common).expect("common dir").display().to_string())
                    .collect();
                opts[lower] = format!("lowerdir={}", rel.join(":"));
                cmd.current_dir(common);
            }
            let data = opts.join(",");
            assert!(data.len() < kernel_overlay::LEGACY_OPTIONS_MAX, "{} bytes: over a page", data.len());
            cmd.args(["-t", "overlay", "overlay", "-o", &data]);
        }
        other => panic!("unexpected mount type {other}"),
    }
    let out = cmd.arg(target).output().expect("mount");
    assert!(out.status.success(), "mount {m:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The trees compared: every entry's type, mode, owner, size, content, link target, device
/// numbers and xattrs (not mtimes: the model is written after the snapshot).
fn capture(p: &Path) -> strata_test_support::tree::Tree {
    let mut t = common::capture(p);
    t.retain(|_, e| {
        e.mtime = None;
        true
    });
    t
}

/// Mount a new view of committed snapshot `parent`, or active snapshot `key` itself, and compare
/// it with `expected`.
fn check(env: &mut Env, key: &str, expected: &Path, what: &str) {
    let kind = Snapshots::new(&mut env.store).stat(key).expect("stat").kind;
    let key = if kind == Kind::Committed {
        let view = format!("check-{}", env.n);
        Snapshots::new(&mut env.store).view(&view, Some(key), &labels()).expect("view");
        view
    } else {
        key.to_string()
    };
    let (_m, at) = env.mount(&key);
    strata_test_support::tree::assert_trees_eq(&capture(expected), &capture(&at), what);
}

fn write(p: &Path, text: &str) {
    fs::write(p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// Prepare `key` over `parent`, mount it, run `ops` on it and on `model`, unmount, commit it as
/// `name`.
fn layer(env: &mut Env, parent: Option<&str>, key: &str, name: &str, model: &Path, ops: impl Fn(&Path)) {
    Snapshots::new(&mut env.store).prepare(key, parent, &labels()).expect("prepare");
    {
        let (_m, at) = env.mount(key);
        ops(&at);
    }
    ops(model);
    Snapshots::new(&mut env.store).commit(name, key, &labels()).expect("commit");
}

fn suite_basic(mounter: Mounter) {
    let mut env = env(mounter);
    let model = env.base.join("model");
    fs::create_dir(&model).expect("model");
    fs::set_permissions(&model, fs::Permissions::from_mode(0o755)).expect("chmod");
    layer(&mut env, None, "base-a", "base", &model, |r| {
        write(&r.join("foo"), "foo\n");
        fs::create_dir_all(r.join("a/b/c")).expect("mkdir");
        write(&r.join("a/b/c/deep"), "deep");
        write(&r.join("gone"), "to be deleted");
        fs::create_dir(r.join("dir")).expect("mkdir");
        write(&r.join("dir/old"), "old");
        std::os::unix::fs::symlink("foo", r.join("link")).expect("symlink");
        fs::set_permissions(r.join("foo"), fs::Permissions::from_mode(0o640)).expect("chmod");
    });
    check(&mut env, "base", &model, "committed base, seen through a view");
    layer(&mut env, Some("base"), "child-a", "child", &model, |r| {
        fs::remove_file(r.join("gone")).expect("rm");
        // A directory from below replaced by a new one: the old entries stay hidden.
        fs::remove_dir_all(r.join("dir")).expect("rm -r");
        fs::create_dir(r.join("dir")).expect("mkdir");
        write(&r.join("dir/new"), "new");
        write(&r.join("a/b/c/deep"), "changed");
        write(&r.join("bar"), "bar\n");
        fs::rename(r.join("foo"), r.join("foo2")).expect("rename from a lower layer");
    });
    Snapshots::new(&mut env.store).view("v", Some("child"), &labels()).expect("view");
    let (_m, at) = env.mount("v");
    strata_test_support::tree::assert_trees_eq(&capture(&model), &capture(&at), "view of two layers");
    let e = fs::write(at.join("x"), "x").expect_err("a view is read-only");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    drop(_m);

    // Stat, usage, and the order of removal.
    let s = Snapshots::new(&mut env.store);
    let info = s.stat("child").expect("stat");
    assert_eq!((info.kind, info.parent.as_deref()), (Kind::Committed, Some("base")));
    let u = s.usage("child").expect("usage");
    assert!(u.inodes >= 5, "{u:?}");
    let mut s = Snapshots::new(&mut env.store);
    let e = s.remove("base").expect_err("has children");
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    let e = s.mounts("child").expect_err("a committed snapshot has no mounts");
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    for key in ["v", "check-1", "child", "base"] {
        s.remove(key).unwrap_or_else(|e| panic!("remove {key}: {e}"));
    }
    assert!(s.walk().expect("walk").is_empty());
    let left: Vec<_> = fs::read_dir(env.store.snapshots_dir()).expect("ls").collect();
    assert!(left.is_empty(), "snapshot dirs left: {left:?}");
}

/// 128 layers (containerd's testsuite case), each overwriting one file and adding its own.
fn suite_deep(mounter: Mounter, n: usize) {
    let mut env = env(mounter);
    let model = env.base.join("model");
    fs::create_dir(&model).expect("model");
    fs::set_permissions(&model, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut parent: Option<String> = None;
    for i in 0..n {
        let name = format!("layer-{i}");
        let ops = |r: &Path| {
            write(&r.join("count"), &i.to_string());
            write(&r.join(format!("f-{i}")), "x");
            if i > 0 && i % 10 == 0 {
                fs::remove_file(r.join(format!("f-{}", i - 1))).expect("rm");
            }
        };
        layer(&mut env, parent.as_deref(), &format!("{name}-active"), &name, &model, ops);
        parent = Some(name);
    }
    let top = parent.expect("top");
    Snapshots::new(&mut env.store).prepare("work", Some(&top), &labels()).expect("prepare");
    check(&mut env, "work", &model, &format!("active snapshot over {n} layers"));
}

#[test]
fn suite_kernel() {
    if !privileged("suite_kernel") {
        return;
    }
    suite_basic(Mounter::Kernel);
    suite_deep(Mounter::Kernel, 128);
}

#[test]
fn suite_fuse() {
    if !privileged("suite_fuse") {
        return;
    }
    suite_basic(Mounter::Fuse);
    suite_deep(Mounter::Fuse, 128);
}

/// 500 lowers, overlayfs's limit, performed by mount(8) from one option string, as containerd does.
#[test]
fn five_hundred_layers_mount_from_one_page() {
    if !privileged("five_hundred_layers_mount_from_one_page") {
        return;
    }
    suite_deep(Mounter::Kernel, 499);
}
