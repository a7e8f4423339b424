//! The pause process that holds a user's namespace, and joining it.
//!
//! [`enter`] (under an flock on `$XDG_RUNTIME_DIR/strata/pause.lock`): when `pause.pid` names a
//! live pause process of this user, join its user and mount namespaces; otherwise start one
//! (this binary again, with the hidden first argument [`PAUSE_ARG`]: it unshares a user and a
//! mount namespace and says so on its stdout), write its mappings (`newuidmap`/`newgidmap` with
//! the user's subordinate ranges, or the user's own ids alone when there are none), let it go
//! (it detaches and sleeps until killed), record its pid and join it.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::subid::{parse_subid, suggested_line, SubIdRange};
use super::{checked_runtime_base, make_private_dir, UserNsError};

/// The hidden first argument that makes this binary the pause process ([`pause_main`]).
pub const PAUSE_ARG: &str = "__strata-pause";

const SUBUID: &str = "/etc/subuid";
const SUBGID: &str = "/etc/subgid";

fn sys(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> UserNsError {
    let step = step.into();
    move |source| UserNsError::Sys { step, source }
}

/// The pause process: unshare a user and a mount namespace, report on stdout, wait for the
/// go-ahead on stdin (the parent writes the mappings meanwhile), then detach and sleep until
/// killed. Never returns.
pub fn pause_main() -> ! {
    let mut out = std::io::stdout();
    // SAFETY: unshare(2) with namespace flags only; this process has one thread (it was just
    // executed and has started none).
    let r = unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) };
    if r != 0 {
        let _ =
            writeln!(out, "error unshare(CLONE_NEWUSER|CLONE_NEWNS): {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    if writeln!(out, "ready").and_then(|()| out.flush()).is_err() {
        std::process::exit(1);
    }
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() || line.trim() != "go" {
        std::process::exit(1);
    }
    // Hold nothing of the parent's: no terminal, no pipe, no working directory.
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let _ = rustix::process::setsid();
    let _ = std::env::set_current_dir("/");
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGPIPE, libc::SIGTSTP] {
        // SAFETY: SIG_IGN needs no handler code.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    loop {
        // SAFETY: pause(2) only waits for a signal.
        unsafe { libc::pause() };
    }
}

/// `dir`'s `pause.lock`, held exclusively: whoever holds it alone starts, joins or stops the
/// pause process.
fn lock_pause(dir: &Path) -> Result<File, UserNsError> {
    let lock_path = dir.join("pause.lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| UserNsError::Io { path: lock_path.clone(), source })?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| UserNsError::Io { path: lock_path.clone(), source: e.into() })?;
    Ok(lock)
}

/// Join this user's namespace, starting its pause process first when there is none. Call it
/// before any thread starts: the kernel lets only a single-threaded process join a user
/// namespace.
pub fn enter() -> Result<(), UserNsError> {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let dir = checked_runtime_base(uid)?.join("strata");
    make_private_dir(&dir)?;
    let lock = lock_pause(&dir)?;
    let pid_file = dir.join("pause.pid");
    let pid = match live_pause(&pid_file, uid) {
        Some(pid) => pid,
        None => start_pause(&pid_file, uid, gid)?,
    };
    join(pid)?;
    drop(lock);
    Ok(())
}

/// The pid in `pid_file` when it is a pause process of user `uid` (not a recycled pid) in a
/// user namespace other than this process's.
fn live_pause(pid_file: &Path, uid: u32) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if std::fs::metadata(&proc).ok()?.uid() != uid {
        return None;
    }
    let cmdline = std::fs::read(proc.join("cmdline")).ok()?;
    if !cmdline.split(|b| *b == 0).any(|a| a == PAUSE_ARG.as_bytes()) {
        return None;
    }
    let theirs = std::fs::metadata(proc.join("ns/user")).ok()?.ino();
    let ours = std::fs::metadata("/proc/self/ns/user").ok()?.ino();
    (theirs != ours).then_some(pid)
}

/// The pid of this user's pause process when one runs; starts nothing. Called outside the
/// namespace (before [`enter`]).
pub fn running_pause() -> Result<Option<i32>, UserNsError> {
    let uid = rustix::process::geteuid().as_raw();
    let pid_file = checked_runtime_base(uid)?.join("strata/pause.pid");
    Ok(live_pause(&pid_file, uid))
}

/// Stop this user's pause process from inside its namespace, as `podman system migrate`
/// does: the next command starts a new one, with the mappings `/etc/subuid` and `/etc/subgid`
/// give then. Under the pause lock, so no command joins it meanwhile; waits (10 s at most)
/// until it is gone, then removes `pause.pid`. Its pid, or `None` when none ran.
pub fn stop_pause() -> Result<Option<i32>, UserNsError> {
    let dir = super::runtime_dir().ok_or(UserNsError::NotInNamespace)?;
    let _lock = lock_pause(&dir)?;
    let pid_file = dir.join("pause.pid");
    let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse::<i32>().ok()) else {
        return Ok(None);
    };
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
    let ino = |p: &Path| std::fs::metadata(p).map(|m| m.ino()).ok();
    let ours = ino(Path::new("/proc/self/ns/user"));
    if !cmdline.split(|b| *b == 0).any(|a| a == PAUSE_ARG.as_bytes()) || ino(&proc.join("ns/user")) != ours {
        // Gone already, or not the process that holds this namespace.
        tracing::debug!(pid, "the pause process is gone already");
        return remove_pid_file(&pid_file).map(|()| None);
    }
    let target = rustix::process::Pid::from_raw(pid).ok_or(UserNsError::NotInNamespace)?;
    rustix::process::kill_process(target, rustix::process::Signal::KILL)
        .map_err(|e| UserNsError::Sys { step: format!("stopping pause process {pid}"), source: e.into() })?;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while proc.exists() {
        if std::time::Instant::now() >= until {
            return Err(UserNsError::Pause { reason: format!("process {pid} did not exit within 10 s") });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    remove_pid_file(&pid_file)?;
    tracing::debug!(pid, "stopped the pause process");
    Ok(Some(pid))
}

fn remove_pid_file(pid_file: &Path) -> Result<(), UserNsError> {
    match std::fs::remove_file(pid_file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(UserNsError::Io { path: pid_file.to_path_buf(), source }),
    }
}

/// The name of user `uid` in /etc/passwd, else `$USER`.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
        })
        .or_else(|| std::env::var("USER").ok())
}

/// Start the pause process, map its namespace, record its pid; returns the pid.
fn start_pause(pid_file: &Path, uid: u32, gid: u32) -> Result<i32, UserNsError> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("/proc/self/exe")
        .arg0("strata")
        .arg(PAUSE_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| UserNsError::Pause { reason: format!("cannot run /proc/self/exe: {e}") })?;
    let pid = child.id() as i32;
    let result = (|| {
        let mut line = String::new();
        if let Some(out) = child.stdout.as_mut() {
            BufReader::new(out).read_line(&mut line).map_err(sys("reading the pause process's report"))?;
        }
        if line.trim() != "ready" {
            let reason = match line.trim() {
                "" => "it exited before unsharing its namespaces".to_string(),
                l => l.trim_start_matches("error ").to_string(),
            };
            return Err(UserNsError::Pause { reason });
        }
        write_maps(pid, uid, gid)?;
        let stdin = child.stdin.as_mut().ok_or_else(|| UserNsError::Pause { reason: "no stdin".into() })?;
        stdin.write_all(b"go\n").map_err(sys("letting the pause process go"))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    drop(child.stdin.take());
    let tmp = pid_file.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{pid}\n"))
        .and_then(|()| std::fs::rename(&tmp, pid_file))
        .map_err(|source| UserNsError::Io { path: pid_file.to_path_buf(), source })?;
    tracing::debug!(pid, "started the pause process holding the user namespace");
    Ok(pid)
}

/// `newuidmap`/`newgidmap` arguments: `0 ID 1` then each subordinate range from 1 up.
fn map_args(pid: i32, own: u32, ranges: &[SubIdRange]) -> Vec<String> {
    let mut args = vec![pid.to_string(), "0".into(), own.to_string(), "1".into()];
    let mut next: u64 = 1;
    for r in ranges {
        args.extend([next.to_string(), r.start.to_string(), r.count.to_string()]);
        next += u64::from(r.count);
    }
    args
}

/// Write process `pid`'s uid and gid maps: the user's subordinate ranges through the setuid
/// helpers, or, when the user has none, the user's own ids alone (which needs no helper), with a
/// warning that names the line to add to /etc/subuid and /etc/subgid.
fn write_maps(pid: i32, uid: u32, gid: u32) -> Result<(), UserNsError> {
    let name = user_name(uid).ok_or(UserNsError::NoUserName { uid })?;
    let read = |f: &str| std::fs::read_to_string(f).unwrap_or_default();
    let (subuid_text, subgid_text) = (read(SUBUID), read(SUBGID));
    let subuids = parse_subid(&subuid_text, &name, uid);
    let subgids = parse_subid(&subgid_text, &name, uid);
    if subuids.is_empty() || subgids.is_empty() {
        tracing::warn!(
            "no subordinate ids for user {name} in {SUBUID} and {SUBGID}: only uid {uid} and gid {gid} \
             are mapped (as 0), and layers owned by anyone else cannot be unpacked. As root, add \
             `{}` to {SUBUID} and `{}` to {SUBGID} (`usermod --add-subuids 100000-165535 \
             --add-subgids 100000-165535 {name}`), then stop the pause process (strata system \
             migrate)",
            suggested_line(&subuid_text, &name),
            suggested_line(&subgid_text, &name),
        );
        let write = |file: &str, text: String| {
            let path = format!("/proc/{pid}/{file}");
            std::fs::write(&path, text).map_err(|source| UserNsError::Io { path: path.into(), source })
        };
        write("uid_map", format!("0 {uid} 1\n"))?;
        write("setgroups", "deny\n".into())?;
        return write("gid_map", format!("0 {gid} 1\n"));
    }
    run_map_tool("newuidmap", &map_args(pid, uid, &subuids))?;
    run_map_tool("newgidmap", &map_args(pid, gid, &subgids))
}

fn run_map_tool(tool: &'static str, args: &[String]) -> Result<(), UserNsError> {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| UserNsError::NoMapTool { tool, source })?;
    if !out.status.success() {
        return Err(UserNsError::MapToolFailed {
            tool,
            args: args.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Join the user and then the mount namespace of process `pid`, keeping the working directory
/// (joining a mount namespace moves it to the namespace's root).
fn join(pid: i32) -> Result<(), UserNsError> {
    let cwd = std::env::current_dir().ok();
    let open = |ns: &str| {
        let path = PathBuf::from(format!("/proc/{pid}/ns/{ns}"));
        File::open(&path).map_err(|source| UserNsError::Io { path, source })
    };
    let (user, mnt) = (open("user")?, open("mnt")?);
    for (fd, flag, what) in [(&user, libc::CLONE_NEWUSER, "user"), (&mnt, libc::CLONE_NEWNS, "mount")] {
        // SAFETY: setns(2) on a namespace descriptor this function opened.
        if unsafe { libc::setns(fd.as_raw_fd(), flag) } != 0 {
            let e = std::io::Error::last_os_error();
            let hint = if e.raw_os_error() == Some(libc::EINVAL) && flag == libc::CLONE_NEWUSER {
                " (a process with more than one thread cannot join a user namespace)"
            } else {
                ""
            };
            return Err(UserNsError::Sys {
                step: format!("joining the {what} namespace of pause process {pid}{hint}"),
                source: e,
            });
        }
    }
    if let Some(cwd) = cwd {
        if let Err(e) = std::env::set_current_dir(&cwd) {
            tracing::warn!(cwd = %cwd.display(), error = %e, "the working directory is not reachable in the user namespace; using /");
        }
    }
    Ok(())
}

/// `strata unshare [CMD...]`: run CMD (default `$SHELL`, else `/bin/sh`) in this process's
/// namespace, as `podman unshare` does; replaces this process. Only in rootless mode.
pub fn unshare_command(cmd: &[OsString]) -> Result<std::convert::Infallible, UserNsError> {
    use std::os::unix::process::CommandExt;
    if !super::is_rootless() {
        return Err(UserNsError::UnshareAsRoot);
    }
    let shell = std::env::var_os("SHELL").filter(|s| !s.is_empty()).unwrap_or_else(|| "/bin/sh".into());
    let (prog, args) = match cmd.split_first() {
        Some((p, a)) => (p.clone(), a),
        None => (shell, &[][..]),
    };
    let e = Command::new(&prog).args(args).exec();
    Err(UserNsError::Exec { cmd: prog.to_string_lossy().into_owned(), source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newuidmap_arguments() {
        let ranges = [SubIdRange { start: 100000, count: 65536 }, SubIdRange { start: 300000, count: 10 }];
        assert_eq!(map_args(42, 1000, &ranges).join(" "), "42 0 1000 1 1 100000 65536 65537 300000 10");
        assert_eq!(map_args(7, 1000, &[]).join(" "), "7 0 1000 1");
    }
}
