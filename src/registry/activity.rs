//! What the on-demand reads of remote layers are doing, for background completion to stay out of
//! their way (see docs/lazy.md). One [`Activity`] is shared by every remote layer a process
//! serves (strata-fuse makes one per mount): a read of any layer holds off the background of all
//! of them, and the background fetches of all of them take turns through one slot, so that their
//! share of the link is the share of the whole process, not of each layer.
//!
//! Measured (scripts/bench-lazy.sh, four layers): with an activity per layer and no wait for the
//! first reads, the four layers' background fetches started 300 ms after the mount, before the
//! container's process had read anything, four at a time; python3's first read (its 2 MB
//! binary) then took 470 ms instead of about 170 ms on the 100 Mbit/s link.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long the background waits for the first read of a mount before it starts anyway (a
/// container whose first reads the cache serves, or one that reads nothing).
pub const FIRST_READS: Duration = Duration::from_secs(5);

/// Reads fetching now, and when the last one ended.
#[derive(Debug)]
struct State {
    busy: usize,
    /// When the last fetching read ended; `None` before the first one.
    last: Option<Instant>,
    /// When the activity was made (the mount).
    since: Instant,
}

/// The reads of a process's remote layers, and its one background slot.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
    changed: Condvar,
    /// Before any read, how long after `since` the background may start.
    first: Duration,
    background: Mutex<()>,
}

impl Activity {
    /// An activity whose background waits for the first reads to settle, or [`FIRST_READS`]
    /// when none comes: what a mount serving a container uses.
    pub fn for_mount() -> Activity {
        Activity::new(FIRST_READS)
    }

    /// An activity whose background, before any read, may start `first` after now.
    pub fn new(first: Duration) -> Activity {
        Activity {
            state: Mutex::new(State { busy: 0, last: None, since: Instant::now() }),
            changed: Condvar::new(),
            first,
            background: Mutex::new(()),
        }
    }

    /// A read starts fetching (or waiting for chunks being fetched); it ends when the guard
    /// drops.
    pub fn enter(&self) -> Busy<'_> {
        lock(&self.state).busy += 1;
        Busy(self)
    }

    /// Wait until no read has fetched for `settle` (before the first read: until the first
    /// wait is over).
    pub fn wait_quiet(&self, settle: Duration) {
        let mut s = lock(&self.state);
        loop {
            if s.busy > 0 {
                s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let ready = match s.last {
                Some(t) => t + settle,
                None => s.since + self.first,
            };
            let now = Instant::now();
            if now >= ready {
                return;
            }
            s = self.changed.wait_timeout(s, ready - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// The process's one background slot: held for one background request and the rest after
    /// it.
    pub fn background_slot(&self) -> MutexGuard<'_, ()> {
        lock(&self.background)
    }
}

/// A read counted as fetching while it lives ([`Activity::enter`]).
pub struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut s = lock(&self.0.state);
        s.busy -= 1;
        s.last = Some(Instant::now());
        self.0.changed.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The background waits while a read fetches, then for the settle time after it; before
    /// any read, for the first wait.
    #[test]
    fn background_waits_for_reads_to_settle() {
        let a = Arc::new(Activity::new(Duration::from_secs(3600)));
        let busy = a.enter();
        let (tx, rx) = std::sync::mpsc::channel();
        let b = a.clone();
        let t = std::thread::spawn(move || {
            b.wait_quiet(Duration::ZERO);
            tx.send(()).expect("send");
        });
        // Neither the read (busy) nor, before it, the hour-long first wait lets it go.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "went while a read fetched");
        drop(busy);
        rx.recv_timeout(Duration::from_secs(10)).expect("not released by the read's end");
        t.join().expect("join");
        // Before any read: the first wait.
        let fresh = Activity::new(Duration::ZERO);
        fresh.wait_quiet(Duration::from_secs(3600));
    }
}
