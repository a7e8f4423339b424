//! The signals a foreground `strata run` takes, and what it does with them.
//!
//! Without this, SIGINT (Ctrl-C), SIGTERM or SIGHUP ended strata at once and left its container
//! running and mounted. Now, as podman does, a [`Trap`] catches SIGINT, SIGTERM, SIGHUP, SIGQUIT,
//! SIGUSR1 and SIGUSR2 for the whole run, and [`supervise`] forwards each to the container's
//! process (`runc kill`) while it waits for runc to end, so that strata always cleans up after the
//! container and exits with its status. A second SIGINT kills the container (SIGKILL); after
//! SIGTERM or SIGHUP (strata is being stopped, or its terminal went away) it is killed when it has
//! not exited within the stop timeout, since its init process (pid 1 of its namespace) ignores
//! any signal it has no handler for. A signal taken before the container started cancels the run.
//!
//! Signals are caught by signal-hook's self-pipe handler and read by a thread of their own, so
//! nothing runs in a signal handler and no async runtime is needed.

use std::io;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGKILL, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::{Handle, Signals};

/// The signals forwarded to the container, as podman's `--sig-proxy` forwards them.
pub const FORWARDED: [i32; 6] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2];

/// How long a container has to exit after SIGTERM or SIGHUP before it is killed, by default
/// (podman's and docker's stop timeout).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a signal runc could not deliver yet (the container not created yet) is retried.
const RETRY: Duration = Duration::from_millis(50);

enum Event {
    Signal(i32),
    Exited(io::Result<ExitStatus>),
}

/// The [`FORWARDED`] signals caught for as long as this lives: they no longer end the process,
/// they queue here. Dropping it stops catching them (they are then ignored, not default).
pub struct Trap {
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    handle: Handle,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Taken by [`Trap::pending`] before a container process existed, not handled yet.
    early: Vec<i32>,
    /// [`Trap::stop_after`]'s timer: dropping the sender ends it; the flag says it went off.
    timer: Option<(mpsc::Sender<()>, Arc<AtomicBool>)>,
}

impl Trap {
    /// Start catching the [`FORWARDED`] signals.
    pub fn install() -> io::Result<Trap> {
        let mut signals = Signals::new(FORWARDED)?;
        let handle = signals.handle();
        let (tx, rx) = mpsc::channel();
        let to = tx.clone();
        let thread = std::thread::Builder::new().name("signals".into()).spawn(move || {
            for s in signals.forever() {
                if to.send(Event::Signal(s)).is_err() {
                    break;
                }
            }
        });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                handle.close();
                return Err(e);
            }
        };
        Ok(Trap { tx, rx, handle, thread: Some(thread), early: Vec::new(), timer: None })
    }

    /// The first signal taken so far, if any, without waiting; it stays queued for
    /// [`supervise`] (a signal taken while a container starts is forwarded to it).
    pub fn pending(&mut self) -> Option<i32> {
        while let Ok(ev) = self.rx.try_recv() {
            if let Event::Signal(s) = ev {
                self.early.push(s);
            }
        }
        self.early.first().copied()
    }

    /// After `after`, act as if SIGTERM had been taken: [`supervise`] forwards it to the
    /// container and kills it when it has not exited within the stop timeout (`run`'s
    /// timeout, `image optimize --period`). The timer ends with the trap.
    pub fn stop_after(&mut self, after: Duration) -> io::Result<()> {
        let (cancel, cancelled) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let (tx, flag) = (self.tx.clone(), fired.clone());
        std::thread::Builder::new().name("run-timeout".into()).spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(after) {
                tracing::info!("the run's time is up ({} s): stopping the container", after.as_secs_f32());
                flag.store(true, Ordering::SeqCst);
                let _ = tx.send(Event::Signal(SIGTERM));
            }
        })?;
        self.timer = Some((cancel, fired));
        Ok(())
    }

    /// Whether [`Trap::stop_after`]'s time was up.
    pub fn timed_out(&self) -> bool {
        self.timer.as_ref().is_some_and(|(_, fired)| fired.load(Ordering::SeqCst))
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.timer = None;
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A signal's name, for messages (`SIGTERM`), or its number.
pub fn name(sig: i32) -> String {
    let known = [
        (SIGINT, "SIGINT"),
        (SIGTERM, "SIGTERM"),
        (SIGHUP, "SIGHUP"),
        (SIGQUIT, "SIGQUIT"),
        (SIGUSR1, "SIGUSR1"),
        (SIGUSR2, "SIGUSR2"),
        (SIGKILL, "SIGKILL"),
    ];
    known.iter().find(|(n, _)| *n == sig).map_or_else(|| format!("signal {sig}"), |(_, s)| s.to_string())
}

/// Deliver `sig` to container `id`'s process through runc. True when done with it: delivered,
/// or the container has stopped (nothing left to signal); false to retry (runc has not created
/// the container yet).
fn deliver(state: &Path, id: &str, sig: i32) -> bool {
    use crate::runtime::runc::{runc_status, runc_verb};
    if sig == SIGKILL && runc_status(state, id).as_deref() == Some("paused") {
        // A frozen process dies only once thawed.
        let _ = runc_verb(state, "resume", id, &[]);
    }
    match runc_verb(state, "kill", id, &[&sig.to_string()]) {
        Ok(()) => {
            tracing::info!(container = id, signal = %name(sig), "forwarded to the container");
            true
        }
        Err(e) => match runc_status(state, id).as_deref() {
            None => false,
            Some("stopped") => true,
            Some(_) => {
                tracing::debug!(container = id, signal = %name(sig), error = %e, "runc kill failed; retrying");
                false
            }
        },
    }
}

/// Wait for `child`, the `runc run` of container `id` (runc state directory `state`), and
/// forward the signals `trap` takes meanwhile to the container, as the [module](self) says;
/// returns runc's exit status (the container's).
pub fn supervise(
    trap: &mut Trap,
    child: &mut Child,
    state: &Path,
    id: &str,
    stop_timeout: Duration,
) -> io::Result<ExitStatus> {
    let supervised = std::thread::scope(|s| {
        let tx = trap.tx.clone();
        let runc = &mut *child;
        let waiter = std::thread::Builder::new().name("runc-wait".into()).spawn_scoped(s, move || {
            let _ = tx.send(Event::Exited(runc.wait()));
        });
        if let Err(e) = waiter {
            tracing::warn!(error = %e, "cannot forward signals to the container");
            return None;
        }
        let mut queue: Vec<i32> = std::mem::take(&mut trap.early);
        let mut taken = queue.clone();
        let mut interrupts = 0;
        let mut deadline: Option<Instant> = None;
        // SIGKILL decided on: nothing else is sent from then on.
        let mut killing = false;
        loop {
            for sig in taken.drain(..) {
                match sig {
                    SIGINT => interrupts += 1,
                    SIGTERM | SIGHUP => {
                        deadline.get_or_insert_with(|| Instant::now() + stop_timeout);
                    }
                    _ => {}
                }
            }
            if !killing {
                let kill = if interrupts >= 2 {
                    tracing::info!(container = id, "interrupted twice: killing the container");
                    true
                } else if deadline.is_some_and(|d| Instant::now() >= d) {
                    tracing::warn!(
                        container = id,
                        "still running {} s after SIGTERM/SIGHUP: killing it",
                        stop_timeout.as_secs_f32()
                    );
                    true
                } else {
                    false
                };
                if kill {
                    queue = vec![SIGKILL];
                    deadline = None;
                    killing = true;
                }
            }
            queue.retain(|&sig| !deliver(state, id, sig));
            let timeout = if !queue.is_empty() {
                Some(RETRY)
            } else {
                deadline.map(|d| d.saturating_duration_since(Instant::now()))
            };
            let ev = match timeout {
                Some(t) => match trap.rx.recv_timeout(t) {
                    Ok(ev) => Some(ev),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    // Unreachable: trap holds a sender.
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match trap.rx.recv() {
                    Ok(ev) => Some(ev),
                    Err(_) => break,
                },
            };
            match ev {
                Some(Event::Exited(status)) => return Some(status),
                Some(Event::Signal(sig)) => {
                    if !killing {
                        queue.push(sig);
                    }
                    taken.push(sig);
                }
                None => {}
            }
        }
        Some(Err(io::Error::other("signal channel closed")))
    });
    // No thread to wait with: wait without forwarding rather than not at all.
    supervised.unwrap_or_else(|| child.wait())
}
