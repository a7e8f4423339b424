//! A registry behind a slow link, for tests: a TCP proxy on 127.0.0.1 whose responses share
//! one link of a given rate.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TCP proxy on 127.0.0.1 to `upstream` whose responses share one link of `rate` bytes per
/// second, all connections together: a registry behind a slow link. Stops accepting when
/// dropped (or after five minutes).
pub struct ThrottleProxy {
    pub addr: String,
    stop: Arc<AtomicBool>,
}

impl ThrottleProxy {
    pub fn start(upstream: &str, rate: u64) -> ThrottleProxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        // When the link is free next: each piece sent reserves its time on it.
        let link = Arc::new(std::sync::Mutex::new(Instant::now()));
        let (sp, up) = (stop.clone(), upstream.to_string());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !sp.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let Ok(u) = TcpStream::connect(&up) else { continue };
                throttled_pipe(c, u, rate.max(1), link.clone());
            }
        });
        ThrottleProxy { addr, stop }
    }
}

fn throttled_pipe(client: TcpStream, upstream: TcpStream, rate: u64, link: Arc<std::sync::Mutex<Instant>>) {
    let (mut c_r, mut u_w) = (client.try_clone().expect("clone"), upstream.try_clone().expect("clone"));
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_r, &mut u_w);
        let _ = u_w.shutdown(std::net::Shutdown::Write);
    });
    let (mut u_r, mut c_w) = (upstream, client);
    std::thread::spawn(move || {
        let mut buf = [0u8; 8 << 10];
        while let Ok(n) = u_r.read(&mut buf) {
            if n == 0 {
                break;
            }
            let until = {
                let mut next = link.lock().unwrap_or_else(|e| e.into_inner());
                *next = (*next).max(Instant::now()) + Duration::from_secs_f64(n as f64 / rate as f64);
                *next
            };
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            if c_w.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = c_w.shutdown(std::net::Shutdown::Both);
    });
}

impl Drop for ThrottleProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
