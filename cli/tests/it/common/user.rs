//! An unprivileged user of the tests' own, for rootless mode: made with `useradd` (which gives
//! it a subordinate range in /etc/subuid and /etc/subgid, unless asked not to), with a home and
//! an `XDG_RUNTIME_DIR` made by hand (no logind here); strata runs as that user through
//! `setpriv`. Dropping it kills what the user still runs (by pid: the pause process, FUSE
//! daemons), removes the user and its directories, even when the test failed.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::STRATA;

pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The user's home (`HOME`): the default rootless store is under it.
    pub home: PathBuf,
    /// `XDG_RUNTIME_DIR`.
    pub runtime: PathBuf,
    base: tempfile::TempDir,
}

impl TestUser {
    /// A new user; `subids`: with a subordinate range (useradd's default), or none.
    pub fn new(subids: bool) -> TestUser {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("strl{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        // Under target/ (not a tmpfs /tmp), reachable by the user: the directories on the way
        // are 0755.
        let parent = super::repo().join("target/rootless-users");
        fs::create_dir_all(&parent).expect("users dir");
        let base = tempfile::Builder::new().prefix("user-").tempdir_in(&parent).expect("tempdir");
        fs::set_permissions(base.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let home = base.path().join("home");
        let runtime = base.path().join("run");
        let mut useradd = Command::new("useradd");
        useradd.args(["--no-create-home", "--shell", "/bin/sh", "--home-dir"]).arg(&home);
        if !subids {
            useradd.args(["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]);
        }
        let out = useradd.arg(&name).output().expect("run useradd");
        assert!(out.status.success(), "useradd {name}: {}", String::from_utf8_lossy(&out.stderr));
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").arg(flag).arg(&name).output().expect("id");
            String::from_utf8_lossy(&out.stdout).trim().parse().expect("numeric id")
        };
        let user = TestUser { uid: id("-u"), gid: id("-g"), name, home, runtime, base };
        for d in [&user.home, &user.runtime] {
            fs::create_dir(d).expect("mkdir");
            std::os::unix::fs::chown(d, Some(user.uid), Some(user.gid)).expect("chown");
            fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
        }
        user
    }

    /// `strata ARGS` as this user, with only the environment a login gives.
    pub fn cmd(&self, args: &[&str]) -> Output {
        self.command(STRATA, args).output().expect("run strata as the test user")
    }

    /// `PROGRAM ARGS` as this user.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &self.uid.to_string(), "--regid", &self.gid.to_string(), "--init-groups"])
            .arg(program)
            .args(args)
            .env_clear()
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .current_dir(&self.home);
        if let Ok(v) = std::env::var("RUST_LOG") {
            c.env("RUST_LOG", v);
        }
        c
    }

    /// `strata ARGS` as this user; requires success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "strata {args:?} as {} failed ({}):\n{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `strata ARGS` as this user; requires failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(!out.status.success(), "strata {args:?} as {} unexpectedly succeeded", self.name);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The pause process's pid, if it has one.
    pub fn pause_pid(&self) -> Option<i32> {
        fs::read_to_string(self.runtime.join("strata/pause.pid")).ok()?.trim().parse().ok()
    }

    /// Pids of every process of this user.
    pub fn processes(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            if fs::metadata(e.path()).is_ok_and(|m| m.uid() == self.uid) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Stop the pause process (what holds the namespace and its mounts), waiting until it is gone.
    pub fn stop_pause(&self) {
        if let Some(pid) = self.pause_pid() {
            kill_and_wait(pid);
        }
    }

    /// A copy of `src` at `dst` owned by the user (copied, not linked: chown would change the
    /// original's files too).
    pub fn own_copy(&self, src: &Path, dst: &Path) {
        let cp = Command::new("cp").arg("-r").arg(src).arg(dst).status().expect("cp");
        assert!(cp.success(), "cp -r {} {}", src.display(), dst.display());
        self.chown_tree(dst);
    }

    /// Gives the user `path` and everything under it (`chown -R`).
    pub fn chown_tree(&self, path: &Path) {
        let chown = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.uid, self.gid))
            .arg(path)
            .status()
            .expect("chown");
        assert!(chown.success());
    }

    /// The busybox fixture imported into the user's store as `busybox`.
    pub fn import_busybox(&self) {
        let layout = self.home.join("oci");
        if !layout.exists() {
            self.own_copy(&super::fixtures().join("oci"), &layout);
        }
        self.ok(&["image", "import", &format!("{}:busybox", layout.display())]);
    }

    /// Command lines of the user's processes other than `except`, waiting (10 s at most) until
    /// there are none: a detached run's monitor may take a moment to see its container go.
    pub fn others_settle(&self, except: &[i32]) -> Vec<String> {
        let cmdline = |p: i32| fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let others = || -> Vec<String> {
            let procs = self.processes().into_iter().filter(|p| !except.contains(p));
            procs.map(|p| String::from_utf8_lossy(&cmdline(p)).replace('\0', " ")).collect()
        };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !others().is_empty() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        others()
    }

    /// The user's own base directory (home and runtime dir are in it).
    pub fn base(&self) -> &Path {
        self.base.path()
    }
}

fn kill_and_wait(pid: i32) {
    let Some(p) = rustix::process::Pid::from_raw(pid) else { return };
    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        self.stop_pause();
        for pid in self.processes() {
            kill_and_wait(pid);
        }
        let _ = Command::new("userdel").arg(&self.name).output();
        // Files the user's namespace made are owned by subordinate ids, some read-only: back to
        // root's before the tempdir goes.
        let _ = Command::new("chmod").arg("-R").arg("u+rwX").arg(self.base.path()).output();
    }
}

/// Opens `/dev/fuse` to everyone (no udev here: it is 0600) while any test holds one, as udev's
/// default; the last one dropped puts the mode back. Counted, so that tests running at once do
/// not close it under each other.
pub struct DevFuseOpen(());

static DEV_FUSE: std::sync::Mutex<(usize, u32)> = std::sync::Mutex::new((0, 0));

impl DevFuseOpen {
    pub fn new() -> DevFuseOpen {
        use std::os::unix::fs::PermissionsExt;
        let mut held = DEV_FUSE.lock().unwrap_or_else(|e| e.into_inner());
        if held.0 == 0 {
            held.1 = fs::metadata("/dev/fuse").expect("/dev/fuse").permissions().mode() & 0o7777;
            fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).expect("chmod /dev/fuse");
        }
        held.0 += 1;
        DevFuseOpen(())
    }
}

impl Drop for DevFuseOpen {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let mut held = DEV_FUSE.lock().unwrap_or_else(|e| e.into_inner());
        held.0 -= 1;
        if held.0 == 0 {
            let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(held.1));
        }
    }
}
