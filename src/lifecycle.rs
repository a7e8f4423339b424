//! The lifecycle verbs docker and podman users type: `start`, `kill`, `restart`, `wait`,
//! `pause`/`unpause`, the state `ps -a` shows, `system prune`, `version` and `info`.
//!
//! runc's state says whether a container's process runs, never how it ended, so the exit code is
//! recorded where it is observed: by a foreground `run` or `start -a` (the parent of `runc run`),
//! and for a detached container by its *monitor*, a small `strata container monitor` process
//! that starts it (`runc run --detach`) as a child subreaper, so the container's process becomes
//! its child when runc exits and its status is reaped there (as podman's conmon does). The code
//! is kept in `containers/<name>/exit`; the monitor then deletes runc's state and unmounts the
//! container, so a container that ended on its own leaves nothing running or mounted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::container::{self, Backend, ContainerError};
use crate::run::{self, RunError};
use crate::runtime::{runc, spec, ProcessOverrides, RuntimeError, SpecSettings};
use crate::store::{RemovedImage, Store, StoreError};

/// Lifecycle errors: which step failed, for which container.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("container {name:?} is not running")]
    NotRunning { name: String },
    #[error("container {name:?} is not paused")]
    NotPaused { name: String },
    #[error("container {name:?} is paused; unpause it first")]
    Paused { name: String },
    #[error(
        "{}: not a signal (a name such as TERM or SIGTERM, or a number 1-64)",
        crate::image::printable(value, 40)
    )]
    BadSignal { value: String },
    #[error("container {name}")]
    Container { name: String, source: Box<ContainerError> },
    #[error("container {name}")]
    Runtime { name: String, source: RuntimeError },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("container {name}")]
    Store { name: String, source: StoreError },
    #[error("container {name}: image config")]
    Config {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Monitor(#[from] crate::monitor::MonitorError),
    #[error("container {name:?} stopped, but its exit code was not recorded")]
    NoExitCode { name: String },
    #[error("container {name:?} did not stop within {secs} s")]
    WontStop { name: String, secs: u64 },
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("image {name}")]
    Image { name: String, source: StoreError },
    #[error("gc")]
    Gc(#[source] crate::images::ImagesError),
    #[error("measuring {path}")]
    Measure { path: PathBuf, source: Box<crate::snapshot::SnapshotError> },
    #[error(transparent)]
    Root(#[from] StoreError),
    #[error("container {name}: network")]
    Network { name: String, source: crate::netsetup::NetSetupError },
}

impl LifecycleError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            LifecycleError::NotRunning { .. }
            | LifecycleError::NotPaused { .. }
            | LifecycleError::Paused { .. }
            | LifecycleError::WontStop { .. } => ErrorKind::FailedPrecondition,
            LifecycleError::BadSignal { .. } | LifecycleError::Config { .. } => ErrorKind::InvalidArgument,
            LifecycleError::Container { source, .. } => source.kind(),
            LifecycleError::Store { source, .. }
            | LifecycleError::Image { source, .. }
            | LifecycleError::Root(source) => source.kind(),
            LifecycleError::Gc(e) => e.kind(),
            LifecycleError::Measure { source, .. } => source.kind(),
            LifecycleError::Io { source, .. } => ErrorKind::of_io(source),
            LifecycleError::Monitor(e) => e.kind(),
            LifecycleError::Network { source, .. } => source.kind(),
            LifecycleError::Runtime { .. } | LifecycleError::Run(_) | LifecycleError::NoExitCode { .. } => {
                ErrorKind::Internal
            }
        }
    }
}

pub type Result<T, E = LifecycleError> = std::result::Result<T, E>;

fn cerr(name: &str) -> impl Fn(ContainerError) -> LifecycleError + '_ {
    move |source| LifecycleError::Container { name: name.to_string(), source: Box::new(source) }
}

fn berr(name: &str) -> impl Fn(RuntimeError) -> LifecycleError + '_ {
    move |source| LifecycleError::Runtime { name: name.to_string(), source }
}

/// What a container is doing, as `ps -a` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Created (or removed from runc's state without a recorded end): never ran.
    Created,
    Running,
    Paused,
    Exited,
}

/// A container's state and, once it exited, its exit code (`None`: not recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub state: State,
    pub exit_code: Option<i32>,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.state, self.exit_code) {
            (State::Created, _) => f.write_str("created"),
            (State::Running, _) => f.write_str("running"),
            (State::Paused, _) => f.write_str("paused"),
            (State::Exited, Some(c)) => write!(f, "exited ({c})"),
            (State::Exited, None) => f.write_str("exited"),
        }
    }
}

/// Exit codes are the container's running state: kept by [`crate::container`].
pub use crate::container::{record_exit, recorded_exit};

/// Where a container's exit code is kept.
fn exit_path(store: &Store, name: &str) -> PathBuf {
    container::dir(store, name).join("exit")
}

fn clear_exit(store: &Store, name: &str) -> Result<()> {
    let p = exit_path(store, name);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LifecycleError::Io { path: p, source: e }),
        _ => Ok(()),
    }
}

/// The state of container `name`: running or paused while a `strata run` holds it or runc runs
/// it; otherwise exited when it has run (with the recorded code), created when it never did.
pub fn status(store: &Store, name: &str) -> Result<Status> {
    let gone = || LifecycleError::Container {
        name: name.to_string(),
        source: Box::new(ContainerError::NotFound(name.to_string())),
    };
    container::row(store, name)?.ok_or_else(gone)?;
    let (state, id) = container::runc_ids(store, name);
    if container::is_running(store, name).map_err(cerr(name))?.is_some() {
        let paused = runc::runc_status(&state, &id).as_deref() == Some("paused");
        let state = if paused { State::Paused } else { State::Running };
        return Ok(Status { state, exit_code: None });
    }
    if let Some(code) = recorded_exit(store, name) {
        return Ok(Status { state: State::Exited, exit_code: Some(code) });
    }
    let stopped = runc::runc_status(&state, &id).as_deref() == Some("stopped");
    Ok(Status { state: if stopped { State::Exited } else { State::Created }, exit_code: None })
}

/// How `start` runs the container.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// `-a`: in the foreground, its output on ours; `start` returns its exit code. Otherwise
    /// detached, its output appended to its log ([`container::log_path`]).
    pub attach: bool,
    /// Used when the container is not mounted yet.
    pub backend: Backend,
    /// The strata binary whose `container monitor` watches a detached container (see the
    /// module documentation); the running executable when `None`.
    pub monitor: Option<PathBuf>,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions { attach: false, backend: Backend::Auto, monitor: None }
    }
}

/// The bundle the container runs: the one its last run wrote (its command, environment, user,
/// volumes), pointed at where it is mounted now; for a container that never ran, one built from
/// its image's config as `run` builds it without options. Never a terminal: a detached process
/// cannot have one, and an attached one gets our stdout and stderr, as `docker start -a`.
fn start_spec(store: &Store, name: &str, rootfs: &Path) -> Result<oci_spec::runtime::Spec> {
    let bundle_dir = container::dir(store, name).join("bundle");
    let mut spec = match oci_spec::runtime::Spec::load(bundle_dir.join("config.json")) {
        Ok(spec) => spec,
        Err(_) => {
            let config = image_config(store, name)?;
            let settings = SpecSettings { hostname: name.chars().take(63).collect(), ..Default::default() };
            spec::build_spec(&config, rootfs, &ProcessOverrides::default(), &settings).map_err(berr(name))?
        }
    };
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(rootfs.to_path_buf());
    spec.set_root(Some(root));
    if let Some(mut p) = spec.process().clone() {
        p.set_terminal(Some(false));
        spec.set_process(Some(p));
    }
    // The cgroup of this root's container, also for a bundle an older strata wrote without one.
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(PathBuf::from(container::cgroups_path(store, name))));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// The config of the image container `name` stands on.
fn image_config(store: &Store, name: &str) -> Result<serde_json::Value> {
    let row =
        container::row(store, name)?.ok_or_else(|| cerr(name)(ContainerError::NotFound(name.to_string())))?;
    let blob = store
        .read_blob(&row.config_digest)
        .map_err(|source| LifecycleError::Store { name: name.to_string(), source })?;
    serde_json::from_slice(&blob).map_err(|source| LifecycleError::Config { name: name.to_string(), source })
}

/// Start a created or stopped container (`docker start`): mounted if it is not, its last
/// command run again (over the same upper dir). Attached, returns the container's exit code
/// once it ends (and unmounts it then, as `run`); detached, returns 0 once it started.
pub fn start(store: &mut Store, name: &str, opts: &StartOptions) -> Result<i32> {
    // Attached, the signals this process takes go to the container, as with `run` (see
    // crate::signals).
    let mut trap = match opts.attach {
        true => Some(
            crate::signals::Trap::install()
                .map_err(|source| RunError::Signals { name: name.to_string(), source })?,
        ),
        false => None,
    };
    crate::netsetup::release_leaked(store);
    // Marked running from here: umount, rm, prune and another start refuse meanwhile.
    let guard = container::start_run(store, name).map_err(cerr(name))?;
    let nerr = |source| LifecycleError::Network { name: name.to_string(), source };
    let mut detached = false;
    let result = (|| -> Result<i32> {
        let rootfs = match container::mounted_at(store, name).map_err(cerr(name))? {
            Some(at) => at,
            None => container::mount(store, name, None, opts.backend).map_err(cerr(name))?,
        };
        let mut spec = start_spec(store, name, &rootfs)?;
        spec::check_command(&spec).map_err(berr(name))?;
        // Its network again, as run or create gave it (ports recorded then).
        let net_opts = crate::netsetup::load(store, name).map_err(nerr)?;
        let config = image_config(store, name)?;
        let net = crate::netsetup::prepare(store, name, &net_opts, &config, &rootfs).map_err(nerr)?;
        crate::netsetup::apply(&mut spec, &net);
        let bundle_dir = container::dir(store, name).join("bundle");
        spec::write_bundle(&bundle_dir, &spec).map_err(berr(name))?;
        // Under its current id, whatever id an older strata gave it (not running: see above).
        let state = container::runc_state_dir(store);
        let id = container::runc_id(store, name);
        runc::delete_stale(&state, &id);
        runc::delete_stale(&state, &container::legacy_runc_id(name));
        clear_exit(store, name)?;
        if let Some(trap) = trap.as_mut() {
            let fg = crate::foreground::Foreground {
                stdin: false,
                terminal: false,
                trap,
                stop_timeout: crate::signals::DEFAULT_STOP_TIMEOUT,
            };
            let code = crate::foreground::run(&state, &bundle_dir, &id, fg);
            crate::netsetup::teardown(store, name);
            let code = code.map_err(berr(name))?;
            record_exit(store, name, code);
            return Ok(code);
        }
        crate::monitor::spawn(store, name, opts.monitor.as_deref())?;
        detached = true;
        Ok(0)
    })();
    if !detached {
        // Ended, or never started: nothing uses its network (idempotent).
        crate::netsetup::teardown(store, name);
    }
    drop(guard);
    if opts.attach || result.is_err() {
        if let Err(e) = container::umount(store, name, false) {
            tracing::debug!(container = name, error = %e, "not unmounted after start");
        }
    }
    result
}

/// Signal numbers by name, as `kill -l` lists them (without `SIG`).
const SIGNALS: [(&str, i32); 31] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// A signal as `docker kill -s` takes it: a name with or without `SIG` (any case), or a number.
pub fn parse_signal(value: &str) -> Result<i32> {
    let bad = || LifecycleError::BadSignal { value: value.to_string() };
    if let Ok(n) = value.parse::<i32>() {
        return if (1..=64).contains(&n) { Ok(n) } else { Err(bad()) };
    }
    let upper = value.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if bare == "CLD" {
        return Ok(libc::SIGCHLD);
    }
    if bare == "POLL" {
        return Ok(libc::SIGIO);
    }
    SIGNALS.iter().find(|(n, _)| *n == bare).map(|(_, s)| *s).ok_or_else(bad)
}

/// Send `signal` to a running (or paused) container's process (`runc kill`), as `docker kill`.
/// Its end is recorded by whoever waits for it (`run`, `start -a`, the monitor).
pub fn kill(store: &Store, name: &str, signal: i32) -> Result<()> {
    let s = status(store, name)?;
    if !matches!(s.state, State::Running | State::Paused) {
        return Err(LifecycleError::NotRunning { name: name.to_string() });
    }
    let (state, id) = container::runc_ids(store, name);
    // A foreground `run` counts as running from when it holds its run lock, a moment before
    // runc has created the container: until then runc knows no such container, and the kill is
    // tried again (bounded), as the run's own signal forwarding does.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match runc::runc_verb(&state, "kill", &id, &[&signal.to_string()]) {
            Ok(()) => return Ok(()),
            Err(e) if runc::runc_status(&state, &id).is_none() => {
                if !matches!(status(store, name)?.state, State::Running | State::Paused) {
                    return Err(LifecycleError::NotRunning { name: name.to_string() });
                }
                if Instant::now() >= until {
                    return Err(berr(name)(e));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(berr(name)(e)),
        }
    }
}

/// Freeze a running container's processes (`runc pause`, the cgroup freezer).
pub fn pause(store: &Store, name: &str) -> Result<()> {
    match status(store, name)?.state {
        State::Running => {}
        State::Paused => return Err(LifecycleError::Paused { name: name.to_string() }),
        _ => return Err(LifecycleError::NotRunning { name: name.to_string() }),
    }
    refuse_rootless(name, "paused")?;
    let (state, id) = container::runc_ids(store, name);
    runc::runc_pause(&state, &id).map_err(berr(name))
}

/// Rootless mode has no freezer: `pause` and `unpause` say so rather than pass on runc's
/// "cgroups not configured for container" (rootless podman on cgroup v1 refuses the same way).
fn refuse_rootless(name: &str, verb: &'static str) -> Result<()> {
    if crate::userns::is_rootless() {
        let hint = "; stop it, or `container commit --pause=false` commits it live";
        return Err(cerr(name)(ContainerError::NoFreezer { name: name.to_string(), verb, hint }));
    }
    Ok(())
}

/// Thaw a paused container (`runc resume`).
pub fn unpause(store: &Store, name: &str) -> Result<()> {
    if status(store, name)?.state != State::Paused {
        return Err(LifecycleError::NotPaused { name: name.to_string() });
    }
    refuse_rootless(name, "unpaused")?;
    let (state, id) = container::runc_ids(store, name);
    runc::runc_verb(&state, "resume", &id, &[]).map_err(berr(name))
}

/// Block until the container is no longer running; its exit code (`docker wait`). A created
/// container is waited for until it has run.
pub fn wait(store: &Store, name: &str) -> Result<i32> {
    let mut stopped_since: Option<Instant> = None;
    loop {
        let s = status(store, name)?;
        match (s.state, s.exit_code) {
            (State::Exited, Some(code)) => return Ok(code),
            // Its monitor records the code just after runc sees it stopped.
            (State::Exited, None) => {
                let since = *stopped_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(5) {
                    return Err(LifecycleError::NoExitCode { name: name.to_string() });
                }
            }
            _ => stopped_since = None,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `docker restart`: stop the container if it runs (SIGTERM, SIGKILL after `timeout`), then
/// start it detached.
pub fn restart(store: &mut Store, name: &str, timeout: Duration, opts: &StartOptions) -> Result<()> {
    if matches!(status(store, name)?.state, State::Running | State::Paused) {
        run::stop(store, name, timeout)?;
        // A foreground `strata run` lets go of it once it has cleaned up.
        let until = Instant::now() + Duration::from_secs(10);
        while container::is_running(store, name).map_err(cerr(name))?.is_some() {
            if Instant::now() > until {
                return Err(LifecycleError::WontStop { name: name.to_string(), secs: 10 });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    start(store, name, &StartOptions { attach: false, ..opts.clone() })?;
    Ok(())
}

/// What `system prune` removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Pruned {
    pub containers: Vec<String>,
    /// Containers that could not be removed, and why.
    pub failed: Vec<(String, String)>,
    pub blobs: usize,
    pub layers: usize,
    /// Cached `strata build` steps removed ([`crate::images::prune_build_cache`]).
    pub build_cache: usize,
}

/// `gc` (and `image prune`): remove every blob and layer no image references
/// ([`crate::images::gc`]), after runc's state and the cgroups of containers that no longer exist
/// ([`container::gc_runtime`]; what fails there is logged, not fatal). Returns (blobs, layers)
/// removed.
pub fn gc(
    store: &mut Store,
) -> std::result::Result<
    (Vec<crate::digest::Sha256Digest>, Vec<crate::digest::Sha256Digest>),
    crate::images::ImagesError,
> {
    crate::netsetup::release_leaked(store);
    // Before the gc lock: it takes container locks, and a commit holds its container's lock
    // while it waits for the gc lock (shared).
    match container::gc_runtime(store) {
        Ok(g) if g.runc.is_empty() && g.cgroups.is_empty() => {}
        Ok(g) => tracing::info!(runc = ?g.runc, cgroups = ?g.cgroups, "removed runtime leftovers"),
        Err(e) => tracing::warn!(
            error = %crate::error::report(&e),
            "could not remove runtime leftovers of removed containers"
        ),
    }
    crate::images::gc(store)
}

/// Remove every container that is not running (created or exited, unmounting those mounted),
/// then the blobs and layers no image or container references (`gc`), as `docker system
/// prune`. A container that starts meanwhile is left alone (removal refuses a running one).
pub fn system_prune(store: &mut Store) -> Result<Pruned> {
    crate::netsetup::release_leaked(store);
    let mut out = Pruned::default();
    for c in container::rows(store)? {
        let name = c.name;
        match status(store, &name) {
            Ok(s) if matches!(s.state, State::Created | State::Exited) => {}
            _ => continue,
        }
        let mut removed = container::remove(store, &name, false);
        if let Err(ContainerError::Mounted { .. }) = removed {
            removed =
                container::umount(store, &name, false).and_then(|()| container::remove(store, &name, false));
        }
        match removed {
            Ok(()) => out.containers.push(name),
            Err(ContainerError::NotFound(_) | ContainerError::Running { .. }) => {}
            Err(e) => out.failed.push((name, crate::error::report(&e))),
        }
    }
    out.build_cache = crate::images::prune_build_cache(store).map_err(LifecycleError::Gc)?.len();
    let (blobs, layers) = gc(store).map_err(LifecycleError::Gc)?;
    out.blobs = blobs.len();
    out.layers = layers.len();
    Ok(out)
}

/// `rmi -f`, as `podman rmi -f`: remove image `name`, first removing (stopping running ones)
/// the containers that keep it, when it is their image's last name. Returns the name as it was
/// stored.
pub fn remove_image_and_containers(store: &mut Store, name: &str) -> Result<String> {
    let image_err = |source| LifecycleError::Image { name: name.to_string(), source };
    for attempt in 0..2 {
        match store.try_remove_image(name).map_err(image_err)? {
            RemovedImage::Removed(stored) => return Ok(stored),
            RemovedImage::NotFound => return Err(image_err(StoreError::NoImage(name.to_string()))),
            RemovedImage::InUse(users) if attempt == 0 => {
                for u in users {
                    match container::remove(store, &u, true) {
                        Ok(()) | Err(ContainerError::NotFound(_)) => {}
                        Err(e) => return Err(cerr(&u)(e)),
                    }
                }
            }
            RemovedImage::InUse(users) => {
                return Err(image_err(StoreError::ImageInUse {
                    image: name.to_string(),
                    containers: users.join(", "),
                }))
            }
        }
    }
    Err(image_err(StoreError::NoImage(name.to_string())))
}

/// `strata version`: this program's, the runtime's and the kernel's.
#[derive(Debug, serde::Serialize)]
pub struct Version {
    pub client: &'static str,
    /// The runtime binary and the first line of its `--version`.
    pub runtime: String,
    pub runtime_version: Option<String>,
    pub kernel: String,
}

fn kernel_release() -> String {
    rustix::system::uname().release().to_string_lossy().into_owned()
}

fn runtime_version() -> Option<String> {
    let out = Command::new(runc::runtime()).arg("--version").stdin(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success().then(|| text.lines().next().unwrap_or("").trim().to_string())
}

pub fn version() -> Version {
    Version {
        client: env!("CARGO_PKG_VERSION"),
        runtime: runc::runtime(),
        runtime_version: runtime_version(),
        kernel: kernel_release(),
    }
}

/// What the kernel offers strata, probed without mounting anything.
#[derive(Debug, serde::Serialize)]
pub struct KernelFeatures {
    pub release: String,
    /// `overlay` in /proc/filesystems.
    pub overlay: bool,
    /// fsopen("overlay") takes `lowerdir+` (Linux 6.8+): layers are passed one by one.
    pub new_mount_api: bool,
    /// /dev/fuse is there.
    pub fuse: bool,
    /// FUSE passthrough (Linux 6.9+, and CAP_SYS_ADMIN, which strata as root has).
    pub fuse_passthrough: bool,
}

/// The backend `--backend auto` takes on this machine, and why.
#[derive(Debug, serde::Serialize)]
pub struct AutoBackend {
    pub backend: &'static str,
    pub reason: String,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Counts {
    pub images: usize,
    pub containers: usize,
    pub running: usize,
    pub paused: usize,
    pub exited: usize,
    pub created: usize,
    pub layers: usize,
    /// Disk used by unpacked layers, blobs, and containers' own snapshots (upper dirs).
    pub layers_bytes: u64,
    pub blobs_bytes: u64,
    pub containers_bytes: u64,
}

/// `strata info`.
#[derive(Debug, serde::Serialize)]
pub struct Info {
    pub root: PathBuf,
    pub runtime: String,
    pub runtime_version: Option<String>,
    pub kernel: KernelFeatures,
    pub auto_backend: AutoBackend,
    pub strata_fuse: PathBuf,
    #[serde(flatten)]
    pub counts: Counts,
}

fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let ma = parts.next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    let mi = parts.next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    (ma, mi) >= (major, minor)
}

fn probe_new_mount_api() -> bool {
    use rustix::mount::{fsconfig_set_string, fsopen, FsOpenFlags};
    let Ok(fd) = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) else { return false };
    fsconfig_set_string(&fd, "lowerdir+", "/").is_ok()
}

pub fn kernel_features() -> KernelFeatures {
    let release = kernel_release();
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay = filesystems.lines().any(|l| l.split_whitespace().last() == Some("overlay"));
    let fuse = Path::new("/dev/fuse").exists();
    KernelFeatures {
        overlay,
        new_mount_api: overlay && probe_new_mount_api(),
        fuse,
        fuse_passthrough: fuse && kernel_at_least(&release, 6, 9),
        release,
    }
}

fn auto_backend(k: &KernelFeatures, fuse_bin: &Path) -> AutoBackend {
    if k.overlay {
        let how = if k.new_mount_api {
            "the new mount API, one lowerdir+ per layer"
        } else {
            "legacy mount(2) (no lowerdir+ before Linux 6.8)"
        };
        AutoBackend {
            backend: "kernel",
            reason: format!(
                "kernel OverlayFS is available (overlay in /proc/filesystems), mounted with {how}; \
                 strata-fuse is used only when a kernel mount fails"
            ),
        }
    } else {
        AutoBackend {
            backend: "fuse",
            reason: format!(
                "no overlay in /proc/filesystems: containers are mounted with {} ({})",
                fuse_bin.display(),
                if k.fuse { "/dev/fuse is there" } else { "but /dev/fuse is missing" }
            ),
        }
    }
}

fn measure(path: &Path) -> Result<u64> {
    crate::snapshot::measure(path)
        .map(|u| u.size)
        .map_err(|e| LifecycleError::Measure { path: path.to_path_buf(), source: Box::new(e) })
}

/// Everything `strata info` shows: the store, the runtime, the kernel's features, the backend
/// `auto` takes and why, counts and disk use.
pub fn info(store: &Store) -> Result<Info> {
    let kernel = kernel_features();
    let fuse_bin = container::fuse_binary();
    let mut counts = Counts {
        images: store.images()?.len(),
        layers: store.layers()?.len(),
        layers_bytes: measure(&store.root().join("layers"))?,
        blobs_bytes: measure(&store.root().join("blobs"))?,
        containers_bytes: measure(&store.snapshots_dir())?,
        ..Default::default()
    };
    for c in container::rows(store)? {
        counts.containers += 1;
        match status(store, &c.name).map(|s| s.state) {
            Ok(State::Running) => counts.running += 1,
            Ok(State::Paused) => counts.paused += 1,
            Ok(State::Exited) => counts.exited += 1,
            Ok(State::Created) => counts.created += 1,
            Err(_) => {}
        }
    }
    let v = version();
    Ok(Info {
        root: store.root().to_path_buf(),
        runtime: v.runtime,
        runtime_version: v.runtime_version,
        auto_backend: auto_backend(&kernel, &fuse_bin),
        kernel,
        strata_fuse: fuse_bin,
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_as_docker_takes_them() {
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("sigterm").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("SIGKILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("hup").unwrap(), libc::SIGHUP);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("64").unwrap(), 64);
        for bad in ["", "0", "65", "-1", "SIG", "TERMX", "SIGSIGTERM", "\u{1b}[31m"] {
            let e = parse_signal(bad).unwrap_err();
            assert!(matches!(e, LifecycleError::BadSignal { .. }), "{bad:?}");
            assert!(!e.to_string().contains('\u{1b}'));
        }
    }

    #[test]
    fn status_as_ps_prints_it() {
        let s = |state, exit_code| Status { state, exit_code }.to_string();
        assert_eq!(s(State::Exited, Some(3)), "exited (3)");
        assert_eq!(s(State::Exited, None), "exited");
        assert_eq!(s(State::Created, None), "created");
        assert_eq!(s(State::Paused, None), "paused");
    }

    #[test]
    fn kernel_versions() {
        assert!(kernel_at_least("6.18.44-fc-v1300", 6, 9));
        assert!(kernel_at_least("6.9.0", 6, 9));
        assert!(!kernel_at_least("6.8.12-amd64", 6, 9));
        assert!(!kernel_at_least("garbage", 6, 9));
    }
}
