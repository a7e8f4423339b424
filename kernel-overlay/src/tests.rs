//! Unit tests of the mount decisions, with the recording syscall implementation (no root).

use std::ffi::OsString;

use super::*;

fn lowers(n: usize, parent: &str) -> Vec<PathBuf> {
    (0..n).map(|i| PathBuf::from(format!("{parent}/l{i:03}"))).collect()
}

fn rw(n: usize) -> OverlaySpec {
    OverlaySpec::writable(lowers(n, "/s/layers"), "/s/c/upper".into(), "/s/c/work".into())
}

fn string(key: &str, value: &str) -> Call {
    Call::FsconfigString { key: key.into(), value: OsString::from(value) }
}

fn is_lowerdir_add(c: &Call) -> bool {
    matches!(c, Call::FsconfigString { key, .. } if key == "lowerdir+")
}

fn target() -> &'static Path {
    Path::new("/mnt/t")
}

#[test]
fn validate_errors() {
    assert!(matches!(OverlaySpec::default().validate(), Err(Error::NoLowers)));
    let mut s = rw(2);
    s.work = None;
    assert!(matches!(s.validate(), Err(Error::UpperWithoutWork { .. })));
    let mut s = OverlaySpec::read_only(lowers(2, "/l"));
    s.work = Some("/w".into());
    assert!(matches!(s.validate(), Err(Error::WorkWithoutUpper { .. })));
    let mut s = OverlaySpec::read_only(lowers(2, "/l"));
    s.volatile = true;
    assert!(matches!(s.validate(), Err(Error::VolatileWithoutUpper)));
    let s = OverlaySpec::read_only(vec!["relative/l".into(), "/l".into()]);
    assert!(matches!(s.validate(), Err(Error::NotAbsolute { .. })));
    let s = OverlaySpec::read_only(vec!["/a\0b".into(), "/l".into()]);
    assert!(matches!(s.validate(), Err(Error::NulInPath { .. })));
    assert!(rw(1).validate().is_ok());
    assert!(OverlaySpec::read_only(lowers(2, "/l")).validate().is_ok());
}

#[test]
fn layer_limit_is_500() {
    assert!(rw(OVL_MAX_STACK).validate().is_ok());
    let err = rw(OVL_MAX_STACK + 1).validate().unwrap_err();
    assert!(matches!(err, Error::TooManyLowers { count: 501, limit: 500 }));
    let msg = err.to_string();
    assert!(msg.contains("501") && msg.contains("500"), "{msg}");
    // Nothing reaches the kernel.
    let sys = RecordingSyscall::new();
    assert!(mount_with(&sys, &rw(501), target(), MountOptions::default()).is_err());
    assert!(sys.calls().is_empty());
}

#[test]
fn single_lower_read_only_needs_empty_lower() {
    let mut s = OverlaySpec::read_only(vec!["/s/layers/a".into()]);
    let err = s.validate().unwrap_err();
    assert!(matches!(err, Error::SingleLowerReadOnly { .. }));
    assert!(err.to_string().contains("/s/layers/a"));
    s.empty_lower = Some("/s/empty".into());
    let sys = RecordingSyscall::new();
    mount_with(&sys, &s, target(), MountOptions::default()).unwrap();
    let calls = sys.calls();
    assert_eq!(calls[1], string("lowerdir+", "/s/layers/a"));
    assert_eq!(calls[2], string("lowerdir+", "/s/empty"));
    // Not used when there is more than one lower, nor with an upper.
    let mut s = OverlaySpec::read_only(lowers(2, "/l"));
    s.empty_lower = Some("/s/empty".into());
    assert_eq!(s.effective_lowers().len(), 2);
    let mut s = rw(1);
    s.empty_lower = Some("/s/empty".into());
    assert_eq!(s.effective_lowers().len(), 1);
}

#[test]
fn new_api_call_sequence_writable() {
    let sys = RecordingSyscall::new();
    let mut spec = rw(3);
    spec.volatile = true;
    spec.userxattr = true;
    assert_eq!(mount_with(&sys, &spec, target(), MountOptions::default()).unwrap(), MountMethod::NewApi);
    assert_eq!(
        sys.calls(),
        vec![
            Call::Fsopen { fs_type: "overlay".into() },
            string("lowerdir+", "/s/layers/l000"),
            string("lowerdir+", "/s/layers/l001"),
            string("lowerdir+", "/s/layers/l002"),
            string("upperdir", "/s/c/upper"),
            string("workdir", "/s/c/work"),
            string("index", "off"),
            string("redirect_dir", "nofollow"),
            string("metacopy", "off"),
            Call::FsconfigFlag { key: "userxattr".into() },
            Call::FsconfigFlag { key: "volatile".into() },
            Call::FsconfigCreate,
            Call::Fsmount { read_only: false },
            Call::MoveMount { target: "/mnt/t".into() },
        ]
    );
}

#[test]
fn new_api_read_only_and_500_layers() {
    let sys = RecordingSyscall::new();
    let spec = OverlaySpec::read_only(lowers(500, "/s/layers"));
    mount_with(&sys, &spec, target(), MountOptions::default()).unwrap();
    let calls = sys.calls();
    assert_eq!(calls.iter().filter(|c| is_lowerdir_add(c)).count(), 500);
    assert!(!calls.iter().any(|c| matches!(c, Call::FsconfigString { key, .. } if key == "upperdir")));
    assert!(!calls.iter().any(|c| matches!(c, Call::FsconfigFlag { .. })));
    assert!(calls.contains(&Call::Fsmount { read_only: true }));
    // Layer order is preserved: top-most first.
    assert_eq!(calls[1], string("lowerdir+", "/s/layers/l000"));
    assert_eq!(calls[500], string("lowerdir+", "/s/layers/l499"));
}

#[test]
fn fsopen_enosys_falls_back_to_legacy() {
    let sys = RecordingSyscall::new().fail_when(|c| matches!(c, Call::Fsopen { .. }), Errno::NOSYS);
    let spec = rw(2);
    assert_eq!(mount_with(&sys, &spec, target(), MountOptions::default()).unwrap(), MountMethod::Legacy);
    let calls = sys.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1],
        Call::Mount {
            target: "/mnt/t".into(),
            read_only: false,
            data: b"lowerdir=/s/layers/l000:/s/layers/l001,upperdir=/s/c/upper,workdir=/s/c/work,\
                    index=off,redirect_dir=nofollow,metacopy=off"
                .to_vec(),
            cwd: None,
        }
    );
}

#[test]
fn fsopen_other_errors_do_not_fall_back() {
    let sys = RecordingSyscall::new().fail_when(|c| matches!(c, Call::Fsopen { .. }), Errno::NODEV);
    let err = mount_with(&sys, &rw(2), target(), MountOptions::default()).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::NODEV));
    let msg = err.to_string();
    assert!(msg.contains("/mnt/t") && msg.contains("fsopen") && msg.contains("ENODEV"), "{msg}");
    assert_eq!(sys.calls().len(), 1);
}

#[test]
fn lowerdir_add_einval_falls_back_to_legacy() {
    let sys = RecordingSyscall::new().fail_when(is_lowerdir_add, Errno::INVAL);
    let mut spec = OverlaySpec::read_only(lowers(2, "/s/layers"));
    spec.userxattr = true;
    assert_eq!(mount_with(&sys, &spec, target(), MountOptions::default()).unwrap(), MountMethod::Legacy);
    let calls = sys.calls();
    assert_eq!(calls.len(), 3, "{calls:?}"); // fsopen, one lowerdir+, mount
    let Call::Mount { data, read_only, cwd, .. } = &calls[2] else { panic!("{calls:?}") };
    assert!(*read_only);
    assert!(cwd.is_none());
    assert_eq!(
        String::from_utf8_lossy(data),
        "lowerdir=/s/layers/l000:/s/layers/l001,index=off,redirect_dir=nofollow,metacopy=off,userxattr"
    );
}

#[test]
fn later_lowerdir_add_einval_is_an_error() {
    let sys = RecordingSyscall::new().fail_when(
        |c| matches!(c, Call::FsconfigString { key, value } if key == "lowerdir+" && value == "/s/layers/l001"),
        Errno::INVAL,
    );
    let err = mount_with(&sys, &rw(3), target(), MountOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("lowerdir+") && msg.contains("/s/layers/l001") && msg.contains("EINVAL"), "{msg}");
    assert!(!sys.calls().iter().any(|c| matches!(c, Call::Mount { .. })));
}

#[test]
fn create_failure_names_target_and_op() {
    let sys = RecordingSyscall::new().fail_when(|c| *c == Call::FsconfigCreate, Errno::NOENT);
    let err = mount_with(&sys, &rw(2), target(), MountOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/mnt/t") && msg.contains("FSCONFIG_CMD_CREATE") && msg.contains("ENOENT"), "{msg}");
    assert!(!sys.calls().iter().any(|c| matches!(c, Call::Mount { .. } | Call::Fsmount { .. })));
}

fn long_parent() -> String {
    format!("/var/lib/strata/{}/layers/sha256", "x".repeat(100))
}

#[test]
fn legacy_long_options_use_relative_paths() {
    let sys = RecordingSyscall::new();
    let parent = long_parent();
    let spec = OverlaySpec::writable(lowers(500, &parent), "/s/c/upper".into(), "/s/c/work".into());
    let method = mount_with(&sys, &spec, target(), MountOptions { force_legacy: true }).unwrap();
    assert_eq!(method, MountMethod::LegacyRelative);
    let calls = sys.calls();
    assert_eq!(calls.len(), 1);
    let Call::Mount { data, cwd, .. } = &calls[0] else { panic!() };
    assert_eq!(cwd.as_deref(), Some(Path::new(&parent)));
    assert!(data.len() < LEGACY_OPTIONS_MAX);
    let s = String::from_utf8_lossy(data);
    assert!(s.starts_with("lowerdir=l000:l001:"), "{s}");
    assert!(s.contains("l499,upperdir=/s/c/upper,workdir=/s/c/work,"), "{s}");
}

#[test]
fn legacy_page_boundary() {
    // Find a lower count/name length whose absolute option string is exactly 4095 bytes (fits
    // with its NUL) and check that one byte more switches to relative paths.
    let base = |name_len: usize| {
        let p = format!("/{}", "a".repeat(name_len));
        OverlaySpec::read_only(vec![PathBuf::from(&p).join("x"), PathBuf::from(&p).join("y")])
    };
    let fixed = legacy_options(&base(1), &[b"/a/x".to_vec(), b"/a/y".to_vec()]).len() - 8;
    // len = fixed + 2 * (name_len + 3)
    let name_len = (LEGACY_OPTIONS_MAX - 1 - fixed) / 2 - 3;
    assert_eq!(fixed + 2 * (name_len + 3), LEGACY_OPTIONS_MAX - 1, "pick an even remainder");
    let sys = RecordingSyscall::new();
    let m = mount_with(&sys, &base(name_len), target(), MountOptions { force_legacy: true }).unwrap();
    assert_eq!(m, MountMethod::Legacy);
    let Call::Mount { data, .. } = &sys.calls()[0] else { panic!() };
    assert_eq!(data.len() + 1, LEGACY_OPTIONS_MAX);
    let sys = RecordingSyscall::new();
    let spec = OverlaySpec::read_only(vec![
        PathBuf::from(format!("/{}", "a".repeat(name_len))).join("x"),
        PathBuf::from(format!("/{}", "a".repeat(name_len))).join("yy"),
    ]);
    let m = mount_with(&sys, &spec, target(), MountOptions { force_legacy: true }).unwrap();
    assert_eq!(m, MountMethod::LegacyRelative);
}

#[test]
fn legacy_relative_overflow_names_lowers_by_fd() {
    let sys = RecordingSyscall::new();
    // 64-hex names, as strata's layer dirs: 500 * 65 bytes cannot fit one page, even relative.
    let parent = long_parent();
    let names: Vec<PathBuf> = (0..500).map(|i| PathBuf::from(format!("{parent}/{i:064x}/diff"))).collect();
    let spec = OverlaySpec::writable(names.clone(), "/s/c/upper".into(), "/s/c/work".into());
    let m = mount_with(&sys, &spec, target(), MountOptions { force_legacy: true }).unwrap();
    assert_eq!(m, MountMethod::LegacyFd);
    let calls = sys.calls();
    assert_eq!(calls.len(), 501);
    for (c, want) in calls.iter().zip(&names) {
        assert_eq!(c, &Call::OpenPath { dir: want.clone() });
    }
    let Call::Mount { data, cwd, read_only, .. } = &calls[500] else { panic!("{:?}", calls[500]) };
    assert_eq!(cwd.as_deref(), Some(Path::new("/proc/self/fd")));
    assert!(!read_only);
    // The recording descriptors are 1..=500, numbered +2 (3..=502), in layer order.
    let want: Vec<String> = (3..=502).map(|n| n.to_string()).collect();
    let s = String::from_utf8_lossy(data);
    assert!(s.starts_with(&format!("lowerdir={},upperdir=/s/c/upper,", want.join(":"))), "{s}");
    assert!(data.len() < LEGACY_OPTIONS_MAX);
}

#[test]
fn legacy_fd_names_overflow_is_a_clear_error() {
    let sys = RecordingSyscall::new();
    // Lowers that only fit by number, and an upper path that alone nearly fills the page.
    let parent = long_parent();
    let names: Vec<PathBuf> = (0..500).map(|i| PathBuf::from(format!("{parent}/{i:064x}"))).collect();
    let upper = PathBuf::from(format!("/{}", "u".repeat(3000)));
    let spec = OverlaySpec::writable(names, upper, "/s/c/work".into());
    let err = mount_with(&sys, &spec, target(), MountOptions { force_legacy: true }).unwrap_err();
    assert!(matches!(err, Error::OptionsTooLong { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("/mnt/t") && msg.contains("4096") && msg.contains("descriptor"), "{msg}");
    assert!(sys.calls().iter().all(|c| matches!(c, Call::OpenPath { .. })), "no mount call");
}

#[test]
fn legacy_fd_open_failure_names_the_layer() {
    let parent = long_parent();
    let names: Vec<PathBuf> = (0..500).map(|i| PathBuf::from(format!("{parent}/{i:064x}"))).collect();
    let bad = names[7].clone();
    let sys = RecordingSyscall::new()
        .fail_when(move |c| matches!(c, Call::OpenPath { dir } if *dir == bad), Errno::NOENT);
    let err = mount_with(
        &sys,
        &OverlaySpec::read_only(names.clone()),
        target(),
        MountOptions { force_legacy: true },
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("{:064x}", 7)) && msg.contains("ENOENT"), "{msg}");
    assert!(!sys.calls().iter().any(|c| matches!(c, Call::Mount { .. })));
}

#[test]
fn common_parent_of_mixed_dirs() {
    let a = Path::new("/r/layers/sha256/aaa");
    let b = Path::new("/r/layers/other/bbb");
    assert_eq!(common_parent(&[a, b]), PathBuf::from("/r/layers"));
    assert_eq!(common_parent(&[a, Path::new("/x/y")]), PathBuf::from("/"));
    // Relative names keep their subdirectories.
    let sys = RecordingSyscall::new();
    let mut lowers: Vec<PathBuf> =
        (0..200).map(|i| PathBuf::from(format!("/r/layers/sha256/{i:08}"))).collect();
    lowers.push("/r/layers/other/bbb".into());
    let spec = OverlaySpec::read_only(lowers);
    let m = mount_with(&sys, &spec, target(), MountOptions { force_legacy: true }).unwrap();
    assert_eq!(m, MountMethod::LegacyRelative);
    let Call::Mount { data, cwd, .. } = &sys.calls()[0] else { panic!() };
    assert_eq!(cwd.as_deref(), Some(Path::new("/r/layers")));
    assert!(String::from_utf8_lossy(data).starts_with("lowerdir=sha256/00000000:sha256/00000001:"));
}

#[test]
fn escaping() {
    assert_eq!(escape_path(Path::new(r"/a:b,c\d e")), br"/a\:b\,c\\d e".to_vec());
    let sys = RecordingSyscall::new();
    let spec =
        OverlaySpec::writable(vec!["/l/a:b".into(), "/l/c,d".into()], "/u/x,y".into(), "/u/w:z".into());
    mount_with(&sys, &spec, target(), MountOptions::default()).unwrap();
    let calls = sys.calls();
    // lowerdir+ takes the path verbatim; upperdir/workdir are unescaped by the kernel.
    assert_eq!(calls[1], string("lowerdir+", "/l/a:b"));
    assert_eq!(calls[3], string("upperdir", r"/u/x\,y"));
    assert_eq!(calls[4], string("workdir", r"/u/w\:z"));
    let sys = RecordingSyscall::new();
    mount_with(&sys, &spec, target(), MountOptions { force_legacy: true }).unwrap();
    let Call::Mount { data, .. } = &sys.calls()[0] else { panic!() };
    assert!(String::from_utf8_lossy(data)
        .starts_with(r"lowerdir=/l/a\:b:/l/c\,d,upperdir=/u/x\,y,workdir=/u/w\:z,"));
}

#[test]
fn mount_spec_options() {
    let mut spec = rw(2);
    spec.volatile = true;
    let m = mount_spec(&spec).unwrap();
    assert_eq!(m.fs_type, "overlay");
    assert_eq!(m.source, "overlay");
    assert_eq!(
        m.options,
        vec![
            "lowerdir=/s/layers/l000:/s/layers/l001",
            "upperdir=/s/c/upper",
            "workdir=/s/c/work",
            "index=off",
            "redirect_dir=nofollow",
            "metacopy=off",
            "volatile",
        ]
    );
    let mut ro = OverlaySpec::read_only(vec!["/l/a:b".into()]);
    ro.empty_lower = Some("/e".into());
    ro.userxattr = true;
    let m = mount_spec(&ro).unwrap();
    assert_eq!(m.options[0], r"lowerdir=/l/a\:b:/e");
    assert_eq!(m.options.last().unwrap(), "ro");
    assert!(m.options.contains(&"userxattr".to_string()));
    assert!(matches!(mount_spec(&rw(501)), Err(Error::TooManyLowers { .. })));
}

/// The same options for a userspace overlay, which has no depth limit; other faults still fail.
#[test]
fn userspace_options_have_no_depth_limit() {
    let mut spec = rw(2);
    spec.lowers[0] = "/a,b/l:1".into();
    assert_eq!(userspace_options(&spec).unwrap(), mount_spec(&spec).unwrap().options);
    assert_eq!(userspace_options(&spec).unwrap()[0], r"lowerdir=/a\,b/l\:1:/s/layers/l001");
    let deep = userspace_options(&rw(OVL_MAX_STACK + 1)).unwrap();
    assert_eq!(deep[0].matches(':').count(), OVL_MAX_STACK);
    assert!(matches!(userspace_options(&OverlaySpec::default()), Err(Error::NoLowers)));
    let mut s = rw(1);
    s.work = None;
    assert!(matches!(userspace_options(&s), Err(Error::UpperWithoutWork { .. })));
}

#[test]
fn mount_spec_rejects_non_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let bad = PathBuf::from(std::ffi::OsStr::from_bytes(b"/l/\xff"));
    let spec = OverlaySpec::read_only(vec![bad, "/l/b".into()]);
    assert!(matches!(mount_spec(&spec), Err(Error::NonUtf8Path { .. })));
}

#[test]
fn relative_target_is_made_absolute() {
    let sys = RecordingSyscall::new();
    mount_with(&sys, &rw(2), Path::new("rel/t"), MountOptions::default()).unwrap();
    let Some(Call::MoveMount { target }) = sys.calls().pop() else { panic!() };
    assert!(target.is_absolute() && target.ends_with("rel/t"));
}

#[test]
fn unmount_modes() {
    let sys = RecordingSyscall::new();
    unmount_with(&sys, target(), UnmountMode::Normal).unwrap();
    unmount_with(&sys, target(), UnmountMode::Detach).unwrap();
    assert_eq!(
        sys.calls(),
        vec![
            Call::Umount { target: "/mnt/t".into(), detach: false },
            Call::Umount { target: "/mnt/t".into(), detach: true },
        ]
    );
    let sys = RecordingSyscall::new().fail_when(|_| true, Errno::BUSY);
    let msg = unmount_with(&sys, target(), UnmountMode::Normal).unwrap_err().to_string();
    assert!(msg.contains("/mnt/t") && msg.contains("umount2") && msg.contains("EBUSY"), "{msg}");
}

#[test]
fn is_mounted_via_mountinfo() {
    let sys = RecordingSyscall::new().with_mountinfo(
        "1 0 0:1 / / rw - ext4 /dev/vda rw\n\
         40 1 0:40 / /nonexistent/m\\040x rw,relatime - overlay overlay rw,lowerdir=/a:/b\n",
    );
    let m = find_mount_with(&sys, Path::new("/nonexistent/m x")).unwrap().unwrap();
    assert_eq!(m.fs_type, "overlay");
    assert!(find_mount_with(&sys, Path::new("/nonexistent/m")).unwrap().is_none());
    assert!(find_mount_with(&sys, Path::new("/nonexistent/m\\040x")).unwrap().is_none());
}

/// An image of no layers (`FROM scratch`): a writable overlay over `empty_lower` alone.
#[test]
fn no_lowers_mounts_over_the_empty_lower() {
    let mut s = rw(1);
    s.lowers.clear();
    assert!(matches!(s.validate(), Err(Error::NoLowers)));
    s.empty_lower = Some("/e".into());
    s.validate().expect("an upper over the empty lower");
    assert_eq!(s.effective_lowers(), [Path::new("/e")]);
    let mut s = OverlaySpec::read_only(Vec::new());
    s.empty_lower = Some("/e".into());
    assert!(matches!(s.validate(), Err(Error::NoLowers)), "read-only with nothing to show");
}
