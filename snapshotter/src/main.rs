//! strata-snapshotter: a containerd snapshotter (proxy plugin) over a strata store.
//!
//! Serves `containerd.services.snapshots.v1.Snapshots` on a unix socket. A binary of its own so
//! that the async runtime (tokio, tonic) stays out of the `strata` CLI.

mod filter;
mod service;

pub mod api {
    pub mod containerd {
        pub mod types {
            tonic::include_proto!("containerd.types");
        }
        pub mod services {
            pub mod snapshots {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.snapshots.v1");
                }
            }
        }
    }
}

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use tokio_stream::wrappers::UnixListenerStream;

use api::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer;

#[derive(Parser)]
#[command(version, about = "containerd snapshotter (proxy plugin) over a strata store")]
struct Args {
    /// strata state root (the same store the CLI uses) [default: /var/lib/strata; rootless:
    /// $XDG_DATA_HOME/strata, else ~/.local/share/strata].
    #[arg(long, env = "STRATA_ROOT")]
    root: Option<PathBuf>,
    /// Unix socket to serve on (containerd's `proxy_plugins.NAME.address`) [default:
    /// /run/strata/snapshotter.sock; rootless: $XDG_RUNTIME_DIR/strata/snapshotter.sock].
    #[arg(long)]
    address: Option<PathBuf>,
    /// How containerd mounts overlays: kernel OverlayFS or strata-fuse.
    #[arg(long, value_enum, default_value_t = service::Backend::Kernel)]
    backend: service::Backend,
    /// A registry (`HOST[:PORT]`) whose remote layers may be fetched over plain HTTP or with
    /// unverified TLS, as dockerd's option of the same name; repeatable. Loopback registries
    /// always may be.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
}

/// Where root mode serves by default (`scripts/setup.sh`'s containerd snippet names it).
const ROOT_ADDRESS: &str = "/run/strata/snapshotter.sock";

fn main() -> anyhow::Result<()> {
    // The process that holds a rootless user's namespaces, when this daemon started it (see
    // below): nothing else.
    if std::env::args_os().nth(1).is_some_and(|a| a == strata::userns::PAUSE_ARG) {
        strata::userns::pause_main();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a journal or a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let Args { root, address, backend, insecure_registry } = Args::parse();
    // Rootless. Started inside rootless containerd's user and mount namespaces (`nsenter -U
    // --preserve-credentials -m -t PID`, as the fuse-overlayfs snapshotter is), this daemon is
    // uid 0 of a user namespace already. Started by the user as such, it joins rootless strata's
    // own namespace, as the CLI does (while single-threaded: before the async runtime starts),
    // whose mappings are those rootlesskit gives containerd (the user as 0, the /etc/subuid
    // range from 1), so containerd sees the owners this daemon's layers carry.
    if !rustix::process::geteuid().is_root() {
        strata::userns::enter().context("entering rootless strata's user namespace")?;
        tracing::info!("not root: joined rootless strata's user namespace (docs/rootless.md)");
    }
    let rootless = strata::userns::is_rootless();
    let root = match root {
        Some(r) => r,
        None if rootless => strata::userns::default_data_root().context("rootless store")?,
        None => PathBuf::from(strata::store::Store::DEFAULT_ROOT),
    };
    let address = match address {
        Some(a) => a,
        None if rootless => strata::userns::checked_runtime_dir()
            .context("rootless socket directory")?
            .join("snapshotter.sock"),
        None => PathBuf::from(ROOT_ADDRESS),
    };
    let store = strata::store::Store::open(&root)
        .with_context(|| format!("opening the strata store at {}", root.display()))?;
    if rootless && backend == service::Backend::Kernel {
        // containerd mounts what this daemon describes: say now, not at containerd's first
        // mount, when the kernel refuses overlay in this namespace.
        if let Some(why) = strata::container::kernel_overlay_refused(&store) {
            anyhow::bail!(
                "kernel overlay cannot be mounted in this user namespace ({why}): rootless \
                 strata-snapshotter needs Linux 5.11+ (overlay with userxattr), or --backend fuse"
            );
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(serve(Serve { root, address, backend, rootless, insecure_registry }, store))
}

/// What [`serve`] serves, defaults resolved.
struct Serve {
    root: PathBuf,
    address: PathBuf,
    backend: service::Backend,
    rootless: bool,
    insecure_registry: Vec<String>,
}

async fn serve(args: Serve, store: strata::store::Store) -> anyhow::Result<()> {
    // Signal handlers before the socket exists: whoever sees the socket may stop the daemon
    // at once, and must get a clean shutdown, not death by the default SIGTERM action.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("watching SIGTERM")?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("watching SIGINT")?;
    if let Some(dir) = args.address.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket left by a previous daemon (killed, crashed) is stale: nothing answers on it.
    match std::fs::remove_file(&args.address) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing stale socket {}", args.address.display()))
        }
        _ => {}
    }
    // Bound and listening under a temporary name, then renamed into place: a client that sees
    // the socket can connect (bind alone makes the file, and connect fails until listen).
    let mut tmp = args.address.clone().into_os_string();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener =
        tokio::net::UnixListener::bind(&tmp).with_context(|| format!("listening on {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.address)
        .with_context(|| format!("renaming {} to {}", tmp.display(), args.address.display()))?;
    tracing::info!(
        address = %args.address.display(),
        root = %args.root.display(),
        rootless = args.rootless,
        "serving containerd snapshots API"
    );
    let svc = SnapshotsServer::new(service::Service::new(store, args.backend, args.insecure_registry));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server =
        tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ));
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => {
            r.context("server task")?.context("serving")?;
            return Ok(());
        }
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    let _ = stop.send(());
    // Calls in flight finish; a client that keeps its connection open (containerd does) is not
    // waited for longer than this.
    match tokio::time::timeout(std::time::Duration::from_secs(5), &mut server).await {
        Ok(r) => r.context("server task")?.context("serving")?,
        Err(_) => tracing::info!("clients still connected after 5 s: exiting"),
    }
    let _ = std::fs::remove_file(&args.address);
    Ok(())
}
