//! `strata build`: images from a Containerfile, each step a snapshot over the one before.
//!
//! - [`parse`]: the Containerfile grammar (directives, continuations, heredocs, flags, forms).
//! - [`expand`]: ARG/ENV expansion of a word, as buildkit's shell lexer does it.
//! - [`context`]: the build context, its ignore file, COPY sources and their cache digest.
//! - `copy`: COPY's confined writes into a step's mounted tree.
//! - `step`: one instruction over a stage: the config it changes, the layer it makes.
//! - here: the stages, the cache, the options and errors.
//!
//! **Steps and the cache.** Every step's result is an image of the store, named
//! `localhost/strata-build-cache:<key>`, where the key is the sha256 of the parent's config
//! digest (which names its whole layer chain and history), the step's instruction text with
//! ARG/ENV expanded, and for COPY the digest of its sources' content and metadata
//! ([`context::Context::digest`]). A step whose key names a stored image is not run; a step
//! that runs makes a new config (its `created` time), so every later key differs and every
//! later step runs. RUN and COPY make a layer through a container over the parent (created,
//! mounted, released and removed as `strata run` does) and commit's layer production; metadata
//! steps publish a new config over the same layers with an `empty_layer` history entry. An
//! image is published in one transaction of the snapshot core, so a build killed at any
//! moment leaves complete cached steps and nothing else that recovery does not remove.

pub mod context;
mod copy;
pub mod expand;
mod layer;
pub mod parse;
mod step;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::digest::Sha256Digest;
use crate::store::Store;

use context::{Context, ContextError};
use parse::{Instruction, Keyword, ParseError, Problem};

/// Where the cached steps live (a repository of the store, out of `image ls`).
pub use crate::images::BUILD_CACHE_REPO as CACHE_REPO;

/// The PATH buildah gives an image whose base has none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a build reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// Step `n` of `total` (1-based) starts: its instruction as written.
    Step { n: usize, total: usize, text: String },
    /// The step was found in the cache.
    Cached,
}

/// A receiver of [`BuildEvent`]s.
pub type ProgressFn = Box<dyn Fn(&BuildEvent)>;

/// Options of [`build`].
pub struct BuildOptions {
    /// `-f`: the Containerfile; `CONTEXT/Containerfile` or else `CONTEXT/Dockerfile`.
    pub file: Option<PathBuf>,
    /// `-t`: names for the result.
    pub tags: Vec<String>,
    /// `--build-arg K=V`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to stop at (the last one when `None`).
    pub target: Option<String>,
    /// `--no-cache`: run every step.
    pub no_cache: bool,
    /// `--layers=false`: each stage's steps in one container, its changes one layer, no cache.
    pub squash: bool,
    /// `--compress` (default): at the end of the build the layers it made get gzip blobs, as
    /// pushed; without it they stay directories described as plain tars, whose blobs are
    /// written on first export, push or save (`commit::ensure_blobs`). A second build gives
    /// the same digests either way.
    pub compress: bool,
    /// `--platform OS/ARCH[/VARIANT]`: the platform a FROM image missing from the store is
    /// pulled for (from a multi-platform index), and the one a `FROM scratch` config names; this
    /// host's when `None`. RUN steps still execute on this host (no emulation).
    pub platform: Option<crate::image::Platform>,
    /// Told what the build is doing.
    pub progress: Option<ProgressFn>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            file: None,
            tags: Vec::new(),
            build_args: BTreeMap::new(),
            target: None,
            no_cache: false,
            squash: false,
            compress: true,
            platform: None,
            progress: None,
        }
    }
}

/// What [`build`] made.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image id.
    pub config_digest: Sha256Digest,
    pub manifest_digest: Sha256Digest,
    /// The image's name in the store (a cache name when no tag was given).
    pub image: String,
    pub steps: usize,
    /// Steps reused from the cache.
    pub cached: usize,
}

/// A build's failure.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Parse(#[from] Box<ParseError>),
    #[error("build context")]
    Context(#[from] Box<ContextError>),
    #[error("--target {0:?}: no stage of that name")]
    NoTarget(String),
    #[error("{}:{line}: step {n}/{total} ({text})", file.display())]
    Step { file: PathBuf, line: usize, n: usize, total: usize, text: String, source: Box<StepError> },
    #[error("{}:{line}: step {n}/{total} ({text}): the command exited with status {code}", file.display())]
    RunFailed { file: PathBuf, line: usize, n: usize, total: usize, text: String, code: i32 },
    #[error("tagging the image as {name}")]
    Tag { name: String, source: Box<crate::images::ImagesError> },
    #[error(transparent)]
    Store(#[from] Box<crate::store::StoreError>),
    #[error("compressing the layers")]
    Compress(#[source] Box<crate::commit::CommitError>),
}

impl From<ParseError> for BuildError {
    fn from(e: ParseError) -> Self {
        BuildError::Parse(Box::new(e))
    }
}

impl From<ContextError> for BuildError {
    fn from(e: ContextError) -> Self {
        BuildError::Context(Box::new(e))
    }
}

impl From<crate::store::StoreError> for BuildError {
    fn from(e: crate::store::StoreError) -> Self {
        BuildError::Store(Box::new(e))
    }
}

impl BuildError {
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            BuildError::Read { source, .. } => ErrorKind::of_io(source),
            BuildError::Parse(e) => e.kind(),
            BuildError::Context(e) => e.kind(),
            BuildError::NoTarget(_) => ErrorKind::NotFound,
            BuildError::Step { source, .. } => source.kind(),
            BuildError::RunFailed { .. } => ErrorKind::FailedPrecondition,
            BuildError::Tag { source, .. } => source.kind(),
            BuildError::Store(e) => e.kind(),
            BuildError::Compress(e) => e.kind(),
        }
    }

    /// The exit status of a RUN that failed.
    pub fn run_status(&self) -> Option<i32> {
        match self {
            BuildError::RunFailed { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What went wrong in one step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    Syntax(Problem),
    #[error(transparent)]
    Expand(#[from] expand::ExpandError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("{0} is not supported yet")]
    Unsupported(String),
    #[error("image {0:?}")]
    Pull(String, #[source] Box<dyn std::error::Error + Send + Sync>),
    /// A base image pulled with `--lazy` whose remote layers could not be completed.
    #[error("image {0:?}: completing its remote layers (pulled with --lazy)")]
    RemoteLayers(String, #[source] Box<crate::registry::RegistryError>),
    #[error(transparent)]
    Container(#[from] crate::container::ContainerError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Commit(#[from] crate::commit::CommitError),
    #[error(transparent)]
    Publish(#[from] crate::images::ImagesError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("image config: {0}")]
    Config(String),
    #[error("copying")]
    Copy(#[source] io::Error),
    #[error("extracting {0}")]
    Unpack(String, #[source] Box<crate::unpack::UnpackError>),
    #[error("downloading {0}")]
    Download(String, #[source] Box<crate::registry::RegistryError>),
    #[error("catching signals")]
    Signals(#[source] io::Error),
    /// A RUN's command failed (turned into [`BuildError::RunFailed`]).
    #[error("exit status {0}")]
    Status(i32),
}

impl StepError {
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            StepError::Syntax(_)
            | StepError::Expand(_)
            | StepError::Unsupported(_)
            | StepError::Config(_) => ErrorKind::InvalidArgument,
            StepError::Context(e) => e.kind(),
            StepError::Pull(..) => ErrorKind::NotFound,
            StepError::RemoteLayers(_, e) => e.kind(),
            StepError::Container(e) => e.kind(),
            StepError::Runtime(e) => e.kind(),
            StepError::Commit(e) => e.kind(),
            StepError::Publish(e) => e.kind(),
            StepError::Store(e) => e.kind(),
            StepError::Copy(e) | StepError::Signals(e) => ErrorKind::of_io(e),
            StepError::Unpack(..) => ErrorKind::InvalidArgument,
            StepError::Download(_, e) => e.kind(),
            StepError::Status(_) => ErrorKind::FailedPrecondition,
        }
    }
}

impl From<Problem> for StepError {
    fn from(p: Problem) -> Self {
        StepError::Syntax(p)
    }
}

/// One stage's instructions: its FROM first.
struct StageDef<'a> {
    name: Option<String>,
    from: &'a Instruction,
    body: &'a [Instruction],
}

/// The Containerfile `opts.file` names (or the context's), read.
fn read_containerfile(ctx_dir: &Path, opts: &BuildOptions) -> Result<(PathBuf, Vec<u8>), BuildError> {
    let candidates = match &opts.file {
        Some(f) => vec![f.clone()],
        None => vec![ctx_dir.join("Containerfile"), ctx_dir.join("Dockerfile")],
    };
    let mut last = None;
    for p in candidates {
        match std::fs::read(&p) {
            Ok(b) => return Ok((p, b)),
            Err(e) => last = Some((p, e)),
        }
    }
    let (path, source) =
        last.unwrap_or_else(|| (ctx_dir.join("Containerfile"), io::ErrorKind::NotFound.into()));
    Err(BuildError::Read { path, source })
}

/// Builds the image `CONTEXT`'s Containerfile describes; see the module documentation.
pub fn build(store: &mut Store, ctx_dir: &Path, opts: &BuildOptions) -> Result<Built, BuildError> {
    let (file, bytes) = read_containerfile(ctx_dir, opts)?;
    let cf = parse::parse(&file, &bytes)?;
    let ctx = Context::open(ctx_dir)?;

    // Global ARGs (before the first FROM), then the stages.
    let first_from = cf.instructions.iter().position(|i| i.keyword == Keyword::From);
    let Some(first_from) = first_from else {
        return Err(cf.error(cf.instructions.first().map_or(1, |i| i.line), Problem::NoFrom).into());
    };
    let mut global: Vec<(String, String)> = Vec::new();
    for ins in &cf.instructions[..first_from] {
        if ins.keyword != Keyword::Arg {
            return Err(cf.error(ins.line, Problem::NoFrom).into());
        }
        for (n, default) in parse::arg_names(ins, cf.escape).map_err(|p| cf.error(ins.line, p))? {
            let value = match opts.build_args.get(&n) {
                Some(v) => v.clone(),
                None => match default {
                    Some(d) => {
                        let vars = lookup(&global);
                        expand::word(&d, cf.escape, &vars)
                            .map_err(|e| cf.error(ins.line, Problem::Syntax(e.to_string())))?
                    }
                    None => continue,
                },
            };
            global.retain(|(k, _)| *k != n);
            global.push((n, value));
        }
    }
    let mut stages = Vec::new();
    let rest = &cf.instructions[first_from..];
    let starts: Vec<usize> =
        rest.iter().enumerate().filter(|(_, i)| i.keyword == Keyword::From).map(|(k, _)| k).collect();
    for (s, &at) in starts.iter().enumerate() {
        let end = starts.get(s + 1).copied().unwrap_or(rest.len());
        let from = &rest[at];
        let (_, name) = parse::from_parts(from).map_err(|p| cf.error(from.line, p))?;
        stages.push(StageDef { name, from, body: &rest[at + 1..end] });
    }
    let last = match &opts.target {
        Some(t) => stages
            .iter()
            .position(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
            .ok_or_else(|| BuildError::NoTarget(t.clone()))?,
        None => stages.len() - 1,
    };
    let stages = &stages[..=last];
    let total: usize = stages.iter().map(|s| 1 + s.body.len()).sum();

    layer::remove_stale(store)?;
    let mut b = step::Builder::new(store, &ctx, &cf, opts, global, total);
    for def in stages {
        let image = b.stage(def)?;
        b.done.push((def.name.clone(), image));
    }
    let (_, image) = b.done.pop().unwrap_or_default();
    let (steps, cached) = (b.steps, b.cached);
    drop(b);
    let missing = || BuildError::Read { path: PathBuf::from(&image), source: io::ErrorKind::NotFound.into() };
    let mut stored = store.image(&image)?.ok_or_else(missing)?;
    if opts.compress {
        // The layers the build made are directories without blobs: their gzip blobs now, and
        // the image (the last step's) published again over them, its config the same.
        let compressed = crate::commit::compress_layers(store, &stored.layers, &layer::layer_options())
            .map_err(|e| BuildError::Compress(Box::new(e)))?;
        if let Some(rows) = compressed {
            let cfg = store.read_blob(&stored.config_digest)?;
            crate::images::ImagePublish::new(&image, &cfg, rows)
                .publish(store)
                .map_err(|e| BuildError::Compress(Box::new(e.into())))?;
            stored = store.image(&image)?.ok_or_else(missing)?;
        }
    }
    let mut name = stored.name.clone();
    for t in &opts.tags {
        let p = crate::images::ImagePublish::of_stored(t, &stored)
            .publish(store)
            .map_err(|source| BuildError::Tag { name: t.clone(), source: Box::new(source) })?;
        name = p.name;
    }
    Ok(Built {
        config_digest: stored.config_digest,
        manifest_digest: stored.manifest_digest,
        image: name,
        steps,
        cached,
    })
}

/// A name lookup over `K=V` pairs (the last one wins).
fn lookup(vars: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    move |n| vars.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone())
}

/// The cache name of a step.
fn cache_name(parent: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    h.update(b"\n");
    h.update(text.as_bytes());
    format!("{CACHE_REPO}:{}", hex::encode(h.finalize()))
}

/// An empty config for `FROM scratch`, for `platform` (this host's when `None`).
fn scratch_config(platform: Option<&crate::image::Platform>) -> Value {
    let p = platform.cloned().unwrap_or_else(crate::image::Platform::host);
    let mut cfg = json!({
        "architecture": p.arch,
        "os": p.os,
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [] },
        "history": [],
    });
    if let Some(v) = p.variant {
        cfg["variant"] = json!(v);
    }
    cfg
}
