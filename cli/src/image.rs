//! Image commands: `image ...` and the short forms `images`, `rmi`, `save`, `load`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use strata::image::Platform;
use strata::import::{self, ImportOptions};

use crate::args::{HistoryArgs, ImageListArgs, JobsArg, ProcessArgs, TagArgs};
use crate::output::{human, out, report_failure, write_output};
use crate::{open_store, progress, table};

#[derive(Subcommand)]
pub enum ImageCmd {
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
    /// List images, as docker images: REPOSITORY, TAG, IMAGE ID (the config digest), CREATED, SIZE;
    /// and LOCAL (bytes of the layer blobs here, of their total) while a lazily pulled image is
    /// not whole.
    #[command(
        after_help = "Examples:\n  strata image ls\n  strata image ls -q\n  strata image ls --digests\n  \
strata image ls --json\n  strata image ls --format '{{.Repository}}:{{.Tag}} {{.ID}}'\n\n\
--format fields: .ID .Repository .Tag .Digest .CreatedSince .CreatedAt .Size .Local, or {{json .}};\n\
a leading `table` prints a header."
    )]
    Ls {
        #[command(flatten)]
        list: ImageListArgs,
    },
    /// Remove `strata build`'s cached steps (as `podman image prune` removes intermediate
    /// images), then the blobs and layer directories no image or container references (what
    /// `gc` does; nothing is asked).
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
    History(HistoryArgs),
    /// Give an image a second name (the same manifest: nothing is copied). An existing NEW_NAME
    /// is moved to this image, as `docker tag` does.
    #[command(after_help = "Example:\n  strata image tag 127.0.0.1:5000/app:1 localhost:5000/app:v1")]
    Tag(TagArgs),
    /// A copy of an image with its layers rewritten: `estargz` (gzip members per file and
    /// chunk, a TOC: what `pull --lazy` reads by ranges; still a valid gzip tar for any runtime)
    /// or `zstd:chunked` (the same with zstd frames, the TOC in a skippable frame: a valid zstd
    /// tar, its diff_ids unchanged).
    #[command(
        after_help = "Examples:\n  strata image convert app app:estargz --compression estargz\n  strata image convert app app:zc --compression zstd:chunked"
    )]
    Convert {
        name: String,
        new_name: String,
        #[arg(long, value_parser = ["estargz", "zstd:chunked"])]
        compression: String,
    },
    /// Run CMD over an image and write it as NEW_NAME with every layer in a seekable format (as
    /// `convert`) and the files CMD read from it first, then `.prefetch.landmark`: what `pull
    /// --lazy` fetches first, in one request (stargz-snapshotter's `ctr-remote image optimize`,
    /// on strata-fuse's read log). CMD runs as `run --rm` runs it, mounted by strata-fuse, with
    /// no network unless --network says otherwise, and is stopped once --period is up (a server
    /// never ends): what it read until then counts. A layer it read nothing from gets
    /// `.no.prefetch.landmark` (eStargz) or keeps its diff_id (zstd:chunked); a reordered layer
    /// gets a new diff_id. Nothing is written when CMD fails. Prints the manifest digest last.
    #[command(after_help = "Examples:
  strata image optimize app app:opt -- python3 -c 'import app'
  strata image optimize web web:zc --compression zstd:chunked --period 30 -- nginx -g 'daemon off;'")]
    Optimize {
        name: String,
        new_name: String,
        /// The layers' format (eStargz by default, as ctr-remote's).
        #[arg(long, default_value = "estargz", value_parser = ["estargz", "zstd:chunked"])]
        compression: String,
        /// Seconds CMD may run before it is stopped (SIGTERM, then SIGKILL 2 s later).
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        period: u64,
        /// The container's network: none (only lo; the default), bridge, host, or a network's
        /// name (`strata network create`).
        #[arg(long, value_name = "MODE", default_value = "none")]
        network: String,
        #[command(flatten)]
        process: ProcessArgs,
        /// Command and arguments, replacing the image's Cmd (the image's own when none), from the
        /// first word after NEW_NAME that is not an option, as `run` takes them; `--` before it is
        /// accepted too.
        #[arg(trailing_var_arg = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
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

pub fn command(root: &std::path::Path, c: ImageCmd) -> Result<ExitCode> {
    match c {
        ImageCmd::Import { source, name, platform, jobs } => {
            let platform = platform.map(|p| Platform::parse(&p)).transpose().map_err(anyhow::Error::msg)?;
            let bars = progress::Bars::on_terminal(true);
            let opts =
                ImportOptions { name, platform, jobs: jobs.get(), progress: bars.progress(), lazy: None };
            // The source is checked before the state root is touched.
            let (resolved, name) =
                import::prepare(&source, &opts).with_context(|| format!("importing {source}"))?;
            let mut store = open_store(root)?;
            let imported = import::import_prepared(&mut store, &resolved, &name, &opts);
            drop(bars);
            let imported = imported.with_context(|| format!("importing {source}"))?;
            outln!("{}", imported.manifest_digest)?;
        }
        ImageCmd::Ls { list: ImageListArgs { json, quiet, digests, no_trunc, format, all } } => {
            let store = open_store(root)?;
            // `strata build`'s cached steps are intermediate images: shown with -a only; an
            // unnamed build result is `<none>` in the default listing, as podman lists it.
            let images =
                if all { strata::images::list(&store)? } else { strata::images::list_default(&store)? };
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
                            ("Local", local_of(i)),
                        ];
                        Ok((row, serde_json::to_string(i)?))
                    })
                    .collect::<Result<_>>()?;
                let default = if digests {
                    "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
                } else {
                    "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
                };
                // A lazily pulled image not whole yet: how much of its layers' blobs is here.
                let partial = images.iter().any(|i| i.local.iter().any(|l| l.remote));
                let default =
                    if partial { format!("{default}\t{{{{.Local}}}}") } else { default.to_string() };
                let known =
                    ["ID", "Repository", "Tag", "Digest", "CreatedSince", "CreatedAt", "Size", "Local"];
                let t = table::Template::parse(format.as_deref().unwrap_or(&default), &known)?
                    .title("ID", "IMAGE ID")
                    .title("CreatedSince", "CREATED");
                out(&t.render(&rows))?;
            }
        }
        ImageCmd::Prune { force: _ } => {
            let mut store = open_store(root)?;
            let cache = strata::images::prune_build_cache(&mut store).context("image prune")?;
            let (blobs, layers) = strata::lifecycle::gc(&mut store).context("image prune")?;
            outln!(
                "removed {} cached build steps, {} blobs, {} layers",
                cache.len(),
                blobs.len(),
                layers.len()
            )?;
        }
        ImageCmd::History(HistoryArgs { name, json }) => {
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
            let mut store = open_store(root)?;
            let format: strata::export::ExportFormat = format.parse()?;
            crate::registry::complete_remote_layers(&mut store, &name)?;
            let opts = strata::export::ExportOptions { force };
            ensure_layer_blobs(&store, &[name.as_str()])?;
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
        ImageCmd::Convert { name, new_name, compression } => {
            use strata::commit::convert::{self, Target};
            let target = Target::parse(&compression)
                .with_context(|| format!("--compression {compression}: expected estargz or zstd:chunked"))?;
            let mut store = open_store(root)?;
            crate::registry::complete_remote_layers(&mut store, &name)?;
            let c = convert::convert(&mut store, &name, &new_name, &target)
                .with_context(|| format!("converting {name} to {compression}"))?;
            outln!("{}", c.manifest_digest)?;
        }
        ImageCmd::Optimize { name, new_name, compression, period, network, process, cmd } => {
            use strata::optimize::{optimize, OptimizeOptions};
            let target = strata::commit::convert::Target::parse(&compression)
                .with_context(|| format!("--compression {compression}: expected estargz or zstd:chunked"))?;
            let mut store = open_store(root)?;
            crate::registry::complete_remote_layers(&mut store, &name)?;
            let opts = OptimizeOptions {
                image: name.clone(),
                new_name,
                target,
                process: process.into_overrides(cmd, Vec::new()),
                network: strata::netsetup::NetOptions { network: Some(network), ..Default::default() },
                period: std::time::Duration::from_secs(period),
            };
            let o = optimize(&mut store, &opts).with_context(|| format!("optimizing {name}"))?;
            outln!("{}", o.converted.manifest_digest)?;
        }
        ImageCmd::Tag(TagArgs { name, new_name }) => {
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

/// `rmi`: `image rm`, or with `--force` the containers created from each image first.
pub fn rmi(root: &std::path::Path, names: Vec<String>, force: bool) -> Result<ExitCode> {
    if !force {
        return command(root, ImageCmd::Rm { names });
    }
    let mut store = open_store(root)?;
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

pub fn save_cmd(
    root: &std::path::Path,
    names: &[String],
    output: &std::path::Path,
    format: &str,
) -> Result<ExitCode> {
    let store = open_store(root)?;
    let format: strata::export::ExportFormat = format.parse()?;
    let images: Vec<&str> = names.iter().map(String::as_str).collect();
    ensure_layer_blobs(&store, &images)?;
    if output.as_os_str() == "-" {
        write_output(output, |mut w| strata::export::save_to(&store, &images, format, &mut w))
    } else {
        let opts = strata::export::ExportOptions { force: true };
        strata::export::save_with(&store, &images, output, format, &opts).map_err(anyhow::Error::from)
    }
    .with_context(|| format!("saving {}", names.join(", ")))?;
    Ok(ExitCode::SUCCESS)
}

pub fn load_cmd(
    root: &std::path::Path,
    input: &str,
    name: Option<String>,
    jobs: JobsArg,
) -> Result<ExitCode> {
    if input == "-" && std::io::stdin().is_terminal() {
        anyhow::bail!("refusing to read an archive from a terminal: pipe one in or use -i FILE");
    }
    let opts = ImportOptions { name, platform: None, jobs: jobs.get(), progress: None, lazy: None };
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

/// The tar blobs of the layers a build made without one (`strata build --compress=false`, or a
/// cached step), written from their directories before `names` are exported, saved or pushed.
pub fn ensure_layer_blobs(store: &strata::store::Store, names: &[&str]) -> Result<()> {
    for name in names {
        if let Some(img) = store.image(name)? {
            strata::commit::ensure_blobs(store, &img.layers)
                .with_context(|| format!("writing the layer blobs of {name}"))?;
        }
    }
    Ok(())
}

/// `image ls`'s LOCAL: the bytes of the image's layer blobs in the store of their total
/// (`1.2MB/3.4MB`; a lazy pull's remote layers have what was fetched so far).
fn local_of(i: &strata::images::Listed) -> String {
    let have: u64 = i.local.iter().map(|l| l.bytes_local).sum();
    let all: u64 = i.local.iter().map(|l| l.blob_size).sum();
    format!("{}/{}", human(have), human(all))
}
