//! Persistent network namespaces, as `ip netns add` makes them: a fresh namespace
//! (`unshare(CLONE_NEWNET)` in a thread of its own, so the process's other threads stay where
//! they are) bind-mounted from `/proc/thread-self/ns/net` onto a file. The namespace lives as long
//! as that mount (or a process in it); [`remove`] unmounts and unlinks. After a reboot the files
//! remain but are no mounts any more: [`is_netns`] tells them apart.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// `NSFS_MAGIC`: the file system type of a namespace file.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Create a new network namespace and pin it at `path` (a new file; its directory must exist).
pub fn create(path: &Path) -> io::Result<()> {
    fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    let target = path.to_path_buf();
    let pinned = std::thread::Builder::new()
        .name("strata-netns".into())
        .spawn(move || -> io::Result<()> {
            // SAFETY: only the network namespace is unshared, for this thread alone, which ends
            // right after; no file descriptor table is unshared, so no descriptor goes stale.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }?;
            loopback_up()?;
            rustix::mount::mount_bind("/proc/thread-self/ns/net", &target)?;
            Ok(())
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the netns thread panicked")));
    if let Err(e) = pinned {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Bring `lo` up in the calling thread's network namespace, as the CNI `loopback` plugin does
/// (one ioctl here instead of a plugin process per container).
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned (and closed) by `sock` right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: ifreq is plain old data; all zeroes is a valid (empty) request.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `req`, which outlives the call.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union's flags member is what SIOCGIFFLAGS just filled in.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads `req`, which outlives the call.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `path` is a mounted namespace file (false when it is missing or a plain file).
// `f_type`'s width differs between architectures.
#[allow(clippy::unnecessary_cast)]
pub fn is_netns(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type as i64 == NSFS_MAGIC)
}

/// Unmount (lazily: a process may still hold it) and unlink `path`; a missing one, or a plain
/// file left by a reboot, is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    if is_netns(path) {
        match rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The namespace files in `dir` (none when it does not exist).
pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            let mut out: Vec<PathBuf> = entries.map(|e| e.map(|e| e.path())).collect::<io::Result<_>>()?;
            out.sort();
            Ok(out)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root (unshare, mount); skipped otherwise.
    #[test]
    fn create_is_a_new_namespace_and_remove_leaves_nothing() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("ns1");
        create(&p).unwrap();
        assert!(is_netns(&p));
        let mine = fs::metadata("/proc/self/ns/net").unwrap();
        let pinned = fs::metadata(&p).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(mine.ino(), pinned.ino(), "the pinned namespace is this process's own");
        assert_eq!(create(&p).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(list(t.path()).unwrap(), vec![p.clone()]);
        remove(&p).unwrap();
        assert!(!p.exists());
        remove(&p).unwrap();
        // A plain file (what a reboot leaves) is no namespace and is removed too.
        fs::write(&p, b"").unwrap();
        assert!(!is_netns(&p));
        remove(&p).unwrap();
        assert!(list(t.path()).unwrap().is_empty());
    }
}
