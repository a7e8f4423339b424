//! The stress test's worker: one thread's directory, its model, held descriptors, and the
//! operations applied and checked against the model.

use super::*;

/// A worker: its directory, model, held descriptors and what went wrong.
pub(super) struct Worker<'a> {
    pub(super) hot: &'a Mutex<Vec<PathBuf>>,
    pub(super) dir: PathBuf,
    pub(super) m: Model,
    pub(super) held: Vec<(String, fs::File)>,
    pub(super) log: VecDeque<String>,
    pub(super) bad: Vec<String>,
    pub(super) ops: u64,
}

impl Worker<'_> {
    pub(super) fn p(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.dir.clone()
        } else {
            self.dir.join(rel)
        }
    }

    pub(super) fn fail(&mut self, what: String) {
        if self.bad.len() < 20 {
            let log: Vec<&String> = self.log.iter().collect();
            self.bad.push(format!("{}: {what}\n    last ops: {log:#?}", self.dir.display()));
        }
    }

    pub(super) fn check<T: std::fmt::Debug + PartialEq>(
        &mut self,
        op: &Op,
        want: Result<T, i32>,
        got: Result<T, i32>,
    ) {
        if want != got {
            self.fail(format!("{op:?}: expected {want:?}, got {got:?}"));
        }
    }

    /// The outcome the model predicts for a change, applied to the model when it succeeds.
    pub(super) fn model_change(&mut self, op: &Op) -> Result<(), i32> {
        let m = &mut self.m;
        match op {
            Op::Create(p, data) => {
                if m.get(p).is_some() {
                    return Err(libc::EEXIST);
                }
                m.new_file(p, data.clone(), 0o644, false);
            }
            Op::Write(p, off, data) => match m.get(p) {
                None => return Err(libc::ENOENT),
                Some(Ent::Dir { .. }) => return Err(libc::EISDIR),
                Some(Ent::File(ino)) => {
                    let f = m.files.get_mut(&ino).expect("file data");
                    let end = *off as usize + data.len();
                    if f.data.len() < end {
                        f.data.resize(end, 0);
                    }
                    f.data[*off as usize..end].copy_from_slice(data);
                }
            },
            Op::Append(p, data) => match m.get(p) {
                None => return Err(libc::ENOENT),
                Some(Ent::Dir { .. }) => return Err(libc::EISDIR),
                Some(Ent::File(ino)) => {
                    m.files.get_mut(&ino).expect("file data").data.extend_from_slice(data)
                }
            },
            Op::Truncate(p, len) => match m.get(p) {
                None => return Err(libc::ENOENT),
                Some(Ent::Dir { .. }) => return Err(libc::EISDIR),
                Some(Ent::File(ino)) => {
                    m.files.get_mut(&ino).expect("file data").data.resize(*len as usize, 0)
                }
            },
            Op::Chmod(p, mode) => match m.get(p) {
                None => return Err(libc::ENOENT),
                Some(Ent::Dir { .. }) => {}
                Some(Ent::File(ino)) => m.files.get_mut(&ino).expect("file data").mode = *mode,
            },
            Op::Link(a, b) => match (m.get(a), m.get(b)) {
                (None, _) => return Err(libc::ENOENT),
                (_, Some(_)) => return Err(libc::EEXIST),
                (Some(Ent::Dir { .. }), _) => return Err(libc::EPERM),
                (Some(e), None) => {
                    m.ents.insert(b.clone(), e);
                }
            },
            Op::Unlink(p) => match m.get(p) {
                None => return Err(libc::ENOENT),
                Some(Ent::Dir { .. }) => return Err(libc::EISDIR),
                Some(Ent::File(_)) => m.remove_name(p),
            },
            Op::Mkdir(p) => {
                if m.get(p).is_some() {
                    return Err(libc::EEXIST);
                }
                m.ents.insert(p.clone(), Ent::Dir { lower: false });
            }
            Op::Rmdir(p) => match m.get(p) {
                None => return Err(libc::ENOENT),
                Some(Ent::File(_)) => return Err(libc::ENOTDIR),
                Some(Ent::Dir { .. }) if !m.children(p).is_empty() => return Err(libc::ENOTEMPTY),
                Some(Ent::Dir { .. }) => {
                    m.ents.remove(p);
                }
            },
            Op::Rename(a, b) => match (m.get(a), m.get(b)) {
                (None, _) => return Err(libc::ENOENT),
                _ if a == b => {}
                // The VFS checks ancestry before the types.
                (Some(Ent::Dir { .. }), _) if b.starts_with(&format!("{a}/")) => return Err(libc::EINVAL),
                (_, Some(_)) if a.starts_with(&format!("{b}/")) => return Err(libc::ENOTEMPTY),
                (Some(Ent::File(_)), Some(Ent::Dir { .. })) => return Err(libc::EISDIR),
                (Some(Ent::Dir { .. }), Some(Ent::File(_))) => return Err(libc::ENOTDIR),
                (Some(Ent::Dir { .. }), Some(Ent::Dir { .. })) if !m.children(b).is_empty() => {
                    return Err(libc::ENOTEMPTY)
                }
                // Two names of one file: rename does nothing.
                (Some(Ent::File(x)), Some(Ent::File(y))) if x == y => {}
                (Some(Ent::File(x)), _) => {
                    m.remove_name(b);
                    m.ents.remove(a);
                    m.ents.insert(b.clone(), Ent::File(x));
                }
                (Some(Ent::Dir { .. }), _) => {
                    m.ents.remove(b);
                    let pre = format!("{a}/");
                    let moved: Vec<(String, Ent)> = m
                        .ents
                        .iter()
                        .filter(|(k, _)| *k == a || k.starts_with(&pre))
                        .map(|(k, e)| (k.clone(), *e))
                        .collect();
                    for (k, e) in moved {
                        m.ents.remove(&k);
                        m.ents.insert(format!("{b}{}", &k[a.len()..]), e);
                    }
                }
            },
            _ => {}
        }
        Ok(())
    }

    pub(super) fn real_change(&mut self, op: &Op) -> Result<(), i32> {
        let o_w = |p: &Path, append: bool| {
            fs::OpenOptions::new().write(true).append(append).custom_flags(libc::O_NOFOLLOW).open(p)
        };
        // SAFETY (all unsafe blocks): libc calls with valid C strings.
        match op {
            Op::Create(p, data) => {
                io(fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(self.p(p)).and_then(
                    |f| {
                        f.set_permissions(fs::Permissions::from_mode(0o644))?;
                        f.write_all_at(data, 0)
                    },
                ))
            }
            Op::Write(p, off, data) => io(o_w(&self.p(p), false).and_then(|f| f.write_all_at(data, *off))),
            Op::Append(p, data) => {
                io(o_w(&self.p(p), true).and_then(|mut f| std::io::Write::write_all(&mut f, data)))
            }
            Op::Truncate(p, len) => rc(unsafe { libc::truncate(cstr(&self.p(p)).as_ptr(), *len as i64) }),
            Op::Chmod(p, mode) => rc(unsafe { libc::chmod(cstr(&self.p(p)).as_ptr(), *mode) }),
            Op::Link(a, b) => rc(unsafe { libc::link(cstr(&self.p(a)).as_ptr(), cstr(&self.p(b)).as_ptr()) }),
            Op::Unlink(p) => rc(unsafe { libc::unlink(cstr(&self.p(p)).as_ptr()) }),
            Op::Mkdir(p) => rc(unsafe { libc::mkdir(cstr(&self.p(p)).as_ptr(), 0o755) }),
            Op::Rmdir(p) => rc(unsafe { libc::rmdir(cstr(&self.p(p)).as_ptr()) }),
            Op::Rename(a, b) => {
                rc(unsafe { libc::rename(cstr(&self.p(a)).as_ptr(), cstr(&self.p(b)).as_ptr()) })
            }
            _ => Ok(()),
        }
    }

    /// lstat of `p` against the model; names of the same file must share st_ino.
    pub(super) fn check_stat(&mut self, op: &Op, p: &str) {
        let got = fs::symlink_metadata(self.p(p));
        match (self.m.get(p), got) {
            (None, Err(e)) if errno(&e) == libc::ENOENT => {}
            (None, r) => self.fail(format!("{op:?}: expected ENOENT, got {r:?}")),
            (Some(_), Err(e)) => self.fail(format!("{op:?}: {p} is in the model, lstat says {e}")),
            (Some(Ent::Dir { .. }), Ok(md)) => {
                if !md.is_dir() {
                    self.fail(format!("{op:?}: {p} should be a directory: {md:?}"));
                }
            }
            (Some(Ent::File(ino)), Ok(md)) => {
                let f = self.m.files[&ino].clone();
                let want = (true, f.data.len() as u64, f.mode, self.m.nlink(ino) as u64);
                let got = (md.is_file(), md.len(), md.mode() & 0o7777, md.nlink());
                if want != got {
                    self.fail(format!("{op:?}: (file, size, mode, nlink) expected {want:?}, got {got:?}"));
                }
                let other = if f.lower { None } else { self.m.names_of(ino).into_iter().find(|n| n != p) };
                if let Some(other) = other {
                    match fs::symlink_metadata(self.p(&other)) {
                        Ok(o) if o.ino() == md.ino() => {}
                        r => self
                            .fail(format!("{op:?}: {other} is a link of {p} (st_ino {}): {r:?}", md.ino())),
                    }
                }
            }
        }
    }

    pub(super) fn check_read(&mut self, op: &Op, p: &str) {
        let got = io(fs::read(self.p(p)));
        let want = match self.m.get(p) {
            None => Err(libc::ENOENT),
            Some(Ent::Dir { .. }) => Err(libc::EISDIR),
            Some(Ent::File(ino)) => Ok(self.m.files[&ino].data.clone()),
        };
        if want != got {
            let short = |r: &Result<Vec<u8>, i32>| match r {
                Ok(d) => format!("{} bytes {:?}", d.len(), String::from_utf8_lossy(&d[..d.len().min(80)])),
                Err(e) => format!("errno {e}"),
            };
            self.fail(format!("{op:?}: expected {}, got {}", short(&want), short(&got)));
        }
    }

    pub(super) fn check_list(&mut self, op: &Op, d: &str) {
        let got: Result<Vec<String>, i32> = io(fs::read_dir(self.p(d)).and_then(|rd| {
            let mut v = rd
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<Vec<_>, _>>()?;
            v.sort();
            Ok(v)
        }));
        let want = Ok(self.m.children(d));
        self.check(op, want, got);
    }

    pub(super) fn step(&mut self, op: Op) {
        self.log.push_back(format!("{op:?}").chars().take(160).collect());
        if self.log.len() > 25 {
            self.log.pop_front();
        }
        self.ops += 1;
        {
            // Tell the prowlers where to look: this op's names and the other names of its files.
            let mut hot: Vec<PathBuf> = Vec::new();
            for p in op.paths() {
                hot.push(self.p(p));
                if let Some(Ent::File(ino)) = self.m.get(p) {
                    hot.extend(self.m.names_of(ino).iter().map(|n| self.p(n)));
                }
            }
            *self.hot.lock().unwrap_or_else(|e| e.into_inner()) = hot;
        }
        match &op {
            Op::Read(p) => self.check_read(&op, &p.clone()),
            Op::Stat(p) => self.check_stat(&op, &p.clone()),
            Op::List(d) => self.check_list(&op, &d.clone()),
            Op::Hold(p) => {
                let want = match self.m.get(p) {
                    None => Err(libc::ENOENT),
                    _ => Ok(()),
                };
                let is_file = matches!(self.m.get(p), Some(Ent::File(_)));
                let got = io(fs::File::open(self.p(p)));
                let got = got.map(|f| {
                    if is_file {
                        self.held.push((p.clone(), f));
                    }
                    if self.held.len() > 4 {
                        self.held.remove(0);
                    }
                });
                self.check(&op, want, got);
            }
            Op::ReadHeld(i) => {
                // The descriptor may show the file as it was when opened (strata-fuse keeps
                // reading a lower copy opened before a copy-up, see fuse/README.md): it must
                // read, and the names must not have changed because of it.
                let i = *i % self.held.len().max(1);
                if let Some((name, f)) = self.held.get(i) {
                    let mut buf = Vec::new();
                    let r = (&*f).read_to_end(&mut buf).map(drop);
                    let name = name.clone();
                    if let Err(e) = r {
                        self.fail(format!("{op:?}: reading held {name}: {e}"));
                    }
                    self.held.remove(i);
                }
            }
            _ => {
                let want = self.model_change(&op);
                let got = self.real_change(&op);
                self.check(&op, want, got);
                if want.is_ok() && got.is_err() {
                    // Resynchronise: the model cannot follow a failed change it predicted.
                    self.bad.push(format!("{}: model and tree part ways; worker stops", self.dir.display()));
                }
            }
        }
    }
}
