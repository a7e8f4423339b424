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
use cli::{progress, table};

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
        /// Command and arguments, replacing the image's Cmd: everything after IMAGE from the
        /// first word that is not one of run's options, as docker takes it (`run busybox ls -l`);
        /// `--` before it is accepted too.
        #[arg(trailing_var_arg = true, value_name = "CMD")]
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
        /// User name (asked for on a terminal when missing).
        #[arg(short, long)]
        username: Option<String>,
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
    #[command(
        after_help = "Examples:\n  strata stop web\n  strata stop -t 0 web db   # SIGKILL at once, both\n\n\
A container that is not running (created, or exited) is left as it is: that is no error, as in \
docker. Each NAME is stopped in turn; the exit status is 1 when any failed."
    )]
    Stop {
        #[arg(required = true)]
        names: Vec<String>,
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
        /// Command and arguments: everything after NAME from the first word that is not one of
        /// exec's options (`exec web ls -l`); `--` before it is accepted too.
        #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
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
    /// Prints `Loaded image: NAME` for each image, as docker load.
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
    /// Running and paused containers (as docker ps); with -a every container and its state:
    /// created, running, paused, exited (CODE).
    #[command(
        after_help = "Examples:\n  strata ps\n  strata ps -a\n  strata ps --json\n  strata ps -a --format '{{.Names}} {{.Status}}'\n\n\
--format fields: .Names .Image .ImageID .Status .CreatedAt .RunningFor .Mounts, or {{json .}}."
    )]
    Ps {
        #[command(flatten)]
        list: ListArgs,
        /// Every container, not only running ones.
        #[arg(short, long)]
        all: bool,
    },
    /// Start created or stopped containers (their last command, over the same upper dir):
    /// detached, output appended to the container log (`strata logs`), as `run -d`; with -a in
    /// the foreground, exiting with the container's status.
    #[command(after_help = "Examples:\n  strata container create busybox web && strata start web\n  \
strata start -a web    # exits with the container's status\n  strata start web db")]
    Start {
        #[arg(required = true)]
        names: Vec<String>,
        /// Attach: the container's stdout and stderr are ours; exit with its status (one NAME).
        #[arg(short, long)]
        attach: bool,
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
    },
    /// Send a signal to running containers (runc kill), KILL by default, as `docker kill`.
    #[command(after_help = "Examples:\n  strata kill web\n  strata kill -s TERM web\n  \
strata kill --signal SIGHUP web db\n  strata kill -s 15 web\n\n\
As in docker, a container's PID 1 ignores signals it has no handler for (KILL excepted).")]
    Kill {
        #[arg(required = true)]
        names: Vec<String>,
        /// A name (TERM, SIGTERM, any case) or a number.
        #[arg(short, long, default_value = "KILL")]
        signal: String,
    },
    /// Stop (SIGTERM, SIGKILL after --time) and start again, detached, as `docker restart`.
    #[command(after_help = "Examples:\n  strata restart web\n  strata restart -t 0 web db")]
    Restart {
        #[arg(required = true)]
        names: Vec<String>,
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(short, long, default_value_t = 10)]
        time: u64,
    },
    /// Block until containers stop; print each one's exit code, as `docker wait`.
    #[command(
        after_help = "Examples:\n  strata wait web\n  strata run -d --name job busybox -- sh -c 'exit 3'; strata wait job   # 3"
    )]
    Wait {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Freeze every process of running containers (runc pause, the cgroup freezer).
    #[command(after_help = "Examples:\n  strata pause web\n  strata unpause web")]
    Pause {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Thaw paused containers (runc resume).
    #[command(after_help = "Example:\n  strata pause web && strata unpause web")]
    Unpause {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove containers (short for `container rm`).
    #[command(
        after_help = "Examples:\n  strata rm web\n  strata rm -f web db   # stops and unmounts them first"
    )]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        /// Stop (SIGKILL) and unmount running or mounted containers first.
        #[arg(short, long)]
        force: bool,
    },
    /// Remove image names (short for `image rm`).
    #[command(
        after_help = "Examples:\n  strata rmi app:v1\n  strata rmi -f app   # and the containers created from it, as podman rmi -f"
    )]
    Rmi {
        #[arg(required = true)]
        names: Vec<String>,
        /// First remove the containers created from the image (stopping running ones), as
        /// `podman rmi -f` does.
        #[arg(short, long)]
        force: bool,
    },
    /// List images (short for `image ls`).
    #[command(after_help = "Examples:\n  strata images\n  strata images -q")]
    Images {
        #[command(flatten)]
        list: ImageListArgs,
    },
    /// A container or an image as JSON: NAME is looked up as a container first, then as an
    /// image, as `docker inspect` does (`container inspect` / `image inspect` say which).
    #[command(
        after_help = "Examples:\n  strata inspect web       # container web, if there is one\n  strata inspect busybox"
    )]
    Inspect { name: String },
    /// System-wide maintenance.
    #[command(subcommand)]
    System(SystemCmd),
    /// strata's version, the runtime's (runc) and the kernel's.
    #[command(after_help = "Examples:\n  strata version\n  strata version --json")]
    Version {
        #[arg(long)]
        json: bool,
    },
    /// The state root, the runtime, the kernel's features (overlay, new mount API, FUSE
    /// passthrough), the backend `--backend auto` takes and why, counts and disk use.
    #[command(after_help = "Examples:\n  strata info\n  strata info --json")]
    Info {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SystemCmd {
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
    /// List containers: their image, state and mount point.
    #[command(after_help = "Examples:\n  strata container ls\n  strata container ls --json\n  \
strata container ls --format '{{.Names}}\\t{{.Mounts}}'\n\n\
--format fields: .Names .Image .ImageID .Status .CreatedAt .RunningFor .Mounts, or {{json .}}.")]
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
    /// Internal: watches a detached container (started by `run -d`, `start`, `restart`): it
    /// starts it, records its exit code when it ends, then unmounts it.
    #[command(
        hide = true,
        after_help = "Example (started by strata itself):\n  strata container monitor web"
    )]
    Monitor { name: String },
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
    /// List images, as docker images: REPOSITORY, TAG, IMAGE ID (the config digest), CREATED, SIZE.
    #[command(
        after_help = "Examples:\n  strata image ls\n  strata image ls -q\n  strata image ls --digests\n  \
strata image ls --json\n  strata image ls --format '{{.Repository}}:{{.Tag}} {{.ID}}'\n\n\
--format fields: .ID .Repository .Tag .Digest .CreatedSince .CreatedAt .Size, or {{json .}};\n\
a leading `table` prints a header."
    )]
    Ls {
        #[command(flatten)]
        list: ImageListArgs,
    },
    /// Remove the blobs and layer directories no image or container references (what `gc`
    /// does; nothing is asked: only unreachable data goes).
    #[command(after_help = "Example:\n  strata image prune")]
    Prune {
        /// Accepted for docker's scripts; nothing is asked either way.
        #[arg(short, long)]
        force: bool,
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

/// How `image ls` (and its short form `images`) prints.
#[derive(clap::Args)]
struct ImageListArgs {
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Only the image IDs, once each.
    #[arg(short, long)]
    quiet: bool,
    /// Also show the manifest digest.
    #[arg(long)]
    digests: bool,
    /// Full IDs and digests.
    #[arg(long)]
    no_trunc: bool,
    /// A Go-template-like line per image (the fields are listed in `image ls --help`).
    #[arg(long)]
    format: Option<String>,
}

/// How `ps` and `container ls` print.
#[derive(clap::Args)]
struct ListArgs {
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// A Go-template-like line per container (fields below).
    #[arg(long)]
    format: Option<String>,
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
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .init();
    // As docker and podman: a command that runs a container process exits with that process's
    // status, so strata's own failure there is 125, out of the way of the command's codes.
    let own_failure = match &cli.cmd {
        Cmd::Run { .. } | Cmd::Exec { .. } => 125,
        Cmd::Start { attach: true, .. } => 125,
        _ => 1,
    };
    match run(cli) {
        Ok(code) => code,
        // The reader went away (`strata image ls | head -1`): end quietly, as a Unix tool that
        // SIGPIPE ends (128 + 13), after every clean-up the error ran on its way up.
        Err(e) if stdout_closed(&e) => ExitCode::from(141),
        Err(e) => {
            // Messages may quote input (names from archives, parser errors): never raw bytes.
            eprintln!("strata: error: {}", strata::image::printable(&format!("{e:#}"), 4096));
            ExitCode::from(exit_code(&e).unwrap_or(own_failure))
        }
    }
}

/// Writing to stdout failed (see [`outln!`]).
#[derive(Debug, thiserror::Error)]
#[error("writing to standard output")]
struct StdoutError(#[source] std::io::Error);

/// `println!` that returns a [`StdoutError`] instead of panicking when stdout is a closed pipe.
/// Every line the CLI prints goes through it (a unit test checks there is no `println!`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(StdoutError)
    }};
}

/// Write `text` to stdout as it is (see [`outln!`]).
fn out(text: &str) -> Result<(), StdoutError> {
    use std::io::Write as _;
    std::io::stdout().lock().write_all(text.as_bytes()).map_err(StdoutError)
}

/// Whether `e` is a broken pipe and stdout is a pipe whose reader has gone (poll says POLLERR):
/// a write error on stdout, from the CLI's own lines or from a library writing a tar there.
fn stdout_closed(e: &anyhow::Error) -> bool {
    let broken = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    let mut pfd = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
    // SAFETY: one valid pollfd, no timeout.
    broken && unsafe { libc::poll(&mut pfd, 1, 0) } == 1 && pfd.revents & libc::POLLERR != 0
}

/// 127 for a command not found in the container, 126 for one that cannot be executed (as
/// podman and shells); `None` for strata's own failures.
fn exit_code(e: &anyhow::Error) -> Option<u8> {
    e.chain().find_map(|c| c.downcast_ref::<strata::bundle::BundleError>()).and_then(|b| b.exit_code())
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
        Cmd::Version { json } => return version_cmd(json),
        _ => {}
    }
    require_root(&cli.root)?;
    match cli.cmd {
        Cmd::Login { .. } | Cmd::Logout { .. } | Cmd::Version { .. } => Ok(ExitCode::SUCCESS),
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
        Cmd::Stop { names, time } => {
            let store = open_store(&cli.root)?;
            each_name(&names, "stopping", |name| {
                strata::run::stop(&store, name, std::time::Duration::from_secs(time))?;
                Ok(())
            })
        }
        Cmd::Start { names, attach, backend } => start_cmd(&cli.root, &names, attach, backend),
        Cmd::Kill { names, signal } => {
            let sig = strata::lifecycle::parse_signal(&signal)?;
            let store = open_store(&cli.root)?;
            each_name(&names, "killing", |name| Ok(strata::lifecycle::kill(&store, name, sig)?))
        }
        Cmd::Restart { names, time } => {
            let mut store = open_store(&cli.root)?;
            let opts = strata::lifecycle::StartOptions::default();
            let timeout = std::time::Duration::from_secs(time);
            each_name(&names, "restarting", |name| {
                Ok(strata::lifecycle::restart(&mut store, name, timeout, &opts)?)
            })
        }
        Cmd::Wait { names } => {
            let store = open_store(&cli.root)?;
            let mut failed = false;
            for name in &names {
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
        Cmd::Pause { names } => {
            let store = open_store(&cli.root)?;
            each_name(&names, "pausing", |name| Ok(strata::lifecycle::pause(&store, name)?))
        }
        Cmd::Unpause { names } => {
            let store = open_store(&cli.root)?;
            each_name(&names, "unpausing", |name| Ok(strata::lifecycle::unpause(&store, name)?))
        }
        Cmd::Rm { names, force } => rm_containers(&cli.root, &names, force),
        Cmd::Rmi { names, force } => {
            if !force {
                return image_cmd(&cli.root, ImageCmd::Rm { names });
            }
            let mut store = open_store(&cli.root)?;
            let mut failed = false;
            for name in &names {
                match strata::lifecycle::remove_image_and_containers(&mut store, name) {
                    Ok(stored) => outln!("Untagged: {stored}")?,
                    Err(e) => {
                        failed = true;
                        report_failure("removing image", name, &e.into());
                    }
                }
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Cmd::Images { list } => image_cmd(&cli.root, ImageCmd::Ls { list }),
        Cmd::Inspect { name } => {
            // As docker: a container by that name first, then an image.
            let store = open_store(&cli.root)?;
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
                    image_cmd(&cli.root, ImageCmd::Inspect { name })
                }
                Err(e) => Err(e).with_context(|| format!("inspecting container {name}")),
            }
        }
        Cmd::System(SystemCmd::Prune { force }) => system_prune_cmd(&cli.root, force),
        Cmd::Info { json } => info_cmd(&cli.root, json),
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
        Cmd::Ps { list, all } => {
            let store = open_store(&cli.root)?;
            let mut shown = container::list(&store)?;
            if !all {
                shown.retain(|c| c.running);
            }
            print_containers(&shown, &list)?;
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
            let (blobs, layers) = strata::lifecycle::gc(&mut store).context("gc")?;
            outln!("removed {} blobs, {} layers", blobs.len(), layers.len())?;
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
            outln!("{}", imported.manifest_digest)?;
        }
        ImageCmd::Ls { list: ImageListArgs { json, quiet, digests, no_trunc, format } } => {
            let store = open_store(root)?;
            let images = strata::images::list(&store)?;
            let short = |d: &strata::digest::Sha256Digest| {
                if no_trunc {
                    d.to_string()
                } else {
                    d.short().to_string()
                }
            };
            if json {
                outln!("{}", serde_json::to_string_pretty(&images)?)?;
            } else if quiet {
                let mut seen = std::collections::HashSet::new();
                for i in &images {
                    if seen.insert(&i.id) {
                        outln!("{}", short(&i.id))?;
                    }
                }
            } else {
                let now = strata::time::now();
                let rows: Vec<(table::Row, String)> = images
                    .iter()
                    .map(|i| {
                        let row = vec![
                            ("Repository", i.repository.clone()),
                            ("Tag", i.tag.clone()),
                            ("Digest", i.digest.to_string()),
                            ("ID", short(&i.id)),
                            ("CreatedSince", strata::time::ago(i.created_secs, now)),
                            ("CreatedAt", i.created.clone()),
                            ("Size", human(i.size)),
                        ];
                        Ok((row, serde_json::to_string(i)?))
                    })
                    .collect::<Result<_>>()?;
                let default = if digests {
                    "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
                } else {
                    "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
                };
                let known = ["ID", "Repository", "Tag", "Digest", "CreatedSince", "CreatedAt", "Size"];
                let t = table::Template::parse(format.as_deref().unwrap_or(default), &known)?
                    .title("ID", "IMAGE ID")
                    .title("CreatedSince", "CREATED");
                out(&t.render(&rows))?;
            }
        }
        ImageCmd::Prune { force: _ } => {
            let mut store = open_store(root)?;
            let (blobs, layers) = strata::lifecycle::gc(&mut store).context("image prune")?;
            outln!("removed {} blobs, {} layers", blobs.len(), layers.len())?;
        }
        ImageCmd::History { name, json } => {
            let store = open_store(root)?;
            let steps = strata::images::history(&store, &name)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&steps)?)?;
            } else {
                outln!("{:<14} {:<22} {:<50} {:>10}  COMMENT", "LAYER", "CREATED", "CREATED BY", "SIZE")?;
                for s in steps {
                    let by: String = s.created_by.as_deref().unwrap_or("").chars().take(50).collect();
                    outln!(
                        "{:<14} {:<22} {:<50} {:>10}  {}",
                        s.diff_id.as_ref().map_or("-", |d| d.short()),
                        s.created.as_deref().unwrap_or("-"),
                        strata::image::printable(&by, 50),
                        human(s.size),
                        strata::image::printable(s.comment.as_deref().unwrap_or(""), 80)
                    )?;
                }
            }
        }
        ImageCmd::Inspect { name } => {
            let store = open_store(root)?;
            let i = strata::images::inspect(&store, &name)?;
            outln!("{}", serde_json::to_string_pretty(&i)?)?;
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
            outln!("{}", done.manifest_digest)?;
        }
        ImageCmd::Tag { name, new_name } => {
            strata::reference::validate_image_name(&new_name)?;
            let mut store = open_store(root)?;
            // Shared with imports, exclusive of gc: the blobs and layers stay while named.
            let _gc = store.gc_shared()?;
            let img = store.image(&name)?.with_context(|| format!("image {name:?} not found"))?;
            let stored = strata::images::tag(&mut store, &img, &new_name)
                .with_context(|| format!("tagging {name} as {new_name}"))?;
            outln!("{stored}")?;
        }
        ImageCmd::Rm { names } => {
            // As docker: each name is removed or reported; the exit status says whether all went.
            let mut store = open_store(root)?;
            let mut failed = 0;
            for name in &names {
                match store.remove_image(name) {
                    Ok(stored) => outln!("Untagged: {stored}")?,
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
    outln!("{}", imported.manifest_digest)?;
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
    let bars = progress::Bars::on_terminal(!quiet);
    let opts = PushOptions { client: tls.client(), chunk_size, progress: bars.progress() };
    let pushed = registry::push(&store, name, &dest, &opts);
    drop(bars);
    let pushed = pushed.with_context(|| format!("pushing {name} to {dest}"))?;
    if !quiet {
        eprintln!(
            "{dest}: {} blobs uploaded, {} mounted, {} already present",
            pushed.uploaded, pushed.mounted, pushed.present
        );
    }
    outln!("{}", pushed.digest)?;
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
    username: Option<String>,
    password: Option<String>,
    password_stdin: bool,
    tls: TlsArgs,
) -> Result<ExitCode> {
    use strata::registry::{auth, Client, ClientOptions};
    let host = registry_host(host)?;
    // As docker login: what is missing is asked for on the terminal (the password without echo).
    let terminal = std::io::stdin().is_terminal();
    let username = match username {
        Some(u) => u,
        None if terminal && !password_stdin => {
            eprint!("Username: ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the user name")?;
            line.trim().to_string()
        }
        None => anyhow::bail!("give the user name with -u USER (stdin is not a terminal to ask on)"),
    };
    anyhow::ensure!(!username.is_empty(), "the user name is empty");
    let (password, from) = match (password, password_stdin) {
        (Some(_), true) => anyhow::bail!("give the password with --password or --password-stdin, not both"),
        (Some(p), false) => (p, "--password"),
        (None, true) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the password from stdin")?;
            (line.trim_end_matches(['\r', '\n']).to_string(), "--password-stdin")
        }
        (None, false) if terminal => {
            (rpassword::prompt_password("Password: ").context("reading the password")?, "the terminal")
        }
        (None, false) => {
            anyhow::bail!("give the password with --password-stdin (stdin is not a terminal to ask on)")
        }
    };
    let file = auth::login_file().context("no file to store credentials in (set REGISTRY_AUTH_FILE)")?;
    let creds = auth::Credentials { username, password, from: from.into() };
    let opts = ClientOptions { credentials: Some(creds.clone()), ..tls.client() };
    let client =
        Client::connect(&host, "", &opts, "pull").with_context(|| format!("logging in to {host}"))?;
    client.check_login().with_context(|| format!("logging in to {host}"))?;
    auth::store(&file, &host, Some(&creds)).with_context(|| format!("logging in to {host}"))?;
    outln!("Login Succeeded ({})", file.display())?;
    Ok(ExitCode::SUCCESS)
}

fn logout_cmd(host: &str) -> Result<ExitCode> {
    use strata::registry::auth;
    let host = registry_host(host)?;
    let file = auth::login_file().context("no credential file (set REGISTRY_AUTH_FILE)")?;
    if auth::store(&file, &host, None).with_context(|| format!("logging out of {host}"))? {
        outln!("Removed login credentials for {host} from {}", file.display())?;
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
    if input == "-" && std::io::stdin().is_terminal() {
        anyhow::bail!("refusing to read an archive from a terminal: pipe one in or use -i FILE");
    }
    let opts = ImportOptions { name, platform: None, jobs: jobs.get(), progress: None };
    let mut store = open_store(root)?;
    let imported = if input == "-" {
        import::import_stream(&mut store, std::io::stdin().lock(), &opts)
            .context("loading from standard input")?
    } else {
        import::load(&mut store, input, &opts).with_context(|| format!("loading {input}"))?
    };
    // As docker load.
    for i in &imported {
        outln!("Loaded image: {}", i.name)?;
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
        ContainerCmd::Diff { name, json } => {
            let store = open_store(root)?;
            let changes =
                container::diff(&store, &name).with_context(|| format!("diff of container {name}"))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&changes)?)?;
            } else {
                for c in changes {
                    outln!("{c}")?;
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
            outln!("{}", done.manifest_digest)?;
        }
        ContainerCmd::Inspect { name } => {
            let store = open_store(root)?;
            let i = container::inspect(&store, &name)?;
            outln!("{}", serde_json::to_string_pretty(&i)?)?;
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
                outln!("{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                outln!("mount -t {} {} -o {} TARGET", m.fs_type, m.source, m.options.join(","))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One failure of a command given several names, on stderr: the others still run.
fn report_failure(what: &str, name: &str, e: &anyhow::Error) {
    eprintln!(
        "strata: error: {what} {}: {}",
        strata::image::printable(name, 100),
        strata::image::printable(&format!("{e:#}"), 4096)
    );
}

/// Run `f` for each name, as docker does with several names: each one done is printed on
/// stdout, each failure on stderr; the exit status is 1 when any failed.
fn each_name(names: &[String], what: &str, mut f: impl FnMut(&str) -> Result<()>) -> Result<ExitCode> {
    let mut failed = false;
    for name in names {
        match f(name) {
            Ok(()) => outln!("{name}")?,
            Err(e) => {
                failed = true;
                report_failure(what, name, &e);
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn rm_containers(root: &std::path::Path, names: &[String], force: bool) -> Result<ExitCode> {
    let mut store = open_store(root)?;
    each_name(names, "removing container", |name| Ok(container::remove(&mut store, name, force)?))
}

fn start_cmd(root: &std::path::Path, names: &[String], attach: bool, backend: Backend) -> Result<ExitCode> {
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

fn system_prune_cmd(root: &std::path::Path, force: bool) -> Result<ExitCode> {
    if !force {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            anyhow::bail!(
                "system prune removes every container that is not running and unreferenced image data: \
                 refusing without confirmation, and standard input is not a terminal to ask on (use -f)"
            );
        }
        eprint!(
            "WARNING! This will remove:\n  - all containers that are not running\n  - blobs and layers \
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
        "removed {} containers, {} blobs, {} layers",
        pruned.containers.len(),
        pruned.blobs,
        pruned.layers
    );
    Ok(if pruned.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn version_cmd(json: bool) -> Result<ExitCode> {
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

fn info_cmd(root: &std::path::Path, json: bool) -> Result<ExitCode> {
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

/// Containers as `ps` and `container ls` print them: a table sized to its content, `--json`
/// (the schema of `container inspect`), or `--format`.
fn print_containers(list: &[container::Inspected], args: &ListArgs) -> Result<()> {
    if args.json {
        return Ok(outln!("{}", serde_json::to_string_pretty(list)?)?);
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
            ];
            Ok((row, serde_json::to_string(c)?))
        })
        .collect::<Result<_>>()?;
    let known = ["Names", "Image", "ImageID", "Status", "CreatedAt", "RunningFor", "Mounts"];
    let default = "table {{.Names}}\t{{.Image}}\t{{.RunningFor}}\t{{.Status}}\t{{.Mounts}}";
    let t = table::Template::parse(args.format.as_deref().unwrap_or(default), &known)?
        .title("Names", "NAME")
        .title("RunningFor", "CREATED")
        .title("Mounts", "MOUNTED");
    Ok(out(&t.render(&rows))?)
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
        monitor: None,
    };
    if opts.detach && opts.name.is_none() {
        opts.name = Some(strata::run::generated_name());
    }
    let code = strata::run::run(&mut store, &opts)?;
    if opts.detach {
        outln!("{}", opts.name.as_deref().unwrap_or_default())?;
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

    /// The CLI prints through `outln!`: `println!` panics when stdout is a closed pipe.
    #[test]
    fn no_println() {
        for file in ["src/main.rs", "src/cli/mod.rs", "src/cli/progress.rs", "src/cli/table.rs"] {
            let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
                .expect("read source");
            let found = text
                .lines()
                .filter(|l| l.contains(concat!("print", "ln!(")) && !l.contains("eprint"))
                .count();
            assert_eq!(found, 0, "{file}: use outln! instead");
        }
    }

    /// The library has no CLI crates: the binary parses and prints, the library does the work
    /// (strata-snapshotter links it without them).
    #[test]
    fn library_has_no_cli_dependencies() {
        let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
            .expect("Cargo.toml");
        let deps = manifest
            .split("\n[")
            .find(|s| s.starts_with("dependencies]"))
            .expect("the strata package's [dependencies]");
        for name in ["clap", "indicatif", "anyhow", "tracing-subscriber", "rpassword"] {
            assert!(
                !deps.lines().any(|l| l.starts_with(&format!("{name}."))),
                "the library depends on {name}"
            );
        }
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
