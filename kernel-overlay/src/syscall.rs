//! The syscalls the mount logic needs, behind a trait.
//!
//! [`RealSyscall`] calls the kernel; [`RecordingSyscall`] records every call and fails the ones it is
//! told to, so the decisions in [`crate::mount_with`] (which `fsconfig` calls happen in which order,
//! when to fall back to legacy `mount(2)`, when to use relative paths) are unit-tested without root.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::io::Errno;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags};

/// Mount-related syscalls. `Fd` is the handle for a filesystem context or a detached mount.
pub trait Syscall {
    type Fd;

    /// `fsopen(fs_type, FSOPEN_CLOEXEC)`.
    fn fsopen(&self, fs_type: &str) -> Result<Self::Fd, Errno>;
    /// `fsconfig(fs, FSCONFIG_SET_STRING, key, value, 0)`.
    fn fsconfig_set_string(&self, fs: &Self::Fd, key: &str, value: &OsStr) -> Result<(), Errno>;
    /// `fsconfig(fs, FSCONFIG_SET_FLAG, key, NULL, 0)`.
    fn fsconfig_set_flag(&self, fs: &Self::Fd, key: &str) -> Result<(), Errno>;
    /// `fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0)`.
    fn fsconfig_create(&self, fs: &Self::Fd) -> Result<(), Errno>;
    /// `fsmount(fs, FSMOUNT_CLOEXEC, read_only ? MOUNT_ATTR_RDONLY : 0)`.
    fn fsmount(&self, fs: &Self::Fd, read_only: bool) -> Result<Self::Fd, Errno>;
    /// `move_mount(mnt, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`.
    fn move_mount(&self, mnt: &Self::Fd, target: &Path) -> Result<(), Errno>;
    /// Messages the kernel logged on a filesystem context (drained); best effort.
    fn fs_log(&self, fs: &Self::Fd) -> Vec<String>;
    /// Legacy `mount("overlay", target, "overlay", flags, data)`. When `cwd` is set, the call runs
    /// with that working directory (relative lower paths in `data` resolve against it) without
    /// changing the working directory of any other thread.
    fn mount(&self, target: &Path, read_only: bool, data: &[u8], cwd: Option<&Path>) -> Result<(), Errno>;
    /// `umount2(target, UMOUNT_NOFOLLOW | (detach ? MNT_DETACH : 0))`.
    fn umount(&self, target: &Path, detach: bool) -> Result<(), Errno>;
    /// `open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC)`: a handle whose number names the directory as
    /// `/proc/self/fd/N` while it is open.
    fn open_path(&self, dir: &Path) -> Result<Self::Fd, Errno>;
    /// The descriptor number of a handle from [`Syscall::open_path`].
    fn fd_number(&self, fd: &Self::Fd) -> i32;
    /// The text of `/proc/self/mountinfo`.
    fn mountinfo(&self) -> io::Result<String>;
}

/// The kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSyscall;

impl Syscall for RealSyscall {
    type Fd = OwnedFd;

    fn fsopen(&self, fs_type: &str) -> Result<OwnedFd, Errno> {
        rustix::mount::fsopen(fs_type, FsOpenFlags::FSOPEN_CLOEXEC)
    }

    fn fsconfig_set_string(&self, fs: &OwnedFd, key: &str, value: &OsStr) -> Result<(), Errno> {
        rustix::mount::fsconfig_set_string(fs, key, value)
    }

    fn fsconfig_set_flag(&self, fs: &OwnedFd, key: &str) -> Result<(), Errno> {
        rustix::mount::fsconfig_set_flag(fs, key)
    }

    fn fsconfig_create(&self, fs: &OwnedFd) -> Result<(), Errno> {
        rustix::mount::fsconfig_create(fs)
    }

    fn fsmount(&self, fs: &OwnedFd, read_only: bool) -> Result<OwnedFd, Errno> {
        let attr = if read_only { MountAttrFlags::MOUNT_ATTR_RDONLY } else { MountAttrFlags::empty() };
        rustix::mount::fsmount(fs, FsMountFlags::FSMOUNT_CLOEXEC, attr)
    }

    fn move_mount(&self, mnt: &OwnedFd, target: &Path) -> Result<(), Errno> {
        rustix::mount::move_mount(mnt, "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
    }

    fn fs_log(&self, fs: &OwnedFd) -> Vec<String> {
        // Each read returns one message ("e overlayfs: ...", "w ...", "i ...") until ENODATA.
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while out.len() < 32 {
            match rustix::io::read(fs, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_string()),
            }
        }
        out
    }

    fn mount(&self, target: &Path, read_only: bool, data: &[u8], cwd: Option<&Path>) -> Result<(), Errno> {
        let data = std::ffi::CString::new(data).map_err(|_| Errno::INVAL)?;
        let flags = if read_only { MountFlags::RDONLY } else { MountFlags::empty() };
        let do_mount = || rustix::mount::mount("overlay", target, "overlay", flags, data.as_c_str());
        let Some(cwd) = cwd else {
            return do_mount();
        };
        // The working directory is shared by all threads of a process (they share one fs_struct),
        // so chdir here could break concurrent relative-path users elsewhere in strata. Instead a
        // short-lived thread unshares its fs_struct (CLONE_FS; allowed in multi-threaded processes)
        // and changes only its own working directory. Unlike fork(), this needs no
        // async-signal-safety discipline and returns the errno directly.
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: unsharing CLONE_FS only gives this thread a private copy of its cwd, root
                // and umask; it does not affect file descriptors or memory. The thread runs nothing
                // but the chdir and mount below and then exits.
                unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }?;
                rustix::process::chdir(cwd)?;
                do_mount()
            })
            .join()
            .unwrap_or(Err(Errno::INTR))
        })
    }

    fn umount(&self, target: &Path, detach: bool) -> Result<(), Errno> {
        let mut flags = UnmountFlags::NOFOLLOW;
        if detach {
            flags |= UnmountFlags::DETACH;
        }
        rustix::mount::unmount(target, flags)
    }

    fn open_path(&self, dir: &Path) -> Result<OwnedFd, Errno> {
        use rustix::fs::{Mode, OFlags};
        rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
    }

    fn fd_number(&self, fd: &OwnedFd) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(fd)
    }

    fn mountinfo(&self) -> io::Result<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
    }
}

/// One recorded syscall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Fsopen { fs_type: String },
    FsconfigString { key: String, value: OsString },
    FsconfigFlag { key: String },
    FsconfigCreate,
    Fsmount { read_only: bool },
    MoveMount { target: PathBuf },
    Mount { target: PathBuf, read_only: bool, data: Vec<u8>, cwd: Option<PathBuf> },
    Umount { target: PathBuf, detach: bool },
    OpenPath { dir: PathBuf },
}

type Matcher = Box<dyn Fn(&Call) -> bool + Send + Sync>;

/// Records calls instead of making them; fails calls that match a rule added with
/// [`RecordingSyscall::fail_when`] (first matching rule wins). A failed call is still recorded.
#[derive(Default)]
pub struct RecordingSyscall {
    calls: Mutex<Vec<Call>>,
    rules: Mutex<Vec<(Matcher, Errno)>>,
    mountinfo: Mutex<String>,
    next_fd: Mutex<u32>,
}

impl std::fmt::Debug for RecordingSyscall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingSyscall").field("calls", &self.calls()).finish_non_exhaustive()
    }
}

impl RecordingSyscall {
    pub fn new() -> Self {
        Self::default()
    }

    /// Make every call for which `matches` is true fail with `errno`.
    pub fn fail_when(self, matches: impl Fn(&Call) -> bool + Send + Sync + 'static, errno: Errno) -> Self {
        self.rules.lock().unwrap().push((Box::new(matches), errno));
        self
    }

    /// The text returned by [`Syscall::mountinfo`].
    pub fn with_mountinfo(self, text: &str) -> Self {
        *self.mountinfo.lock().unwrap() = text.to_string();
        self
    }

    /// The calls made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: Call) -> Result<(), Errno> {
        let verdict = self.rules.lock().unwrap().iter().find(|(m, _)| m(&call)).map(|(_, e)| *e);
        self.calls.lock().unwrap().push(call);
        verdict.map_or(Ok(()), Err)
    }

    fn fd(&self) -> u32 {
        let mut n = self.next_fd.lock().unwrap();
        *n += 1;
        *n
    }
}

impl Syscall for RecordingSyscall {
    type Fd = u32;

    fn fsopen(&self, fs_type: &str) -> Result<u32, Errno> {
        self.record(Call::Fsopen { fs_type: fs_type.into() })?;
        Ok(self.fd())
    }

    fn fsconfig_set_string(&self, _fs: &u32, key: &str, value: &OsStr) -> Result<(), Errno> {
        self.record(Call::FsconfigString { key: key.into(), value: value.into() })
    }

    fn fsconfig_set_flag(&self, _fs: &u32, key: &str) -> Result<(), Errno> {
        self.record(Call::FsconfigFlag { key: key.into() })
    }

    fn fsconfig_create(&self, _fs: &u32) -> Result<(), Errno> {
        self.record(Call::FsconfigCreate)
    }

    fn fsmount(&self, _fs: &u32, read_only: bool) -> Result<u32, Errno> {
        self.record(Call::Fsmount { read_only })?;
        Ok(self.fd())
    }

    fn move_mount(&self, _mnt: &u32, target: &Path) -> Result<(), Errno> {
        self.record(Call::MoveMount { target: target.into() })
    }

    fn fs_log(&self, _fs: &u32) -> Vec<String> {
        Vec::new()
    }

    fn mount(&self, target: &Path, read_only: bool, data: &[u8], cwd: Option<&Path>) -> Result<(), Errno> {
        self.record(Call::Mount {
            target: target.into(),
            read_only,
            data: data.to_vec(),
            cwd: cwd.map(Path::to_path_buf),
        })
    }

    fn umount(&self, target: &Path, detach: bool) -> Result<(), Errno> {
        self.record(Call::Umount { target: target.into(), detach })
    }

    fn open_path(&self, dir: &Path) -> Result<u32, Errno> {
        self.record(Call::OpenPath { dir: dir.into() })?;
        Ok(self.fd())
    }

    fn fd_number(&self, fd: &u32) -> i32 {
        *fd as i32 + 2
    }

    fn mountinfo(&self) -> io::Result<String> {
        Ok(self.mountinfo.lock().unwrap().clone())
    }
}
