//! strata-fuse under load: races between changes and concurrent readers, run many rounds and
//! compared with kernel overlayfs over the same stack.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;

fn env_num(k: &str, d: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// The outcome of [`link_race`] on one mount.
#[derive(Debug, Default)]
struct LinkRace {
    /// (iteration, step, errno) of every failed step of the mutator.
    failures: Vec<(usize, &'static str, i32)>,
    /// Reads or stats that answered anything but success or ENOENT.
    reader_errors: Vec<String>,
}

/// One lower file per iteration: `link f f.l; unlink f; link f.l f; unlink f.l` while two
/// reader threads open, read and stat `f` and `f.l` of the iteration in progress.
fn link_race(m: &Path, n: usize) -> LinkRace {
    let cur = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let mut out = LinkRace::default();
    std::thread::scope(|sc| {
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (cur, done) = (&cur, &done);
                sc.spawn(move || {
                    let mut errs = Vec::new();
                    let mut buf = Vec::new();
                    while !done.load(Ordering::Relaxed) {
                        let i = cur.load(Ordering::Relaxed);
                        for name in [format!("f{i}"), format!("f{i}.l")] {
                            let p = m.join(&name);
                            match fs::File::open(&p) {
                                Ok(mut f) => {
                                    buf.clear();
                                    if let Err(e) = f.read_to_end(&mut buf) {
                                        errs.push(format!("reader {r}: read {name}: {e}"));
                                    } else if buf != format!("data of f{i}\n").as_bytes() {
                                        errs.push(format!("reader {r}: {name} has {buf:?}"));
                                    }
                                }
                                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                                Err(e) => errs.push(format!("reader {r}: open {name}: {e}")),
                            }
                            match fs::symlink_metadata(&p) {
                                Ok(_) => {}
                                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                                Err(e) => errs.push(format!("reader {r}: stat {name}: {e}")),
                            }
                        }
                    }
                    errs
                })
            })
            .collect();
        for i in 0..n {
            cur.store(i, Ordering::Relaxed);
            let (f, l) = (m.join(format!("f{i}")), m.join(format!("f{i}.l")));
            let steps: [(&'static str, &dyn Fn() -> std::io::Result<()>); 4] = [
                ("link f f.l", &|| fs::hard_link(&f, &l)),
                ("unlink f", &|| fs::remove_file(&f)),
                ("link f.l f", &|| fs::hard_link(&l, &f)),
                ("unlink f.l", &|| fs::remove_file(&l)),
            ];
            for (step, op) in steps {
                let e = errno_of(op());
                if e != 0 {
                    out.failures.push((i, step, e));
                    break;
                }
            }
        }
        done.store(true, Ordering::Relaxed);
        for r in readers {
            out.reader_errors.extend(r.join().expect("reader thread"));
        }
    });
    out
}

fn link_race_stack(root: &Path, n: usize) -> Stack {
    let s = Stack::new(root, 1);
    for i in 0..n {
        fs::write(s.lowers[0].join(format!("f{i}")), format!("data of f{i}\n")).unwrap();
    }
    s
}

/// Names in a directory, sorted.
fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// What a mount shows after [`link_race`]: every `f{i}` with its data, no `f{i}.l`, and every
/// name listed can be stat'ed.
fn check_link_race_view(m: &Path, n: usize, what: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let want: Vec<String> = {
        let mut v: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
        v.sort();
        v
    };
    let got = names(m);
    if got != want {
        let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).take(10).collect();
        let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).take(10).collect();
        bad.push(format!("{what}: listing has extra {extra:?}, misses {missing:?}"));
    }
    for g in &got {
        if let Err(e) = fs::symlink_metadata(m.join(g)) {
            bad.push(format!("{what}: {g} is listed but lstat says {e}"));
        }
    }
    for i in 0..n {
        match fs::read_to_string(m.join(format!("f{i}"))) {
            Ok(s) if s == format!("data of f{i}\n") => {}
            Ok(s) => bad.push(format!("{what}: f{i} has {s:?}")),
            Err(e) => bad.push(format!("{what}: f{i}: {e}")),
        }
    }
    bad
}

/// Issue 10 point 11: the link/unlink loop over lower files never fails and leaves every name
/// as it was, with readers of the same names running, on strata-fuse as on kernel overlayfs; the
/// upper dir it leaves shows the same through a kernel mount.
#[test]
fn link_unlink_loop_with_readers() {
    if !can_run() {
        return;
    }
    let n = env_num("STRATA_LINK_RACE_ITERS", 2000) as usize;
    let t = scratch();
    let mut bad = Vec::new();
    for backend in ["kernel", "fuse"] {
        let root = t.path().join(backend);
        let s = link_race_stack(&root, n);
        let res = {
            let _g = if backend == "kernel" { s.mount_kernel() } else { s.mount_fuse("") };
            let res = link_race(&s.mnt, n);
            bad.extend(check_link_race_view(&s.mnt, n, &format!("{backend} mount")));
            res
        };
        if !res.failures.is_empty() {
            bad.push(format!(
                "{backend}: {} of {n} iterations failed, first {:?}",
                res.failures.len(),
                &res.failures[..res.failures.len().min(5)]
            ));
        }
        if !res.reader_errors.is_empty() {
            bad.push(format!(
                "{backend}: {} reader errors, first {:?}",
                res.reader_errors.len(),
                &res.reader_errors[..res.reader_errors.len().min(5)]
            ));
        }
        // The upper dir alone, through a kernel mount.
        fs::remove_dir_all(&s.work).unwrap();
        fs::create_dir(&s.work).unwrap();
        {
            let _k = s.mount_kernel();
            bad.extend(check_link_race_view(&s.mnt, n, &format!("kernel mount of the {backend} upper")));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
