//! `strata run`: create a container over an image, mount it, run its command with runc, clean up.
//! The orchestration lives here so that every front end runs containers the same way; the CLI only
//! parses arguments and maps the outcome to an exit code.

use crate::container::{self, Backend, ContainerError, CreateOptions};
pub use crate::runtime::ProcessOverrides;
use crate::runtime::{runc, spec, RuntimeError, SpecSettings};
use crate::signals;
use crate::store::{Store, StoreError};

/// Run errors: which step failed, for which container.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "container {name:?} is running ({how}); wait for it to exit or stop it (strata container rm --force)"
    )]
    Running { name: String, how: String },
    #[error("container {name}")]
    Container { name: String, source: Box<ContainerError> },
    #[error("container {name}")]
    Runtime { name: String, source: RuntimeError },
    #[error("container {name}")]
    Store { name: String, source: StoreError },
    #[error("--rm with -d is not supported: stop the container, then remove it")]
    DetachRm,
    #[error("container {name:?} has no log: it was not run with -d")]
    NoLog { name: String },
    #[error("container {name:?} is not running (runc: {status}); exec needs a running container")]
    NotRunning { name: String, status: String },
    #[error("container {name}: image config: {reason}")]
    Config { name: String, reason: String },
    #[error("container {name}: catching signals")]
    Signals { name: String, source: std::io::Error },
    #[error("container {name}: starting it detached")]
    Detach { name: String, source: Box<crate::monitor::MonitorError> },
    #[error("container {name}: network")]
    Network { name: String, source: crate::netsetup::NetSetupError },
}

impl RunError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            RunError::Running { .. } | RunError::NotRunning { .. } => ErrorKind::FailedPrecondition,
            RunError::Container { source, .. } => source.kind(),
            RunError::Runtime { source, .. } => source.kind(),
            RunError::Store { source, .. } => source.kind(),
            RunError::DetachRm | RunError::Config { .. } => ErrorKind::InvalidArgument,
            RunError::NoLog { .. } => ErrorKind::NotFound,
            RunError::Signals { source, .. } => ErrorKind::of_io(source),
            RunError::Detach { source, .. } => source.kind(),
            RunError::Network { source, .. } => source.kind(),
        }
    }
}

/// What to run: the image, the container's name and its life, and the process (what the user
/// overrides of the image's command, environment, user, terminal and mounts).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub image: String,
    /// Container name; generated (`run-<hex>`) when `None`.
    pub name: Option<String>,
    /// Remove the container afterwards.
    pub rm: bool,
    pub backend: Backend,
    /// The command (replacing the image's Cmd), `-e`, `-w`, `--user`, `-t`, `-i`, `-v`.
    pub process: ProcessOverrides,
    /// `-d`: start it and return; its output goes to [`log_path`]; it stays mounted until
    /// [`stop`] (or `container rm --force`), or until it ends on its own.
    pub detach: bool,
    /// `--stop-timeout`: how long a foreground container has to exit after strata takes SIGTERM
    /// or SIGHUP (forwarded to it) before it is killed ([`crate::signals::DEFAULT_STOP_TIMEOUT`]
    /// when `None`).
    pub stop_timeout: Option<std::time::Duration>,
    /// `-d`: the strata binary whose `container monitor` watches the container (see
    /// [`crate::lifecycle`]); the running executable when `None`.
    pub monitor: Option<std::path::PathBuf>,
    /// `--network`, `-p`, `-P`, `--hostname`, `--dns*`, `--add-host` (kept with the container for
    /// `start`).
    pub network: crate::netsetup::NetOptions,
    /// Stop a foreground container (SIGTERM, then SIGKILL after the stop timeout) once it has
    /// run this long (`image optimize --period`); [`run_timed`] says whether it was.
    pub timeout: Option<std::time::Duration>,
    /// Log the layers' files the container opens for reading to this file (strata-fuse's read
    /// log, see [`container::mount_with`]); the container is then mounted by strata-fuse.
    pub read_log: Option<std::path::PathBuf>,
}

/// How a foreground run ended ([`run_timed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ran {
    /// The container process's exit code (128+signal when killed).
    pub code: i32,
    /// It was stopped because [`RunOptions::timeout`] was up.
    pub timed_out: bool,
}

pub use crate::container::log_path;

/// A fresh container name.
pub fn generated_name() -> String {
    format!("run-{}", hex::encode(crate::fsutil::random_bytes::<6>()))
}

/// Run `opts.image` in a new container; returns the container process's exit code (128+signal
/// when killed). The container is unmounted afterwards (removed with `rm`), also when the run
/// failed; a `container rm --force` that stopped it meanwhile has removed it already.
///
/// SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 no longer end this process while it
/// runs: a foreground container gets them and is waited for (see [`crate::signals`]); one
/// taken before the container started cancels the run, cleans up and returns 128+signal.
pub fn run(store: &mut Store, opts: &RunOptions) -> Result<i32, RunError> {
    run_timed(store, opts).map(|r| r.code)
}

/// [`run`], telling also whether the container was stopped because its
/// [`RunOptions::timeout`] was up.
pub fn run_timed(store: &mut Store, opts: &RunOptions) -> Result<Ran, RunError> {
    let done = |code| Ran { code, timed_out: false };
    if opts.detach && opts.rm {
        return Err(RunError::DetachRm);
    }
    let name = opts.name.clone().unwrap_or_else(generated_name);
    let cerr = |source| RunError::Container { name: name.clone(), source: Box::new(source) };
    // Bad -v values fail before anything is created.
    let volumes = opts
        .process
        .volumes
        .iter()
        .map(|v| spec::parse_volume(v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| RunError::Runtime { name: name.clone(), source })?;
    let nerr = |source| RunError::Network { name: name.clone(), source };
    opts.network.check().map_err(nerr)?;
    let mut trap =
        crate::signals::Trap::install().map_err(|source| RunError::Signals { name: name.clone(), source })?;
    if let Some(how) = container::is_running(store, &name).map_err(cerr)? {
        return Err(RunError::Running { name, how });
    }
    crate::netsetup::release_leaked(store);
    let c = container::create(store, &opts.image, &name, &CreateOptions::default()).map_err(cerr)?;
    if let Err(e) = crate::netsetup::save(store, &name, &opts.network) {
        let _ = container::remove(store, &name, true);
        return Err(nerr(e));
    }
    let mut started = false;
    let result = (|| -> Result<Ran, RunError> {
        // Mounted first, then marked running (umount, rm and another run refuse from then on;
        // released before the clean-up below). Nothing the run does while marked needs the
        // container lock, so an `rm --force` holding it while it stops the run cannot wait on it.
        let rootfs = container::mount_with(store, &name, None, opts.backend, opts.read_log.as_deref())
            .map_err(cerr)?;
        let _running = container::start_run(store, &name).map_err(cerr)?;
        let berr = |source| RunError::Runtime { name: name.clone(), source };
        let bad_config = |reason: String| RunError::Config { name: name.clone(), reason };
        let blob = store
            .read_blob(&c.config_digest)
            .map_err(|source| RunError::Store { name: name.clone(), source })?;
        let config: serde_json::Value =
            serde_json::from_slice(&blob).map_err(|e| bad_config(e.to_string()))?;
        // A detached process has no terminal to have.
        let process =
            ProcessOverrides { terminal: opts.process.terminal && !opts.detach, ..opts.process.clone() };
        let mut settings = SpecSettings {
            hostname: name.chars().take(63).collect(),
            volumes: volumes.clone(),
            cgroups_path: Some(container::cgroups_path(store, &name)),
        };
        if let Some(h) = &opts.network.hostname {
            settings.hostname = h.clone();
        }
        let mut spec = spec::build_spec(&config, &rootfs, &process, &settings).map_err(berr)?;
        spec::check_command(&spec).map_err(berr)?;
        // Attached with the run lock held (it counts as live for release_leaked), before runc.
        let net = crate::netsetup::prepare(store, &name, &opts.network, &config, &rootfs).map_err(nerr)?;
        crate::netsetup::apply(&mut spec, &net);
        let bundle_dir = container::dir(store, &name).join("bundle");
        spec::write_bundle(&bundle_dir, &spec).map_err(berr)?;
        let state = container::runc_state_dir(store);
        let id = container::runc_id(store, &name);
        runc::delete_stale(&state, &id);
        if let Some(sig) = trap.pending() {
            tracing::warn!(container = %name, "{} before the container started: not starting it", signals::name(sig));
            return Ok(done(128 + sig));
        }
        started = true;
        if opts.detach {
            // Through a monitor, which records its exit code and cleans up when it ends.
            crate::monitor::spawn(store, &name, opts.monitor.as_deref())
                .map_err(|e| RunError::Detach { name: name.clone(), source: Box::new(e) })?;
            return Ok(done(0));
        }
        if let Some(t) = opts.timeout {
            trap.stop_after(t).map_err(|source| RunError::Signals { name: name.clone(), source })?;
        }
        let fg = crate::foreground::Foreground {
            stdin: process.interactive,
            terminal: process.terminal,
            trap: &mut trap,
            stop_timeout: opts.stop_timeout.unwrap_or(signals::DEFAULT_STOP_TIMEOUT),
        };
        let code = crate::foreground::run(&state, &bundle_dir, &id, fg);
        let timed_out = trap.timed_out();
        // Its process has ended (or never started): its network goes, before the run lock.
        crate::netsetup::teardown(store, &name);
        let code = code.map_err(berr)?;
        // Before the run lock goes: `wait` and `ps -a` see it exited with this code at once.
        container::record_exit(store, &name, code);
        Ok(Ran { code, timed_out })
    })();
    if opts.detach && started && result.is_ok() {
        // Running on its own now: it keeps its mount and network until it ends.
        return result;
    }
    // Whatever was attached before the run failed (idempotent).
    crate::netsetup::teardown(store, &name);
    let gone = |e: &ContainerError| matches!(e, ContainerError::NotFound(_));
    if opts.rm {
        // Kills what may still run (a runc killed behind our back leaves its container), deletes
        // runc's state and cgroups, unmounts and removes.
        match container::remove(store, &name, true) {
            Err(e) if !gone(&e) => {
                // The run's own failure explains more than the clean-up's.
                result?;
                return Err(cerr(e));
            }
            _ => {}
        }
    } else {
        match container::release(store, &name) {
            Err(e) if !gone(&e) => {
                tracing::warn!(container = %name, error = %crate::error::report(&e), "cleaning up after the run");
            }
            _ => {}
        }
    }
    result
}

/// Run a command in a running container (`runc exec`), as `podman exec`; returns its exit code.
/// `process.args` is the command; `process.user` names resolve in the container's mounted root
/// filesystem; `process.volumes` must be empty (a running container's mounts are fixed).
pub fn exec(store: &Store, name: &str, process: &ProcessOverrides) -> Result<i32, RunError> {
    let name = name.to_string();
    let cerr = |source| RunError::Container { name: name.clone(), source: Box::new(source) };
    let berr = |source| RunError::Runtime { name: name.clone(), source };
    let (state, id) = container::runc_ids(store, &name);
    container::inspect(store, &name).map_err(cerr)?;
    let status = runc::runc_status(&state, &id);
    if status.as_deref() != Some("running") {
        return Err(RunError::NotRunning {
            name,
            status: status.unwrap_or_else(|| "unknown to runc".into()),
        });
    }
    let user = match &process.user {
        None => None,
        Some(u) => {
            let rootfs = container::mounted_at(store, &name).map_err(cerr)?.ok_or_else(|| {
                RunError::NotRunning { name: name.clone(), status: "its rootfs is not mounted".into() }
            })?;
            Some(spec::resolve_user(&rootfs, u).map_err(berr)?)
        }
    };
    // A missing or non-executable command is told by name (127/126), before runc is asked.
    spec::check_exec(&container::dir(store, &name).join("bundle"), process).map_err(berr)?;
    runc::exec(&state, &id, process, user.as_ref()).map_err(berr)
}

/// Stop a running container as `podman stop`: SIGTERM, then SIGKILL after `timeout`, through
/// runc; then runc's state is deleted and the container unmounted. Returns true when SIGTERM
/// sufficed. A container that already exited is only cleaned up; one that is not running
/// (created, or stopped and cleaned up) is left as it is, and that is no error (as `docker
/// stop`).
pub fn stop(store: &Store, name: &str, timeout: std::time::Duration) -> Result<bool, RunError> {
    let cerr = |source| RunError::Container { name: name.to_string(), source: Box::new(source) };
    let berr = |source| RunError::Runtime { name: name.to_string(), source };
    container::inspect(store, name).map_err(cerr)?;
    let (state, id) = container::runc_ids(store, name);
    let status = || runc::runc_status(&state, &id);
    // Stopped already (or created, never started): nothing to do, as `docker stop`.
    let Some(st) = status() else { return Ok(true) };
    let wait = |limit: std::time::Duration| {
        let until = std::time::Instant::now() + limit;
        loop {
            if status().as_deref().is_none_or(|s| s == "stopped") {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let mut graceful = true;
    if st != "stopped" {
        if st == "paused" {
            runc::runc_verb(&state, "resume", &id, &[]).map_err(berr)?;
        }
        let kill = |sig: &str| match runc::runc_verb(&state, "kill", &id, &[sig]) {
            // It may have exited meanwhile.
            Err(e) if status().as_deref().is_some_and(|s| s != "stopped") => Err(berr(e)),
            _ => Ok(()),
        };
        kill("TERM")?;
        if !wait(timeout) {
            graceful = false;
            tracing::info!(container = name, "still running after SIGTERM; sending SIGKILL");
            kill("KILL")?;
            if !wait(std::time::Duration::from_secs(10)) {
                return Err(cerr(ContainerError::WontStop { name: name.to_string(), secs: 10 }));
            }
        }
    }
    // Its monitor may have deleted the state and unmounted it meanwhile.
    container::delete_runtime(store, name).map_err(cerr)?;
    // As its monitor would (idempotent): its network, the mount points made for its files.
    crate::netsetup::teardown(store, name);
    match container::umount(store, name, false) {
        // A foreground `strata run` unmounts it itself once runc has returned.
        Ok(()) | Err(ContainerError::NotMounted(_) | ContainerError::NotFound(_)) => Ok(graceful),
        Err(ContainerError::Running { .. }) if status().is_none() => Ok(graceful),
        Err(e) => Err(cerr(e)),
    }
}

/// A detached container's output so far (see [`log_path`]).
pub fn logs(store: &Store, name: &str) -> Result<std::fs::File, RunError> {
    let cerr = |source| RunError::Container { name: name.to_string(), source: Box::new(source) };
    container::inspect(store, name).map_err(cerr)?;
    std::fs::File::open(log_path(store, name)).map_err(|_| RunError::NoLog { name: name.to_string() })
}

/// `logs -f`: copy a detached container's output to `out` as it is written, until the container
/// is no longer running (then what it wrote last is copied too), as `podman logs -f`.
pub fn follow_logs(store: &Store, name: &str, out: &mut dyn std::io::Write) -> Result<(), RunError> {
    use std::io::Read;
    let mut f = logs(store, name)?;
    let (state, id) = container::runc_ids(store, name);
    let io = |source| RunError::Store {
        name: name.to_string(),
        source: StoreError::Io { path: log_path(store, name), source },
    };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // Read the state before draining: output written before it stopped is then read below.
        let running = runc::runc_status(&state, &id).is_some_and(|s| s != "stopped");
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(io)?;
        }
        out.flush().map_err(io)?;
        if !running {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
