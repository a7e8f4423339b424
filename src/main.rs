//! The `strata` command line. Library errors get their context here (anyhow), nowhere else.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use strata::image::Platform;
use strata::import::{self, ImportOptions};
use strata::store::Store;

#[derive(Parser)]
#[command(name = "strata", version, about = "Overlay-filesystem snapshotter and container runtime layer")]
struct Cli {
    /// State directory.
    #[arg(long, global = true, env = "STRATA_ROOT", default_value = Store::DEFAULT_ROOT)]
    root: PathBuf,
    /// More logging (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Images: import, list, inspect, remove.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Remove blobs and layer directories no image references.
    Gc,
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Import an OCI layout (DIR or DIR:TAG), an oci-archive or a docker-archive tar.
    Import {
        source: String,
        /// Name to store the image under (default: the source's tag).
        #[arg(long)]
        name: Option<String>,
        /// Platform to pick from a multi-platform index, OS/ARCH[/VARIANT].
        #[arg(long)]
        platform: Option<String>,
    },
    /// List images.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show an image's manifest, config and layers.
    Inspect { name: String },
    /// Remove an image name (its layers stay until `strata gc`).
    Rm { name: String },
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
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn open_store(root: &std::path::Path) -> Result<Store> {
    Store::open(root).with_context(|| format!("opening state root {}", root.display()))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Image(c) => image_cmd(&cli.root, c),
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
        ImageCmd::Import { source, name, platform } => {
            let platform = platform.map(|p| Platform::parse(&p)).transpose().map_err(anyhow::Error::msg)?;
            let mut store = open_store(root)?;
            let opts = ImportOptions { name, platform, progress: std::io::stderr().is_terminal() };
            let imported =
                import::import(&mut store, &source, &opts).with_context(|| format!("importing {source}"))?;
            println!("{}", imported.manifest_digest);
        }
        ImageCmd::Ls { json } => {
            let store = open_store(root)?;
            let images = store.db.images()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&images)?);
            } else {
                println!("{:<30} {:<20} {:>7} {:>12}", "NAME", "DIGEST", "LAYERS", "SIZE");
                for i in images {
                    let layers = store.db.image_layers(&i.name)?;
                    let size: u64 = layers.iter().map(|l| l.size).sum();
                    let short = i.manifest_digest.trim_start_matches("sha256:");
                    println!(
                        "{:<30} {:<20} {:>7} {:>12}",
                        i.name,
                        &short[..short.len().min(12)],
                        layers.len(),
                        human(size)
                    );
                }
            }
        }
        ImageCmd::Inspect { name } => {
            let store = open_store(root)?;
            let img = store.db.image(&name)?.with_context(|| format!("image {name:?} not found"))?;
            let md = strata::digest::Sha256Digest::parse(&img.manifest_digest)?;
            let cd = strata::digest::Sha256Digest::parse(&img.config_digest)?;
            let manifest: serde_json::Value = serde_json::from_slice(&store.read_blob(&md)?)?;
            let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&cd)?)?;
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
        ImageCmd::Rm { name } => {
            let mut store = open_store(root)?;
            store.remove_image(&name).with_context(|| format!("removing image {name}"))?;
            println!("{name}");
        }
    }
    Ok(ExitCode::SUCCESS)
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
