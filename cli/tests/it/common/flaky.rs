//! A loopback proxy in front of a registry that misbehaves on demand, for the fault tests of
//! lazy reads: requests whose path contains a given part (a layer's blob) can have their
//! response cut after some bytes (a dropped connection) or held after some bytes (a stalled
//! registry), for the next N requests or all of them, changed while it runs; and the bearer
//! tokens it has seen can be expired (the registry answers a request carrying one with its own
//! 401 challenge). One request per connection, each connection served by a thread of its own,
//! so a held connection never delays another.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the proxy does to a matching request's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// Forward it whole.
    Pass,
    /// Forward its first `n` bytes (the head included), then close both connections.
    Cut(u64),
    /// Forward its first `n` bytes, then send nothing more, the connection held open until the
    /// flaw is changed or the proxy dropped.
    Stall(u64),
}

struct Shared {
    /// Requests whose path contains this get the flaw; the others pass.
    part: String,
    /// The flaw, how many more matching requests get it (`None`: all), and a generation that
    /// every change bumps (held connections let go when it moves).
    flaw: Mutex<(Flaw, Option<u32>, u64)>,
    /// `METHOD path Range` of each request, in order.
    seen: Mutex<Vec<String>>,
    /// Responses cut, connections stalled (ever), and held right now.
    cut: AtomicU64,
    stalls: AtomicU64,
    held: AtomicU64,
    /// Authorization values seen, and those expired (sent on without it: the registry refuses).
    tokens: Mutex<HashSet<String>>,
    expired: Mutex<HashSet<String>>,
    refused: AtomicU64,
    stop: AtomicBool,
}

/// See the module's doc. Stops (and lets every held connection go) when dropped.
pub struct FlakyProxy {
    pub addr: String,
    shared: Arc<Shared>,
}

impl FlakyProxy {
    /// A proxy to `upstream` whose flaws apply to requests with `part` in their path.
    pub fn start(upstream: &str, part: &str) -> FlakyProxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr").to_string();
        let shared = Arc::new(Shared {
            part: part.to_string(),
            flaw: Mutex::new((Flaw::Pass, None, 0)),
            seen: Mutex::new(Vec::new()),
            cut: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            held: AtomicU64::new(0),
            tokens: Mutex::new(HashSet::new()),
            expired: Mutex::new(HashSet::new()),
            refused: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let (sh, up) = (shared.clone(), upstream.to_string());
        std::thread::spawn(move || {
            // Bounded: a test that forgets the proxy still ends it.
            let deadline = Instant::now() + Duration::from_secs(300);
            while !sh.stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let (sh, up) = (sh.clone(), up.clone());
                std::thread::spawn(move || serve(c, &up, &sh));
            }
        });
        FlakyProxy { addr, shared }
    }

    /// From now on, `flaw` for the next `times` matching requests (`None`: every one), then
    /// [`Flaw::Pass`]. Connections held by an earlier stall are let go (closed).
    pub fn set(&self, flaw: Flaw, times: Option<u32>) {
        let mut f = self.shared.flaw.lock().expect("flaw");
        *f = (flaw, times, f.2 + 1);
    }

    /// Responses cut so far.
    pub fn cut(&self) -> u64 {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// Connections stalled so far.
    pub fn stalls(&self) -> u64 {
        self.shared.stalls.load(Ordering::SeqCst)
    }

    /// Connections held open by a stall right now.
    pub fn held(&self) -> u64 {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// `METHOD path Range` of each request seen (Range `-` when none).
    pub fn seen(&self) -> Vec<String> {
        self.shared.seen.lock().expect("seen").clone()
    }

    /// Every bearer token (any Authorization value) seen so far is refused from now on, as a
    /// registry refuses an expired one: the request goes on without it, and the registry
    /// answers with its 401 challenge.
    pub fn expire_tokens(&self) {
        let seen = self.shared.tokens.lock().expect("tokens").clone();
        self.shared.expired.lock().expect("expired").extend(seen);
    }

    /// Requests refused for an expired token.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// A header's value in a request head (name matched case-insensitively).
fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

fn serve(mut c: TcpStream, upstream: &str, sh: &Shared) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let Some(head) = super::registry::read_head(&mut c) else { return };
    let line = head.lines().next().unwrap_or("").to_string();
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let range = header_value(&head, "range").unwrap_or_else(|| "-".into());
    sh.seen.lock().expect("seen").push(format!("{method} {path} {range}"));
    let auth = header_value(&head, "authorization");
    let expired = auth.as_ref().is_some_and(|a| sh.expired.lock().expect("expired").contains(a));
    if let Some(a) = &auth {
        sh.tokens.lock().expect("tokens").insert(a.clone());
    }
    if expired {
        sh.refused.fetch_add(1, Ordering::SeqCst);
    }
    let (flaw, generation) = {
        let mut f = sh.flaw.lock().expect("flaw");
        let applies = path.contains(&sh.part) && f.1 != Some(0);
        if applies {
            if let Some(n) = f.1.as_mut() {
                *n -= 1;
            }
        }
        (if applies { f.0 } else { Flaw::Pass }, f.2)
    };
    let Ok(mut u) = TcpStream::connect(upstream) else { return };
    let out = super::registry::close_head(&head, expired);
    let len = super::registry::content_length(&head);
    if u.write_all(out.as_bytes()).is_err() || std::io::copy(&mut (&mut c).take(len), &mut u).is_err() {
        return;
    }
    let limit = match flaw {
        Flaw::Pass => u64::MAX,
        Flaw::Cut(n) | Flaw::Stall(n) => n,
    };
    let mut sent = 0u64;
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = match u.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let keep = (limit - sent).min(n as u64) as usize;
        if c.write_all(&buf[..keep]).is_err() {
            break;
        }
        sent += keep as u64;
        if keep < n || sent == limit {
            if let Flaw::Stall(_) = flaw {
                hold(sh, generation);
            } else {
                sh.cut.fetch_add(1, Ordering::SeqCst);
            }
            break;
        }
    }
    let _ = c.shutdown(Shutdown::Both);
    let _ = u.shutdown(Shutdown::Both);
}

/// Send nothing more (the caller's connection stays open) until the flaw changes (generation), the proxy stops, or two
/// minutes have passed.
fn hold(sh: &Shared, generation: u64) {
    sh.stalls.fetch_add(1, Ordering::SeqCst);
    sh.held.fetch_add(1, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !sh.stop.load(Ordering::SeqCst)
        && sh.flaw.lock().expect("flaw").2 == generation
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    sh.held.fetch_sub(1, Ordering::SeqCst);
}
