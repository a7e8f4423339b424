//! Root integration tests: real overlay mounts on this kernel.
//!
//! Skipped (loudly) only when not root and `CI` is unset; under CI they must run.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use kernel_overlay::{
    find_mount, is_mounted, mount, mount_legacy, unmount, Error, MountMethod, OverlaySpec, UnmountMode,
};
use rustix::fs::{FileType, Mode, XattrFlags};

use strata_test_support::privileged as root_or_skip;

/// Unmounts (detached) on drop, so a failing test does not leak its mount.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.0).unwrap_or(false) {
            let _ = unmount(&self.0, UnmountMode::Detach);
        }
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    lowers: Vec<PathBuf>,
}

impl Fixture {
    /// `n` layers under `<root>/<parent>/l<i>`; layer i holds `f<i>` = "i" and `common` = "i".
    fn new(n: usize, parent: &str) -> Self {
        let tmp = tempfile::Builder::new().prefix("kovl-").tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let layers = root.join(parent);
        fs::create_dir_all(&layers).unwrap();
        let lowers: Vec<PathBuf> = (0..n)
            .map(|i| {
                let l = layers.join(format!("l{i:03}"));
                fs::create_dir(&l).unwrap();
                fs::write(l.join(format!("f{i}")), i.to_string()).unwrap();
                fs::write(l.join("common"), i.to_string()).unwrap();
                l
            })
            .collect();
        fs::create_dir(root.join("m")).unwrap();
        fs::create_dir(root.join("empty")).unwrap();
        Fixture { _tmp: tmp, root, lowers }
    }

    fn target(&self) -> PathBuf {
        self.root.join("m")
    }

    fn read_only(&self) -> OverlaySpec {
        let mut s = OverlaySpec::read_only(self.lowers.clone());
        s.empty_lower = Some(self.root.join("empty"));
        s
    }

    fn writable(&self) -> OverlaySpec {
        let (u, w) = (self.root.join("upper"), self.root.join("work"));
        fs::create_dir_all(&u).unwrap();
        fs::create_dir_all(&w).unwrap();
        OverlaySpec::writable(self.lowers.clone(), u, w)
    }

    fn check_content(&self) {
        let m = self.target();
        for i in 0..self.lowers.len() {
            assert_eq!(fs::read_to_string(m.join(format!("f{i}"))).unwrap(), i.to_string());
        }
        // Top-most first: layer 0 wins.
        assert_eq!(fs::read_to_string(m.join("common")).unwrap(), "0");
    }
}

fn whiteout(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o600),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
}

fn check_stack(n: usize, writable: bool) {
    let fx = Fixture::new(n, "layers/sha256");
    let target = fx.target();
    assert!(!is_mounted(&target).unwrap());
    let spec = if writable { fx.writable() } else { fx.read_only() };
    let method = mount(&spec, &target).unwrap_or_else(|e| panic!("{n} layers, writable={writable}: {e}"));
    let _guard = Mounted(target.clone());
    assert_eq!(method, MountMethod::NewApi, "Linux 6.8+ has lowerdir+");
    assert!(is_mounted(&target).unwrap());
    let info = find_mount(&target).unwrap().unwrap();
    assert_eq!(info.fs_type, "overlay");
    assert!(info.super_options.contains("redirect_dir=nofollow"), "{}", info.super_options);
    assert!(!info.super_options.contains("metacopy=on"), "{}", info.super_options);
    fx.check_content();

    let new_file = target.join("new");
    if writable {
        fs::write(&new_file, "hello").unwrap();
        assert_eq!(fs::read_to_string(fx.root.join("upper/new")).unwrap(), "hello");
        fs::write(target.join("common"), "changed").unwrap();
        assert_eq!(fs::read_to_string(fx.root.join("upper/common")).unwrap(), "changed");
        assert_eq!(fs::read_to_string(fx.lowers[0].join("common")).unwrap(), "0");
        fs::remove_file(target.join("f0")).unwrap();
        let meta = fs::symlink_metadata(fx.root.join("upper/f0")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&meta.file_type()), "whiteout in upper");
    } else {
        let err = fs::write(&new_file, "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        assert!(info.mount_options.split(',').any(|o| o == "ro"), "{}", info.mount_options);
    }

    unmount(&target, UnmountMode::Normal).unwrap();
    assert!(!is_mounted(&target).unwrap());
    assert!(!target.join("common").exists());
}

#[test]
fn stacks_of_1_2_128_500_layers_read_only() {
    if !root_or_skip("stacks_read_only") {
        return;
    }
    for n in [1, 2, 128, 500] {
        check_stack(n, false);
    }
}

#[test]
fn stacks_of_1_2_128_500_layers_writable() {
    if !root_or_skip("stacks_writable") {
        return;
    }
    for n in [1, 2, 128, 500] {
        check_stack(n, true);
    }
}

#[test]
fn volatile_and_userxattr() {
    if !root_or_skip("volatile_and_userxattr") {
        return;
    }
    let fx = Fixture::new(2, "layers");
    // user.overlay.opaque hides lower entries under userxattr.
    let d0 = fx.lowers[0].join("d");
    fs::create_dir(&d0).unwrap();
    fs::write(d0.join("top"), "").unwrap();
    rustix::fs::setxattr(&d0, "user.overlay.opaque", b"y", XattrFlags::empty()).unwrap();
    fs::create_dir(fx.lowers[1].join("d")).unwrap();
    fs::write(fx.lowers[1].join("d/below"), "").unwrap();
    let mut spec = fx.writable();
    spec.volatile = true;
    spec.userxattr = true;
    let target = fx.target();
    mount(&spec, &target).unwrap();
    let _guard = Mounted(target.clone());
    let info = find_mount(&target).unwrap().unwrap();
    assert!(info.super_options.contains("userxattr"), "{}", info.super_options);
    assert!(info.super_options.contains("volatile"), "{}", info.super_options);
    assert!(target.join("d/top").exists());
    assert!(!target.join("d/below").exists());
    fx.check_content();
    unmount(&target, UnmountMode::Normal).unwrap();
}

#[test]
fn too_many_layers_is_a_clear_error() {
    if !root_or_skip("too_many_layers") {
        return;
    }
    let fx = Fixture::new(501, "layers");
    let err = mount(&fx.writable(), &fx.target()).unwrap_err();
    assert!(matches!(err, Error::TooManyLowers { count: 501, limit: 500 }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("501") && msg.contains("500"), "{msg}");
    assert!(!is_mounted(&fx.target()).unwrap());
}

#[test]
fn whiteouts_hide_lower_files() {
    if !root_or_skip("whiteouts") {
        return;
    }
    let fx = Fixture::new(3, "layers");
    // A whiteout in a higher lower layer hides f2 from the lowest layer.
    whiteout(&fx.lowers[0].join("f2"));
    let spec = fx.writable();
    // A whiteout in the upper dir hides f1.
    whiteout(&fx.root.join("upper/f1"));
    let target = fx.target();
    mount(&spec, &target).unwrap();
    let _guard = Mounted(target.clone());
    assert!(target.join("f0").exists());
    for hidden in ["f1", "f2"] {
        let err = fs::symlink_metadata(target.join(hidden)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{hidden}");
    }
    let names: Vec<String> =
        fs::read_dir(&target).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n == "f1" || n == "f2"), "{names:?}");
    unmount(&target, UnmountMode::Normal).unwrap();
}

#[test]
fn opaque_dir_hides_lower_entries() {
    if !root_or_skip("opaque") {
        return;
    }
    let fx = Fixture::new(2, "layers");
    let d0 = fx.lowers[0].join("d");
    fs::create_dir(&d0).unwrap();
    fs::write(d0.join("top"), "").unwrap();
    rustix::fs::setxattr(&d0, "trusted.overlay.opaque", b"y", XattrFlags::empty()).unwrap();
    let d1 = fx.lowers[1].join("d");
    fs::create_dir(&d1).unwrap();
    fs::write(d1.join("below"), "").unwrap();
    // Without the xattr the same stack merges: control case in "e".
    fs::create_dir(fx.lowers[0].join("e")).unwrap();
    fs::create_dir(fx.lowers[1].join("e")).unwrap();
    fs::write(fx.lowers[1].join("e/below"), "").unwrap();
    let target = fx.target();
    mount(&fx.read_only(), &target).unwrap();
    let _guard = Mounted(target.clone());
    assert!(target.join("d/top").exists());
    assert!(!target.join("d/below").exists());
    assert!(target.join("e/below").exists());
    unmount(&target, UnmountMode::Normal).unwrap();
}

#[test]
fn renaming_a_lower_dir_gives_exdev() {
    if !root_or_skip("rename_exdev") {
        return;
    }
    let fx = Fixture::new(2, "layers");
    fs::create_dir(fx.lowers[1].join("dir")).unwrap();
    fs::write(fx.lowers[1].join("dir/x"), "x").unwrap();
    let target = fx.target();
    mount(&fx.writable(), &target).unwrap();
    let _guard = Mounted(target.clone());
    let err = fs::rename(target.join("dir"), target.join("dir2")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{err}");
    // A directory created in the upper layer can be renamed.
    fs::create_dir(target.join("fresh")).unwrap();
    fs::rename(target.join("fresh"), target.join("fresh2")).unwrap();
    unmount(&target, UnmountMode::Normal).unwrap();
}

#[test]
fn legacy_fallback_500_layers_under_long_paths() {
    if !root_or_skip("legacy_500") {
        return;
    }
    // ~600-byte parent: 500 absolute paths are ~300 KB of options; relative names fit one page.
    let parent: PathBuf = (0..6).map(|i| format!("{i}{}", "p".repeat(99))).collect();
    let fx = Fixture::new(500, parent.to_str().unwrap());
    let cwd_before = std::env::current_dir().unwrap();
    for writable in [false, true] {
        let spec = if writable { fx.writable() } else { fx.read_only() };
        let target = fx.target();
        let method = mount_legacy(&spec, &target).unwrap();
        let _guard = Mounted(target.clone());
        assert_eq!(method, MountMethod::LegacyRelative);
        assert_eq!(std::env::current_dir().unwrap(), cwd_before, "process cwd untouched");
        fx.check_content();
        if writable {
            fs::write(target.join("new"), "legacy").unwrap();
            assert_eq!(fs::read_to_string(fx.root.join("upper/new")).unwrap(), "legacy");
        } else {
            assert_eq!(fs::write(target.join("new"), "x").unwrap_err().raw_os_error(), Some(libc::EROFS));
        }
        unmount(&target, UnmountMode::Normal).unwrap();
    }
}

/// 500 layers named by 64-hex digests, as strata's store has them: even relative names overflow
/// the legacy page, so the lowers are named by descriptor numbers from /proc/self/fd.
#[test]
fn legacy_fallback_500_digest_named_layers() {
    if !root_or_skip("legacy_500_digests") {
        return;
    }
    let fx = Fixture::new(0, "layers/sha256");
    let base = fx.root.join("layers/sha256");
    let lowers: Vec<PathBuf> = (0..500)
        .map(|i| {
            let l = base.join(format!("{i:064x}")).join("diff");
            fs::create_dir_all(&l).unwrap();
            fs::write(l.join(format!("f{i}")), i.to_string()).unwrap();
            fs::write(l.join("common"), i.to_string()).unwrap();
            l
        })
        .collect();
    let fx = Fixture { lowers, ..fx };
    let cwd_before = std::env::current_dir().unwrap();
    for writable in [false, true] {
        let spec = if writable { fx.writable() } else { fx.read_only() };
        let target = fx.target();
        let method = mount_legacy(&spec, &target).unwrap_or_else(|e| panic!("writable={writable}: {e}"));
        let _guard = Mounted(target.clone());
        assert_eq!(method, MountMethod::LegacyFd);
        assert_eq!(std::env::current_dir().unwrap(), cwd_before, "process cwd untouched");
        let open_layers: Vec<PathBuf> = fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
            .filter(|l| l.starts_with(&base))
            .collect();
        assert!(open_layers.is_empty(), "descriptors left open: {open_layers:?}");
        fx.check_content();
        if writable {
            fs::write(target.join("new"), "fd").unwrap();
            assert_eq!(fs::read_to_string(fx.root.join("upper/new")).unwrap(), "fd");
        }
        unmount(&target, UnmountMode::Normal).unwrap();
    }
}

#[test]
fn legacy_short_stack_uses_absolute_paths() {
    if !root_or_skip("legacy_short") {
        return;
    }
    let fx = Fixture::new(3, "layers");
    let target = fx.target();
    assert_eq!(mount_legacy(&fx.writable(), &target).unwrap(), MountMethod::Legacy);
    let _guard = Mounted(target.clone());
    fx.check_content();
    let info = find_mount(&target).unwrap().unwrap();
    assert!(info.super_options.contains("redirect_dir=nofollow"), "{}", info.super_options);
    unmount(&target, UnmountMode::Normal).unwrap();
}

#[test]
fn special_characters_in_paths() {
    if !root_or_skip("special_chars") {
        return;
    }
    // Layer, upper and work names with ':' ',' '\' and a space, through both mount paths.
    let fx = Fixture::new(0, "layers");
    let mut lowers = Vec::new();
    for (i, name) in ["a:b", "c,d", r"e\f g"].iter().enumerate() {
        let l = fx.root.join("layers").join(name);
        fs::create_dir(&l).unwrap();
        fs::write(l.join(format!("f{i}")), i.to_string()).unwrap();
        lowers.push(l);
    }
    for legacy in [false, true] {
        let up = fx.root.join(format!("u:p,{legacy}"));
        let work = fx.root.join(format!(r"w\o,rk {legacy}"));
        fs::create_dir(&up).unwrap();
        fs::create_dir(&work).unwrap();
        let spec = OverlaySpec::writable(lowers.clone(), up.clone(), work);
        let target = fx.target();
        let method = if legacy { mount_legacy(&spec, &target) } else { mount(&spec, &target) }
            .unwrap_or_else(|e| panic!("legacy={legacy}: {e}"));
        let _guard = Mounted(target.clone());
        assert_eq!(method, if legacy { MountMethod::Legacy } else { MountMethod::NewApi });
        for i in 0..3 {
            assert_eq!(fs::read_to_string(target.join(format!("f{i}"))).unwrap(), i.to_string());
        }
        fs::write(target.join("w"), "w").unwrap();
        assert!(up.join("w").exists());
        unmount(&target, UnmountMode::Normal).unwrap();
    }
}

#[test]
fn single_lower_read_only() {
    if !root_or_skip("single_lower") {
        return;
    }
    let fx = Fixture::new(1, "layers");
    let target = fx.target();
    let mut spec = OverlaySpec::read_only(fx.lowers.clone());
    assert!(matches!(mount(&spec, &target), Err(Error::SingleLowerReadOnly { .. })));
    // The kernel indeed refuses one lower without an upper dir.
    let raw = rustix::mount::mount(
        "overlay",
        &target,
        "overlay",
        rustix::mount::MountFlags::RDONLY,
        std::ffi::CString::new(format!("lowerdir={}", fx.lowers[0].display())).unwrap().as_c_str(),
    );
    assert!(raw.is_err(), "kernel now accepts one lowerdir without upper: simplify empty_lower");
    // A non-empty empty_lower is refused.
    let not_empty = fx.root.join("notempty");
    fs::create_dir(&not_empty).unwrap();
    fs::write(not_empty.join("x"), "").unwrap();
    spec.empty_lower = Some(not_empty);
    assert!(matches!(mount(&spec, &target), Err(Error::EmptyLowerNotEmpty { .. })));
    // Whiteouts in the single layer stay hidden (overlay semantics, not a bind mount).
    whiteout(&fx.lowers[0].join("gone"));
    spec.empty_lower = Some(fx.root.join("empty"));
    for legacy in [false, true] {
        if legacy { mount_legacy(&spec, &target) } else { mount(&spec, &target) }.unwrap();
        let _guard = Mounted(target.clone());
        fx.check_content();
        assert!(fs::symlink_metadata(target.join("gone")).is_err());
        unmount(&target, UnmountMode::Normal).unwrap();
    }
}

#[test]
fn busy_unmount_and_detach() {
    if !root_or_skip("busy_unmount") {
        return;
    }
    let fx = Fixture::new(2, "layers");
    let target = fx.target();
    mount(&fx.read_only(), &target).unwrap();
    let _guard = Mounted(target.clone());
    let f = fs::File::open(target.join("common")).unwrap();
    let err = unmount(&target, UnmountMode::Normal).unwrap_err();
    assert_eq!(err.errno(), Some(rustix::io::Errno::BUSY), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(target.to_str().unwrap()) && msg.contains("EBUSY"), "{msg}");
    unmount(&target, UnmountMode::Detach).unwrap();
    assert!(!is_mounted(&target).unwrap());
    drop(f);
    // Unmounting what is not mounted names the errno.
    let err = unmount(&target, UnmountMode::Normal).unwrap_err();
    assert_eq!(err.errno(), Some(rustix::io::Errno::INVAL), "{err}");
}

#[test]
fn kernel_errors_name_target_op_and_errno() {
    if !root_or_skip("kernel_errors") {
        return;
    }
    let fx = Fixture::new(2, "layers");
    let mut spec = fx.read_only();
    spec.lowers[1] = fx.root.join("does-not-exist");
    let err = mount(&spec, &fx.target()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("does-not-exist") && msg.contains("lowerdir+") && msg.contains("ENOENT"), "{msg}");
    assert!(msg.contains(fx.target().to_str().unwrap()), "{msg}");
    // Upper and work on different filesystems / nested: the kernel refuses at create time.
    let mut spec = fx.writable();
    spec.work = Some(fx.root.join("upper"));
    let err = mount(&spec, &fx.target()).unwrap_err();
    eprintln!("{msg}\n{err}");
    assert!(err.to_string().contains("FSCONFIG_CMD_CREATE") || err.to_string().contains("workdir"), "{err}");
}
