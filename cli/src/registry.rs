//! Registry commands: `pull`, `push`, `login`, `logout`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use strata::image::Platform;
use strata::import::{self, ImportOptions};

use crate::args::{JobsArg, TlsArgs};
use crate::{open_store, progress};

/// `pull`'s switches: `--quiet`, `--lazy`.
pub struct PullFlags {
    pub quiet: bool,
    pub lazy: bool,
}

pub fn pull_cmd(
    root: &std::path::Path,
    reference: &str,
    name: Option<String>,
    platform: Option<String>,
    tls: TlsArgs,
    jobs: JobsArg,
    flags: PullFlags,
) -> Result<ExitCode> {
    use strata::registry::{self, PullOptions};
    let PullFlags { quiet, lazy } = flags;
    let platform = platform.map(|p| Platform::parse(&p)).transpose().map_err(anyhow::Error::msg)?;
    if let Some(n) = &name {
        strata::reference::validate_image_name(n)?;
    }
    let r = strata::reference::normalize(reference).with_context(|| format!("pulling {reference}"))?;
    let opts = PullOptions { platform: platform.clone(), client: tls.client() };
    // The registry is asked before the state root is touched.
    let (resolved, lazy) = if lazy {
        let (resolved, hook) =
            registry::lazy::resolve_lazy(&r, &opts).with_context(|| format!("pulling {r}"))?;
        (resolved, Some(hook))
    } else {
        (registry::resolve(&r, &opts).with_context(|| format!("pulling {r}"))?, None)
    };
    let name = name.unwrap_or_else(|| r.to_string());
    strata::reference::validate_image_name(&name).with_context(|| format!("pulling {r}"))?;
    let bars = progress::Bars::on_terminal(!quiet);
    let iopts = ImportOptions {
        name: Some(name.clone()),
        platform,
        jobs: jobs.get(),
        progress: bars.progress(),
        lazy,
    };
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

/// Before a container is made over `image` (or it is pushed, exported or converted): its remote
/// layers (`pull --lazy`) are fetched whole and unpacked through the verified path. An image
/// that is not found is left to the caller.
pub fn complete_remote_layers(store: &mut strata::store::Store, image: &str) -> Result<()> {
    let Some(img) = store.image(image)? else { return Ok(()) };
    strata::registry::lazy::complete_layers(store, &img.layers)
        .with_context(|| format!("fetching the remote layers of {}", img.name))?;
    Ok(())
}

pub fn push_cmd(
    root: &std::path::Path,
    name: &str,
    reference: Option<&str>,
    tls: TlsArgs,
    quiet: bool,
    chunk_size: u64,
    seekable: Option<&str>,
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
    let mut store = open_store(root)?;
    // A build's layers may have no blob yet; a seekable conversion reads them too.
    crate::image::ensure_layer_blobs(&store, &[name])?;
    anyhow::ensure!(chunk_size > 0, "--chunk-size must be at least 1 byte");
    complete_remote_layers(&mut store, name)?;
    let converted;
    let name = if let Some(format) = seekable {
        use strata::commit::convert::{self, Target};
        let target = Target::parse(format)
            .with_context(|| format!("--compression {format}: expected estargz or zstd:chunked"))?;
        converted = convert::convert(&mut store, name, &dest.to_string(), &target)
            .with_context(|| format!("converting {name} to {format}"))?
            .name;
        converted.as_str()
    } else {
        name
    };
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

pub fn login_cmd(
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

pub fn logout_cmd(host: &str) -> Result<ExitCode> {
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
