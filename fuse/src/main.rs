//! `strata-fuse`: command line compatible with fuse-overlayfs.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use signal_hook::iterator::Signals;
use strata_fuse::{mount, Options, Stats};
use tracing::{error, warn};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // Taken here, before the fuse-overlayfs compatible parser sees the rest.
    let (stats_file, log_file) =
        match (take_file_arg(&mut args, "--stats"), take_file_arg(&mut args, "--log")) {
            (Ok(s), Ok(l)) => (s, l),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("strata-fuse: {e}");
                return ExitCode::from(2);
            }
        };
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: strata-fuse [-f] [-d] -o lowerdir=L1:L2:...[,upperdir=U,workdir=W][,OPTS] MOUNTPOINT\n       \
             strata-fuse SOURCE MOUNTPOINT -o OPTS   (mount.fuse form)\n\
             options: lowerdir, upperdir, workdir, fsname=NAME, timeout=SECS, threads=N, passthrough=on|off,\n\
             uring=auto|on|off (FUSE over io_uring; default auto, or $STRATA_FUSE_URING),\n\
             ro, nodev, nosuid, noexec, noatime, ...; unknown options are ignored with a warning.\n\
             remote=DIFF_ID@ROOT (repeated): the lowerdir that is ROOT/remote/HEX/tree, a lazily pulled\n\
             layer's skeleton in the strata store ROOT, reads its files from the registry, the files\n\
             before its prefetch landmark first; lazy_background=off|on|PERCENT: then fetch the rest\n\
             in the background (default on, taking at most 50% of the time) and make the layer whole.\n\
             readlog=FILE: append each lower file opened for reading, once, to FILE (LOWER<tab>PATH).\n\
             In paths, \\, \\: and \\\\ stand for , : and \\ (as the kernel's overlayfs takes them)\n\
             --stats FILE: write request counts by opcode to FILE on SIGUSR1 and at exit\n\
             --log FILE: log to FILE (appended) instead of stderr, which the daemon closes"
        );
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "-V" || a == "--version") {
        println!("strata-fuse {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let opts = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("strata-fuse: {}", report(&e));
            return ExitCode::from(2);
        }
    };
    let default = if opts.debug { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    match &log_file {
        Some(f) => {
            let file = match std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(f) {
                Ok(file) => file,
                Err(e) => {
                    eprintln!("strata-fuse: --log {}: {e}", f.display());
                    return ExitCode::from(2);
                }
            };
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .init();
        }
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    for o in &opts.ignored {
        warn!("ignoring unknown option {o:?}");
    }
    // Modes of new entries are set explicitly; the process umask must not interfere.
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0) };
    // The handler is installed before the mount: whoever sees the mount may send SIGUSR1 at
    // once (with -f nothing else tells it the daemon is ready), and the default action would
    // end the daemon.
    let usr1 = match stats_file.as_ref().map(|_| Signals::new([signal_hook::consts::SIGUSR1])).transpose() {
        Ok(s) => s,
        Err(e) => {
            error!("--stats: SIGUSR1 handler: {e}");
            return ExitCode::from(1);
        }
    };
    let strata_fuse::Mounted { session, stats, rings, contents } = match mount(&opts) {
        Ok(s) => s,
        Err(e) => {
            let msg = report(&e);
            error!("{msg}");
            eprintln!("strata-fuse: {msg}");
            return ExitCode::from(1);
        }
    };
    // The parent returns once the child has started serving (rings included).
    let mut ready_fd = None;
    if !opts.foreground {
        // The mount is live: fork, let the parent return, serve from the child.
        let mut fds = [0; 2];
        // SAFETY: valid two-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            eprintln!("strata-fuse: pipe: {}", std::io::Error::last_os_error());
            return ExitCode::from(1);
        }
        // SAFETY: no other thread runs yet (the session threads start in `run`).
        match unsafe { libc::fork() } {
            -1 => {
                eprintln!("strata-fuse: fork: {}", std::io::Error::last_os_error());
                return ExitCode::from(1);
            }
            0 => {
                // SAFETY: plain syscalls in the child.
                unsafe {
                    libc::close(fds[0]);
                    libc::setsid();
                    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                    if null >= 0 {
                        libc::dup2(null, 0);
                        libc::dup2(null, 1);
                        if !opts.debug {
                            libc::dup2(null, 2);
                        }
                        if null > 2 {
                            libc::close(null);
                        }
                    }
                }
                ready_fd = Some(fds[1]);
                let _ = std::env::set_current_dir("/");
            }
            _ => {
                let mut b = [0u8; 1];
                // SAFETY: valid fd and buffer; _exit skips destructors (they would unmount).
                unsafe {
                    libc::close(fds[1]);
                    let n = libc::read(fds[0], b.as_mut_ptr().cast(), 1);
                    libc::_exit(if n == 1 { 0 } else { 1 });
                }
            }
        }
    }
    if let Some((signals, file)) = usr1.zip(stats_file.clone()) {
        if let Err(e) = dump_on_signals(signals, file, stats.clone()) {
            error!("--stats: {e}");
            return ExitCode::from(1);
        }
    }
    if let Some(r) = rings {
        let mode = r.mode;
        if let Err(e) = r.start() {
            let msg = report(&e);
            if mode == strata_fuse::uring::Mode::On {
                error!("{msg}");
                return ExitCode::from(1);
            }
            // The kernel keeps using /dev/fuse until every queue is registered.
            warn!("{msg}; serving through /dev/fuse");
        }
    }
    // Remote lowers' prefetch (claimed at mount, so reads that come first wait for it) and
    // background completion.
    for c in &contents {
        c.start();
    }
    if let Some(fd) = ready_fd {
        // SAFETY: the pipe's write end, owned by this process; tells the parent to return.
        unsafe {
            libc::write(fd, b"1".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
    let code = serve(session);
    for c in &contents {
        c.flush();
    }
    if let Some(file) = &stats_file {
        if let Err(e) = stats.write_to(file) {
            error!("--stats: writing {}: {e}", file.display());
        }
    }
    code
}

/// Remove `FLAG FILE` (or `FLAG=FILE`) from `args`.
fn take_file_arg(args: &mut Vec<String>, flag: &str) -> Result<Option<PathBuf>, String> {
    let mut out = None;
    let mut i = 0;
    let with_value = format!("{flag}=");
    while i < args.len() {
        if args[i] == flag {
            if i + 1 >= args.len() {
                return Err(format!("{flag} needs a file"));
            }
            out = Some(PathBuf::from(args.remove(i + 1)));
            args.remove(i);
        } else if let Some(f) = args[i].strip_prefix(&with_value) {
            out = Some(PathBuf::from(f));
            args.remove(i);
        } else {
            i += 1;
        }
    }
    // The daemon changes to `/`: a relative name means the caller's directory.
    match out {
        Some(f) if f.is_relative() => match std::env::current_dir() {
            Ok(d) => Ok(Some(d.join(f))),
            Err(e) => Err(format!("{flag}: current directory: {e}")),
        },
        other => Ok(other),
    }
}

/// Write the request counts to `file` on every signal of `signals` (from a thread of its own).
fn dump_on_signals(mut signals: Signals, file: PathBuf, stats: Arc<Stats>) -> std::io::Result<()> {
    std::thread::Builder::new().name("stats".into()).spawn(move || {
        for _ in signals.forever() {
            if let Err(e) = stats.write_to(&file) {
                error!("--stats: writing {}: {e}", file.display());
            }
        }
    })?;
    Ok(())
}

/// Serve the session until the filesystem is unmounted.
fn serve(session: fuser::Session<strata_fuse::uring::Shared>) -> ExitCode {
    // When the session ends (the filesystem was unmounted), fuser's own clean-up would unmount
    // the mount point once more: its "still mounted?" check (poll on /dev/fuse) answers yes either
    // way, so a filesystem mounted there since (the next `container mount`, say) would vanish.
    // So the mount handle is leaked: it only guards the path, and the process exits right after.
    // (Fixed upstream in cberner/fuser#703, after 0.18.0; drop this once a release has it.)
    let bg = match session.spawn() {
        Ok(bg) => std::mem::ManuallyDrop::new(bg),
        Err(e) => {
            error!("starting the session: {e}");
            return ExitCode::from(1);
        }
    };
    let mut bg = bg;
    let guard = std::mem::replace(&mut bg.guard, std::thread::spawn(|| Ok(())));
    match guard.join() {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            error!("session ended: {e}");
            ExitCode::from(1)
        }
        Err(_) => {
            error!("session thread panicked");
            ExitCode::from(1)
        }
    }
}

/// An error and its causes, joined: each error's message says its own part only.
fn report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
