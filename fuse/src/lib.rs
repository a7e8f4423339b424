//! strata-fuse: a userspace union filesystem with kernel OverlayFS semantics over the on-disk
//! format shared with kernel overlayfs (whiteout = char device 0:0, opaque directory =
//! `trusted.overlay.opaque=y`; OCI `.wh.NAME` and `user.overlay.opaque` are read too).

mod cache;
mod format;
mod fs;
mod handles;
mod inode;
mod listing;
mod mutate;
mod overlay;
mod sys;

use std::path::PathBuf;
use std::time::Duration;

pub use format::is_private_xattr;
pub use fs::{FsConfig, StrataFs};

/// Errors of option parsing and mounting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing option: {0}")]
    Missing(&'static str),
    #[error("bad value for option {0}: {1}")]
    BadValue(String, String),
    #[error("usage: {0}")]
    Usage(String),
    #[error("layer setup")]
    Layers(#[source] std::io::Error),
    #[error("mount {0}")]
    Mount(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Parsed command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub fs: FsConfig,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub debug: bool,
    pub threads: usize,
    pub fsname: String,
    /// Mount flags passed to the kernel (ro, nodev, nosuid, noexec, noatime...).
    pub flags: Vec<fuser::MountOption>,
    /// Options that were not understood (ignored with a warning).
    pub ignored: Vec<String>,
}

fn split_opts(s: &str) -> Vec<String> {
    // Options are comma separated; a backslash escapes a comma inside a value.
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == ',' {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

impl Options {
    /// Parse a fuse-overlayfs compatible command line (without argv[0]):
    /// `[-f] [-d] -o lowerdir=L1:L2,upperdir=U,workdir=W[,OPTS] MOUNTPOINT` or the mount.fuse
    /// form `SOURCE MOUNTPOINT -o OPTS`.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Options, Error> {
        let mut it = args.into_iter();
        let mut positional = Vec::new();
        let mut opts = Vec::new();
        let mut foreground = false;
        let mut debug = false;
        let mut ignored = Vec::new();
        while let Some(a) = it.next() {
            match a.as_str() {
                "-f" => foreground = true,
                "-d" | "--debug" => {
                    debug = true;
                    foreground = true;
                }
                "-o" => {
                    let v = it.next().ok_or_else(|| Error::Usage("-o needs a value".into()))?;
                    opts.extend(split_opts(&v));
                }
                // mount(8) helper flags: sloppy, no mtab, verbose; -t/-N take a value.
                "-s" | "-n" | "-v" => {}
                "-t" | "-N" => {
                    it.next();
                }
                s if s.starts_with("-o") && s.len() > 2 => opts.extend(split_opts(&s[2..])),
                s if s.starts_with('-') && s.len() > 1 => ignored.push(s.to_string()),
                _ => positional.push(a),
            }
        }
        let (source, mountpoint) = match positional.len() {
            1 => (None, positional.remove(0)),
            2 => {
                let m = positional.remove(1);
                (Some(positional.remove(0)), m)
            }
            _ => {
                return Err(Error::Usage(
                    "strata-fuse [-f] [-d] -o lowerdir=L1:L2,upperdir=U,workdir=W MOUNTPOINT".into(),
                ))
            }
        };
        let mut lowers = Vec::new();
        let mut upper = None;
        let mut work = None;
        let mut ttl = Duration::from_secs(86400);
        let mut passthrough = true;
        let mut volatile = false;
        let mut threads = 4usize;
        let mut flags = Vec::new();
        let mut fsname =
            source.filter(|s| !s.is_empty() && s != "none").unwrap_or_else(|| "strata-fuse".into());
        for o in opts {
            let (k, v) = match o.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (o.clone(), None),
            };
            use fuser::MountOption as M;
            match (k.as_str(), v) {
                ("lowerdir", Some(v)) => {
                    lowers = v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect();
                }
                ("upperdir", Some(v)) => upper = Some(PathBuf::from(v)),
                ("workdir", Some(v)) => work = Some(PathBuf::from(v)),
                ("fsname", Some(v)) => fsname = v,
                ("timeout", Some(v)) => {
                    let secs: f64 = v.parse().map_err(|_| Error::BadValue(k.clone(), v.clone()))?;
                    if !(0.0..=1e9).contains(&secs) {
                        return Err(Error::BadValue(k, v));
                    }
                    ttl = Duration::from_secs_f64(secs);
                }
                ("threads", Some(v)) => {
                    threads = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(|| Error::BadValue(k.clone(), v.clone()))?;
                }
                ("passthrough", Some(v)) => passthrough = v != "off" && v != "0" && v != "false",
                ("nopassthrough", None) => passthrough = false,
                ("volatile", None) => volatile = true,
                ("ro", None) => flags.push(M::RO),
                ("rw", None) => {}
                ("dev", None) => flags.push(M::Dev),
                ("nodev", None) => flags.push(M::NoDev),
                ("suid", None) => flags.push(M::Suid),
                ("nosuid", None) => flags.push(M::NoSuid),
                ("exec", None) => flags.push(M::Exec),
                ("noexec", None) => flags.push(M::NoExec),
                ("atime", None) => flags.push(M::Atime),
                ("noatime", None) => flags.push(M::NoAtime),
                ("sync", None) => flags.push(M::Sync),
                ("async", None) => flags.push(M::Async),
                ("dirsync", None) => flags.push(M::DirSync),
                // Always on when run as root.
                ("allow_other", None) | ("allow_root", None) | ("default_permissions", None) => {}
                _ => ignored.push(o),
            }
        }
        if lowers.is_empty() {
            return Err(Error::Missing("lowerdir"));
        }
        if upper.is_some() && work.is_none() {
            return Err(Error::Missing("workdir"));
        }
        if upper.is_none() {
            work = None;
            if !flags.contains(&fuser::MountOption::RO) {
                flags.push(fuser::MountOption::RO);
            }
        }
        Ok(Options {
            fs: FsConfig { lowers, upper, work, ttl, passthrough, volatile },
            mountpoint: PathBuf::from(mountpoint),
            foreground,
            debug,
            threads,
            fsname,
            flags,
            ignored,
        })
    }

    /// The fuser session configuration.
    pub fn session_config(&self) -> fuser::Config {
        let mut c = fuser::Config::default();
        let mut mo = vec![fuser::MountOption::FSName(self.fsname.clone())];
        mo.extend(self.flags.iter().cloned());
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        // fuser hands `Subtype` only to fusermount; mounting directly (as root) it must be a
        // kernel option, or the mount table says "fuse" instead of "fuse.strata-fuse".
        mo.push(if root {
            fuser::MountOption::CUSTOM("subtype=strata-fuse".into())
        } else {
            fuser::MountOption::Subtype("strata-fuse".into())
        });
        if root {
            mo.push(fuser::MountOption::DefaultPermissions);
            c.acl = fuser::SessionACL::All;
            mo.push(fuser::MountOption::Dev);
            mo.push(fuser::MountOption::Suid);
        }
        let mut seen = std::collections::HashSet::new();
        let mut dedup = Vec::new();
        for o in mo {
            let conflict = match &o {
                fuser::MountOption::Dev => seen.contains(&fuser::MountOption::NoDev),
                fuser::MountOption::Suid => seen.contains(&fuser::MountOption::NoSuid),
                _ => false,
            };
            if !conflict && seen.insert(o.clone()) {
                dedup.push(o);
            }
        }
        c.mount_options = dedup;
        c.n_threads = Some(self.threads);
        c.clone_fd = true;
        c
    }
}

/// Mount and return the session (the mount is live and initialised when this returns).
pub fn mount(opts: &Options) -> Result<fuser::Session<StrataFs>, Error> {
    let mut cfg = opts.fs.clone();
    let canon = |p: &PathBuf| {
        std::fs::canonicalize(p).map_err(|e| Error::BadValue(p.display().to_string(), e.to_string()))
    };
    cfg.lowers = cfg.lowers.iter().map(canon).collect::<Result<_, _>>()?;
    cfg.upper = cfg.upper.as_ref().map(canon).transpose()?;
    cfg.work = cfg.work.as_ref().map(canon).transpose()?;
    let fs = StrataFs::new(&cfg).map_err(Error::Layers)?;
    let slot = fs.notifier_slot();
    let session = fuser::Session::new(fs, &opts.mountpoint, &opts.session_config())
        .map_err(|e| Error::Mount(opts.mountpoint.clone(), e))?;
    let _ = slot.set(session.notifier());
    Ok(session)
}
