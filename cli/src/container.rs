//! Container commands: `container ...` and the lifecycle verbs (`ps`, `rm`, `start`, `stop`,
//! `kill`, `restart`, `wait`, `pause`, `unpause`, `logs`, `inspect`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use strata::container::{self, CreateOptions};

use crate::args::{Backend, CommitArgs, DiffArgs, ListArgs};
use crate::output::{each_name, out, report_failure, write_output};
use crate::{image, open_store, table};

#[derive(Subcommand)]
pub enum ContainerCmd {
    /// Record a container (a writable snapshot, or a view with --read-only) over IMAGE.
    #[command(
        after_help = "Examples:\n  strata container create busybox web\n  strata container create busybox ro --read-only\n  \
strata container create busybox web -p 8080:80 --network backend   # joined when started"
    )]
    Create {
        image: String,
        name: String,
        #[command(flatten)]
        net: crate::args::NetArgs,
        #[arg(long)]
        read_only: bool,
        /// Mount with overlayfs `volatile` (no syncs; for throw-away containers).
        #[arg(long)]
        volatile: bool,
    },
    /// List containers: their image, state and mount point.
    #[command(after_help = "Examples:\n  strata container ls\n  strata container ls --json\n  \
strata container ls --format '{{.Names}}\\t{{.Mounts}}'\n\n\
--format fields: .Names .Image .ImageID .Status .CreatedAt .RunningFor .Ports .Mounts, or {{json .}}.")]
    Ls {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Remove a container (refuses while mounted unless --force).
    #[command(
        after_help = "Examples:\n  strata container rm web\n  strata container rm --force web db   # stops and unmounts them first\n\n\
Each NAME is removed in turn; the exit status is 1 when any failed."
    )]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        /// Stop (SIGKILL) and unmount running or mounted containers first.
        #[arg(short, long)]
        force: bool,
    },
    /// Mount a container; prints the mount point.
    #[command(
        after_help = "Examples:\n  strata container mount web\n  strata container mount web /mnt/web --backend fuse"
    )]
    Mount {
        name: String,
        target: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
    },
    /// Unmount a container.
    #[command(after_help = "Example:\n  strata container umount web")]
    Umount {
        name: String,
        /// Detach even while busy.
        #[arg(long)]
        force: bool,
    },
    /// The container's changes, as `docker diff` prints them (A added, C changed, D deleted).
    #[command(after_help = "Examples:\n  strata container diff web\n  strata container diff web --json")]
    Diff(DiffArgs),
    /// Commit the container's changes as a new image: the parent's layers plus one new layer.
    #[command(
        after_help = "Examples:\n  strata container commit web web:v2\n  strata container commit web web:v3 -m 'add config' -c 'ENV MODE=prod' --compression zstd"
    )]
    Commit(CommitArgs),
    /// Print the mount a caller would perform (type, source, options) without mounting.
    #[command(
        after_help = "Example:\n  strata container mounts web --json   # containerd-style: type, source, options"
    )]
    Mounts {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Everything about a container as JSON: image digest, layers, upper/work, mount and run state.
    #[command(after_help = "Example:\n  strata container inspect web")]
    Inspect { name: String },
    /// The container's merged root filesystem as one flat tar, as `docker export` (whiteouts and
    /// opaque directories applied, no `.wh.` entries). A mounted (or running) container is read
    /// where it is mounted; otherwise its layers are mounted read-only for the export.
    #[command(after_help = "Examples:\n  strata container export web -o web.tar\n  \
strata container export web | tar -t\n  \
strata container export web | strata image import-rootfs - web-flat")]
    Export {
        name: String,
        /// Output file (written under a temporary name, renamed when complete); `-`: stdout.
        #[arg(short, long, default_value = "-")]
        output: PathBuf,
    },
    /// Internal: watches a detached container (started by `run -d`, `start`, `restart`): it
    /// starts it, records its exit code when it ends, then unmounts it.
    #[command(
        hide = true,
        after_help = "Example (started by strata itself):\n  strata container monitor web"
    )]
    Monitor { name: String },
}

pub fn command(root: &std::path::Path, c: ContainerCmd) -> Result<ExitCode> {
    match c {
        ContainerCmd::Create { image, name, net, read_only, volatile } => {
            let net = net.into_options()?;
            // Remote layers (`pull --lazy`) stay remote: the container mounts through strata-fuse.
            let mut store = open_store(root)?;
            container::create(&mut store, &image, &name, &CreateOptions { read_only, volatile })
                .with_context(|| format!("creating container {name}"))?;
            if let Err(e) = strata::netsetup::save(&store, &name, &net) {
                let _ = container::remove(&mut store, &name, true);
                return Err(e).with_context(|| format!("creating container {name}"));
            }
            outln!("{name}")?;
        }
        ContainerCmd::Ls { list } => {
            let store = open_store(root)?;
            print_containers(&container::list(&store)?, &list)?;
        }
        ContainerCmd::Rm { names, force } => return rm_containers(root, &names, force),
        ContainerCmd::Monitor { name } => {
            let mut out = std::io::stdout().lock();
            strata::monitor::monitor(root, &name, &mut out)
                .with_context(|| format!("monitoring container {name}"))?;
        }
        ContainerCmd::Mount { name, target, backend } => {
            let mut store = open_store(root)?;
            let at = container::mount(&mut store, &name, target.as_deref(), backend.into())
                .with_context(|| format!("mounting container {name}"))?;
            outln!("{}", at.display())?;
        }
        ContainerCmd::Umount { name, force } => {
            let store = open_store(root)?;
            container::umount(&store, &name, force)
                .with_context(|| format!("unmounting container {name}"))?;
        }
        ContainerCmd::Diff(DiffArgs { name, json }) => {
            let store = open_store(root)?;
            let changes = strata::diff::container_diff(&store, &name)
                .with_context(|| format!("diff of container {name}"))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&changes)?)?;
            } else {
                for c in changes {
                    outln!("{c}")?;
                }
            }
        }
        ContainerCmd::Commit(CommitArgs { name, new_image, compression, message, author, change, pause }) => {
            use strata::commit::{self, CommitOptions, LayerOptions};
            let mut store = open_store(root)?;
            let layer = LayerOptions {
                compression: commit::parse_compression(&compression).map_err(anyhow::Error::msg)?,
                source_date_epoch: commit::source_date_epoch()?,
                ..Default::default()
            };
            let opts = CommitOptions { layer, author, message, changes: change };
            let done = commit::commit_container(
                &mut store,
                &name,
                &new_image,
                &opts,
                pause.unwrap_or(!strata::userns::is_rootless()),
            )
            .with_context(|| {
                format!("committing container {name} as {}", strata::image::printable(&new_image, 100))
            })?;
            outln!("{}", done.manifest_digest)?;
        }
        ContainerCmd::Inspect { name } => {
            let store = open_store(root)?;
            let i = container::inspect(&store, &name)?;
            outln!("{}", serde_json::to_string_pretty(&i)?)?;
        }
        ContainerCmd::Export { name, output } => {
            let mut store = open_store(root)?;
            // The export reads every file of the layers: their blobs, whole and verified, first.
            let layers = container::layers(&store, &name)?;
            strata::registry::lazy::complete_layers(&mut store, &layers)
                .with_context(|| format!("fetching the remote layers of container {name}"))?;
            write_output(&output, |w| strata::rootfs::export_container(&mut store, &name, w).map(|_| ()))
                .with_context(|| format!("exporting container {name}"))?;
        }
        ContainerCmd::Mounts { name, json } => {
            let store = open_store(root)?;
            let m = container::mounts(&store, &name)?;
            if json {
                let v = serde_json::json!([{"type": m.fs_type, "source": m.source, "options": m.options}]);
                outln!("{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                outln!("mount -t {} {} -o {} TARGET", m.fs_type, m.source, m.options.join(","))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ps`: running and paused containers; with `all`, every one.
pub fn ps_cmd(root: &Path, list: &ListArgs, all: bool) -> Result<ExitCode> {
    let store = open_store(root)?;
    strata::netsetup::release_leaked(&store);
    let mut shown = container::list(&store)?;
    if !all {
        shown.retain(|c| c.running);
    }
    print_containers(&shown, list)?;
    Ok(ExitCode::SUCCESS)
}

/// `inspect`: as docker, a container by that name first, then an image.
pub fn inspect_cmd(root: &Path, name: String) -> Result<ExitCode> {
    let store = open_store(root)?;
    match container::inspect(&store, &name) {
        Ok(i) => {
            outln!("{}", serde_json::to_string_pretty(&i)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(container::ContainerError::NotFound(_)) => {
            if store.image(&name)?.is_none() {
                anyhow::bail!("no such container or image: {}", strata::image::printable(&name, 200));
            }
            drop(store);
            image::command(root, image::ImageCmd::Inspect { name })
        }
        Err(e) => Err(e).with_context(|| format!("inspecting container {name}")),
    }
}

pub fn logs_cmd(root: &Path, name: &str, follow: bool) -> Result<ExitCode> {
    let store = open_store(root)?;
    if follow {
        strata::run::follow_logs(&store, name, &mut std::io::stdout().lock())
            .with_context(|| format!("logs of {name}"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut f = strata::run::logs(&store, name).with_context(|| format!("logs of {name}"))?;
    std::io::copy(&mut f, &mut std::io::stdout().lock()).context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

pub fn stop_cmd(root: &Path, names: &[String], time: u64) -> Result<ExitCode> {
    let store = open_store(root)?;
    each_name(names, "stopping", |name| {
        strata::run::stop(&store, name, Duration::from_secs(time))?;
        Ok(())
    })
}

pub fn kill_cmd(root: &Path, names: &[String], signal: &str) -> Result<ExitCode> {
    let sig = strata::lifecycle::parse_signal(signal)?;
    let store = open_store(root)?;
    each_name(names, "killing", |name| Ok(strata::lifecycle::kill(&store, name, sig)?))
}

pub fn restart_cmd(root: &Path, names: &[String], time: u64) -> Result<ExitCode> {
    let mut store = open_store(root)?;
    let opts = strata::lifecycle::StartOptions::default();
    let timeout = Duration::from_secs(time);
    each_name(names, "restarting", |name| Ok(strata::lifecycle::restart(&mut store, name, timeout, &opts)?))
}

pub fn wait_cmd(root: &Path, names: &[String]) -> Result<ExitCode> {
    let store = open_store(root)?;
    let mut failed = false;
    for name in names {
        match strata::lifecycle::wait(&store, name) {
            Ok(code) => outln!("{code}")?,
            Err(e) => {
                failed = true;
                report_failure("waiting for", name, &e.into());
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub fn pause_cmd(root: &Path, names: &[String]) -> Result<ExitCode> {
    let store = open_store(root)?;
    each_name(names, "pausing", |name| Ok(strata::lifecycle::pause(&store, name)?))
}

pub fn unpause_cmd(root: &Path, names: &[String]) -> Result<ExitCode> {
    let store = open_store(root)?;
    each_name(names, "unpausing", |name| Ok(strata::lifecycle::unpause(&store, name)?))
}

pub fn rm_containers(root: &std::path::Path, names: &[String], force: bool) -> Result<ExitCode> {
    let mut store = open_store(root)?;
    strata::netsetup::release_leaked(&store);
    each_name(names, "removing container", |name| Ok(container::remove(&mut store, name, force)?))
}

pub fn start_cmd(
    root: &std::path::Path,
    names: &[String],
    attach: bool,
    backend: Backend,
) -> Result<ExitCode> {
    let mut store = open_store(root)?;
    let opts = strata::lifecycle::StartOptions { attach, backend: backend.into(), monitor: None };
    if attach {
        // The container's own status is ours, as `docker start -a`: one container.
        anyhow::ensure!(names.len() == 1, "start -a takes one container");
        let name = &names[0];
        let code =
            strata::lifecycle::start(&mut store, name, &opts).with_context(|| format!("starting {name}"))?;
        return Ok(ExitCode::from(code.clamp(0, 255) as u8));
    }
    each_name(names, "starting", |name| {
        strata::lifecycle::start(&mut store, name, &opts)?;
        Ok(())
    })
}

/// Containers as `ps` and `container ls` print them: a table sized to its content, `--json`
/// (the schema of `container inspect`), or `--format`.
fn print_containers(list: &[container::Inspected], args: &ListArgs) -> Result<()> {
    if args.json {
        return Ok(outln!("{}", serde_json::to_string_pretty(list)?)?);
    }
    if args.quiet {
        for c in list {
            outln!("{}", c.name)?;
        }
        return Ok(());
    }
    let now = strata::time::now();
    let rows: Vec<(table::Row, String)> = list
        .iter()
        .map(|c| {
            let row = vec![
                ("Names", c.name.clone()),
                ("Image", c.image.clone()),
                ("ImageID", c.image_id.short().to_string()),
                ("Status", c.status.clone()),
                ("CreatedAt", c.created.clone()),
                ("RunningFor", strata::time::ago(c.created_secs, now)),
                ("Mounts", c.mounted.as_ref().map_or_else(|| "-".to_string(), |p| p.display().to_string())),
                ("Ports", ports_column(&c.ports)),
            ];
            Ok((row, serde_json::to_string(c)?))
        })
        .collect::<Result<_>>()?;
    let known = ["Names", "Image", "ImageID", "Status", "CreatedAt", "RunningFor", "Mounts", "Ports"];
    let default = "table {{.Names}}\t{{.Image}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Mounts}}";
    let t = table::Template::parse(args.format.as_deref().unwrap_or(default), &known)?
        .title("Names", "NAME")
        .title("RunningFor", "CREATED")
        .title("Mounts", "MOUNTED");
    Ok(out(&t.render(&rows))?)
}

/// Published ports as docker's ps shows them: `0.0.0.0:8080->80/tcp, 127.0.0.1:5353->53/udp`.
fn ports_column(ports: &[strata::network::ports::PortMapping]) -> String {
    ports
        .iter()
        .map(|m| {
            let ip = m.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            format!("{ip}:{}->{}/{}", m.host_port, m.container_port, m.protocol)
        })
        .collect::<Vec<_>>()
        .join(", ")
}
