//! One instruction over a stage: what it changes in the config, the layer it makes, the cache.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::context::Context;
use super::parse::{self, Args, Containerfile, Instruction, Keyword};
use super::{
    cache_name, expand, lookup, BuildError, BuildEvent, BuildOptions, StageDef, StepError, DEFAULT_PATH,
};
use crate::images::ImagePublish;
use crate::store::Store;

type StepResult<T> = Result<T, StepError>;

/// A stage as it is built: the image its last step made and what later steps see.
struct Stage {
    /// The store name of the image so far.
    image: String,
    config: Value,
    /// Declared ARGs with their values, in order.
    args: Vec<(String, String)>,
    shell: Vec<String>,
    /// Whether this stage set CMD itself (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

pub(super) struct Builder<'a> {
    store: &'a mut Store,
    ctx: &'a Context,
    cf: &'a Containerfile,
    opts: &'a BuildOptions,
    global: Vec<(String, String)>,
    total: usize,
    n: usize,
    pub steps: usize,
    pub cached: usize,
    /// Once a step ran, every later one runs.
    missed: bool,
}

fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    crate::time::rfc3339(secs)
}

impl<'a> Builder<'a> {
    pub fn new(
        store: &'a mut Store,
        ctx: &'a Context,
        cf: &'a Containerfile,
        opts: &'a BuildOptions,
        global: Vec<(String, String)>,
        total: usize,
    ) -> Self {
        Builder { store, ctx, cf, opts, global, total, n: 0, steps: 0, cached: 0, missed: opts.no_cache }
    }

    fn emit(&self, e: BuildEvent) {
        if let Some(p) = &self.opts.progress {
            p(&e);
        }
    }

    fn fail(&self, ins: &Instruction, e: StepError) -> BuildError {
        let text = ins.text();
        match e {
            StepError::Status(code) => BuildError::RunFailed {
                file: self.cf.file.clone(),
                line: ins.line,
                n: self.n,
                total: self.total,
                text,
                code,
            },
            e => BuildError::Step {
                file: self.cf.file.clone(),
                line: ins.line,
                n: self.n,
                total: self.total,
                text,
                source: Box::new(e),
            },
        }
    }

    /// Builds one stage; returns the store name of its image.
    pub fn stage(
        &mut self,
        def: &StageDef<'_>,
        done: &[(Option<String>, String)],
    ) -> Result<String, BuildError> {
        self.n += 1;
        self.emit(BuildEvent::Step { n: self.n, total: self.total, text: def.from.text() });
        let mut st = self.from(def.from, done).map_err(|e| self.fail(def.from, e))?;
        for ins in def.body {
            self.n += 1;
            self.emit(BuildEvent::Step { n: self.n, total: self.total, text: ins.text() });
            self.instruction(&mut st, ins).map_err(|e| self.fail(ins, e))?;
        }
        Ok(st.image)
    }

    fn from(&mut self, ins: &Instruction, done: &[(Option<String>, String)]) -> StepResult<Stage> {
        let (image, _) = parse::from_parts(ins)?;
        let image = {
            let vars = lookup(&self.global);
            expand::word(&image, self.cf.escape, &vars)?
        };
        let earlier =
            done.iter().rev().find(|(n, _)| n.as_deref() == Some(image.to_ascii_lowercase().as_str()));
        let name = if let Some((_, img)) = earlier {
            img.clone()
        } else if image == "scratch" {
            let name = cache_name("scratch", "");
            if self.store.image(&name)?.is_none() {
                let cfg = serde_json::to_vec(&super::scratch_config())
                    .map_err(|e| StepError::Config(e.to_string()))?;
                ImagePublish::new(&name, &cfg, vec![]).publish(self.store)?;
            }
            name
        } else {
            self.pull_if_missing(&image)?;
            image
        };
        let stored =
            self.store.image(&name)?.ok_or_else(|| StepError::Config(format!("image {name} vanished")))?;
        let mut config: Value = serde_json::from_slice(&self.store.read_blob(&stored.config_digest)?)
            .map_err(|e| StepError::Config(e.to_string()))?;
        let c = config_mut(&mut config);
        let env = c.entry("Env").or_insert_with(|| json!([]));
        if let Some(env) = env.as_array_mut() {
            if !env.iter().any(|e| e.as_str().is_some_and(|s| s.starts_with("PATH="))) {
                env.insert(0, json!(DEFAULT_PATH));
            }
        }
        let shell = match c.get("Shell").and_then(Value::as_array) {
            Some(s) => s.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            None => vec!["/bin/sh".to_string(), "-c".to_string()],
        };
        Ok(Stage { image: stored.name, config, args: Vec::new(), shell, cmd_set: false })
    }

    fn pull_if_missing(&mut self, image: &str) -> StepResult<()> {
        if self.store.image(image)?.is_some() {
            return Ok(());
        }
        let pull = |e: Box<dyn std::error::Error + Send + Sync>| StepError::Pull(image.to_string(), e);
        let r = crate::reference::normalize(image).map_err(|e| pull(Box::new(e)))?;
        if self.store.image(&r.to_string())?.is_some() {
            return Ok(());
        }
        let popts = crate::registry::PullOptions { platform: None, client: Default::default() };
        let resolved = crate::registry::resolve(&r, &popts).map_err(|e| pull(Box::new(e)))?;
        let iopts = crate::import::ImportOptions { name: Some(image.to_string()), ..Default::default() };
        crate::import::import_prepared(self.store, &resolved, image, &iopts)
            .map_err(|e| pull(Box::new(e)))?;
        Ok(())
    }

    /// The variables expansion sees: the stage's ARGs, then its ENV over them.
    fn vars(st: &Stage) -> Vec<(String, String)> {
        let mut v = st.args.clone();
        for e in env_list(&st.config) {
            if let Some((k, val)) = e.split_once('=') {
                v.push((k.to_string(), val.to_string()));
            }
        }
        v
    }

    fn expand(&self, st: &Stage, w: &str) -> StepResult<String> {
        let vars = Self::vars(st);
        let look = lookup(&vars);
        let out = expand::word(w, self.cf.escape, &look)?;
        Ok(out)
    }

    fn instruction(&mut self, st: &mut Stage, ins: &Instruction) -> StepResult<()> {
        let esc = self.cf.escape;
        let mut cfg = st.config.clone();
        match ins.keyword {
            Keyword::From => unreachable_from(),
            Keyword::Arg => {
                for (n, default) in parse::arg_names(ins, esc)? {
                    let value = match (self.opts.build_args.get(&n), default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(d)) => Some(self.expand(st, &d)?),
                        (None, None) => lookup(&self.global)(&n),
                    };
                    st.args.retain(|(k, _)| *k != n);
                    st.args.push((n, value.unwrap_or_default()));
                }
                self.steps += 1;
                return Ok(());
            }
            Keyword::Env => {
                let pairs = parse::name_values(ins, esc)?;
                let mut env = env_list(&cfg);
                for (k, v) in pairs {
                    let k = self.expand(st, &k)?;
                    let v = self.expand(st, &v)?;
                    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
                    env.push(format!("{k}={v}"));
                }
                config_mut(&mut cfg).insert("Env".into(), json!(env));
            }
            Keyword::Label => {
                let pairs = parse::name_values(ins, esc)?;
                let mut labels = Map::new();
                for (k, v) in pairs {
                    labels.insert(self.expand(st, &k)?, json!(self.expand(st, &v)?));
                }
                let c = config_mut(&mut cfg);
                let l = c.entry("Labels").or_insert_with(|| json!({}));
                if !l.is_object() {
                    *l = json!({});
                }
                if let Some(l) = l.as_object_mut() {
                    l.extend(labels);
                }
            }
            Keyword::Cmd => {
                let v = self.command(st, ins);
                config_mut(&mut cfg).insert("Cmd".into(), json!(v));
                st.cmd_set = true;
            }
            Keyword::Entrypoint => {
                let v = self.command(st, ins);
                let c = config_mut(&mut cfg);
                c.insert("Entrypoint".into(), json!(v));
                if !st.cmd_set {
                    c.insert("Cmd".into(), Value::Null);
                }
            }
            Keyword::Shell => {
                if let Args::Exec(v) = &ins.args {
                    st.shell = v.clone();
                    config_mut(&mut cfg).insert("Shell".into(), json!(v));
                }
            }
            Keyword::Expose => self.set_keys(st, ins, &mut cfg, "ExposedPorts", true)?,
            Keyword::Volume => self.set_keys(st, ins, &mut cfg, "Volumes", false)?,
            Keyword::User => {
                let u = self.expand(st, &ins.args_text())?;
                config_mut(&mut cfg).insert("User".into(), json!(u));
            }
            Keyword::Workdir => {
                let w = self.expand(st, &ins.args_text())?;
                let cur = cfg["config"]["WorkingDir"].as_str().unwrap_or("/").to_string();
                let dir = Path::new("/").join(&cur).join(&w);
                config_mut(&mut cfg).insert("WorkingDir".into(), json!(dir.to_string_lossy()));
            }
            Keyword::StopSignal => {
                let s = self.expand(st, &ins.args_text())?;
                config_mut(&mut cfg).insert("StopSignal".into(), json!(s));
            }
            Keyword::Onbuild => {
                let c = config_mut(&mut cfg);
                let o = c.entry("OnBuild").or_insert_with(|| json!([]));
                if !o.is_array() {
                    *o = json!([]);
                }
                if let Some(o) = o.as_array_mut() {
                    o.push(json!(ins.args_text()));
                }
            }
            Keyword::Healthcheck => {
                let test = match &ins.args {
                    Args::Shell(s) if s.eq_ignore_ascii_case("none") => json!(["NONE"]),
                    Args::Shell(s) => match s.split_once(char::is_whitespace) {
                        Some((c, rest)) if c.eq_ignore_ascii_case("cmd") => {
                            let rest = rest.trim();
                            match serde_json::from_str::<Vec<String>>(rest) {
                                Ok(v) => {
                                    json!(std::iter::once("CMD".to_string()).chain(v).collect::<Vec<_>>())
                                }
                                Err(_) => json!(["CMD-SHELL", rest]),
                            }
                        }
                        _ => {
                            return Err(StepError::Syntax(parse::Problem::Syntax(
                                "HEALTHCHECK takes NONE or CMD ...".into(),
                            )))
                        }
                    },
                    Args::Exec(_) => {
                        return Err(StepError::Syntax(parse::Problem::Syntax(
                            "HEALTHCHECK takes NONE or CMD ...".into(),
                        )))
                    }
                };
                config_mut(&mut cfg).insert("Healthcheck".into(), json!({ "Test": test }));
            }
            Keyword::Maintainer => {
                cfg["author"] = json!(ins.args_text());
            }
            Keyword::Run | Keyword::Copy | Keyword::Add => return self.layer_step(st, ins),
        }
        let text = self.expanded_text(st, ins)?;
        self.meta_step(st, ins, cfg, &text)
    }

    /// The text of a metadata step's cache key: its words expanded.
    fn expanded_text(&self, st: &Stage, ins: &Instruction) -> StepResult<String> {
        let raw = ins.text();
        Ok(match ins.keyword {
            Keyword::Cmd | Keyword::Entrypoint | Keyword::Shell | Keyword::Onbuild | Keyword::Healthcheck => {
                raw
            }
            _ => self.expand(st, &raw).unwrap_or(raw),
        })
    }

    fn command(&self, st: &Stage, ins: &Instruction) -> Vec<String> {
        match &ins.args {
            Args::Exec(v) => v.clone(),
            Args::Shell(s) => st.shell.iter().cloned().chain([s.clone()]).collect(),
        }
    }

    fn set_keys(
        &self,
        st: &Stage,
        ins: &Instruction,
        cfg: &mut Value,
        key: &str,
        ports: bool,
    ) -> StepResult<()> {
        let c = config_mut(cfg);
        let m = c.entry(key).or_insert_with(|| json!({}));
        if !m.is_object() {
            *m = json!({});
        }
        for w in parse::list(ins) {
            let mut w = self.expand(st, &w)?;
            if ports && !w.contains('/') {
                w.push_str("/tcp");
            }
            if let Some(m) = m.as_object_mut() {
                m.insert(w, json!({}));
            }
        }
        Ok(())
    }

    /// Looks `text` up over the stage's image; true when the cache had it (the stage moved on).
    fn cache_hit(&mut self, st: &mut Stage, name: &str) -> StepResult<bool> {
        self.steps += 1;
        if self.missed {
            return Ok(false);
        }
        let Some(img) = self.store.image(name)? else {
            self.missed = true;
            return Ok(false);
        };
        st.config = serde_json::from_slice(&self.store.read_blob(&img.config_digest)?)
            .map_err(|e| StepError::Config(e.to_string()))?;
        st.image = img.name;
        self.cached += 1;
        self.emit(BuildEvent::Cached);
        Ok(true)
    }

    fn parent_key(&self, st: &Stage) -> StepResult<String> {
        let img = self
            .store
            .image(&st.image)?
            .ok_or_else(|| StepError::Config(format!("image {} vanished", st.image)))?;
        Ok(img.config_digest.to_string())
    }

    fn meta_step(&mut self, st: &mut Stage, ins: &Instruction, mut cfg: Value, text: &str) -> StepResult<()> {
        let name = cache_name(&self.parent_key(st)?, text);
        if self.cache_hit(st, &name)? {
            return Ok(());
        }
        push_history(&mut cfg, &format!("/bin/sh -c #(nop) {}", ins.text()), true);
        let layers = self.store.image(&st.image)?.map(|i| i.layers).unwrap_or_default();
        let bytes = serde_json::to_vec(&cfg).map_err(|e| StepError::Config(e.to_string()))?;
        let p = ImagePublish::new(&name, &bytes, layers).publish(self.store)?;
        st.image = p.name;
        st.config = cfg;
        Ok(())
    }

    fn layer_step(&mut self, st: &mut Stage, ins: &Instruction) -> StepResult<()> {
        let (key, work) = match ins.keyword {
            Keyword::Run => {
                let args = match &ins.args {
                    Args::Exec(v) => v.clone(),
                    Args::Shell(_) => self.run_script(st, ins),
                };
                let env: Vec<String> = st.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
                (format!("{}\n{:?}\n{:?}", ins.text(), args, env), Work::Run { args, env })
            }
            _ => {
                if ins.flag("from").is_some() {
                    return Err(StepError::Unsupported(format!("{} --from", ins.keyword)));
                }
                let mut words = Vec::new();
                for w in parse::list(ins) {
                    words.push(self.expand(st, &w)?);
                }
                let Some(dest) = words.pop() else {
                    return Err(StepError::Syntax(parse::Problem::NoArguments(ins.keyword)));
                };
                if words.is_empty() {
                    return Err(StepError::Syntax(parse::Problem::Syntax(format!(
                        "{} needs a source and a destination",
                        ins.keyword
                    ))));
                }
                let mut sources = Vec::new();
                for w in &words {
                    if ins.keyword == Keyword::Add && (w.contains("://") || is_archive(w)) {
                        return Err(StepError::Unsupported(format!("ADD of {w}")));
                    }
                    sources.extend(self.ctx.sources(w)?);
                }
                let digest = self.ctx.digest(&sources)?;
                let chown = match ins.flag("chown") {
                    Some(c) => Some(self.expand(st, c)?),
                    None => None,
                };
                let chmod = match ins.flag("chmod") {
                    Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| {
                        StepError::Syntax(parse::Problem::Syntax(format!("--chmod={m}: not an octal mode")))
                    })?),
                    None => None,
                };
                let workdir = st.config["config"]["WorkingDir"].as_str().unwrap_or("/").to_string();
                let dest_path = Path::new("/").join(workdir).join(&dest);
                let key = format!(
                    "{} {:?} {chown:?} {chmod:?} {}\n{digest}",
                    ins.keyword,
                    sources,
                    dest_path.display()
                );
                let dir_dest = dest.ends_with('/') || sources.len() > 1;
                (key, Work::Copy { sources, dest: dest_path, dir_dest, chown, chmod })
            }
        };
        let name = cache_name(&self.parent_key(st)?, &key);
        if self.cache_hit(st, &name)? {
            return Ok(());
        }
        let created_by = match (&ins.keyword, &ins.args) {
            (Keyword::Run, Args::Shell(s)) => format!("{} {s}", st.shell.join(" ")),
            _ => format!("/bin/sh -c #(nop) {}", ins.text()),
        };
        self.run_in_container(st, &name, &work, &created_by)
    }

    /// A shell-form RUN's command: its heredoc as the script when that is all it is, else the
    /// line with its heredocs' bodies, for the shell to read.
    fn run_script(&self, st: &Stage, ins: &Instruction) -> Vec<String> {
        let line = ins.args_text();
        let script = match ins.heredocs.as_slice() {
            [h] if line.trim() == format!("<<{}", h.name) || line.trim() == format!("<<-{}", h.name) => {
                h.content.clone()
            }
            hs => {
                let mut s = line;
                for h in hs {
                    s.push('\n');
                    s.push_str(&h.content);
                    s.push_str(&h.name);
                }
                s
            }
        };
        st.shell.iter().cloned().chain([script]).collect()
    }

    fn run_in_container(
        &mut self,
        st: &mut Stage,
        name: &str,
        work: &Work,
        created_by: &str,
    ) -> StepResult<()> {
        use crate::container;
        let cname = format!("build-{}", hex::encode(crate::fsutil::random_bytes::<6>()));
        let row = container::create(self.store, &st.image, &cname, &container::CreateOptions::default())?;
        let result = (|| -> StepResult<crate::commit::Committed> {
            let rootfs = container::mount(self.store, &cname, None, container::Backend::Kernel)?;
            match work {
                Work::Run { args, env } => self.run(st, &cname, &rootfs, args, env)?,
                Work::Copy { sources, dest, dir_dest, chown, chmod } => {
                    let (uid, gid) = match chown {
                        Some(c) => {
                            let (u, g, _) = crate::runtime::spec::resolve_user(&rootfs, c)?;
                            // `--chown=UID` alone: the group is UID too (buildah).
                            if c.chars().all(|ch| ch.is_ascii_digit()) {
                                (u, u)
                            } else {
                                (u, g)
                            }
                        }
                        None => (0, 0),
                    };
                    let attrs = super::copy::Attrs { uid, gid, chmod: *chmod };
                    let mut t = super::copy::Target::open(&rootfs).map_err(StepError::Copy)?;
                    let dir_dest = *dir_dest || t.is_dir(dest);
                    for rel in sources {
                        let host = self.ctx.root().join(rel);
                        let is_dir = std::fs::symlink_metadata(&host).map(|m| m.is_dir()).unwrap_or(false);
                        if is_dir {
                            t.mkdir_all(dest, None).map_err(StepError::Copy)?;
                            for child in self.ctx.walk(rel)?.into_iter().skip(1) {
                                if child.parent() != Some(rel.as_path()) {
                                    continue;
                                }
                                let target = dest.join(child.file_name().unwrap_or_default());
                                t.copy(&self.ctx.root().join(&child), &target, attrs)
                                    .map_err(StepError::Copy)?;
                            }
                        } else {
                            let target = if dir_dest {
                                dest.join(rel.file_name().unwrap_or_default())
                            } else {
                                dest.clone()
                            };
                            t.copy(&host, &target, attrs).map_err(StepError::Copy)?;
                        }
                    }
                }
            }
            container::release(self.store, &cname)?;
            let parent = crate::commit::Parent {
                name: st.image.clone(),
                config_digest: row.config_digest.clone(),
                layers: self.store.container_layers(&cname)?,
            };
            let upper = container::paths(self.store, &row).upper;
            Ok(crate::commit::commit(self.store, &upper, &parent, name, &Default::default())?)
        })();
        let removed = container::remove(self.store, &cname, true);
        let committed = result?;
        removed?;
        // The config as the build sees it, over the committed layers.
        let img =
            self.store.image(name)?.ok_or_else(|| StepError::Config(format!("image {name} vanished")))?;
        let mut cfg = st.config.clone();
        cfg["rootfs"] = json!({ "type": "layers", "diff_ids": img.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>() });
        push_history(&mut cfg, created_by, false);
        let bytes = serde_json::to_vec(&cfg).map_err(|e| StepError::Config(e.to_string()))?;
        let p = ImagePublish::new(name, &bytes, img.layers).publish(self.store)?;
        tracing::debug!(image = %p.name, layer = %committed.layer.diff_id, "step committed");
        st.image = p.name;
        st.config = cfg;
        Ok(())
    }

    fn run(&self, st: &Stage, cname: &str, rootfs: &Path, args: &[String], env: &[String]) -> StepResult<()> {
        use crate::container;
        let mut cfg = st.config.clone();
        let c = config_mut(&mut cfg);
        c.insert("Entrypoint".into(), Value::Null);
        c.insert("Cmd".into(), Value::Null);
        // ARGs are in RUN's environment, under the stage's ENV.
        let image_env = env_list(&st.config);
        let env: Vec<String> = env
            .iter()
            .filter(|e| {
                let k = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
                !image_env.iter().any(|i| i.split_once('=').map_or(i.as_str(), |(n, _)| n) == k)
            })
            .cloned()
            .collect();
        let overrides = crate::runtime::ProcessOverrides { args: args.to_vec(), env, ..Default::default() };
        let settings = crate::runtime::SpecSettings {
            hostname: cname.chars().take(63).collect(),
            volumes: vec![],
            cgroups_path: Some(container::cgroups_path(self.store, cname)),
        };
        let spec = crate::runtime::spec::build_spec(&cfg, rootfs, &overrides, &settings)?;
        crate::runtime::spec::check_command(&spec)?;
        let bundle_dir = container::dir(self.store, cname).join("bundle");
        crate::runtime::spec::write_bundle(&bundle_dir, &spec)?;
        let state = container::runc_state_dir(self.store);
        let id = container::runc_id(self.store, cname);
        let mut trap = crate::signals::Trap::install().map_err(StepError::Signals)?;
        let fg = crate::foreground::Foreground {
            stdin: false,
            terminal: false,
            trap: &mut trap,
            stop_timeout: crate::signals::DEFAULT_STOP_TIMEOUT,
        };
        let code = crate::foreground::run(&state, &bundle_dir, &id, fg)?;
        if code != 0 {
            return Err(StepError::Status(code));
        }
        Ok(())
    }
}

enum Work {
    Run { args: Vec<String>, env: Vec<String> },
    Copy { sources: Vec<PathBuf>, dest: PathBuf, dir_dest: bool, chown: Option<String>, chmod: Option<u32> },
}

fn unreachable_from() {}

fn is_archive(w: &str) -> bool {
    [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar.zst"].iter().any(|s| w.ends_with(s))
}

/// The config's `config` object, made when missing.
fn config_mut(cfg: &mut Value) -> &mut Map<String, Value> {
    if !cfg.is_object() {
        *cfg = json!({});
    }
    let c = &mut cfg["config"];
    if !c.is_object() {
        *c = json!({});
    }
    c.as_object_mut().expect("made an object above")
}

fn env_list(cfg: &Value) -> Vec<String> {
    cfg["config"]["Env"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn push_history(cfg: &mut Value, created_by: &str, empty: bool) {
    let now = now();
    cfg["created"] = json!(now);
    let mut h = json!({ "created": now, "created_by": created_by });
    if empty {
        h["empty_layer"] = json!(true);
    }
    match cfg["history"].as_array_mut() {
        Some(a) => a.push(h),
        None => cfg["history"] = json!([h]),
    }
}
