//! Model-checking stress test (issue 10 point 11b): worker threads each own a directory of a
//! two-lower-layer stack and apply seeded random operations in it (create, write, append,
//! truncate, chmod, link, unlink, mkdir, rmdir, rename, reads of held descriptors), checking
//! every result, read, stat and listing against a model of what they did; a prowler thread reads
//! whatever it finds in all of them meanwhile. Run on kernel overlayfs and on strata-fuse over
//! copies of the same layers; afterwards each tree is checked against the model again, after a
//! remount and through the other backend's mount of the same upper.
//!
//! `STRATA_STRESS_SECS` (default 60): time for both backends together; `STRATA_STRESS_SEED`
//! (default 1); `STRATA_STRESS_THREADS` (default 4); `STRATA_STRESS_PROWLERS` (default 2: they
//! mostly read the names the workers are busy with); `STRATA_STRESS_BACKENDS` (default
//! `kernel,fuse`); `STRATA_STRESS_BACKGROUND`: a shell command run meanwhile with `{}` replaced
//! by a scratch directory inside the mount (`scripts/stress-fuse.sh` passes stress-ng there).

#[path = "../common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

impl Rng {
    fn data(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max) + 1;
        let c = b'a' + self.below(26) as u8;
        (0..n).map(|i| if i % 61 == 60 { b'\n' } else { c.wrapping_add((i % 7) as u8) }).collect()
    }
}

fn env_num(k: &str, d: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

// ---- the layers ----

const POOL: usize = 40;
const BIG: usize = 256 << 10;

fn big_data(k: usize) -> Vec<u8> {
    let mut x = 7 + k as u32;
    (0..BIG)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 24) as u8
        })
        .collect()
}

fn write(p: PathBuf, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(&p, data).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
}

/// Each thread directory `t{k}`: l2 has a, b, big, ld/{a,c,sub/a}, od/hidden, p/f0..; l1 has
/// b (over l2's), c, ld/b, a whiteout of ld/c and od opaque with od/x.
fn build_layers(root: &Path, threads: usize) -> Stack {
    let s = Stack::new(root, 2);
    let (l1, l2) = (&s.lowers[0], &s.lowers[1]);
    for k in 0..threads {
        let t2 = l2.join(format!("t{k}"));
        let t1 = l1.join(format!("t{k}"));
        write(t2.join("a"), format!("l2 a {k}\n").as_bytes());
        write(t2.join("b"), b"l2 b\n");
        write(t2.join("big"), &big_data(k));
        write(t2.join("ld/a"), b"l2 ld/a\n");
        write(t2.join("ld/c"), b"l2 ld/c\n");
        write(t2.join("ld/sub/a"), b"l2 ld/sub/a\n");
        write(t2.join("od/hidden"), b"hidden\n");
        for i in 0..POOL {
            write(t2.join(format!("p/f{i}")), format!("pool {k} {i}\n").repeat(i + 1).as_bytes());
        }
        write(t1.join("b"), format!("l1 b {k}\n").as_bytes());
        write(t1.join("c"), b"l1 c\n");
        write(t1.join("ld/b"), b"l1 ld/b\n");
        whiteout(&t1.join("ld/c"));
        fs::create_dir_all(t1.join("od")).unwrap();
        set_xattr(&t1.join("od"), "trusted.overlay.opaque", b"y");
        write(t1.join("od/x"), b"l1 od/x\n");
    }
    s
}

fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

// ---- the model ----

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ent {
    File(u64),
    /// `lower`: has (or may have) lower layers; kernel overlayfs without redirect_dir does not
    /// rename those (EXDEV), so the workers rename only the others.
    Dir {
        lower: bool,
    },
}

#[derive(Debug, Clone)]
struct MFile {
    data: Vec<u8>,
    mode: u32,
    /// Copied up from a lower layer: kernel overlayfs with index=off may give its names
    /// different st_ino (the origin's for one, the upper file's for another), so st_ino is
    /// compared only for files made through the mount.
    lower: bool,
}

/// What one thread directory holds: relative paths ("" is the directory itself).
#[derive(Debug, Clone, Default)]
struct Model {
    ents: BTreeMap<String, Ent>,
    files: HashMap<u64, MFile>,
    next: u64,
}

fn parent_of(p: &str) -> &str {
    p.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

fn join(d: &str, n: &str) -> String {
    if d.is_empty() {
        n.to_string()
    } else {
        format!("{d}/{n}")
    }
}

fn depth(p: &str) -> usize {
    if p.is_empty() {
        0
    } else {
        p.matches('/').count() + 1
    }
}

impl Model {
    fn initial(k: usize) -> Model {
        let mut m = Model::default();
        m.ents.insert(String::new(), Ent::Dir { lower: true });
        for d in ["ld", "ld/sub", "od", "p"] {
            m.ents.insert(d.into(), Ent::Dir { lower: true });
        }
        let files: Vec<(String, Vec<u8>)> = [
            ("a".to_string(), format!("l2 a {k}\n").into_bytes()),
            ("b".to_string(), format!("l1 b {k}\n").into_bytes()),
            ("c".to_string(), b"l1 c\n".to_vec()),
            ("big".to_string(), big_data(k)),
            ("ld/a".to_string(), b"l2 ld/a\n".to_vec()),
            ("ld/b".to_string(), b"l1 ld/b\n".to_vec()),
            ("ld/sub/a".to_string(), b"l2 ld/sub/a\n".to_vec()),
            ("od/x".to_string(), b"l1 od/x\n".to_vec()),
        ]
        .into_iter()
        .chain((0..POOL).map(|i| (format!("p/f{i}"), format!("pool {k} {i}\n").repeat(i + 1).into_bytes())))
        .collect();
        for (p, data) in files {
            m.new_file(&p, data, 0o644, true);
        }
        m
    }

    fn new_file(&mut self, p: &str, data: Vec<u8>, mode: u32, lower: bool) {
        let ino = self.next;
        self.next += 1;
        self.files.insert(ino, MFile { data, mode, lower });
        self.ents.insert(p.to_string(), Ent::File(ino));
    }

    fn get(&self, p: &str) -> Option<Ent> {
        self.ents.get(p).copied()
    }

    fn children(&self, d: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .ents
            .keys()
            .filter(|k| !k.is_empty() && parent_of(k) == d)
            .map(|k| k.rsplit('/').next().unwrap_or(k).to_string())
            .collect();
        v.sort();
        v
    }

    fn nlink(&self, ino: u64) -> usize {
        self.ents.values().filter(|e| **e == Ent::File(ino)).count()
    }

    fn names_of(&self, ino: u64) -> Vec<String> {
        self.ents.iter().filter(|(_, e)| **e == Ent::File(ino)).map(|(k, _)| k.clone()).collect()
    }

    /// Drop a file entry; its data goes with its last name.
    fn remove_name(&mut self, p: &str) {
        if let Some(Ent::File(ino)) = self.ents.remove(p) {
            if self.nlink(ino) == 0 {
                self.files.remove(&ino);
            }
        }
    }
}

// ---- operations ----

#[derive(Debug, Clone)]
enum Op {
    Create(String, Vec<u8>),
    Write(String, u64, Vec<u8>),
    Append(String, Vec<u8>),
    Truncate(String, u64),
    Chmod(String, u32),
    Link(String, String),
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
    Rename(String, String),
    Read(String),
    Stat(String),
    List(String),
    Hold(String),
    ReadHeld(usize),
}

const NAMES: &[&str] = &["a", "b", "c", "n", "m", "x", "y"];

/// The next operations: usually one, sometimes the link cycle of issue 10 point 11
/// (`link f f.l; unlink f; link f.l f; unlink f.l`) on one file.
fn gen_ops(rng: &mut Rng, m: &Model, held: usize) -> Vec<Op> {
    if rng.below(40) == 0 {
        let files: Vec<&String> =
            m.ents.iter().filter(|(_, e)| matches!(e, Ent::File(_))).map(|(k, _)| k).collect();
        if !files.is_empty() {
            let f = files[rng.below(files.len())].clone();
            let l = format!("{f}.l");
            return vec![
                Op::Link(f.clone(), l.clone()),
                Op::Unlink(f.clone()),
                Op::Link(l.clone(), f.clone()),
                Op::Unlink(l),
                Op::Stat(f),
            ];
        }
    }
    vec![gen(rng, m, held)]
}

fn gen(rng: &mut Rng, m: &Model, held: usize) -> Op {
    let dirs: Vec<&String> =
        m.ents.iter().filter(|(_, e)| matches!(e, Ent::Dir { .. })).map(|(k, _)| k).collect();
    let files: Vec<&String> =
        m.ents.iter().filter(|(_, e)| matches!(e, Ent::File(_))).map(|(k, _)| k).collect();
    let entries: Vec<&String> = m.ents.keys().filter(|k| !k.is_empty()).collect();
    let fresh = |rng: &mut Rng, max_depth: usize| -> String {
        let ds: Vec<&&String> = dirs.iter().filter(|d| depth(d) < max_depth).collect();
        let d = ds[rng.below(ds.len())];
        join(d, NAMES[rng.below(NAMES.len())])
    };
    let file = |rng: &mut Rng| -> String {
        if files.is_empty() || rng.below(12) == 0 {
            fresh(rng, 3)
        } else {
            files[rng.below(files.len())].clone()
        }
    };
    let any = |rng: &mut Rng| -> String {
        if entries.is_empty() || rng.below(6) == 0 {
            fresh(rng, 3)
        } else {
            entries[rng.below(entries.len())].clone()
        }
    };
    match rng.below(30) {
        0..=2 => Op::Create(fresh(rng, 3), rng.data(3000)),
        3 | 4 => Op::Write(file(rng), rng.below(6000) as u64, rng.data(2000)),
        5 | 6 => Op::Append(file(rng), rng.data(500)),
        7 => Op::Truncate(file(rng), rng.below(3000) as u64),
        8 => Op::Chmod(file(rng), [0o600, 0o644, 0o755, 0o640][rng.below(4)]),
        9 | 10 => Op::Link(file(rng), fresh(rng, 3)),
        11 | 12 => Op::Unlink(any(rng)),
        13 => Op::Mkdir(fresh(rng, 2)),
        14 => Op::Rmdir(any(rng)),
        15 | 16 => {
            // A file or a directory without lower layers (kernel overlayfs without redirect_dir
            // answers EXDEV for the others) onto any name.
            let movable: Vec<&&String> =
                dirs.iter().filter(|d| m.get(d) == Some(Ent::Dir { lower: false })).collect();
            let src = if !movable.is_empty() && rng.below(4) == 0 {
                (*movable[rng.below(movable.len())]).clone()
            } else {
                file(rng)
            };
            if m.get(&src) == Some(Ent::Dir { lower: true }) {
                return Op::Stat(src);
            }
            Op::Rename(src, if rng.below(2) == 0 { any(rng) } else { fresh(rng, 3) })
        }
        17..=20 => Op::Read(file(rng)),
        21..=24 => Op::Stat(any(rng)),
        25 => Op::List(dirs[rng.below(dirs.len())].clone()),
        26 => Op::Hold(file(rng)),
        _ => {
            if held > 0 {
                Op::ReadHeld(rng.below(held))
            } else {
                Op::Read(file(rng))
            }
        }
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn rc(r: libc::c_int) -> Result<(), i32> {
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
    } else {
        Ok(())
    }
}

fn io<T>(r: std::io::Result<T>) -> Result<T, i32> {
    r.map_err(|e| errno(&e))
}

/// The paths of the operation each worker is doing, for the prowlers.
type Hot = Vec<Mutex<Vec<PathBuf>>>;

impl Op {
    fn paths(&self) -> Vec<&str> {
        match self {
            Op::Create(p, _)
            | Op::Write(p, _, _)
            | Op::Append(p, _)
            | Op::Truncate(p, _)
            | Op::Chmod(p, _)
            | Op::Unlink(p)
            | Op::Mkdir(p)
            | Op::Rmdir(p)
            | Op::Read(p)
            | Op::Stat(p)
            | Op::List(p)
            | Op::Hold(p) => vec![p],
            Op::Link(a, b) | Op::Rename(a, b) => vec![a, b],
            Op::ReadHeld(_) => vec![],
        }
    }
}

mod worker;
use worker::Worker;

/// Walk thread directory `dir` and compare every entry with the model: names, types, data,
/// modes, link counts and hardlink groups.
fn verify_tree(dir: &Path, m: &Model, what: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let mut seen_ino: HashMap<u64, u64> = HashMap::new();
    for (p, e) in &m.ents {
        if let Ent::Dir { .. } = e {
            let real = if p.is_empty() { dir.to_path_buf() } else { dir.join(p) };
            let got: Vec<String> = match fs::read_dir(&real) {
                Ok(rd) => {
                    let mut v: Vec<String> = rd
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    v.sort();
                    v
                }
                Err(e) => {
                    bad.push(format!("{what}: list {}: {e}", real.display()));
                    continue;
                }
            };
            let want = m.children(p);
            if got != want {
                bad.push(format!("{what}: {}/{p}: lists {got:?}, model has {want:?}", dir.display()));
            }
            for g in &got {
                if let Err(e) = fs::symlink_metadata(real.join(g)) {
                    bad.push(format!("{what}: {} is listed but lstat says {e}", real.join(g).display()));
                }
            }
        }
    }
    for (p, e) in &m.ents {
        let Ent::File(ino) = e else { continue };
        let real = dir.join(p);
        let f = &m.files[ino];
        match fs::symlink_metadata(&real) {
            Ok(md) => {
                let want = (true, f.mode, m.nlink(*ino) as u64);
                let got = (md.is_file(), md.mode() & 0o7777, md.nlink());
                if want != got {
                    bad.push(format!(
                        "{what}: {}: (file, mode, nlink) {got:?}, model {want:?}",
                        real.display()
                    ));
                }
                match seen_ino.get(ino) {
                    Some(i) if *i != md.ino() && !f.lower => bad.push(format!(
                        "{what}: {}: st_ino {} differs from its links' {i}",
                        real.display(),
                        md.ino()
                    )),
                    _ => {
                        seen_ino.insert(*ino, md.ino());
                    }
                }
            }
            Err(e) => {
                bad.push(format!("{what}: {}: {e}", real.display()));
                continue;
            }
        }
        match fs::read(&real) {
            Ok(d) if d == f.data => {}
            Ok(d) => bad.push(format!(
                "{what}: {}: {} bytes differ from the model's {} bytes",
                real.display(),
                d.len(),
                f.data.len()
            )),
            Err(e) => bad.push(format!("{what}: read {}: {e}", real.display())),
        }
    }
    bad
}

/// Reads whatever it finds in every thread directory; only ENOENT, ENOTDIR and EISDIR (the
/// entry changed under it) are expected errors.
fn prowl(m: &Path, threads: usize, stop: &AtomicBool, seed: u64, hot: &Hot) -> Vec<String> {
    let mut rng = Rng::new(seed ^ 0xabcdef);
    let mut bad = Vec::new();
    let ok_err = |e: &std::io::Error| matches!(errno(e), libc::ENOENT | libc::ENOTDIR | libc::EISDIR);
    while !stop.load(Ordering::Relaxed) && bad.len() < 20 {
        if rng.below(4) != 0 {
            // Mostly where a worker is busy right now.
            let paths = hot[rng.below(threads)].lock().unwrap_or_else(|e| e.into_inner()).clone();
            for p in paths.iter().chain(paths.iter()).chain(paths.iter()) {
                match fs::symlink_metadata(p) {
                    Ok(md) if md.is_file() => match fs::read(p) {
                        Ok(_) => {}
                        Err(e) if ok_err(&e) => {}
                        Err(e) => bad.push(format!("prowler: read {}: {e}", p.display())),
                    },
                    Ok(_) => {}
                    Err(e) if ok_err(&e) => {}
                    Err(e) => bad.push(format!("prowler: lstat {}: {e}", p.display())),
                }
            }
            continue;
        }
        let mut dir = m.join(format!("t{}", rng.below(threads)));
        for _ in 0..3 {
            let ents: Vec<fs::DirEntry> = match fs::read_dir(&dir) {
                Ok(rd) => rd.filter_map(|e| e.ok()).collect(),
                Err(e) if ok_err(&e) => break,
                Err(e) => {
                    bad.push(format!("prowler: list {}: {e}", dir.display()));
                    break;
                }
            };
            if ents.is_empty() {
                break;
            }
            let e = &ents[rng.below(ents.len())];
            let p = e.path();
            match fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => {
                    dir = p;
                    continue;
                }
                Ok(_) => {}
                Err(e) if ok_err(&e) => break,
                Err(e) => bad.push(format!("prowler: lstat {}: {e}", p.display())),
            }
            match fs::read(&p) {
                Ok(_) => {}
                Err(e) if ok_err(&e) => {}
                Err(e) => bad.push(format!("prowler: read {}: {e}", p.display())),
            }
            break;
        }
    }
    bad
}

/// Run the workers (and prowler) on mount `mnt` until `secs` have passed; returns the models
/// and every divergence seen.
fn run_load(mnt: &Path, threads: usize, seed: u64, secs: f64) -> (Vec<Model>, Vec<String>, u64) {
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut bad = Vec::new();
    let mut models = Vec::new();
    let mut total = 0;
    let background = std::env::var("STRATA_STRESS_BACKGROUND").ok().map(|cmd| {
        let d = mnt.join("background");
        fs::create_dir_all(&d).unwrap();
        let cmd = cmd.replace("{}", &d.display().to_string());
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("exec {cmd}"))
            .spawn()
            .expect("background command")
    });
    let hot: Hot = (0..threads).map(|_| Mutex::new(Vec::new())).collect();
    let prowlers = env_num("STRATA_STRESS_PROWLERS", 2);
    std::thread::scope(|sc| {
        let stop = &stop;
        let hot = &hot;
        let prowlers: Vec<_> = (0..prowlers)
            .map(|i| sc.spawn(move || prowl(mnt, threads, stop, seed + i * 7919, hot)))
            .collect();
        let workers: Vec<_> = (0..threads)
            .map(|k| {
                sc.spawn(move || {
                    let mut w = Worker {
                        hot: &hot[k],
                        dir: mnt.join(format!("t{k}")),
                        m: Model::initial(k),
                        held: Vec::new(),
                        log: VecDeque::new(),
                        bad: Vec::new(),
                        ops: 0,
                    };
                    let mut rng = Rng::new(seed * 1000 + k as u64);
                    while Instant::now() < deadline && !w.bad.iter().any(|b| b.contains("worker stops")) {
                        for op in gen_ops(&mut rng, &w.m, w.held.len()) {
                            w.step(op);
                        }
                    }
                    w.held.clear();
                    (w.m, w.bad, w.ops)
                })
            })
            .collect();
        for w in workers {
            let (m, b, ops) = w.join().expect("worker thread");
            models.push(m);
            bad.extend(b);
            total += ops;
        }
        stop.store(true, Ordering::Relaxed);
        for p in prowlers {
            bad.extend(p.join().expect("prowler thread"));
        }
    });
    if let Some(mut c) = background {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let _ = c.wait();
    }
    (models, bad, total)
}

fn verify_all(mnt: &Path, models: &[Model], what: &str) -> Vec<String> {
    models.iter().enumerate().flat_map(|(k, m)| verify_tree(&mnt.join(format!("t{k}")), m, what)).collect()
}

fn fresh_work(s: &Stack) {
    fs::remove_dir_all(&s.work).unwrap();
    fs::create_dir(&s.work).unwrap();
}

fn mount(s: &Stack, backend: &str) -> MountGuard {
    if backend == "kernel" {
        s.mount_kernel()
    } else {
        s.mount_fuse("")
    }
}

#[test]
fn model_checking_stress() {
    if !can_run() {
        return;
    }
    let secs = env_num("STRATA_STRESS_SECS", 60) as f64;
    let seed = env_num("STRATA_STRESS_SEED", 1);
    let threads = env_num("STRATA_STRESS_THREADS", 4) as usize;
    let backends: Vec<String> = std::env::var("STRATA_STRESS_BACKENDS")
        .unwrap_or_else(|_| "kernel,fuse".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let t = scratch();
    let pristine = t.path().join("pristine");
    let _ = build_layers(&pristine, threads);
    // Setting up and checking takes a while too: give the load itself a bit less.
    let per = (secs / backends.len() as f64 * 0.8).max(1.0);
    let mut bad = Vec::new();
    for backend in &backends {
        let root = t.path().join(backend);
        copy_tree(&pristine, &root);
        let s = Stack {
            lowers: vec![root.join("l1"), root.join("l2")],
            upper: root.join("upper"),
            work: root.join("work"),
            mnt: root.join("mnt"),
        };
        let started = Instant::now();
        let (models, errs, ops) = {
            let _g = mount(&s, backend);
            let (models, mut errs, ops) = run_load(&s.mnt, threads, seed, per);
            errs.extend(verify_all(&s.mnt, &models, &format!("{backend}, after the run")));
            (models, errs, ops)
        };
        eprintln!(
            "stress {backend}: seed {seed}, {threads} threads, {ops} ops in {:.1} s, {} divergences",
            started.elapsed().as_secs_f64(),
            errs.len()
        );
        bad.extend(errs.into_iter().map(|e| format!("[{backend}] {e}")));
        // The same upper after a remount, and through the other backend.
        fresh_work(&s);
        {
            let _g = mount(&s, backend);
            bad.extend(verify_all(&s.mnt, &models, &format!("{backend} upper, remounted")));
        }
        let other = if backend == "kernel" { "fuse" } else { "kernel" };
        fresh_work(&s);
        {
            let _g = mount(&s, other);
            bad.extend(verify_all(&s.mnt, &models, &format!("{backend} upper, mounted by {other}")));
        }
    }
    assert!(
        bad.is_empty(),
        "{} divergences (seed {seed}); first ones:\n{}",
        bad.len(),
        bad[..bad.len().min(12)].join("\n")
    );
}
