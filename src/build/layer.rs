//! The steps that make a layer (RUN, COPY, ADD): a working container over the stage's image
//! (created, mounted and removed as `strata run` does), the step's work in its tree, and
//! commit's layer production over its upper dir, published once with the build's own config.
//!
//! With `--layers=false` one working container serves a whole stage and is committed once at
//! its end (the stage's new layers squashed into one, as `buildah bud --layers=false`).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::context::Context;
use super::copy::{Attrs, Target};
use super::step::{config_mut, env_list, Builder, Stage};
use super::StepError;
use crate::commit::CommitError;
use crate::container;
use crate::images::ImagePublish;
use crate::store::ImageLayerRow;

type StepResult<T> = Result<T, StepError>;

/// Where a COPY's sources are.
pub(super) enum From {
    /// The build context (its ignore file honoured).
    Context,
    /// An image of the store (`--from=stage|image`), mounted read-only for the copy.
    Image(String),
    /// A file ADD downloaded, in a staging directory of the store (removed when dropped).
    Download(crate::store::Staging),
}

/// A layer step's work.
pub(super) enum Work {
    Run {
        args: Vec<String>,
        env: Vec<String>,
    },
    Copy {
        from: From,
        /// Paths relative to the source tree, globs resolved.
        sources: Vec<PathBuf>,
        dest: PathBuf,
        dir_dest: bool,
        chown: Option<String>,
        chmod: Option<u32>,
        /// ADD: a local tar source is extracted (through [`crate::unpack`]).
        extract: bool,
    },
}

/// A container a step (or, with `--layers=false`, a stage) works in.
pub(super) struct Working {
    pub cname: String,
    pub rootfs: PathBuf,
    upper: PathBuf,
    /// The layers of the image it stands on, bottom first.
    parent_layers: Vec<ImageLayerRow>,
}

/// A build container's name: `PREFIX-<pid>-<random>`, so a later build can tell those of a
/// build that was killed (its process gone) from those of one still running.
fn container_name(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), hex::encode(crate::fsutil::random_bytes::<4>()))
}

/// Removes the containers (and their runc containers, mounts and snapshots) of builds whose
/// process is gone: a build killed with SIGKILL leaves its working container behind; its
/// cached steps were each published whole, so nothing else of it stays.
pub(super) fn remove_stale(store: &mut crate::store::Store) -> Result<(), crate::store::StoreError> {
    for row in container::rows(store)? {
        let pid = row
            .name
            .strip_prefix("build-from-")
            .or_else(|| row.name.strip_prefix("build-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok());
        let Some(pid) = pid else { continue };
        let alive = pid == std::process::id() as i32
            || rustix::process::Pid::from_raw(pid)
                .is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
        if alive {
            continue;
        }
        tracing::info!(container = %row.name, "removing the container of a build that was killed");
        if let Err(e) = container::remove(store, &row.name, true) {
            tracing::warn!(container = %row.name, error = %crate::error::report(&e), "removing a killed build's container");
        }
    }
    Ok(())
}

impl Builder<'_> {
    /// A working container over `image`, mounted.
    pub(super) fn open_working(&mut self, image: &str) -> StepResult<Working> {
        let cname = container_name("build");
        // Volatile: what it writes is committed from its upper dir, never kept as it is.
        let opts = container::CreateOptions { read_only: false, volatile: true };
        let row = container::create(self.store, image, &cname, &opts)?;
        let opened = (|| -> StepResult<Working> {
            let rootfs = container::mount(self.store, &cname, None, container::Backend::Kernel)?;
            Ok(Working {
                rootfs,
                upper: container::paths(self.store, &row).upper,
                parent_layers: self.store.container_layers(&cname)?,
                cname: cname.clone(),
            })
        })();
        if opened.is_err() {
            self.drop_working(&cname);
        }
        opened
    }

    /// Removes a working container (unmounting it), logging what fails.
    pub(super) fn drop_working(&mut self, cname: &str) {
        if let Err(e) = container::remove(self.store, cname, true) {
            tracing::warn!(container = cname, error = %crate::error::report(&e), "removing a build container");
        }
    }

    /// Commits `w`'s upper dir as one layer over its image and publishes `cfg` (its history
    /// already written) over it as `name`; the container goes whatever the outcome.
    pub(super) fn commit_working(
        &mut self,
        st: &mut Stage,
        w: Working,
        name: &str,
        mut cfg: Value,
    ) -> StepResult<()> {
        let layer_opts = self.layer_options();
        let result = (|| -> StepResult<String> {
            container::release(self.store, &w.cname)?;
            let parent = crate::commit::oci_rows(w.parent_layers.clone());
            let cfg = &mut cfg;
            // The upper dir becomes the layer's directory as it is; its blob is written later.
            let done = crate::commit::adopt_layer(self.store, &w.upper, &layer_opts, |store, lease, row| {
                let mut rows = parent;
                rows.push(row.clone());
                let diff_ids: Vec<String> = rows.iter().map(|l| l.diff_id.to_string()).collect();
                cfg["rootfs"] = json!({ "type": "layers", "diff_ids": diff_ids });
                let bytes = serde_json::to_vec(&*cfg)
                    .map_err(|e| CommitError::BadImage { image: name.to_string(), reason: e.to_string() })?;
                Ok(ImagePublish::new(name, &bytes, rows).lease(lease).publish(store)?)
            })?;
            tracing::debug!(image = %done.published.name, layer = %done.row.diff_id, "step committed");
            Ok(done.published.name)
        })();
        self.drop_working(&w.cname);
        st.image = result?;
        st.config = cfg;
        Ok(())
    }

    fn layer_options(&self) -> crate::commit::LayerOptions {
        layer_options()
    }

    /// Does `work` in the working container's tree.
    pub(super) fn apply(&mut self, st: &Stage, w: &Working, work: &Work) -> StepResult<()> {
        match work {
            Work::Run { args, env } => self.run(st, w, args, env),
            Work::Copy { from, sources, dest, dir_dest, chown, chmod, extract } => {
                let owner = match chown {
                    Some(c) => Some(owner_of(&w.rootfs, c)?),
                    // COPY --from keeps the source's owners (buildah); the context's are root's.
                    None if matches!(from, From::Image(_)) => None,
                    None => Some((0, 0)),
                };
                let attrs = Attrs { owner, chmod: *chmod };
                match from {
                    From::Context => self.copy_from(self.ctx, w, sources, dest, *dir_dest, attrs, *extract),
                    From::Download(staging) => {
                        let ctx = Context::tree(&staging.dir)?;
                        self.copy_from(&ctx, w, sources, dest, *dir_dest, attrs, false)
                    }
                    From::Image(image) => {
                        let view = container_name("build-from");
                        let opts = container::CreateOptions { read_only: true, volatile: false };
                        container::create(self.store, image, &view, &opts)?;
                        let done = (|| -> StepResult<()> {
                            let root = container::mount(self.store, &view, None, container::Backend::Kernel)?;
                            let ctx = Context::tree(&root)?;
                            let mut found = Vec::new();
                            for s in sources {
                                found.extend(ctx.sources(&s.to_string_lossy())?);
                            }
                            self.copy_from(&ctx, w, &found, dest, *dir_dest || found.len() > 1, attrs, false)
                        })();
                        self.drop_working(&view);
                        done
                    }
                }
            }
        }
    }

    /// Copies `sources` of `ctx` to `dest` in the working tree, as docker's COPY: a
    /// directory's contents (not itself) into `dest`; a file to `dest`, or into it when it is a
    /// directory (or named with a trailing `/`, or there are several sources). With `extract`
    /// (ADD), a source that is a tar archive (plain or compressed) is unpacked into `dest`.
    #[allow(clippy::too_many_arguments)]
    fn copy_from(
        &self,
        ctx: &Context,
        w: &Working,
        sources: &[PathBuf],
        dest: &Path,
        dir_dest: bool,
        attrs: Attrs,
        extract: bool,
    ) -> StepResult<()> {
        let mut t = Target::open(&w.rootfs).map_err(StepError::Copy)?;
        let dir_dest = dir_dest || t.is_dir(dest);
        for rel in sources {
            let host = ctx.root().join(rel);
            let meta = std::fs::symlink_metadata(&host).map_err(StepError::Copy)?;
            if meta.is_dir() {
                // The destination, when made, is `--chown`'s (buildah), else root's.
                t.mkdir_all(dest, Some(attrs)).map_err(StepError::Copy)?;
                for child in ctx.walk(rel)?.into_iter().skip(1) {
                    if child.parent() != Some(rel.as_path()) {
                        continue;
                    }
                    let target = dest.join(child.file_name().unwrap_or_default());
                    t.copy(&ctx.root().join(&child), &target, attrs).map_err(StepError::Copy)?;
                }
            } else if extract && meta.is_file() && is_tar(&host) {
                self.extract(&mut t, &host, dest)?;
            } else {
                let target = if dir_dest {
                    dest.join(rel.file_name().unwrap_or_default())
                } else {
                    dest.to_path_buf()
                };
                t.copy(&host, &target, attrs).map_err(StepError::Copy)?;
            }
        }
        Ok(())
    }

    /// ADD of a local tar: unpacked by the layer unpacker (its path policy and confined
    /// creation) into a staging directory, then copied into `dest` with its owners and modes.
    fn extract(&self, t: &mut Target, archive: &Path, dest: &Path) -> StepResult<()> {
        let staging = self.store.staging()?;
        let dir = staging.dir.join("add");
        std::fs::create_dir(&dir).map_err(StepError::Copy)?;
        let f = std::fs::File::open(archive).map_err(StepError::Copy)?;
        let tar = crate::compression::Compression::sniffing_decoder(std::io::BufReader::new(f))
            .map_err(StepError::Copy)?;
        crate::unpack::unpack_layer(tar, &dir, &Default::default())
            .map_err(|e| StepError::Unpack(archive.display().to_string(), Box::new(e)))?;
        t.mkdir_all(dest, None).map_err(StepError::Copy)?;
        let links = hardlink_entries(archive).map_err(StepError::Copy)?;
        let keep = Attrs { owner: None, chmod: None };
        t.layer_semantics = true;
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(StepError::Copy)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(StepError::Copy)?;
        names.sort();
        let copied = names.iter().try_for_each(|n| t.copy(&dir.join(n), &dest.join(n), keep));
        t.layer_semantics = false;
        copied.map_err(StepError::Copy)?;
        // A hardlink entry's own owner, mode and mtime go to the inode it shares (buildah).
        for l in links {
            t.set_attrs(&dest.join(&l.path), l.owner, l.mode, l.mtime).map_err(StepError::Copy)?;
        }
        Ok(())
    }

    fn run(&self, st: &Stage, w: &Working, args: &[String], env: &[String]) -> StepResult<()> {
        let cname = w.cname.as_str();
        let mut cfg = st.config.clone();
        let c = config_mut(&mut cfg);
        c.insert("Entrypoint".into(), Value::Null);
        c.insert("Cmd".into(), Value::Null);
        // The working directory is made when missing, owned by the stage's USER (buildah).
        if let Some(wd) = st.config["config"]["WorkingDir"].as_str().filter(|d| !d.is_empty() && *d != "/") {
            let t = Target::open(&w.rootfs).map_err(StepError::Copy)?;
            if !t.is_dir(Path::new(wd)) {
                let user = st.config["config"]["User"].as_str().unwrap_or("");
                let owner = if user.is_empty() { (0, 0) } else { owner_of(&w.rootfs, user)? };
                t.mkdir_all(Path::new(wd), Some(Attrs { owner: Some(owner), chmod: None }))
                    .map_err(StepError::Copy)?;
            }
        }
        // ARGs are in RUN's environment, under the stage's ENV.
        let image_env = env_list(&st.config);
        let env: Vec<String> = env
            .iter()
            .filter(|e| {
                let k = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
                !image_env.iter().any(|i| i.split_once('=').map_or(i.as_str(), |(n, _)| n) == k)
            })
            .cloned()
            .collect();
        let overrides = crate::runtime::ProcessOverrides { args: args.to_vec(), env, ..Default::default() };
        let settings = crate::runtime::SpecSettings {
            hostname: cname.chars().take(63).collect(),
            volumes: vec![],
            cgroups_path: Some(container::cgroups_path(self.store, cname)),
        };
        let spec = crate::runtime::spec::build_spec(&cfg, &w.rootfs, &overrides, &settings)?;
        crate::runtime::spec::check_command(&spec)?;
        let bundle_dir = container::dir(self.store, cname).join("bundle");
        crate::runtime::spec::write_bundle(&bundle_dir, &spec)?;
        let state = container::runc_state_dir(self.store);
        let id = container::runc_id(self.store, cname);
        let mut trap = crate::signals::Trap::install().map_err(StepError::Signals)?;
        let fg = crate::foreground::Foreground {
            stdin: false,
            terminal: false,
            trap: &mut trap,
            stop_timeout: crate::signals::DEFAULT_STOP_TIMEOUT,
        };
        let code = crate::foreground::run(&state, &bundle_dir, &id, fg)?;
        if code != 0 {
            return Err(StepError::Status(code));
        }
        Ok(())
    }
}

/// How the build writes its layers' blobs (gzip; mtimes clamped to `SOURCE_DATE_EPOCH`).
pub(super) fn layer_options() -> crate::commit::LayerOptions {
    crate::commit::LayerOptions {
        source_date_epoch: crate::commit::source_date_epoch().ok().flatten(),
        ..Default::default()
    }
}

/// The uid and gid `USER`/`--chown` names, resolved in the tree; a uid alone (a number) gives
/// the gid the same number, as buildah does.
fn owner_of(rootfs: &Path, spec: &str) -> StepResult<(u32, u32)> {
    let (u, g, _) = crate::runtime::spec::resolve_user(rootfs, spec)?;
    Ok(if spec.chars().all(|ch| ch.is_ascii_digit()) { (u, u) } else { (u, g) })
}

/// A hardlink entry of a tar: its path and its own attributes.
struct LinkEntry {
    path: PathBuf,
    owner: (u32, u32),
    mode: u32,
    mtime: i64,
}

/// The hardlink entries of the tar `archive` (plain or compressed), in order; entries the
/// unpacker refuses were refused before this reads them.
fn hardlink_entries(archive: &Path) -> std::io::Result<Vec<LinkEntry>> {
    let f = std::fs::File::open(archive)?;
    let r = crate::compression::Compression::sniffing_decoder(std::io::BufReader::new(f))?;
    let mut out = Vec::new();
    for e in tar::Archive::new(r).entries()? {
        let e = e?;
        let h = e.header();
        if h.entry_type() != tar::EntryType::Link {
            continue;
        }
        let path: PathBuf =
            e.path()?.components().filter(|c| matches!(c, std::path::Component::Normal(_))).collect();
        out.push(LinkEntry {
            path,
            owner: (id(h.uid()?)?, id(h.gid()?)?),
            mode: h.mode()?,
            mtime: h.mtime()? as i64,
        });
    }
    Ok(out)
}

fn id(n: u64) -> std::io::Result<u32> {
    u32::try_from(n).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("uid/gid {n} out of range"))
    })
}

/// Whether `path` holds a tar archive, plain or compressed (by its content, as docker's ADD
/// decides).
fn is_tar(path: &Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else { return false };
    let Ok(mut r) = crate::compression::Compression::sniffing_decoder(std::io::BufReader::new(f)) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n == 512 && &head[257..262] == b"ustar"
}
