//! strata-fuse: a userspace union filesystem with kernel OverlayFS semantics over the on-disk
//! format shared with kernel overlayfs (whiteout = char device 0:0, opaque directory =
//! `trusted.overlay.opaque=y`; OCI `.wh.NAME` and `user.overlay.opaque` are read too).

mod cache;
pub mod contents;
mod format;
mod fs;
mod handles;
mod inode;
mod listing;
mod mutate;
mod overlay;
mod readlog;
#[cfg(feature = "lazy")]
pub mod remote;
mod stats;
mod sys;
pub mod uring;

use std::path::PathBuf;
use std::time::Duration;

pub use format::is_private_xattr;
pub use fs::{FsConfig, StrataFs};
pub use stats::{Op, Stats};

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
    #[error("FUSE over io_uring")]
    Uring(#[source] std::io::Error),
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
    /// The transport: FUSE over io_uring or `/dev/fuse` reads (`uring=`; the default comes
    /// from `STRATA_FUSE_URING` when set, else auto).
    pub uring: uring::Mode,
    /// Remote lowers (`remote=<diff_id>@<store root>`, repeated): see `remote` (feature `lazy`).
    pub remotes: Vec<RemoteOpt>,
    /// Background completion of the remote lowers (`lazy_background=off|on|PERCENT`; default on).
    pub lazy_background: Option<String>,
}

/// `remote=<diff_id>@<root>`: the lower that is remote layer `diff_id`'s skeleton in the strata
/// store at `root` reads its files' contents from the registry (feature `lazy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOpt {
    pub diff_id: String,
    pub root: PathBuf,
}

/// Split `s` at each `sep` no backslash escapes, keeping the escapes, as overlayfs splits its
/// options at `,` and lowerdir at `:` (`ovl_next_opt`, `ovl_split_lowerdirs`).
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
            continue;
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// Drop each escaping backslash and keep the character it escapes, as overlayfs does with a
/// path once it is split out (`ovl_unescape`): `\,` `\:` `\\` are what
/// `kernel_overlay::escape_path` writes.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut esc = false;
    for c in s.chars() {
        if c == '\\' && !esc {
            esc = true;
            continue;
        }
        esc = false;
        out.push(c);
    }
    out
}

/// The comma-separated options of one `-o`; a backslash escapes a comma (or a colon, in lowerdir)
/// inside a value, as in the kernel's overlayfs options. The escapes are kept for the values.
fn split_opts(s: &str) -> Vec<String> {
    split_unescaped(s, ',').into_iter().filter(|s| !s.is_empty()).collect()
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
        let mut uring = match std::env::var("STRATA_FUSE_URING") {
            Ok(v) => uring::Mode::parse(&v)
                .ok_or_else(|| Error::BadValue("STRATA_FUSE_URING".into(), v.clone()))?,
            Err(_) => uring::Mode::Auto,
        };
        let mut flags = Vec::new();
        let mut remotes = Vec::new();
        let mut lazy_background = None;
        let mut read_log = None;
        let mut fsname =
            source.filter(|s| !s.is_empty() && s != "none").unwrap_or_else(|| "strata-fuse".into());
        for o in opts {
            let (k, raw) = match o.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v)),
                None => (o.clone(), None),
            };
            if let ("lowerdir", Some(raw)) = (k.as_str(), raw) {
                // Split at unescaped colons first, then each path unescaped.
                lowers = split_unescaped(raw, ':')
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| PathBuf::from(unescape(s)))
                    .collect();
                continue;
            }
            let v = raw.map(unescape);
            use fuser::MountOption as M;
            match (k.as_str(), v) {
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
                ("uring", None) => uring = uring::Mode::On,
                ("uring", Some(v)) => {
                    uring = uring::Mode::parse(&v).ok_or_else(|| Error::BadValue(k.clone(), v.clone()))?
                }
                ("volatile", None) => volatile = true,
                ("remote", Some(v)) => {
                    let (diff_id, root) =
                        v.split_once('@').ok_or_else(|| Error::BadValue(k.clone(), v.clone()))?;
                    remotes.push(RemoteOpt { diff_id: diff_id.to_string(), root: PathBuf::from(root) });
                }
                ("lazy_background", Some(v)) => lazy_background = Some(v),
                ("readlog", Some(v)) => read_log = Some(PathBuf::from(v)),
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
            fs: FsConfig { lowers, upper, work, ttl, passthrough, volatile, contents: Vec::new(), read_log },
            mountpoint: PathBuf::from(mountpoint),
            foreground,
            debug,
            threads,
            fsname,
            flags,
            ignored,
            uring,
            remotes,
            lazy_background,
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

/// A live mount: its `/dev/fuse` session (not serving yet), its request counts, and the ring
/// transport to start once the process serves (threads do not survive the daemon's fork).
pub struct Mounted {
    pub session: fuser::Session<uring::Shared>,
    pub stats: std::sync::Arc<Stats>,
    pub rings: Option<RingStart>,
    /// The remote lowers' contents, to flush once the session ends.
    pub contents: Vec<std::sync::Arc<dyn contents::LowerContents>>,
}

/// The ring queues of a mount that negotiated FUSE over io_uring.
#[derive(Debug)]
pub struct RingStart {
    dev: std::sync::Arc<std::os::fd::OwnedFd>,
    negotiated: uring::Negotiated,
    rings: uring::Rings,
    acl: fuser::SessionACL,
    pub mode: uring::Mode,
}

impl RingStart {
    /// Register the queues; requests go through them once every queue has.
    pub fn start(self) -> Result<(), Error> {
        uring::start(self.dev, &self.negotiated, self.rings, self.acl).map_err(Error::Uring)
    }
}

/// Mount (the mount is live and initialised when this returns).
pub fn mount(opts: &Options) -> Result<Mounted, Error> {
    let mut cfg = opts.fs.clone();
    let canon = |p: &PathBuf| {
        std::fs::canonicalize(p).map_err(|e| Error::BadValue(p.display().to_string(), e.to_string()))
    };
    cfg.lowers = cfg.lowers.iter().map(canon).collect::<Result<_, _>>()?;
    cfg.upper = cfg.upper.as_ref().map(canon).transpose()?;
    cfg.work = cfg.work.as_ref().map(canon).transpose()?;
    let contents = attach_remotes(&mut cfg, &opts.remotes, opts.lazy_background.as_deref())?;
    let uring_error = |m: String| Error::Uring(std::io::Error::new(std::io::ErrorKind::Unsupported, m));
    let want_uring = match opts.uring {
        uring::Mode::Off => false,
        uring::Mode::Auto => uring::kernel_enabled(),
        uring::Mode::On if uring::kernel_enabled() => true,
        uring::Mode::On => {
            return Err(uring_error(format!(
                "uring=on, but the kernel does not allow it ({} is not Y)",
                uring::ENABLE_URING
            )))
        }
    };
    let rings = uring::Rings { depth: opts.threads.clamp(2, 16) };
    let max_message = if want_uring { uring::max_message(rings.depth).map_err(Error::Uring)? } else { 0 };
    let fs = StrataFs::new(&cfg).map_err(Error::Layers)?;
    let slot = fs.notifier_slot();
    let device = fs.device_slot();
    let stats = fs.stats();
    let negotiated = std::sync::Arc::new(std::sync::OnceLock::new());
    let shared = uring::Shared::device(fs, want_uring, max_message, negotiated.clone());
    let config = opts.session_config();
    let session = fuser::Session::new(shared, &opts.mountpoint, &config)
        .map_err(|e| Error::Mount(opts.mountpoint.clone(), e))?;
    let _ = slot.set(session.notifier());
    use std::os::fd::AsFd;
    let dev = std::sync::Arc::new(session.as_fd().try_clone_to_owned()?);
    let _ = device.set(dev.clone());
    let rings = match negotiated.get() {
        Some(n) if n.uring => {
            Some(RingStart { dev, negotiated: n.clone(), rings, acl: config.acl, mode: opts.uring })
        }
        _ if opts.uring == uring::Mode::On => {
            return Err(uring_error("uring=on, but FUSE_INIT did not negotiate FUSE_OVER_IO_URING".into()))
        }
        _ => None,
    };
    Ok(Mounted { session, stats, rings, contents })
}

#[cfg(feature = "lazy")]
fn attach_remotes(
    cfg: &mut FsConfig,
    remotes: &[RemoteOpt],
    background: Option<&str>,
) -> Result<Vec<std::sync::Arc<dyn contents::LowerContents>>, Error> {
    remote::attach(cfg, remotes, background)
}

#[cfg(not(feature = "lazy"))]
fn attach_remotes(
    _cfg: &mut FsConfig,
    remotes: &[RemoteOpt],
    _background: Option<&str>,
) -> Result<Vec<std::sync::Arc<dyn contents::LowerContents>>, Error> {
    match remotes.first() {
        None => Ok(Vec::new()),
        Some(r) => Err(Error::BadValue(
            "remote".into(),
            format!("{}: this strata-fuse was built without the `lazy` feature", r.diff_id),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        Options::parse(args.iter().map(|s| s.to_string())).expect("parse")
    }

    /// Paths escaped as the kernel's overlayfs takes them (`kernel_overlay::escape_path`): `\,`
    /// inside a value, `\:` inside a lowerdir path, `\\` for a backslash.
    #[test]
    fn escaped_paths_as_overlayfs() {
        let o = parse(&[
            "-o",
            r"lowerdir=/r\,1/a\:b:/plain:/back\\slash,upperdir=/u\,p\:x,workdir=/w\\,volatile",
            "-o",
            r"fsname=strata:/s\,t",
            "/mnt",
        ]);
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(o.fs.lowers, paths(&["/r,1/a:b", "/plain", r"/back\slash"]));
        assert_eq!(o.fs.upper, Some(PathBuf::from("/u,p:x")));
        assert_eq!(o.fs.work, Some(PathBuf::from(r"/w\")));
        assert!(o.fs.volatile);
        assert_eq!(o.fsname, "strata:/s,t");
        assert_eq!(o.mountpoint, PathBuf::from("/mnt"));
        assert!(o.ignored.is_empty(), "{:?}", o.ignored);
    }

    /// What kernel_overlay::escape_path writes reads back as the same paths.
    #[test]
    fn round_trip_with_kernel_overlay_escapes() {
        let lowers = ["/a,b:c/l1", r"/x\y:/l2", "/plain"];
        let esc = |p: &str| String::from_utf8(kernel_overlay::escape_path(std::path::Path::new(p))).unwrap();
        let lowerdir = lowers.iter().map(|p| esc(p)).collect::<Vec<_>>().join(":");
        let opts = format!("lowerdir={lowerdir},upperdir={},workdir={}", esc("/u,:"), esc("/w"));
        let o = parse(&["-o", &opts, "/m"]);
        assert_eq!(o.fs.lowers, lowers.iter().map(PathBuf::from).collect::<Vec<_>>());
        assert_eq!(o.fs.upper, Some(PathBuf::from("/u,:")));
        assert_eq!(o.fs.work, Some(PathBuf::from("/w")));
    }

    /// Unescaped command lines read as before: options at commas, lowers at colons, empty
    /// entries skipped, unknown options kept for the warning, the mount.fuse form.
    #[test]
    fn plain_command_lines() {
        let o = parse(&["strata", "/m", "-o", "lowerdir=/a::/b,,ro,bogus=1"]);
        assert_eq!(o.fs.lowers, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(o.fs.upper, None);
        assert!(o.flags.contains(&fuser::MountOption::RO));
        assert_eq!(o.ignored, vec!["bogus=1".to_string()]);
        assert_eq!(o.fsname, "strata");
        let o = parse(&["-o", "lowerdir=/a,uring=off", "/m"]);
        assert_eq!(o.uring, uring::Mode::Off);
        let o = parse(&["-o", "lowerdir=/a,uring", "/m"]);
        assert_eq!(o.uring, uring::Mode::On);
        assert!(matches!(Options::parse(["-o".to_string(), "lowerdir=/a,uring=maybe".into(), "/m".into()]),
            Err(Error::BadValue(k, _)) if k == "uring"));
        assert!(matches!(
            Options::parse(["-o".to_string(), "upperdir=/u".into(), "/m".into()]),
            Err(Error::Missing("lowerdir"))
        ));
    }
}
