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
    /// strata state root (the same store the CLI uses).
    #[arg(long, env = "STRATA_ROOT", default_value = "/var/lib/strata")]
    root: PathBuf,
    /// Unix socket to serve on (containerd's `proxy_plugins.NAME.address`).
    #[arg(long, default_value = "/run/strata/snapshotter.sock")]
    address: PathBuf,
    /// How containerd mounts overlays: kernel OverlayFS or strata-fuse.
    #[arg(long, value_enum, default_value_t = service::Backend::Kernel)]
    backend: service::Backend,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a journal or a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let store = strata::store::Store::open(&args.root)
        .with_context(|| format!("opening the strata store at {}", args.root.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(serve(args, store))
}

async fn serve(args: Args, store: strata::store::Store) -> anyhow::Result<()> {
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
    tracing::info!(address = %args.address.display(), root = %args.root.display(), "serving containerd snapshots API");
    let svc = SnapshotsServer::new(service::Service::new(store, args.backend));
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
