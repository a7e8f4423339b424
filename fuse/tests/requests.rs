//! The requests the kernel sends strata-fuse for common operations, counted by the daemon
//! (`--stats`): round trips that are not needed must stay gone, and what they were saving must
//! still behave (a name cached as missing appears when it is made, a written set-user-ID file
//! loses the bit).

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use common::*;

/// strata-fuse in the foreground with `--stats`, unmounted and reaped on drop.
struct Counted {
    child: Child,
    mnt: PathBuf,
    stats: PathBuf,
}

impl Counted {
    fn mount(s: &Stack, stats: &Path) -> Counted {
        let child = Command::new(BIN)
            .arg("-f")
            .arg("--stats")
            .arg(stats)
            .arg("-o")
            .arg(s.opts())
            .arg(&s.mnt)
            .spawn()
            .expect("run strata-fuse");
        let c = Counted { child, mnt: s.mnt.clone(), stats: stats.to_path_buf() };
        assert!(wait_until(|| is_mounted(&s.mnt), 10), "strata-fuse did not mount");
        c
    }

    /// The counts so far, by opcode name.
    fn counts(&self) -> HashMap<String, u64> {
        let _ = fs::remove_file(&self.stats);
        // SAFETY: kill(2) of our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGUSR1) }, 0);
        assert!(wait_until(|| self.stats.exists(), 10), "no stats written");
        fs::read_to_string(&self.stats)
            .expect("read stats")
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(k, v)| (k.to_string(), v.parse().expect("count")))
            .collect()
    }

    /// Requests of each kind that `f` caused.
    fn during(&self, f: impl FnOnce()) -> HashMap<String, u64> {
        let before = self.counts();
        f();
        let after = self.counts();
        after
            .into_iter()
            .map(|(k, v)| {
                let d = v - before.get(&k).copied().unwrap_or(0);
                (k, d)
            })
            .filter(|(_, v)| *v > 0)
            .collect()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let _ = umount(&self.mnt);
        let _ = self.child.wait();
    }
}

fn n(c: &HashMap<String, u64>, op: &str) -> u64 {
    c.get(op).copied().unwrap_or(0)
}

#[test]
fn a_missing_name_is_looked_up_once_and_appears_when_made() {
    if !can_run() {
        return;
    }
    let t = scratch();
    let s = Stack::new(t.path(), 1);
    fs::create_dir(s.lowers[0].join("d")).unwrap();
    fs::write(s.lowers[0].join("d/lower"), "l").unwrap();
    let m = Counted::mount(&s, &t.path().join("stats"));
    let d = s.mnt.join("d");
    assert!(d.join("lower").exists());
    let c = m.during(|| {
        for _ in 0..3 {
            assert!(!d.join("missing").exists());
        }
    });
    assert_eq!(n(&c, "LOOKUP"), 1, "{c:?}");
    assert_eq!(n(&c, "LOOKUP(negative)"), 1, "{c:?}");

    // The cached miss turns into the new entry for each way of making a name.
    fs::write(d.join("missing"), "x").unwrap();
    assert_eq!(fs::read_to_string(d.join("missing")).unwrap(), "x");
    assert!(!d.join("dir").exists());
    fs::create_dir(d.join("dir")).unwrap();
    assert!(d.join("dir").is_dir());
    assert!(!d.join("sym").exists());
    std::os::unix::fs::symlink("missing", d.join("sym")).unwrap();
    assert_eq!(fs::read_to_string(d.join("sym")).unwrap(), "x");
    assert!(!d.join("hard").exists());
    fs::hard_link(d.join("missing"), d.join("hard")).unwrap();
    assert_eq!(fs::read_to_string(d.join("hard")).unwrap(), "x");
    assert!(!d.join("moved").exists());
    fs::rename(d.join("lower"), d.join("moved")).unwrap();
    assert_eq!(fs::read_to_string(d.join("moved")).unwrap(), "l");
    // And a removed name is missing again, lower or upper.
    assert!(!d.join("lower").exists());
    fs::remove_file(d.join("missing")).unwrap();
    assert!(!d.join("missing").exists());
    fs::write(d.join("missing"), "again").unwrap();
    assert_eq!(fs::read_to_string(d.join("missing")).unwrap(), "again");
}

/// Runs `sh -c SCRIPT` as user and group 65534.
fn as_nobody(script: &str) {
    let st = Command::new("/bin/sh").arg("-c").arg(script).uid(65534).gid(65534).status().expect("sh");
    assert!(st.success(), "{script}: {st}");
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).expect("stat").mode() & 0o7777
}

/// FUSE_HANDLE_KILLPRIV_V2: the kernel asks for security.capability before the first write
/// to a file only (not before each one), and leaves dropping set-user-ID and set-group-ID to the
/// daemon, which does it as the kernel would: on a write or truncate by a caller other than
/// root, and on chown; set-group-ID without group execute (mandatory locking) stays.
#[test]
fn writes_check_privileges_once_and_still_drop_them() {
    if !can_run() {
        return;
    }
    let t = scratch();
    // The other user must reach the mount.
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let s = Stack::new(t.path(), 1);
    for d in [&s.lowers[0], &s.upper, &s.mnt] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (name, mode) in [("suid", 0o6777), ("lock", 0o6766), ("rootw", 0o4755), ("trunc", 0o6777)] {
        let p = s.lowers[0].join(name);
        fs::write(&p, "lower").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    let m = Counted::mount(&s, &t.path().join("stats"));
    let new = s.mnt.join("new");
    let c = m.during(|| {
        let mut f = fs::File::create(&new).unwrap();
        for _ in 0..50 {
            f.write_all(&[7u8; 4096]).unwrap();
        }
    });
    assert!(n(&c, "GETXATTR") <= 1, "{c:?}");
    assert_eq!(fs::metadata(&new).unwrap().len(), 50 * 4096);

    let mnt = s.mnt.display();
    as_nobody(&format!("printf x >> {mnt}/suid && printf x >> {mnt}/lock && : > {mnt}/trunc"));
    assert_eq!(mode_of(&s.mnt.join("suid")), 0o777);
    assert_eq!(mode_of(&s.mnt.join("lock")), 0o2766);
    assert_eq!(mode_of(&s.mnt.join("trunc")), 0o777);
    assert_eq!(fs::read_to_string(s.mnt.join("suid")).unwrap(), "lowerx");
    assert_eq!(fs::read_to_string(s.mnt.join("trunc")).unwrap(), "");
    // Root may keep them (CAP_FSETID).
    fs::OpenOptions::new().append(true).open(s.mnt.join("rootw")).unwrap().write_all(b"r").unwrap();
    assert_eq!(mode_of(&s.mnt.join("rootw")), 0o4755);
    // A file written once (the kernel stops asking for it) and made set-user-ID afterwards.
    fs::set_permissions(&new, fs::Permissions::from_mode(0o6777)).unwrap();
    as_nobody(&format!("printf x >> {mnt}/new"));
    assert_eq!(mode_of(&new), 0o777);
    // chown drops them too, for root as well.
    fs::set_permissions(&new, fs::Permissions::from_mode(0o6777)).unwrap();
    std::os::unix::fs::chown(&new, Some(1), None).unwrap();
    assert_eq!(mode_of(&new), 0o777);
    fs::set_permissions(&new, fs::Permissions::from_mode(0o6777)).unwrap();
    std::os::unix::fs::chown(&new, None, None).unwrap();
    assert_eq!(mode_of(&new), 0o777);
    // What the upper layer holds.
    assert_eq!(fs::metadata(s.upper.join("suid")).unwrap().mode() & 0o7777, 0o777);
}
