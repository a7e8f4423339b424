//! The top-level commands (clap derive) and the option groups several commands share. The
//! subcommands of a group live with their code: [`crate::image::ImageCmd`],
//! [`crate::container::ContainerCmd`], [`crate::system::SystemCmd`].

use std::path::PathBuf;

use clap::Subcommand;
use strata::container;

use crate::container::ContainerCmd;
use crate::image::ImageCmd;
use crate::system::SystemCmd;

#[derive(Subcommand)]
pub enum Cmd {
    /// Build an image from a Containerfile: each step a snapshot, unchanged steps cached.
    Build(crate::build::BuildArgs),
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
strata run -it --rm busybox -- sh       # an interactive shell\n  \
strata run -d --name web -p 127.0.0.1:8080:80 busybox -- httpd -f -p 80   # strata port web\n  \
strata run --rm --network none busybox -- ip addr    # only lo\n  \
strata run --rm --network backend --add-host db:10.89.1.7 --dns 192.0.2.53 busybox -- cat /etc/hosts")]
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
        #[command(flatten)]
        net: NetArgs,
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
        /// Fetch only the TOC of each seekable layer (eStargz, zstd:chunked), verified, and
        /// record the layer as remote; other layers are pulled whole. Containers over it read
        /// its files on demand (strata-fuse) while the rest arrives in the background (see
        /// --lazy-background). STRATA_LAZY_PULL=true makes it the default; --lazy=false then
        /// pulls whole.
        #[arg(long, env = "STRATA_LAZY_PULL", value_name = "BOOL", num_args = 0..=1, require_equals = true,
            default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set,
            value_parser = clap::builder::BoolishValueParser::new(), hide_env_values = true)]
        lazy: bool,
    },
    /// Push a stored image to a registry: blobs the registry lacks are uploaded (or mounted
    /// from the repository the image's name points into), then the manifest, byte for byte, so
    /// the digest stays the same. Prints the manifest digest.
    #[command(
        after_help = "Examples:\n  strata push app localhost:5000/app:v1\n  strata push localhost:5000/app:v1   # to the registry its name names\n  strata push app localhost:5000/app:lazy --compression estargz\n  strata push app localhost:5000/app:zc --compression zstd:chunked"
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
        /// Rewrite the layers first: `estargz` or `zstd:chunked` stores NAME's layers in that
        /// seekable format under the destination's name (as `image convert` does) and pushes
        /// that image.
        #[arg(long, value_parser = ["estargz", "zstd:chunked"])]
        compression: Option<String>,
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
    /// Networks: bridges with a subnet each, for containers to join.
    #[command(subcommand)]
    Network(crate::network::NetworkCmd),
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
        after_help = "Examples:\n  strata ps\n  strata ps -a\n  strata ps -aq          # names only\n  strata ps --json\n  strata ps -a --format '{{.Names}} {{.Status}}'\n\n\
--format fields: .Names .Image .ImageID .Status .CreatedAt .RunningFor .Ports .Mounts, or {{json .}}."
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
    /// The ports a container publishes, as `docker port`: `80/tcp -> 0.0.0.0:8080`.
    #[command(after_help = "Examples:\n  strata port web\n  strata port web 80/tcp")]
    Port {
        name: String,
        /// Only this container port (PORT or PORT/PROTO).
        port: Option<String>,
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
    /// Give an image a second name (short for `image tag`, as `docker tag`).
    #[command(after_help = "Example:\n  strata tag busybox localhost:5000/busybox:1")]
    Tag(TagArgs),
    /// The image's history, newest first, with the size each step added (short for `image
    /// history`, as `docker history`).
    #[command(after_help = "Examples:\n  strata history busybox\n  strata history busybox --json")]
    History(HistoryArgs),
    /// Commit a container's changes as a new image: the parent's layers plus one new layer
    /// (short for `container commit`, as `docker commit`).
    #[command(
        after_help = "Examples:\n  strata commit web web:v2\n  strata commit -m 'add config' -c 'ENV MODE=prod' web web:v3"
    )]
    Commit(CommitArgs),
    /// A container's changes, A added, C changed, D deleted (short for `container diff`, as
    /// `docker diff`).
    #[command(after_help = "Examples:\n  strata diff web\n  strata diff web --json")]
    Diff(DiffArgs),
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
    /// Rootless mode: run CMD (default $SHELL) in strata's user and mount namespace, as root
    /// of the namespace, as `podman unshare` does: to look into the store, or at a mounted
    /// container.
    #[command(after_help = "Examples:\n  strata unshare                 # a shell\n  \
strata unshare cat /proc/self/uid_map\n  \
strata unshare ls -ln ~/.local/share/strata/layers/sha256")]
    Unshare {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
        cmd: Vec<std::ffi::OsString>,
    },
    /// The state root, the runtime, the kernel's features (overlay, new mount API, FUSE
    /// passthrough), the backend `--backend auto` takes and why, counts and disk use.
    #[command(after_help = "Examples:\n  strata info\n  strata info --json")]
    Info {
        #[arg(long)]
        json: bool,
    },
}

/// The process `run` starts and `exec` adds, as podman takes them.
#[derive(clap::Args)]
pub struct ProcessArgs {
    /// Set an environment variable, K=V, or K to pass this process's value; repeatable.
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory in the container (absolute; replaces the image's WorkingDir).
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// USER[:GROUP] (names or ids, names resolved in the container); replaces the image's User.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Keep stdin open: the process reads this one's stdin (otherwise /dev/null).
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal for the process.
    #[arg(short, long)]
    pub tty: bool,
}

impl ProcessArgs {
    /// The one conversion from the command line to the library's process overrides: `cmd`
    /// the command, `volumes` run's `-v` values (none for exec).
    pub fn into_overrides(self, cmd: Vec<String>, volumes: Vec<String>) -> strata::run::ProcessOverrides {
        strata::run::ProcessOverrides {
            args: cmd,
            env: self.env,
            workdir: self.workdir,
            user: self.user,
            terminal: self.tty,
            interactive: self.interactive,
            volumes,
        }
    }
}

/// A container's network, as docker takes it, on `run` and `container create`. `--hostname` has
/// no `-h`: that is help here.
#[derive(clap::Args, Default)]
pub struct NetArgs {
    /// bridge (the default), none (only lo), host, container:NAME, or a network's name
    /// (`strata network create`).
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// Publish [IP:][HOST:]CONTAINER[/tcp|udp] (ports or ranges A-B; no HOST: a free one);
    /// repeatable.
    #[arg(short, long, value_name = "SPEC")]
    pub publish: Vec<String>,
    /// Publish every port the image EXPOSEs, each on a free host port.
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// The container's hostname (default: its name, at most 63 characters).
    #[arg(long)]
    pub hostname: Option<String>,
    /// A nameserver for /etc/resolv.conf (replaces the host's); repeatable.
    #[arg(long, value_name = "IP")]
    pub dns: Vec<std::net::IpAddr>,
    /// A search domain for /etc/resolv.conf (`.`: none); repeatable.
    #[arg(long, value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// An option line entry for /etc/resolv.conf (ndots:2); repeatable.
    #[arg(long, value_name = "OPT")]
    pub dns_option: Vec<String>,
    /// NAME:IP, a line of /etc/hosts; repeatable.
    #[arg(long, value_name = "NAME:IP")]
    pub add_host: Vec<String>,
}

impl NetArgs {
    /// The library's network options, `-p` and `--add-host` parsed.
    pub fn into_options(self) -> anyhow::Result<strata::netsetup::NetOptions> {
        use strata::network::{files, ports};
        let mut mapped = Vec::new();
        for p in &self.publish {
            mapped.extend(ports::parse_publish(p)?);
        }
        let add_hosts =
            self.add_host.iter().map(|h| files::parse_add_host(h)).collect::<Result<Vec<_>, _>>()?;
        if let Some(h) = &self.hostname {
            let ok = !h.is_empty()
                && h.len() <= 63
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            anyhow::ensure!(ok, "--hostname {h:?}: 1-63 letters, digits, '-', '.', '_'");
        }
        let opts = strata::netsetup::NetOptions {
            network: self.network,
            ports: mapped,
            publish_all: self.publish_all,
            hostname: self.hostname,
            dns: self.dns,
            dns_search: self.dns_search,
            dns_options: self.dns_option,
            add_hosts,
        };
        opts.check()?;
        Ok(opts)
    }
}

/// How `image ls` (and its short form `images`) prints.
#[derive(clap::Args)]
pub struct ImageListArgs {
    /// Also `strata build`'s cached steps (intermediate images, as `podman images -a`).
    #[arg(short, long)]
    pub all: bool,
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Only the image IDs, once each.
    #[arg(short, long)]
    pub quiet: bool,
    /// Also show the manifest digest.
    #[arg(long)]
    pub digests: bool,
    /// Full IDs and digests.
    #[arg(long)]
    pub no_trunc: bool,
    /// A Go-template-like line per image (the fields are listed in `image ls --help`).
    #[arg(long)]
    pub format: Option<String>,
}

/// How `ps` and `container ls` print.
#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Only the names, one per line (docker's `ps -q`: what every other verb takes, as in
    /// `strata rm -f $(strata ps -aq)`).
    #[arg(short, long, conflicts_with_all = ["json", "format"])]
    pub quiet: bool,
    /// A Go-template-like line per container (fields below).
    #[arg(long)]
    pub format: Option<String>,
}

/// How registry commands (pull, push, login) reach the registry.
#[derive(clap::Args)]
pub struct TlsArgs {
    /// Verify TLS certificates; `--tls-verify=false` also allows plain HTTP.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: bool,
    /// Also trust the *.crt files of this directory (as podman's --cert-dir).
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
}

/// `--jobs N`: how many layers an import fetches, verifies and unpacks at once.
#[derive(clap::Args, Clone, Copy)]
pub struct JobsArg {
    /// Layers fetched, verified and unpacked at once (default: one per layer and CPU, at most
    /// 4); 1 does one after the other.
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
}

impl JobsArg {
    /// As [`strata::import::ImportOptions::jobs`] takes it: 0 for the library's default.
    pub fn get(self) -> usize {
        self.jobs.map_or(0, usize::from)
    }
}

impl TlsArgs {
    pub fn client(self) -> strata::registry::ClientOptions {
        strata::registry::ClientOptions {
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir,
            ..Default::default()
        }
    }
}

/// `--backend`: which filesystem stacks the layers (the library's `container::Backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
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

/// `image history` and its short form `history`.
#[derive(clap::Args)]
pub struct HistoryArgs {
    pub name: String,
    #[arg(long)]
    pub json: bool,
}

/// `image tag` and its short form `tag`.
#[derive(clap::Args)]
pub struct TagArgs {
    pub name: String,
    pub new_name: String,
}

/// `container diff` and its short form `diff`.
#[derive(clap::Args)]
pub struct DiffArgs {
    pub name: String,
    #[arg(long)]
    pub json: bool,
}

/// `container commit` and its short form `commit`.
#[derive(clap::Args)]
pub struct CommitArgs {
    pub name: String,
    pub new_image: String,
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd", "none"])]
    pub compression: String,
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    #[arg(long, short = 'a')]
    pub author: Option<String>,
    /// Dockerfile instruction applied to the config (CMD, ENTRYPOINT, ENV, WORKDIR, USER,
    /// LABEL, EXPOSE, VOLUME, STOPSIGNAL); repeatable.
    #[arg(long, short = 'c')]
    pub change: Vec<String>,
    /// Pause a running container while its changes are read (as `docker commit`);
    /// `--pause=false` commits it live. Rootless: live by default (no cgroup freezer, as
    /// podman), and `--pause` is refused.
    #[arg(long, short = 'p', action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub pause: Option<bool>,
}
