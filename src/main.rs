//! The `strata` command line. Library errors get their context here (anyhow), nowhere else.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use strata::container::{self, CreateOptions};
use strata::image::Platform;
use strata::import::{self, ImportOptions};
use strata::store::Store;

mod cli;
use cli::progress;

#[derive(Parser)]
#[command(name = "strata", version, about = "Overlay-filesystem snapshotter and container runtime layer")]
struct Cli {
    /// State directory.
    #[arg(long, global = true, env = "STRATA_ROOT", default_value = Store::DEFAULT_ROOT)]
    root: PathBuf,
    /// More logging (repeat for more); RUST_LOG overrides. Before the command (`strata -v run`):
    /// after it, `-v` is `run`'s volume, as in podman.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Images: import, list, inspect, remove.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Containers: writable snapshots over images.
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Create and mount a container over IMAGE and run it with runc.
    #[command(after_help = "Examples:\n  strata run busybox --rm -- echo hello\n  \
strata run busybox --rm -e GREETING=hi -w /tmp --user nobody -- sh -c 'echo $GREETING; pwd; id'\n  \
strata run -d --name web busybox -- httpd -f -p 8080   # prints the name; strata logs web; strata stop web\n  \
strata run --rm -v /srv/data:/data:ro busybox -- ls /data\n  \
strata run -it --rm busybox -- sh       # an interactive shell")]
    Run {
        image: String,
        /// Container name (default: generated).
        #[arg(long)]
        name: Option<String>,
        /// Remove the container when the command exits.
        #[arg(long)]
        rm: bool,
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        #[command(flatten)]
        process: ProcessArgs,
        /// Detached: start it, print its name and return. Its stdout and stderr go to a log file
        /// in the container's directory (`strata logs NAME`); it stays mounted until `strata stop`.
        #[arg(short, long)]
        detach: bool,
        /// Bind mount HOST:CONTAINER[:ro] (host path absolute and existing); repeatable.
        #[arg(short, long)]
        volume: Vec<String>,
        /// Seconds the container has to exit after strata takes SIGTERM or SIGHUP (forwarded to
        /// it) before it is killed; a second Ctrl-C kills it at once.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        stop_timeout: u64,
        /// Command and arguments (replace the image's Cmd).
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// Pull an image from a registry and unpack it: each layer streams from the network through
    /// the same verify + store + unpack path as `image import`. Prints the manifest digest.
    #[command(
        after_help = "Examples:\n  strata pull busybox                       # docker.io/library/busybox:latest\n  \
strata pull localhost:5000/app:v1 --name app\n  \
strata pull quay.io/org/app@sha256:<64 hex> --platform linux/arm64\n\n\
Credentials come from $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json or \
~/.docker/config.json (credential helpers included). CA certificates for a registry are read \
from /etc/containers/certs.d/HOST/*.crt and /etc/docker/certs.d/HOST/*.crt ($STRATA_CERTS_D \
replaces those directories). Plain HTTP is tried only for localhost/127.0.0.1 or with \
--tls-verify=false."
    )]
    Pull {
        /// HOST[:PORT]/REPO[:TAG|@sha256:DIGEST], as docker writes it.
        reference: String,
        /// Name to store the image under (default: the reference, normalised).
        #[arg(long)]
        name: Option<String>,
        /// Platform to pick from a multi-platform index, OS/ARCH[/VARIANT].
        #[arg(long)]
        platform: Option<String>,
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        jobs: JobsArg,
        /// Print only the digest: no progress, no summary.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Push a stored image to a registry: blobs the registry lacks are uploaded (or mounted
    /// from the repository the image's name points into), then the manifest, byte for byte, so
    /// the digest stays the same. Prints the manifest digest.
    #[command(
        after_help = "Examples:\n  strata push app localhost:5000/app:v1\n  strata push localhost:5000/app:v1   # to the registry its name names"
    )]
    Push {
        /// The stored image.
        name: String,
        /// HOST[:PORT]/REPO[:TAG] (default: NAME, when it is in that form).
        reference: Option<String>,
        #[command(flatten)]
        tls: TlsArgs,
        /// Print only the digest.
        #[arg(short, long)]
        quiet: bool,
        /// Upload blobs larger than this many bytes in chunks of this size (each retried alone).
        #[arg(long, default_value_t = strata::registry::push::DEFAULT_CHUNK)]
        chunk_size: u64,
    },
    /// Log in to a registry: the credentials are checked against it, then stored in
    /// $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json, else ~/.docker/config.json.
    #[command(
        after_help = "Example:\n  printf '%s' \"$TOKEN\" | strata login registry.example:5000 -u ci --password-stdin"
    )]
    Login {
        /// HOST[:PORT] of the registry.
        host: String,
        #[arg(short, long)]
        username: String,
        /// Password (visible to other users in the process list: prefer --password-stdin).
        #[arg(short, long)]
        password: Option<String>,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Remove the stored credentials for a registry.
    #[command(after_help = "Example:\n  strata logout registry.example:5000")]
    Logout { host: String },
    /// Remove blobs and layer directories no image references.
    #[command(after_help = "Example:\n  strata image rm old-app && strata gc")]
    Gc,
    /// Stop a running container as `podman stop`: SIGTERM, SIGKILL after --time seconds; then
    /// unmount it.
    #[command(after_help = "Examples:\n  strata stop web\n  strata stop -t 0 web   # SIGKILL at once")]
    Stop {
        name: String,
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(short, long, default_value_t = 10)]
        time: u64,
    },
    /// The output of a container run with `run -d` (stdout and stderr, in order).
    #[command(after_help = "Examples:\n  strata logs web\n  strata logs -f web   # until it stops")]
    Logs {
        name: String,
        /// Follow: keep printing what it writes until the container stops.
        #[arg(short, long)]
        follow: bool,
    },
    /// Run a command in a running container (runc exec), as `podman exec`; exits with its status.
    #[command(after_help = "Examples:\n  strata exec web -- cat /etc/hostname\n  \
strata exec -e DEBUG=1 -w /srv --user nobody web -- sh -c 'id; pwd'\n  \
strata exec -it web -- sh            # an interactive shell")]
    Exec {
        name: String,
        #[command(flatten)]
        process: ProcessArgs,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Write images as one archive, as `podman save` (short for `image export`, and it streams
    /// to stdout). The archive names each image by its NAME; blobs they share are written once.
    #[command(after_help = "Examples:\n  strata save busybox -o busybox.tar\n  \
strata save busybox --format oci-archive | ssh host strata load\n  \
strata save app | docker load\n  \
strata save app:v1 app:v2 base -o images.tar")]
    Save {
        /// The images.
        #[arg(required = true)]
        names: Vec<String>,
        /// Output file (written under a temporary name, renamed when complete); `-`: stdout.
        #[arg(short, long, default_value = "-")]
        output: PathBuf,
        #[arg(long, default_value = "docker-archive", value_parser = ["oci-archive", "docker-archive"])]
        format: String,
    },
    /// Import an oci-archive or docker-archive, as `podman load` (short for `image import`, and
    /// it reads stdin). Archives need random access: stdin is spooled to a file in the state
    /// root's staging directory first (so it needs that much free space there), removed after.
    /// Prints the manifest digest.
    #[command(after_help = "Examples:\n  strata load -i busybox.tar\n  \
docker save busybox | strata load\n  \
strata --root /a save app | strata --root /b load --name app")]
    Load {
        /// The archive, or `-` for stdin.
        #[arg(short, long, default_value = "-")]
        input: String,
        /// Name to store the image under (default: the archive's tag).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        jobs: JobsArg,
    },
    /// Running containers (as podman ps).
    #[command(after_help = "Examples:\n  strata ps\n  strata ps --json")]
    Ps {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ContainerCmd {
    /// Record a container (a writable snapshot, or a view with --read-only) over IMAGE.
    #[command(
        after_help = "Examples:\n  strata container create busybox web\n  strata container create busybox ro --read-only"
    )]
    Create {
        image: String,
        name: String,
        #[arg(long)]
        read_only: bool,
        /// Mount with overlayfs `volatile` (no syncs; for throw-away containers).
        #[arg(long)]
        volatile: bool,
    },
    /// List containers and whether each is mounted.
    #[command(after_help = "Examples:\n  strata container ls\n  strata container ls --json")]
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove a container (refuses while mounted unless --force).
    #[command(
        after_help = "Examples:\n  strata container rm web\n  strata container rm --force web   # stops and unmounts it first"
    )]
    Rm {
        name: String,
        #[arg(long)]
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
    Diff {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Commit the container's changes as a new image: the parent's layers plus one new layer.
    #[command(
        after_help = "Examples:\n  strata container commit web web:v2\n  strata container commit web web:v3 -m 'add config' -c 'ENV MODE=prod' --compression zstd"
    )]
    Commit {
        name: String,
        new_image: String,
        #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd", "none"])]
        compression: String,
        #[arg(long, short = 'm')]
        message: Option<String>,
        #[arg(long, short = 'a')]
        author: Option<String>,
        /// Dockerfile instruction applied to the config (CMD, ENTRYPOINT, ENV, WORKDIR, USER,
        /// LABEL, EXPOSE, VOLUME, STOPSIGNAL); repeatable.
        #[arg(long, short = 'c')]
        change: Vec<String>,
        /// Pause a running container while its changes are read (as `docker commit`);
        /// `--pause=false` commits it live.
        #[arg(long, short = 'p', default_value_t = true, action = clap::ArgAction::Set,
              num_args = 0..=1, default_missing_value = "true")]
        pause: bool,
    },
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
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Import an OCI layout (DIR or DIR:TAG), an oci-archive or a docker-archive tar.
    #[command(
        after_help = "Examples:\n  strata image import ./layout:busybox\n  strata image import oci-archive:busybox.tar --name busybox\n  strata image import docker-archive:saved.tar:app:v1 --jobs 4"
    )]
    Import {
        source: String,
        /// Name to store the image under (default: the source's tag).
        #[arg(long)]
        name: Option<String>,
        /// Platform to pick from a multi-platform index, OS/ARCH[/VARIANT].
        #[arg(long)]
        platform: Option<String>,
        #[command(flatten)]
        jobs: JobsArg,
    },
    /// List images.
    #[command(after_help = "Examples:\n  strata image ls\n  strata image ls -q\n  strata image ls --json")]
    Ls {
        #[arg(long)]
        json: bool,
        /// Only the image IDs (short manifest digests), once each.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show an image's manifest, config and layers.
    #[command(after_help = "Example:\n  strata image inspect busybox")]
    Inspect { name: String },
    /// Remove image names (their layers stay until `strata gc`); refuses names containers use.
    #[command(after_help = "Example:\n  strata image rm app:v1 app:v2")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// The image's history, newest first, with the size each step added (as docker history).
    #[command(
        after_help = "Example:\n  strata image history busybox\n  strata image history busybox --json"
    )]
    History {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Give an image a second name (the same manifest: nothing is copied). An existing NEW_NAME
    /// is moved to this image, as `docker tag` does.
    #[command(after_help = "Example:\n  strata image tag 127.0.0.1:5000/app:1 localhost:5000/app:v1")]
    Tag { name: String, new_name: String },
    /// Write an image as an OCI layout (DEST or DEST:TAG), an oci-archive or a docker-archive.
    #[command(
        after_help = "Examples:\n  strata image export app ./layout:app\n  strata image export app app.tar --format docker-archive"
    )]
    Export {
        name: String,
        dest: String,
        #[arg(long, default_value = "oci", value_parser = ["oci", "oci-archive", "docker-archive"])]
        format: String,
        /// Replace an existing archive file, or a tag the layout already holds for another image.
        #[arg(long)]
        force: bool,
    },
    /// A flat rootfs tarball (plain, gzip or zstd) becomes a one-layer image, as `docker import`:
    /// the host's os/architecture, one history entry, `-c` changes as `container commit` takes
    /// them. Streams: TAR may be `-` (stdin, a pipe is fine). Prints the manifest digest.
    #[command(
        after_help = "Examples:\n  strata image import-rootfs rootfs.tar.gz app -c 'CMD [\"/bin/sh\"]' -m 'from rootfs.tar.gz'\n  \
strata container export web | strata image import-rootfs - web-flat"
    )]
    ImportRootfs {
        /// The tar file, or `-` for stdin.
        tar: PathBuf,
        name: String,
        /// Dockerfile instruction applied to the config (CMD, ENTRYPOINT, ENV, WORKDIR, USER,
        /// LABEL, EXPOSE, VOLUME, STOPSIGNAL); repeatable.
        #[arg(long, short = 'c')]
        change: Vec<String>,
        /// History comment (default: "Imported from TAR").
        #[arg(long, short = 'm')]
        message: Option<String>,
        #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd", "none"])]
        compression: String,
    },
}

/// The process `run` starts and `exec` adds, as podman takes them.
#[derive(clap::Args)]
struct ProcessArgs {
    /// Set an environment variable, K=V, or K to pass this process's value; repeatable.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Working directory in the container (absolute; replaces the image's WorkingDir).
    #[arg(short, long)]
    workdir: Option<String>,
    /// USER[:GROUP] (names or ids, names resolved in the container); replaces the image's User.
    #[arg(short, long)]
    user: Option<String>,
    /// Keep stdin open: the process reads this one's stdin (otherwise /dev/null).
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a terminal for the process.
    #[arg(short, long)]
    tty: bool,
}

/// How registry commands (pull, push, login) reach the registry.
#[derive(clap::Args)]
struct TlsArgs {
    /// Verify TLS certificates; `--tls-verify=false` also allows plain HTTP.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    tls_verify: bool,
    /// Also trust the *.crt files of this directory (as podman's --cert-dir).
    #[arg(long)]
    cert_dir: Option<PathBuf>,
}

/// `--jobs N`: how many layers an import fetches, verifies and unpacks at once.
#[derive(clap::Args, Clone, Copy)]
struct JobsArg {
    /// Layers fetched, verified and unpacked at once (default: one per layer and CPU, at most
    /// 4); 1 does one after the other.
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
}

impl JobsArg {
    /// As [`ImportOptions::jobs`] takes it: 0 for the library's default.
    fn get(self) -> usize {
        self.jobs.map_or(0, usize::from)
    }
}

impl TlsArgs {
    fn client(self) -> strata::registry::ClientOptions {
        strata::registry::ClientOptions {
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir,
            ..Default::default()
        }
    }
}

/// `--backend`: which filesystem stacks the layers (the library's `container::Backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// Kernel OverlayFS.
    Kernel,
    /// strata-fuse, the userspace union filesystem.
    Fuse,
    /// Kernel when an overlay mount works, FUSE otherwise.
    Auto,
}

impl From<Backend> for container::Backend {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Kernel => container::Backend::Kernel,
            Backend::Fuse => container::Backend::Fuse,
            Backend::Auto => container::Backend::Auto,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // A log line to a stderr that is gone (the terminal hung up, and strata is still cleaning up
    // after its container) is dropped: by default the subscriber reports that with eprintln!,
    // which panics.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Messages may quote input (names from archives, parser errors): never raw bytes.
            eprintln!("strata: error: {}", strata::image::printable(&format!("{e:#}"), 4096));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// 127 for a command not found in the container, 126 for one that cannot be executed (as
/// podman and shells), 1 for every other error.
fn exit_code(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<strata::bundle::BundleError>())
        .and_then(|b| b.exit_code())
        .unwrap_or(1)
}

/// Every command works on the state root, which needs root: layers hold whiteouts (0:0 device
/// nodes) and `trusted.*` xattrs, and containers are overlay mounts. Checked once, before
/// anything is read or created; `--help` and `--version` never get here.
fn require_root(root: &std::path::Path) -> Result<()> {
    let euid = rustix::process::geteuid();
    if !euid.is_root() {
        anyhow::bail!(
            "strata must run as root (this is uid {}): the state root {} holds whiteout device \
             nodes and trusted.* xattrs, and containers are overlay mounts; rootless mode is not \
             supported yet",
            euid.as_raw(),
            root.display()
        );
    }
    Ok(())
}

fn open_store(root: &std::path::Path) -> Result<Store> {
    match Store::open(root) {
        Ok(s) => Ok(s),
        // Names the root already.
        Err(e @ strata::store::StoreError::NotADirectory { .. }) => Err(e.into()),
        Err(e) => Err(e).with_context(|| format!("opening state root {}", root.display())),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    // Credentials are the user's own: no state root, no root needed.
    match cli.cmd {
        Cmd::Login { host, username, password, password_stdin, tls } => {
            return login_cmd(&host, username, password, password_stdin, tls)
        }
        Cmd::Logout { host } => return logout_cmd(&host),
        _ => {}
    }
    require_root(&cli.root)?;
    match cli.cmd {
        Cmd::Login { .. } | Cmd::Logout { .. } => Ok(ExitCode::SUCCESS),
        Cmd::Image(c) => image_cmd(&cli.root, c),
        Cmd::Container(c) => container_cmd(&cli.root, c),
        Cmd::Exec { name, process: p, cmd } => {
            let store = open_store(&cli.root)?;
            let opts = strata::run::ExecOptions {
                name: name.clone(),
                args: cmd,
                env: p.env,
                workdir: p.workdir,
                user: p.user,
                terminal: p.tty,
                interactive: p.interactive,
            };
            let code = strata::run::exec(&store, &opts).with_context(|| format!("exec in {name}"))?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        Cmd::Stop { name, time } => {
            let store = open_store(&cli.root)?;
            strata::run::stop(&store, &name, std::time::Duration::from_secs(time))
                .with_context(|| format!("stopping {name}"))?;
            println!("{name}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Logs { name, follow } => {
            let store = open_store(&cli.root)?;
            if follow {
                strata::run::follow_logs(&store, &name, &mut std::io::stdout().lock())
                    .with_context(|| format!("logs of {name}"))?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut f = strata::run::logs(&store, &name).with_context(|| format!("logs of {name}"))?;
            std::io::copy(&mut f, &mut std::io::stdout().lock()).context("writing to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Save { names, output, format } => save_cmd(&cli.root, &names, &output, &format),
        Cmd::Load { input, name, jobs } => load_cmd(&cli.root, &input, name, jobs),
        Cmd::Run { image, name, rm, backend, process, detach, volume, stop_timeout, cmd } => {
            let extra = RunExtra { process, detach, volumes: volume, stop_timeout };
            run_cmd(&cli.root, &image, name, rm, backend, extra, cmd)
        }
        Cmd::Ps { json } => {
            let store = open_store(&cli.root)?;
            let mut running = Vec::new();
            for c in store.db.containers()? {
                let i = container::inspect(&store, &c.name)?;
                if i.running.is_some() {
                    running.push(i);
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&running)?);
            } else {
                println!("{:<24} {:<30} {:<14} STATUS", "NAME", "IMAGE", "IMAGE ID");
                for i in running {
                    let status = i.running.unwrap_or_default();
                    println!("{:<24} {:<30} {:<14} {status}", i.name, i.image, i.digest.short());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Pull { reference, name, platform, tls, jobs, quiet } => {
            pull_cmd(&cli.root, &reference, name, platform, tls, jobs, quiet)
        }
        Cmd::Push { name, reference, tls, quiet, chunk_size } => {
            push_cmd(&cli.root, &name, reference.as_deref(), tls, quiet, chunk_size)
        }
        Cmd::Gc => {
            let mut store = open_store(&cli.root)?;
            let (blobs, layers) = store.gc().context("gc")?;
            println!("removed {} blobs, {} layers", blobs.len(), layers.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn image_cmd(root: &std::path::Path, c: ImageCmd) -> Result<ExitCode> {
    match c {
        ImageCmd::Import { source, name, platform, jobs } => {
            let platform = platform.map(|p| Platform::parse(&p)).transpose().map_err(anyhow::Error::msg)?;
            let bars = progress::Bars::on_terminal(true);
            let opts = ImportOptions { name, platform, jobs: jobs.get(), progress: bars.progress() };
            // The source is checked before the state root is touched.
            let (resolved, name) =
                import::prepare(&source, &opts).with_context(|| format!("importing {source}"))?;
            let mut store = open_store(root)?;
            let imported = import::import_prepared(&mut store, &resolved, &name, &opts);
            drop(bars);
            let imported = imported.with_context(|| format!("importing {source}"))?;
            println!("{}", imported.manifest_digest);
        }
        ImageCmd::Ls { json, quiet } => {
            let store = open_store(root)?;
            let images = strata::images::list(&store)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&images)?);
            } else if quiet {
                let mut seen = std::collections::HashSet::new();
                for i in &images {
                    if seen.insert(i.digest.short()) {
                        println!("{}", i.digest.short());
                    }
                }
            } else {
                println!("{:<30} {:<20} {:>7} {:>12}", "NAME", "DIGEST", "LAYERS", "SIZE");
                for i in images {
                    println!("{:<30} {:<20} {:>7} {:>12}", i.name, i.digest.short(), i.layers, human(i.size));
                }
            }
        }
        ImageCmd::History { name, json } => {
            let store = open_store(root)?;
            let steps = strata::images::history(&store, &name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&steps)?);
            } else {
                println!("{:<14} {:<22} {:<50} {:>10}  COMMENT", "LAYER", "CREATED", "CREATED BY", "SIZE");
                for s in steps {
                    let by: String = s.created_by.as_deref().unwrap_or("").chars().take(50).collect();
                    println!(
                        "{:<14} {:<22} {:<50} {:>10}  {}",
                        s.diff_id.as_ref().map_or("-", |d| d.short()),
                        s.created.as_deref().unwrap_or("-"),
                        strata::image::printable(&by, 50),
                        human(s.size),
                        strata::image::printable(s.comment.as_deref().unwrap_or(""), 80)
                    );
                }
            }
        }
        ImageCmd::Inspect { name } => {
            let store = open_store(root)?;
            let img = store.db.image(&name)?.with_context(|| format!("image {name:?} not found"))?;
            let manifest: serde_json::Value =
                serde_json::from_slice(&store.read_blob(&img.manifest_digest)?)?;
            let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&img.config_digest)?)?;
            let layers = store.db.image_layers(&name)?;
            let out = serde_json::json!({
                "name": img.name,
                "digest": img.manifest_digest,
                "created": img.created,
                "manifest": manifest,
                "config": config,
                "layers": layers,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        ImageCmd::Export { name, dest, format, force } => {
            let store = open_store(root)?;
            let format: strata::export::ExportFormat = format.parse()?;
            let opts = strata::export::ExportOptions { force };
            strata::export::export_with(&store, &name, &dest, format, &opts)
                .with_context(|| format!("exporting {name} to {dest}"))?;
        }
        ImageCmd::ImportRootfs { tar, name, change, message, compression } => {
            use strata::commit::{self, CommitOptions, LayerOptions};
            let mut store = open_store(root)?;
            let layer = LayerOptions {
                compression: commit::parse_compression(&compression).map_err(anyhow::Error::msg)?,
                source_date_epoch: commit::source_date_epoch()?,
                ..Default::default()
            };
            let opts = CommitOptions { layer, author: None, message, changes: change };
            let what = || format!("importing {} as {}", tar.display(), strata::image::printable(&name, 100));
            let done = if tar.as_os_str() == "-" {
                strata::rootfs::import_rootfs(&mut store, std::io::stdin().lock(), "-", &name, &opts)
            } else {
                let f = std::fs::File::open(&tar).with_context(|| format!("opening {}", tar.display()))?;
                strata::rootfs::import_rootfs(&mut store, f, &tar.display().to_string(), &name, &opts)
            }
            .with_context(what)?;
            println!("{}", done.manifest_digest);
        }
        ImageCmd::Tag { name, new_name } => {
            strata::reference::validate_image_name(&new_name)?;
            let mut store = open_store(root)?;
            // Shared with imports, exclusive of gc: the blobs and layers stay while named.
            let _gc = store.gc_shared()?;
            let img = store.db.image(&name)?.with_context(|| format!("image {name:?} not found"))?;
            let layers = store.db.image_layers(&name)?;
            store
                .db
                .put_image(&strata::db::NewImage {
                    name: &new_name,
                    manifest_digest: &img.manifest_digest,
                    config_digest: &img.config_digest,
                    blobs: vec![],
                    layers,
                    lease: None,
                })
                .with_context(|| format!("tagging {name} as {new_name}"))?;
            println!("{new_name}");
        }
        ImageCmd::Rm { names } => {
            // As docker: each name is removed or reported; the exit status says whether all went.
            let mut store = open_store(root)?;
            let mut failed = 0;
            for name in &names {
                match store.remove_image(name) {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        failed += 1;
                        eprintln!(
                            "strata: error: removing image {}: {}",
                            strata::image::printable(name, 100),
                            strata::image::printable(&strata::error::report(&e), 4096)
                        );
                    }
                }
            }
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn pull_cmd(
    root: &std::path::Path,
    reference: &str,
    name: Option<String>,
    platform: Option<String>,
    tls: TlsArgs,
    jobs: JobsArg,
    quiet: bool,
) -> Result<ExitCode> {
    use strata::registry::{self, PullOptions};
    let platform = platform.map(|p| Platform::parse(&p)).transpose().map_err(anyhow::Error::msg)?;
    if let Some(n) = &name {
        strata::reference::validate_image_name(n)?;
    }
    let r = strata::reference::normalize(reference).with_context(|| format!("pulling {reference}"))?;
    let opts = PullOptions { platform: platform.clone(), client: tls.client() };
    // The registry is asked before the state root is touched.
    let resolved = registry::resolve(&r, &opts).with_context(|| format!("pulling {r}"))?;
    let name = name.unwrap_or_else(|| r.to_string());
    strata::reference::validate_image_name(&name).with_context(|| format!("pulling {r}"))?;
    let bars = progress::Bars::on_terminal(!quiet);
    let iopts =
        ImportOptions { name: Some(name.clone()), platform, jobs: jobs.get(), progress: bars.progress() };
    let mut store = open_store(root)?;
    let imported = import::import_prepared(&mut store, &resolved, &name, &iopts);
    drop(bars);
    let imported = imported.with_context(|| format!("pulling {r}"))?;
    if !quiet {
        eprintln!(
            "{name}: {} layers, {} unpacked, {} already present",
            imported.layers.len(),
            imported.unpacked,
            imported.layers.len() - imported.unpacked
        );
    }
    println!("{}", imported.manifest_digest);
    Ok(ExitCode::SUCCESS)
}

fn push_cmd(
    root: &std::path::Path,
    name: &str,
    reference: Option<&str>,
    tls: TlsArgs,
    quiet: bool,
    chunk_size: u64,
) -> Result<ExitCode> {
    use strata::registry::{self, PushOptions};
    let dest = match reference {
        Some(r) => strata::reference::normalize(r).with_context(|| format!("pushing {name}"))?,
        // Only a name that says where it lives: a short name would otherwise mean Docker Hub.
        None => strata::reference::parse(name)
            .ok()
            .filter(|r| r.domain.is_some())
            .and_then(|_| strata::reference::normalize(name).ok())
            .with_context(|| format!("pushing {name}: give the destination HOST[:PORT]/REPO[:TAG]"))?,
    };
    let store = open_store(root)?;
    anyhow::ensure!(chunk_size > 0, "--chunk-size must be at least 1 byte");
    let opts = PushOptions { client: tls.client(), chunk_size };
    let pushed =
        registry::push(&store, name, &dest, &opts).with_context(|| format!("pushing {name} to {dest}"))?;
    if !quiet {
        eprintln!(
            "{dest}: {} blobs uploaded, {} mounted, {} already present",
            pushed.uploaded, pushed.mounted, pushed.present
        );
    }
    println!("{}", pushed.digest);
    Ok(ExitCode::SUCCESS)
}

/// `HOST[:PORT]` as given, or as a URL (`https://host/v1/` and the like), checked.
fn registry_host(host: &str) -> Result<String> {
    let h = host.strip_prefix("https://").or_else(|| host.strip_prefix("http://")).unwrap_or(host);
    let h = h.split('/').next().unwrap_or(h);
    let h = if h == "index.docker.io" || h == "registry-1.docker.io" { "docker.io" } else { h };
    strata::reference::normalize(&format!("{h}/x"))
        .ok()
        .filter(|n| n.domain == h)
        .map(|n| n.domain)
        .with_context(|| format!("{}: not a registry host (HOST[:PORT])", strata::reference::quote(host)))
}

fn login_cmd(
    host: &str,
    username: String,
    password: Option<String>,
    password_stdin: bool,
    tls: TlsArgs,
) -> Result<ExitCode> {
    use strata::registry::{auth, Client, ClientOptions};
    let host = registry_host(host)?;
    let password = match (password, password_stdin) {
        (Some(_), true) => anyhow::bail!("give the password with --password or --password-stdin, not both"),
        (Some(p), false) => p,
        (None, true) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
        (None, false) => anyhow::bail!("give the password with --password-stdin (or --password)"),
    };
    let file = auth::login_file().context("no file to store credentials in (set REGISTRY_AUTH_FILE)")?;
    let creds = auth::Credentials { username, password, from: "the command line".into() };
    let opts = ClientOptions { credentials: Some(creds.clone()), ..tls.client() };
    let client =
        Client::connect(&host, "", &opts, "pull").with_context(|| format!("logging in to {host}"))?;
    client.check_login().with_context(|| format!("logging in to {host}"))?;
    auth::store(&file, &host, Some(&creds)).with_context(|| format!("logging in to {host}"))?;
    println!("Login Succeeded ({})", file.display());
    Ok(ExitCode::SUCCESS)
}

fn logout_cmd(host: &str) -> Result<ExitCode> {
    use strata::registry::auth;
    let host = registry_host(host)?;
    let file = auth::login_file().context("no credential file (set REGISTRY_AUTH_FILE)")?;
    if auth::store(&file, &host, None).with_context(|| format!("logging out of {host}"))? {
        println!("Removed login credentials for {host} from {}", file.display());
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("not logged in to {host} (no entry in {})", file.display())
    }
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < U.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn save_cmd(
    root: &std::path::Path,
    names: &[String],
    output: &std::path::Path,
    format: &str,
) -> Result<ExitCode> {
    let store = open_store(root)?;
    let format: strata::export::ExportFormat = format.parse()?;
    let images: Vec<&str> = names.iter().map(String::as_str).collect();
    if output.as_os_str() == "-" {
        write_output(output, |mut w| strata::export::save_to(&store, &images, format, &mut w))
    } else {
        let opts = strata::export::ExportOptions { force: true };
        strata::export::save_with(&store, &images, output, format, &opts).map_err(anyhow::Error::from)
    }
    .with_context(|| format!("saving {}", names.join(", ")))?;
    Ok(ExitCode::SUCCESS)
}

fn load_cmd(root: &std::path::Path, input: &str, name: Option<String>, jobs: JobsArg) -> Result<ExitCode> {
    let opts = ImportOptions { name, platform: None, jobs: jobs.get(), progress: None };
    let mut store = open_store(root)?;
    let imported = if input == "-" {
        import::import_stream(&mut store, std::io::stdin().lock(), &opts).context("loading from stdin")?
    } else {
        import::load(&mut store, input, &opts).with_context(|| format!("loading {input}"))?
    };
    for i in &imported {
        println!("{}", i.manifest_digest);
    }
    Ok(ExitCode::SUCCESS)
}

/// Write to `path` (`-`: stdout, refused when it is a terminal) through `f`: a file is written
/// under a temporary name next to it and renamed when complete, and removed on failure.
fn write_output<E>(
    path: &std::path::Path,
    f: impl FnOnce(&mut dyn std::io::Write) -> Result<(), E>,
) -> Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    use std::io::Write;
    if path.as_os_str() == "-" {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            anyhow::bail!("refusing to write a tar to a terminal: redirect stdout or use -o FILE");
        }
        let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        f(&mut w)?;
        w.flush().context("writing to stdout")?;
        return Ok(());
    }
    strata::fsutil::atomic_write(path, 0o644, |w| f(w).map_err(anyhow::Error::from))
        .with_context(|| format!("writing {}", path.display()))
}

fn container_cmd(root: &std::path::Path, c: ContainerCmd) -> Result<ExitCode> {
    match c {
        ContainerCmd::Create { image, name, read_only, volatile } => {
            let mut store = open_store(root)?;
            container::create(&mut store, &image, &name, &CreateOptions { read_only, volatile })
                .with_context(|| format!("creating container {name}"))?;
            println!("{name}");
        }
        ContainerCmd::Ls { json } => {
            let store = open_store(root)?;
            let list = container::list(&store)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<24} {:<24} {:<4} MOUNTED", "NAME", "IMAGE", "MODE");
                for c in list {
                    let mode = if c.row.read_only { "ro" } else { "rw" };
                    let at = c.mounted.map(|p| p.display().to_string()).unwrap_or_else(|| "-".into());
                    println!("{:<24} {:<24} {:<4} {}", c.row.name, c.row.image, mode, at);
                }
            }
        }
        ContainerCmd::Rm { name, force } => {
            let mut store = open_store(root)?;
            container::remove(&mut store, &name, force)
                .with_context(|| format!("removing container {name}"))?;
            println!("{name}");
        }
        ContainerCmd::Mount { name, target, backend } => {
            let mut store = open_store(root)?;
            let at = container::mount(&mut store, &name, target.as_deref(), backend.into())
                .with_context(|| format!("mounting container {name}"))?;
            println!("{}", at.display());
        }
        ContainerCmd::Umount { name, force } => {
            let store = open_store(root)?;
            container::umount(&store, &name, force)
                .with_context(|| format!("unmounting container {name}"))?;
        }
        ContainerCmd::Diff { name, json } => {
            let store = open_store(root)?;
            let changes =
                container::diff(&store, &name).with_context(|| format!("diff of container {name}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&changes)?);
            } else {
                for c in changes {
                    println!("{c}");
                }
            }
        }
        ContainerCmd::Commit { name, new_image, compression, message, author, change, pause } => {
            use strata::commit::{self, CommitOptions, LayerOptions};
            let mut store = open_store(root)?;
            let layer = LayerOptions {
                compression: commit::parse_compression(&compression).map_err(anyhow::Error::msg)?,
                source_date_epoch: commit::source_date_epoch()?,
                ..Default::default()
            };
            let opts = CommitOptions { layer, author, message, changes: change };
            let done = container::commit(&mut store, &name, &new_image, &opts, pause).with_context(|| {
                format!("committing container {name} as {}", strata::image::printable(&new_image, 100))
            })?;
            println!("{}", done.manifest_digest);
        }
        ContainerCmd::Inspect { name } => {
            let store = open_store(root)?;
            let i = container::inspect(&store, &name)?;
            println!("{}", serde_json::to_string_pretty(&i)?);
        }
        ContainerCmd::Export { name, output } => {
            let mut store = open_store(root)?;
            write_output(&output, |w| strata::rootfs::export_container(&mut store, &name, w).map(|_| ()))
                .with_context(|| format!("exporting container {name}"))?;
        }
        ContainerCmd::Mounts { name, json } => {
            let store = open_store(root)?;
            let m = container::mounts(&store, &name)?;
            if json {
                let v = serde_json::json!([{"type": m.fs_type, "source": m.source, "options": m.options}]);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("mount -t {} {} -o {} TARGET", m.fs_type, m.source, m.options.join(","));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `run` options beyond the basics.
struct RunExtra {
    process: ProcessArgs,
    detach: bool,
    volumes: Vec<String>,
    stop_timeout: u64,
}

fn run_cmd(
    root: &std::path::Path,
    image: &str,
    name: Option<String>,
    rm: bool,
    backend: Backend,
    extra: RunExtra,
    cmd: Vec<String>,
) -> Result<ExitCode> {
    let mut store = open_store(root)?;
    let mut opts = strata::run::RunOptions {
        image: image.to_string(),
        name,
        rm,
        backend: backend.into(),
        args: cmd,
        terminal: extra.process.tty,
        interactive: extra.process.interactive,
        env: extra.process.env,
        workdir: extra.process.workdir,
        user: extra.process.user,
        volumes: extra.volumes,
        detach: extra.detach,
        stop_timeout: Some(std::time::Duration::from_secs(extra.stop_timeout)),
    };
    if opts.detach && opts.name.is_none() {
        opts.name = Some(strata::run::generated_name());
    }
    let code = strata::run::run(&mut store, &opts)?;
    if opts.detach {
        println!("{}", opts.name.as_deref().unwrap_or_default());
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (duplicate short flags and the like) for every command;
    /// otherwise they only fire when a user runs the command.
    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// Every command a user runs shows an example in its --help.
    #[test]
    fn every_command_has_an_example() {
        use clap::CommandFactory;
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let subs: Vec<&clap::Command> = c.get_subcommands().filter(|s| s.get_name() != "help").collect();
            if subs.is_empty() {
                let help = c.get_after_help().map(|h| h.to_string()).unwrap_or_default();
                if !help.contains("Example") {
                    missing.push(path.to_string());
                }
            }
            for s in subs {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "strata", &mut missing);
        assert!(missing.is_empty(), "no example in --help: {missing:?}");
    }
}
