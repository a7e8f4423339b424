//! `strata image optimize NAME NEW -- CMD`: what stargz-snapshotter's `ctr-remote image
//! optimize` does, on strata-fuse's own read log. CMD runs in a container over NAME, mounted by
//! strata-fuse with its read log on (`run`'s path: `--rm`, no network by default, stopped once
//! its period is up, as a server would never end); then every layer is rewritten as eStargz or
//! zstd:chunked ([`commit::convert::convert_with`]) with the files CMD read from it first, in the
//! order of their first read, then `.prefetch.landmark`: what a lazy mount fetches first, in
//! one request, before the container asks. A layer CMD read nothing from is converted as
//! `image convert` converts it (eStargz: `.no.prefetch.landmark` first, as stargz-snapshotter
//! writes; zstd:chunked: no landmark, its diff_id kept). A reordered layer's tar is another tar,
//! so its diff_id changes, in both formats.
//!
//! Nothing is published unless CMD ended well (exit code 0, or stopped by the period): a
//! command that fails says little about what the image's users read. The container goes in any
//! case, and so does the log (in staging).
//!
//! [`commit::convert::convert_with`]: crate::commit::convert::convert_with

pub mod readlog;

use std::path::PathBuf;
use std::time::Duration;

use crate::commit::convert::{self, Converted, Target};
use crate::commit::CommitError;
use crate::container::Backend;
use crate::netsetup::NetOptions;
use crate::run::{ProcessOverrides, RunError, RunOptions};
use crate::store::{IoContext, Store, StoreError};

/// How long the container has, once its period is up, between SIGTERM and SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// ctr-remote's default period.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);

/// Optimize errors.
#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    #[error("image {0:?} not found")]
    NoImage(String),
    #[error("the command ({command}) exited with {code} in image {image:?}: no image was written")]
    Command { image: String, command: String, code: i32 },
    #[error("running the command in image {image:?}")]
    Run {
        image: String,
        #[source]
        source: Box<RunError>,
    },
    #[error("rewriting the layers of {image:?}")]
    Convert {
        image: String,
        #[source]
        source: Box<CommitError>,
    },
    #[error("new image name {name:?}")]
    Name {
        name: String,
        #[source]
        source: crate::reference::ReferenceError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OptimizeError {
    /// The class of failure, for a front end's own codes.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            OptimizeError::NoImage(_) => ErrorKind::NotFound,
            OptimizeError::Command { .. } => ErrorKind::FailedPrecondition,
            OptimizeError::Run { source, .. } => source.kind(),
            OptimizeError::Convert { source, .. } => source.kind(),
            OptimizeError::Name { .. } => ErrorKind::InvalidArgument,
            OptimizeError::Store(e) => e.kind(),
        }
    }
}

/// What to optimize, and how CMD runs.
#[derive(Debug, Clone)]
pub struct OptimizeOptions {
    pub image: String,
    pub new_name: String,
    pub target: Target,
    /// The command (replacing the image's Cmd, as `run` takes it; the image's when empty), its
    /// environment, user, working directory.
    pub process: ProcessOverrides,
    /// The container's network (none unless asked for: see the CLI).
    pub network: NetOptions,
    /// How long CMD may run: then it is stopped (SIGTERM, SIGKILL [`STOP_TIMEOUT`] later) and
    /// what it read so far counts (ctr-remote's `--period`).
    pub period: Duration,
}

/// What [`optimize`] made.
#[derive(Debug, Clone)]
pub struct Optimized {
    pub converted: Converted,
    /// Per layer, bottom first: the files CMD read, in the order of their first read.
    pub read: Vec<Vec<String>>,
    /// CMD was stopped by the period (it had not ended by itself).
    pub timed_out: bool,
}

/// Run `opts.process` over `opts.image` and publish the image with each layer's files read
/// first as `opts.new_name` (see the [module](self) docs).
pub fn optimize(store: &mut Store, opts: &OptimizeOptions) -> Result<Optimized, OptimizeError> {
    crate::reference::validate_image_name(&opts.new_name)
        .map_err(|source| OptimizeError::Name { name: opts.new_name.clone(), source })?;
    let img = store.image(&opts.image)?.ok_or_else(|| OptimizeError::NoImage(opts.image.clone()))?;
    let staging = store.staging()?;
    let log: PathBuf = staging.dir.join("read.log");
    std::fs::File::create(&log).at(&log)?;
    let run = RunOptions {
        image: opts.image.clone(),
        name: Some(format!("optimize-{}", hex::encode(crate::fsutil::random_bytes::<6>()))),
        rm: true,
        backend: Backend::Fuse,
        process: opts.process.clone(),
        detach: false,
        stop_timeout: Some(STOP_TIMEOUT),
        monitor: None,
        network: opts.network.clone(),
        timeout: Some(opts.period),
        read_log: Some(log.clone()),
    };
    let ran = crate::run::run_timed(store, &run)
        .map_err(|e| OptimizeError::Run { image: opts.image.clone(), source: Box::new(e) })?;
    if ran.code != 0 && !ran.timed_out {
        let command = match opts.process.args.is_empty() {
            true => "the image's command".to_string(),
            false => opts.process.args.join(" "),
        };
        return Err(OptimizeError::Command { image: opts.image.clone(), command, code: ran.code });
    }
    let text = std::fs::read(&log).at(&log)?;
    let read = readlog::by_layer(&readlog::parse(&text), img.layers.len());
    tracing::info!(image = %opts.image, timed_out = ran.timed_out, files = read.iter().map(Vec::len).sum::<usize>(), "read log taken");
    let converted = convert::convert_with(store, &opts.image, &opts.new_name, &opts.target, &read)
        .map_err(|e| OptimizeError::Convert { image: opts.image.clone(), source: Box::new(e) })?;
    Ok(Optimized { converted, read, timed_out: ran.timed_out })
}
