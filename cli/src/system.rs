//! System commands: `gc`, `system prune`, `info`, `version`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::open_store;
use crate::output::human;

#[derive(Subcommand)]
pub enum SystemCmd {
    /// Remove every container that is not running (created or exited), then the blobs and
    /// layers nothing references (as `gc`). Asks first, unless -f.
    #[command(
        after_help = "Examples:\n  strata system prune\n  strata system prune -f   # no question (scripts)"
    )]
    Prune {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Rootless mode: stop the pause process that holds this user's namespace (running
    /// containers stopped and mounted ones unmounted first), as `podman system migrate`: the next
    /// command starts a new namespace with the ids /etc/subuid and /etc/subgid give then.
    #[command(after_help = "Example:\n  strata system migrate   # after usermod --add-subuids ...")]
    Migrate {
        /// Seconds each running container gets to stop before SIGKILL.
        #[arg(long, short = 't', default_value_t = 10)]
        time: u64,
    },
}

pub fn command(root: &std::path::Path, c: SystemCmd) -> Result<ExitCode> {
    match c {
        SystemCmd::Prune { force } => prune_cmd(root, force),
        SystemCmd::Migrate { time } => migrate_cmd(root, time),
    }
}

/// `system migrate`: every running container stopped, every mounted one unmounted (what runs
/// or is mounted in the namespace would outlive its pause process), then the pause process
/// stopped. `main` has checked that one runs (and joined it).
fn migrate_cmd(root: &std::path::Path, time: u64) -> Result<ExitCode> {
    if !strata::userns::is_rootless() {
        eprintln!("root mode has no pause process: nothing to stop");
        return Ok(ExitCode::SUCCESS);
    }
    let store = open_store(root)?;
    let timeout = std::time::Duration::from_secs(time);
    for c in strata::container::rows(&store).context("listing containers")? {
        if strata::container::is_running(&store, &c.name)?.is_some() {
            strata::run::stop(&store, &c.name, timeout).with_context(|| format!("stopping {}", c.name))?;
        }
        if strata::container::mounted_at(&store, &c.name)?.is_some() {
            strata::container::umount(&store, &c.name, true)
                .with_context(|| format!("unmounting {}", c.name))?;
        }
    }
    drop(store);
    match strata::userns::stop_pause().context("stopping the pause process")? {
        Some(pid) => eprintln!("stopped pause process {pid}"),
        None => eprintln!("no pause process ran"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `gc`: the blobs and layers nothing references.
pub fn gc_cmd(root: &std::path::Path) -> Result<ExitCode> {
    let mut store = open_store(root)?;
    let (blobs, layers) = strata::lifecycle::gc(&mut store).context("gc")?;
    outln!("removed {} blobs, {} layers", blobs.len(), layers.len())?;
    Ok(ExitCode::SUCCESS)
}

fn prune_cmd(root: &std::path::Path, force: bool) -> Result<ExitCode> {
    if !force {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            anyhow::bail!(
                "system prune removes every container that is not running and unreferenced image data: \
                 refusing without confirmation, and standard input is not a terminal to ask on (use -f)"
            );
        }
        eprint!(
            "WARNING! This will remove:\n  - all containers that are not running\n  - cached build steps\n  - blobs and layers \
             no image or container references\nAre you sure you want to continue? [y/N] "
        );
        let mut answer = String::new();
        stdin.read_line(&mut answer).context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            eprintln!("Nothing removed.");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let mut store = open_store(root)?;
    let pruned = strata::lifecycle::system_prune(&mut store).context("system prune")?;
    for name in &pruned.containers {
        outln!("{name}")?;
    }
    for (name, why) in &pruned.failed {
        eprintln!(
            "strata: error: removing container {}: {}",
            strata::image::printable(name, 100),
            strata::image::printable(why, 4096)
        );
    }
    eprintln!(
        "removed {} containers, {} cached build steps, {} blobs, {} layers",
        pruned.containers.len(),
        pruned.build_cache,
        pruned.blobs,
        pruned.layers
    );
    Ok(if pruned.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn version_cmd(json: bool) -> Result<ExitCode> {
    let v = strata::lifecycle::version();
    if json {
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        outln!("strata:  {}", v.client)?;
        outln!("runtime: {} ({})", v.runtime_version.as_deref().unwrap_or("not found"), v.runtime)?;
        outln!("kernel:  {}", v.kernel)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn info_cmd(root: &std::path::Path, json: bool) -> Result<ExitCode> {
    let store = open_store(root)?;
    let i = strata::lifecycle::info(&store).context("info")?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&i)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    let c = &i.counts;
    outln!("root:              {}", i.root.display())?;
    outln!("runtime:           {} ({})", i.runtime_version.as_deref().unwrap_or("not found"), i.runtime)?;
    outln!("kernel:            {}", i.kernel.release)?;
    outln!("  overlay:         {}", yes(i.kernel.overlay))?;
    outln!("  new mount API:   {}", yes(i.kernel.new_mount_api))?;
    outln!("  fuse:            {}", yes(i.kernel.fuse))?;
    outln!("  fuse passthrough: {}", yes(i.kernel.fuse_passthrough))?;
    outln!("backend (auto):    {}: {}", i.auto_backend.backend, i.auto_backend.reason)?;
    outln!("strata-fuse:       {}", i.strata_fuse.display())?;
    outln!("images:            {}", c.images)?;
    outln!(
        "containers:        {} ({} running, {} paused, {} exited, {} created), {}",
        c.containers,
        c.running,
        c.paused,
        c.exited,
        c.created,
        human(c.containers_bytes)
    )?;
    outln!("layers:            {}, {}", c.layers, human(c.layers_bytes))?;
    outln!("blobs:             {}", human(c.blobs_bytes))?;
    Ok(ExitCode::SUCCESS)
}
