//! The requests the kernel sends strata-fuse for common operations, counted by the daemon
//! (`--stats`): round trips that are not needed must stay gone, and what they were saving must
//! still behave (a name cached as missing appears when it is made, a written set-user-ID file
//! loses the bit).

mod common;

use std::collections::HashMap;
use std::fs;
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
