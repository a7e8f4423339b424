//! A runtime bundle's spec: `config.json` built from an image config with oci-spec's runtime
//! types and the user's [`ProcessOverrides`]: the command, environment, working directory, user
//! (resolved in the container's root filesystem, never the host's), volumes, capabilities and
//! rlimits; and the check that the command exists and is executable there before the runtime is
//! asked ([`check_command`], [`check_exec`]).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxCapabilities, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, Process, Root, Spec,
    User,
};
use serde_json::Value;

use super::{Result, RuntimeError};

/// What a user overrides about a container's process, as docker and podman take it on `run`
/// and `exec`: the one path from a command line to the runtime spec (`run`, `start` and `exec`
/// all take it). Anything a field leaves unset comes from the image config (`run`, `start`) or
/// the container's process (`exec`).
#[derive(Debug, Clone, Default)]
pub struct ProcessOverrides {
    /// The command. For `run`, it replaces the image's Cmd (the Entrypoint stays, as with
    /// `docker run IMAGE CMD...`); for `exec`, it is the whole command.
    pub args: Vec<String>,
    /// `-e K=V` (replaces the image's K), or `-e K` (this process's K, skipped when unset), as
    /// podman takes them; applied in order after the image's Env (after the container's, for
    /// `exec`).
    pub env: Vec<String>,
    /// `-w DIR`: replaces the image's WorkingDir (absolute).
    pub workdir: Option<String>,
    /// `--user USER[:GROUP]`: replaces the image's User (names or ids, names resolved in the
    /// container's root filesystem, see [`resolve_user`]).
    pub user: Option<String>,
    /// `-t`: allocate a terminal (only when stdin is one).
    pub terminal: bool,
    /// `-i`: the process reads this one's stdin (otherwise /dev/null).
    pub interactive: bool,
    /// `-v HOST:CTR[:OPTIONS]` bind mounts, in order, as given (see [`parse_volume`]); `run`
    /// only: a running container's mounts are fixed.
    pub volumes: Vec<String>,
}

/// What the spec holds beyond the user's overrides: set by strata for the container.
#[derive(Debug, Clone, Default)]
pub struct SpecSettings {
    pub hostname: String,
    /// The parsed [`ProcessOverrides::volumes`] (see [`parse_volume`]).
    pub volumes: Vec<Volume>,
    /// `linux.cgroupsPath`: where runc makes the container's cgroup in every hierarchy (runc's
    /// default, `/<id>`, when `None`).
    pub cgroups_path: Option<String>,
}

/// A bind mount of a host path into the container (`-v HOST:CTR[:OPTIONS]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The host path, resolved (no symlinks).
    pub source: PathBuf,
    /// Absolute path in the container.
    pub destination: String,
    pub read_only: bool,
}

/// Parse `-v HOST:CTR[:OPTIONS]` as podman does for bind mounts: HOST an existing absolute path
/// (named volumes are not supported), CTR absolute, OPTIONS a comma list of `ro`, `rw`, and the
/// SELinux relabel flags `z`/`Z`, accepted and ignored (strata does no relabelling).
pub fn parse_volume(value: &str) -> Result<Volume> {
    let bad = |reason: String| RuntimeError::Volume { value: value.to_string(), reason };
    let parts: Vec<&str> = value.split(':').collect();
    let (host, dest, opts) = match parts.as_slice() {
        [h, d] => (*h, *d, ""),
        [h, d, o] => (*h, *d, *o),
        _ => return Err(bad("expected HOST:CONTAINER[:OPTIONS]".into())),
    };
    if !host.starts_with('/') {
        return Err(bad(format!("the host path {host:?} is not absolute (named volumes are not supported)")));
    }
    if !dest.starts_with('/') {
        return Err(bad(format!("the container path {dest:?} is not absolute")));
    }
    let mut read_only = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "z" | "Z" => {}
            other => return Err(bad(format!("unknown option {other:?} (ro, rw, z, Z)"))),
        }
    }
    let source = fs::canonicalize(host).map_err(|e| bad(format!("host path {host}: {e}")))?;
    Ok(Volume { source, destination: dest.to_string(), read_only })
}

/// Apply `-e` settings to `env` (K=V strings).
pub(super) fn apply_env(env: &mut Vec<String>, settings: &[String]) -> Result<()> {
    for s in settings {
        let (k, v) = match s.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match std::env::var(s) {
                Ok(v) => (s.clone(), v),
                Err(_) => continue,
            },
        };
        if k.is_empty() {
            return Err(RuntimeError::Env { value: s.clone(), reason: "empty variable name" });
        }
        if k.contains('\0') || v.contains('\0') {
            return Err(RuntimeError::Env { value: s.clone(), reason: "contains a NUL byte" });
        }
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(ek, _)| ek) != k);
        env.push(format!("{k}={v}"));
    }
    Ok(())
}

/// The capabilities a container gets by default: Docker's and Podman's default set, enough for
/// package managers (chown, mknod, setuid) and no more.
pub const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Largest /etc/passwd or /etc/group read.
const MAX_DB_FILE: u64 = 16 << 20;

/// Read `rel` as the container would see it: every symlink on the way (`etc` itself may be one)
/// resolves inside `rootfs` (openat2 `RESOLVE_IN_ROOT`), never to the host's files. Only a regular
/// file of sane size is read; anything else reads as empty.
fn read_in_root(rootfs: &Path, rel: &str) -> String {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let Ok(root) =
        rustix::fs::open(rootfs, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
    else {
        return String::new();
    };
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let Ok(fd) = rustix::fs::openat2(&root, rel, flags, Mode::empty(), resolve) else {
        return String::new();
    };
    let file = fs::File::from(fd);
    match file.metadata() {
        Ok(md) if md.is_file() && md.len() <= MAX_DB_FILE => {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::Read::take(&file, MAX_DB_FILE), &mut s);
            s
        }
        _ => String::new(),
    }
}

/// Resolve `user[:group]` (names or numbers) against the rootfs's /etc/passwd and /etc/group.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<(u32, u32, Vec<u32>)> {
    let err = |reason: &str| RuntimeError::User { user: spec.to_string(), reason: reason.to_string() };
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |name: &str| read_in_root(rootfs, &format!("etc/{name}"));
    let passwd = read("passwd");
    let group = read("group");
    let (uid, mut gid) = if u.is_empty() {
        (0, 0)
    } else if let Ok(n) = u.parse::<u32>() {
        let gid = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[2] == u)
            .and_then(|f| f[3].parse().ok())
            .unwrap_or(0);
        (n, gid)
    } else {
        let f = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == u)
            .ok_or_else(|| err("no such user in the image's /etc/passwd"))?;
        (
            f[2].parse().map_err(|_| err("bad uid in /etc/passwd"))?,
            f[3].parse().map_err(|_| err("bad gid in /etc/passwd"))?,
        )
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| err("no such group in the image's /etc/group"))?,
        };
    }
    // Supplementary groups: those that list the user by name.
    let uname = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == uid.to_string());
    let mut extra = Vec::new();
    if let Some(f) = uname {
        for l in group.lines() {
            let gf: Vec<&str> = l.split(':').collect();
            if gf.len() > 3 && gf[3].split(',').any(|m| m == f[0]) {
                if let Ok(n) = gf[2].parse::<u32>() {
                    if n != gid {
                        extra.push(n);
                    }
                }
            }
        }
    }
    Ok((uid, gid, extra))
}

/// Build the runtime spec for `rootfs` from the image config JSON, with the user's overrides
/// (`overrides.volumes` is not read: `settings.volumes` are those parsed).
pub fn build_spec(
    image_config: &Value,
    rootfs: &Path,
    overrides: &ProcessOverrides,
    settings: &SpecSettings,
) -> Result<Spec> {
    let cfg = image_config.get("config").cloned().unwrap_or(Value::Null);
    let entrypoint = strings(cfg.get("Entrypoint"));
    let cmd = if overrides.args.is_empty() { strings(cfg.get("Cmd")) } else { overrides.args.clone() };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(RuntimeError::NoCommand);
    }
    let mut env = strings(cfg.get("Env"));
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if overrides.terminal && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={}", settings.hostname));
    }
    apply_env(&mut env, &overrides.env)?;
    if let Some(w) = &overrides.workdir {
        if !w.starts_with('/') {
            return Err(RuntimeError::Workdir { dir: w.clone() });
        }
    }
    let cwd = overrides
        .workdir
        .as_deref()
        .or_else(|| cfg.get("WorkingDir").and_then(|v| v.as_str()))
        .filter(|s| !s.is_empty())
        .unwrap_or("/");
    let user_spec =
        overrides.user.as_deref().or_else(|| cfg.get("User").and_then(|v| v.as_str())).unwrap_or("");
    let (uid, gid, extra) = resolve_user(rootfs, user_spec)?;
    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    if !extra.is_empty() {
        user.set_additional_gids(Some(extra));
    }
    let caps: HashSet<Capability> = DEFAULT_CAPS.iter().copied().collect();
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(caps.clone()));
    c.set_effective(Some(caps.clone()));
    c.set_permitted(Some(caps));
    c.set_inheritable(None);
    c.set_ambient(None);
    let mut process = Process::default();
    process.set_terminal(Some(overrides.terminal));
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(cwd));
    process.set_user(user);
    process.set_capabilities(Some(c));
    process.set_rlimits(Some(rlimits()));
    let mut root = Root::default();
    root.set_path(rootfs.to_path_buf());
    root.set_readonly(Some(false));
    let mut spec = Spec::default();
    if !settings.volumes.is_empty() {
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for v in &settings.volumes {
            let mode = if v.read_only { "ro" } else { "rw" };
            let mut m = oci_spec::runtime::Mount::default();
            m.set_destination(PathBuf::from(&v.destination));
            m.set_typ(Some("bind".into()));
            m.set_source(Some(v.source.clone()));
            m.set_options(Some(vec!["rbind".into(), mode.into(), "rprivate".into()]));
            mounts.push(m);
        }
        spec.set_mounts(Some(mounts));
    }
    if let Some(path) = &settings.cgroups_path {
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_cgroups_path(Some(PathBuf::from(path)));
        spec.set_linux(Some(linux));
    }
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    spec.set_hostname(Some(settings.hostname.clone()));
    Ok(spec)
}

/// RLIMIT_NOFILE as containers expect it, but never above this process's hard limit: raising a
/// hard limit needs CAP_SYS_RESOURCE, and runc fails the whole start when it cannot.
fn rlimits() -> Vec<PosixRlimit> {
    let want: u64 = 1 << 20;
    let hard =
        rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum.unwrap_or(want).min(want);
    PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .hard(hard)
        .soft(hard)
        .build()
        .map(|r| vec![r])
        .unwrap_or_default()
}

/// Write `bundle/config.json`.
pub fn write_bundle(bundle: &Path, spec: &Spec) -> Result<()> {
    fs::create_dir_all(bundle).map_err(|e| RuntimeError::Io { path: bundle.to_path_buf(), source: e })?;
    let p = bundle.join("config.json");
    let tmp = bundle.join("config.json.tmp");
    let mut rootless;
    let spec = if crate::userns::is_rootless() {
        rootless = spec.clone();
        super::rootless::adapt(&mut rootless, crate::userns::current());
        &rootless
    } else {
        spec
    };
    let data = serde_json::to_vec_pretty(spec).map_err(|e| RuntimeError::Config(e.to_string()))?;
    fs::write(&tmp, data).map_err(|e| RuntimeError::Io { path: tmp.clone(), source: e })?;
    fs::rename(&tmp, &p).map_err(|e| RuntimeError::Io { path: p, source: e })
}

/// What looking a path up in the root filesystem found.
enum Probe {
    Executable,
    /// Not there (ENOENT, ENOTDIR on the way).
    Missing,
    /// There, but a directory or without any execute bit; the reason.
    NotExecutable(String),
    /// Could not tell (a loop, a path the runtime mounts over): leave it to the runtime.
    Unknown,
}

/// Paths the runtime mounts its own filesystems on: what the image holds there is not what the
/// container sees.
fn runtime_mounted(p: &Path) -> bool {
    ["/proc", "/dev", "/sys"].iter().any(|m| p.starts_with(m))
}

fn probe(root: &std::os::fd::OwnedFd, p: &Path) -> Probe {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    if runtime_mounted(p) {
        return Probe::Unknown;
    }
    let rel = p.strip_prefix("/").unwrap_or(p);
    // As the container will resolve it: symlinks, absolute ones too, stay inside the rootfs.
    let fd = match rustix::fs::openat2(
        root,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Probe::Missing,
        Err(_) => return Probe::Unknown,
    };
    match rustix::fs::fstat(&fd) {
        Ok(st) => {
            let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
            if ft == rustix::fs::FileType::Directory {
                Probe::NotExecutable("a directory".into())
            } else if st.st_mode & 0o111 == 0 {
                Probe::NotExecutable(format!("no execute permission (mode {:04o})", st.st_mode & 0o7777))
            } else {
                Probe::Executable
            }
        }
        Err(_) => Probe::Unknown,
    }
}

/// Check, before starting the runtime, that the spec's command exists and is executable in its
/// root filesystem, looked up the way runc looks it up (Go's `exec.LookPath` inside the
/// container: a name with a '/' is taken as a path from the working directory, a bare name is
/// searched in the container's `$PATH`, skipping entries that are not executable). A missing
/// command is [`RuntimeError::CommandNotFound`], a directory or a file without execute bits
/// [`RuntimeError::CommandNotExecutable`]; anything this cannot decide is left to the runtime.
pub fn check_command(spec: &Spec) -> Result<()> {
    let (Some(root), Some(process)) = (spec.root().as_ref(), spec.process().as_ref()) else {
        return Ok(());
    };
    let Some(cmd) = process.args().as_ref().and_then(|a| a.first()) else { return Ok(()) };
    let Ok(rootfd) = rustix::fs::open(
        root.path(),
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return Ok(());
    };
    let cwd = Path::new("/").join(process.cwd());
    if cmd.contains('/') {
        return match probe(&rootfd, &cwd.join(cmd)) {
            Probe::Missing => Err(RuntimeError::CommandNotFound { cmd: cmd.clone(), in_path: false }),
            Probe::NotExecutable(reason) => {
                Err(RuntimeError::CommandNotExecutable { cmd: cmd.clone(), reason })
            }
            Probe::Executable | Probe::Unknown => Ok(()),
        };
    }
    let env = process.env().as_deref().unwrap_or_default();
    // The last PATH= wins, as with the runtime's setenv of each entry in turn.
    let path = env.iter().rev().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("");
    for dir in path.split(':') {
        if !dir.starts_with('/') {
            // Relative entries (and "" for the working directory): Go refuses or allows them
            // depending on its version; the runtime decides.
            return Ok(());
        }
        match probe(&rootfd, &Path::new(dir).join(cmd)) {
            Probe::Executable | Probe::Unknown => return Ok(()),
            Probe::Missing | Probe::NotExecutable(_) => {}
        }
    }
    Err(RuntimeError::CommandNotFound { cmd: cmd.clone(), in_path: true })
}

/// Check, before `runc exec`, that the command of `spec` exists and is executable in the
/// container, as [`check_command`] does for `run`: the container's process spec
/// (`BUNDLE/config.json`: its root, environment and working directory) with `spec`'s command,
/// `-e` settings and `-w` applied as runc applies them. A bundle that cannot be read leaves the
/// question to the runtime (its log is read after a failed exec, see [`exec`]).
pub fn check_exec(bundle: &Path, spec: &ProcessOverrides) -> Result<()> {
    let Ok(mut full) = Spec::load(bundle.join("config.json")) else { return Ok(()) };
    let Some(mut process) = full.process().clone() else { return Ok(()) };
    let mut env = process.env().clone().unwrap_or_default();
    // runc exec appends its --env entries to the process's environment.
    let mut extra = Vec::new();
    apply_env(&mut extra, &spec.env)?;
    env.extend(extra);
    process.set_env(Some(env));
    process.set_args(Some(spec.args.clone()));
    if let Some(c) = &spec.workdir {
        // runc exec (unlike run) does not create a missing working directory: it fails with
        // its own raw message. Said here, by name.
        if let Some(root) = full.root().as_ref() {
            if let Ok(rootfd) = rustix::fs::open(
                root.path(),
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            ) {
                let missing = match probe(&rootfd, Path::new(c)) {
                    Probe::Missing => Some("no such directory in the container"),
                    Probe::Unknown => None,
                    _ if !is_dir_in(&rootfd, Path::new(c)) => Some("not a directory"),
                    _ => None,
                };
                if let Some(reason) = missing {
                    return Err(RuntimeError::ExecWorkdir { dir: c.clone(), reason });
                }
            }
        }
        process.set_cwd(PathBuf::from(c));
    }
    full.set_process(Some(process));
    check_command(&full)
}

/// Whether `p` (absolute, resolved inside the root as the container would) is a directory.
fn is_dir_in(root: &std::os::fd::OwnedFd, p: &Path) -> bool {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let rel = p.strip_prefix("/").unwrap_or(p);
    rustix::fs::openat2(
        root,
        rel,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_from_image_config() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(dir.path().join("etc/group"), "root:x:0:\napp:x:1001:\nextra:x:2000:app\n").unwrap();
        let cfg = serde_json::json!({"config": {
            "Entrypoint": ["/bin/ep"], "Cmd": ["default"], "Env": ["A=1"], "WorkingDir": "/w", "User": "app"}});
        let process = ProcessOverrides { args: vec!["x".into(), "y".into()], ..Default::default() };
        let settings = SpecSettings {
            hostname: "h".into(),
            cgroups_path: Some("/strata-0123abcd-c".into()),
            ..Default::default()
        };
        let spec = build_spec(&cfg, dir.path(), &process, &settings).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/strata-0123abcd-c")));
        // The default spec's namespaces stay.
        assert!(linux.namespaces().as_ref().is_some_and(|n| !n.is_empty()));
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &vec!["/bin/ep".to_string(), "x".into(), "y".into()]);
        assert_eq!(p.cwd(), &PathBuf::from("/w"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1001));
        assert_eq!(p.user().additional_gids().as_ref().unwrap(), &vec![2000]);
        let env = p.env().as_ref().unwrap();
        assert!(env.iter().any(|e| e.starts_with("PATH=")));
        assert!(env.contains(&"A=1".to_string()));
        assert_eq!(spec.hostname().as_deref(), Some("h"));
        let caps = p.capabilities().as_ref().unwrap().bounding().as_ref().unwrap();
        assert!(caps.contains(&Capability::Mknod) && !caps.contains(&Capability::SysAdmin));
        let nofile = &p.rlimits().as_ref().unwrap()[0];
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        assert!(hard.is_none_or(|h| nofile.hard() <= h));
    }

    /// An image whose `etc` is a symlink to the host's `/etc` (absolute) resolves users from its
    /// own tree, never from the host's passwd.
    #[test]
    fn users_resolve_inside_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
        // On the host, a user every Debian system has: it must not be found through the link.
        assert!(fs::read_to_string("/etc/passwd").unwrap().contains("\nbin:"));
        assert!(matches!(resolve_user(dir.path(), "bin"), Err(RuntimeError::User { .. })));
        // A link that stays inside the rootfs is followed as the container would.
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("real/etc")).unwrap();
        fs::write(dir.path().join("real/etc/passwd"), "app:x:7:8::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/real/etc", dir.path().join("etc")).unwrap();
        assert_eq!(resolve_user(dir.path(), "app").unwrap(), (7, 8, vec![]));
    }

    fn spec_running(rootfs: &Path, args: &[&str], env: &[&str], cwd: &str) -> Spec {
        let mut spec = Spec::default();
        let mut root = Root::default();
        root.set_path(rootfs.to_path_buf());
        spec.set_root(Some(root));
        let mut p = Process::default();
        p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        p.set_env(Some(env.iter().map(|s| s.to_string()).collect()));
        p.set_cwd(PathBuf::from(cwd));
        spec.set_process(Some(p));
        spec
    }

    #[test]
    fn command_lookup_in_the_rootfs() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in ["bin", "usr/bin", "w/sub"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        let exe = |p: &str, mode: u32| {
            fs::write(r.join(p), b"#!/bin/sh\n").unwrap();
            fs::set_permissions(r.join(p), fs::Permissions::from_mode(mode)).unwrap();
        };
        exe("bin/sh", 0o755);
        exe("usr/bin/plain", 0o644);
        exe("w/sub/tool", 0o700);
        // An absolute symlink resolves inside the rootfs, never on the host.
        std::os::unix::fs::symlink("/bin/sh", r.join("usr/bin/link")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/env", r.join("usr/bin/hostlink")).unwrap();
        let path = ["PATH=/usr/bin:/bin"];
        let check = |args: &[&str], env: &[&str], cwd: &str| check_command(&spec_running(r, args, env, cwd));
        assert!(check(&["sh"], &path, "/").is_ok());
        assert!(check(&["link"], &path, "/").is_ok());
        assert!(check(&["/bin/sh", "-c", "x"], &path, "/").is_ok());
        assert!(check(&["sub/tool"], &path, "/w").is_ok());
        assert!(check(&["./tool"], &path, "/w/sub").is_ok());
        let e = check(&["nope"], &path, "/").unwrap_err();
        assert!(matches!(&e, RuntimeError::CommandNotFound { in_path: true, .. }), "{e}");
        assert_eq!(e.exit_code(), Some(127));
        assert_eq!(e.to_string(), "executable file not found in $PATH: nope");
        // Not executable in PATH: skipped, as Go's LookPath does, so not found.
        assert!(matches!(check(&["plain"], &path, "/"), Err(RuntimeError::CommandNotFound { .. })));
        assert!(matches!(check(&["hostlink"], &path, "/"), Err(RuntimeError::CommandNotFound { .. })));
        // The last PATH= wins.
        assert!(check(&["sh"], &["PATH=/bin", "PATH=/usr/bin"], "/").is_err());
        let e = check(&["/nope"], &path, "/").unwrap_err();
        assert_eq!(e.to_string(), "executable file not found: /nope");
        let e = check(&["/usr/bin/plain"], &path, "/").unwrap_err();
        assert_eq!(e.exit_code(), Some(126));
        assert!(e.to_string().contains("mode 0644"), "{e}");
        let e = check(&["/bin"], &path, "/").unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        assert!(check(&["/bin/sh/x"], &path, "/").is_err());
        // What the runtime mounts over, and relative PATH entries: left to the runtime.
        assert!(check(&["/proc/self/exe"], &path, "/").is_ok());
        assert!(check(&["nope"], &["PATH=/usr/bin:bin"], "/").is_ok());
        // Escapes in the command come out escaped.
        let e = check(&["\x1b[31mx"], &path, "/").unwrap_err();
        assert!(!e.to_string().contains('\x1b'), "{e}");
    }

    #[test]
    fn users() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve_user(dir.path(), "").unwrap(), (0, 0, vec![]));
        assert_eq!(resolve_user(dir.path(), "12:34").unwrap(), (12, 34, vec![]));
        assert!(matches!(resolve_user(dir.path(), "nobody"), Err(RuntimeError::User { .. })));
        let cfg = serde_json::json!({"config": {}});
        let none = build_spec(&cfg, dir.path(), &ProcessOverrides::default(), &SpecSettings::default());
        assert!(matches!(none, Err(RuntimeError::NoCommand)));
    }
}
