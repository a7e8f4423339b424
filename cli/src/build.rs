//! `strata build`: parse the options, run the library's build, print the image id.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use strata::build::{BuildEvent, BuildOptions};

/// `strata build [-f FILE] [-t NAME]... [--build-arg K=V]... [--target STAGE] [--no-cache]
/// [--layers=BOOL] [--compress=BOOL] CONTEXT`
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  strata build -t app .\n  \
strata build -f Containerfile.dev --build-arg VERSION=1.2 --target test -t app:test ./src\n  \
strata build -q --no-cache .          # prints only the image id")]
pub struct BuildArgs {
    /// The Containerfile (default: CONTEXT/Containerfile, else CONTEXT/Dockerfile).
    #[arg(short, long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Name the image; repeatable.
    #[arg(short, long, value_name = "NAME")]
    tag: Vec<String>,
    /// An ARG's value, K=V; repeatable.
    #[arg(long, value_name = "K=V")]
    build_arg: Vec<String>,
    /// Build up to this stage (its `AS` name).
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Run every step, none from the cache.
    #[arg(long)]
    no_cache: bool,
    /// Keep each step as a cached layer (default); `--layers=false` runs each stage's steps in
    /// one container and commits its changes as one layer, without the cache.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    layers: bool,
    /// Compress the new layers (gzip, default); `--compress=false` stores them as plain tars.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    compress: bool,
    /// The platform of FROM images pulled from a multi-platform index, and of `FROM scratch`,
    /// OS/ARCH[/VARIANT] (this host's by default; RUN steps still run on this host).
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
    /// Print only the image id.
    #[arg(short, long)]
    quiet: bool,
    /// The build context directory.
    context: PathBuf,
}

pub fn command(root: &Path, a: BuildArgs) -> Result<ExitCode> {
    let mut build_args = BTreeMap::new();
    for kv in &a.build_arg {
        match kv.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            // `--build-arg K`: this process's K, as docker takes it.
            None => {
                if let Ok(v) = std::env::var(kv) {
                    build_args.insert(kv.clone(), v);
                }
            }
        }
    }
    for t in &a.tag {
        strata::reference::validate_image_name(t)?;
    }
    let show = !a.quiet && std::io::stderr().is_terminal();
    let progress: Option<strata::build::ProgressFn> = if show {
        Some(Box::new(|e: &BuildEvent| match e {
            BuildEvent::Step { n, total, text } => eprintln!("STEP {n}/{total}: {text}"),
            BuildEvent::Cached => eprintln!("--> Using cache"),
        }))
    } else {
        None
    };
    let opts = BuildOptions {
        file: a.file,
        tags: a.tag,
        build_args,
        target: a.target,
        no_cache: a.no_cache,
        squash: !a.layers,
        compress: a.compress,
        platform: a
            .platform
            .as_deref()
            .map(strata::image::Platform::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--platform: {e}"))?,
        progress,
    };
    let mut store = crate::open_store(root)?;
    let built = match strata::build::build(&mut store, &a.context, &opts) {
        Ok(b) => b,
        Err(e) => {
            if let Some(code) = e.run_status() {
                eprintln!("Error: {}", strata::error::report(&e));
                return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
            }
            return Err(e).with_context(|| format!("building {}", a.context.display()));
        }
    };
    if show {
        eprintln!("{} steps, {} from the cache: {}", built.steps, built.cached, built.image);
    }
    outln!("{}", built.config_digest)?;
    Ok(ExitCode::SUCCESS)
}
