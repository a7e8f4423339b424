//! One instruction over a stage: what it changes in the config, the layer it makes, the cache.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::context::Context;
use super::layer::{From, Work, Working};
use super::parse::{self, Args, Containerfile, Instruction, Keyword};
use super::{
    cache_name, expand, lookup, BuildError, BuildEvent, BuildOptions, StageDef, StepError, DEFAULT_PATH,
};
use crate::images::ImagePublish;
use crate::store::Store;

type StepResult<T> = Result<T, StepError>;

/// A stage as it is built: the image its last step made and what later steps see.
pub(super) struct Stage {
    /// The store name of the image so far.
    pub image: String,
    pub config: Value,
    /// Declared ARGs with their values, in order.
    args: Vec<(String, String)>,
    shell: Vec<String>,
    /// Whether this stage set CMD itself (ENTRYPOINT then keeps it).
    cmd_set: bool,
    /// `--layers=false`: the container the stage's steps work in, once one made a change.
    working: Option<Working>,
    /// `--layers=false`: the history entry of the stage's last layer step.
    squash_last: Option<usize>,
}

pub(super) struct Builder<'a> {
    pub store: &'a mut Store,
    pub ctx: &'a Context,
    cf: &'a Containerfile,
    pub opts: &'a BuildOptions,
    /// The stages built so far: their names and their images' store names.
    pub done: Vec<(Option<String>, String)>,
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
        Builder {
            store,
            ctx,
            cf,
            opts,
            done: Vec::new(),
            global,
            total,
            n: 0,
            steps: 0,
            cached: 0,
            missed: opts.no_cache || opts.squash,
        }
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
    pub fn stage(&mut self, def: &StageDef<'_>) -> Result<String, BuildError> {
        self.n += 1;
        self.emit(BuildEvent::Step { n: self.n, total: self.total, text: def.from.text() });
        let mut st = self.from(def.from).map_err(|e| self.fail(def.from, e))?;
        let mut result = Ok(());
        for ins in def.body {
            self.n += 1;
            self.emit(BuildEvent::Step { n: self.n, total: self.total, text: ins.text() });
            if let Err(e) = self.instruction(&mut st, ins) {
                result = Err(self.fail(ins, e));
                break;
            }
        }
        if self.opts.squash {
            if result.is_ok() {
                let last = def.body.last().unwrap_or(def.from);
                result = self.finish_squashed(&mut st, def).map_err(|e| self.fail(last, e));
            } else if let Some(w) = st.working.take() {
                self.drop_working(&w.cname);
            }
        }
        result.map(|()| st.image)
    }

    /// The store name of the image `--from=NAME` names: a stage built before (by name or
    /// index), else an image (pulled when missing).
    pub(super) fn source_image(&mut self, name: &str) -> StepResult<String> {
        let lower = name.to_ascii_lowercase();
        if let Some((_, img)) = self.done.iter().rev().find(|(n, _)| n.as_deref() == Some(lower.as_str())) {
            return Ok(img.clone());
        }
        if let Some((_, img)) = name.parse::<usize>().ok().and_then(|i| self.done.get(i)) {
            return Ok(img.clone());
        }
        self.pull_if_missing(name)?;
        Ok(name.to_string())
    }

    fn from(&mut self, ins: &Instruction) -> StepResult<Stage> {
        let (image, _) = parse::from_parts(ins)?;
        let image = {
            let vars = lookup(&self.global);
            expand::word(&image, self.cf.escape, &vars)?
        };
        let earlier =
            self.done.iter().rev().find(|(n, _)| n.as_deref() == Some(image.to_ascii_lowercase().as_str()));
        let name = if let Some((_, img)) = earlier {
            img.clone()
        } else if image == "scratch" {
            let name = cache_name("scratch", "");
            if self.store.image(&name)?.is_none() {
                let cfg = serde_json::to_vec(&super::scratch_config(self.opts.platform.as_ref()))
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
        // A base pulled with --lazy: the steps mount with kernel overlay, which reads whole layers
        // only. Its remote layers are completed first, through the one verified path.
        crate::registry::lazy::complete_layers(self.store, &stored.layers)
            .map_err(|e| StepError::RemoteLayers(name.clone(), Box::new(e)))?;
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
        Ok(Stage {
            image: stored.name,
            config,
            args: Vec::new(),
            shell,
            cmd_set: false,
            working: None,
            squash_last: None,
        })
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
        let popts =
            crate::registry::PullOptions { platform: self.opts.platform.clone(), client: Default::default() };
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
                // A history entry as buildah writes one; the values are in the cache key.
                let text = format!("{}\n{:?}", ins.text(), st.args);
                return self.meta_step(st, ins, cfg, &text);
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
        if self.opts.squash {
            self.steps += 1;
            push_history(&mut cfg, &format!("/bin/sh -c #(nop) {}", ins.text()), true);
            st.config = cfg;
            return Ok(());
        }
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
            _ => self.copy_work(st, ins)?,
        };
        let created_by = match (&ins.keyword, &ins.args) {
            (Keyword::Run, Args::Shell(s)) => format!("{} {s}", st.shell.join(" ")),
            _ => format!("/bin/sh -c #(nop) {}", ins.text()),
        };
        if self.opts.squash {
            // One working container for the stage, committed at its end.
            self.steps += 1;
            let w = match st.working.take() {
                Some(w) => w,
                None => self.open_working(&st.image)?,
            };
            let done = self.apply(st, &w, &work);
            st.working = Some(w);
            done?;
            push_history(&mut st.config, &created_by, true);
            st.squash_last = history_len(&st.config).checked_sub(1);
            return Ok(());
        }
        let name = cache_name(&self.parent_key(st)?, &key);
        if self.cache_hit(st, &name)? {
            return Ok(());
        }
        let w = self.open_working(&st.image)?;
        if let Err(e) = self.apply(st, &w, &work) {
            self.drop_working(&w.cname);
            return Err(e);
        }
        let mut cfg = st.config.clone();
        push_history(&mut cfg, &created_by, false);
        self.commit_working(st, w, &name, cfg)
    }

    /// With `--layers=false`: the stage's working container committed as one layer (or its
    /// config published alone when no step made a layer).
    pub(super) fn finish_squashed(&mut self, st: &mut Stage, def: &StageDef<'_>) -> StepResult<()> {
        let mut text = String::from("squashed");
        for ins in def.body {
            text.push('\n');
            text.push_str(&ins.text());
        }
        let name = cache_name(&self.parent_key(st)?, &text);
        let mut cfg = st.config.clone();
        match st.working.take() {
            Some(w) => {
                if let Some(h) = st.squash_last.and_then(|i| cfg["history"].get_mut(i)) {
                    if let Some(h) = h.as_object_mut() {
                        h.remove("empty_layer");
                    }
                }
                self.commit_working(st, w, &name, cfg)
            }
            None => {
                let layers = self.store.image(&st.image)?.map(|i| i.layers).unwrap_or_default();
                let bytes = serde_json::to_vec(&cfg).map_err(|e| StepError::Config(e.to_string()))?;
                st.image = ImagePublish::new(&name, &bytes, layers).publish(self.store)?.name;
                st.config = cfg;
                Ok(())
            }
        }
    }

    /// COPY and ADD: their sources found (downloaded, for a URL) and their cache key.
    fn copy_work(&mut self, st: &Stage, ins: &Instruction) -> StepResult<(String, Work)> {
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
        let dir_dest = dest.ends_with('/') || words.len() > 1;
        let add = ins.keyword == Keyword::Add;
        let (from, sources, digest) = if let Some(f) = ins.flag("from") {
            let f = self.expand(st, f)?;
            let image = self.source_image(&f)?;
            let stored = self
                .store
                .image(&image)?
                .ok_or_else(|| StepError::Config(format!("image {image} vanished")))?;
            let sources: Vec<PathBuf> = words.iter().map(PathBuf::from).collect();
            (From::Image(image), sources, format!("from {}", stored.config_digest))
        } else if add && words.len() == 1 && is_url(&words[0]) {
            let (staging, file, digest) = self.download(&words[0], &dest)?;
            (From::Download(staging), vec![PathBuf::from(file)], digest)
        } else {
            if let Some(u) = words.iter().find(|w| is_url(w)) {
                return Err(StepError::Unsupported(format!("ADD of {u} with other sources")));
            }
            let mut sources = Vec::new();
            for w in &words {
                sources.extend(self.ctx.sources(w)?);
            }
            let digest = self.ctx.digest(&sources)?;
            (From::Context, sources, digest)
        };
        let key =
            format!("{} {:?} {chown:?} {chmod:?} {}\n{digest}", ins.keyword, sources, dest_path.display());
        let dir_dest = dir_dest || sources.len() > 1 && !matches!(from, From::Image(_));
        Ok((key, Work::Copy { from, sources, dest: dest_path, dir_dest, chown, chmod, extract: add }))
    }

    /// `ADD URL DEST`: the file downloaded into a staging directory of the store, named as the
    /// URL's last path segment (or DEST's, when DEST names a file), mode 0600 and its mtime the
    /// server's Last-Modified, as docker does. Returns the staging, the file name, and the
    /// sha256 of the content with the URL for the cache key.
    fn download(&mut self, url: &str, dest: &str) -> StepResult<(crate::store::Staging, String, String)> {
        use sha2::Digest as _;
        use std::io::{Read, Write};
        let staging = self.store.staging()?;
        let from_url = url.split(['?', '#']).next().unwrap_or(url).rsplit('/').next().unwrap_or("");
        let name = match (dest.ends_with('/'), from_url) {
            (false, _) => Path::new(dest).file_name().map(|n| n.to_string_lossy().into_owned()),
            (true, n) if !n.is_empty() && n != "." && n != ".." => Some(n.to_string()),
            _ => None,
        }
        .unwrap_or_else(|| "download".to_string());
        let path = staging.dir.join(&name);
        let dl = crate::registry::client::download(url, &Default::default())
            .map_err(|e| StepError::Download(url.to_string(), Box::new(e)))?;
        let mut body = dl.body;
        let mut f = std::fs::File::create(&path).map_err(StepError::Copy)?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = body.read(&mut buf).map_err(StepError::Copy)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            f.write_all(&buf[..n]).map_err(StepError::Copy)?;
        }
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(StepError::Copy)?;
        if let Some(t) = dl.last_modified.and_then(|s| u64::try_from(s).ok()) {
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
                .map_err(StepError::Copy)?;
        }
        let digest = format!("url {url} {} {:?}", hex::encode(h.finalize()), dl.last_modified);
        Ok((staging, name, digest))
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
}

fn unreachable_from() {}

fn is_url(w: &str) -> bool {
    w.starts_with("http://") || w.starts_with("https://")
}

fn history_len(cfg: &Value) -> usize {
    cfg["history"].as_array().map_or(0, Vec::len)
}

/// The config's `config` object, made when missing.
pub(super) fn config_mut(cfg: &mut Value) -> &mut Map<String, Value> {
    if !cfg.is_object() {
        *cfg = json!({});
    }
    let c = &mut cfg["config"];
    if !c.is_object() {
        *c = json!({});
    }
    c.as_object_mut().expect("made an object above")
}

pub(super) fn env_list(cfg: &Value) -> Vec<String> {
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
