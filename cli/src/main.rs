//! The `strata` command line: it parses (clap), calls the library and prints. Library errors get
//! their context here (anyhow), nowhere else.
//!
//! A module per command group: [`args`] (the top-level commands, the option groups they share),
//! [`image`] (`image ...`, `images`, `rmi`, `save`, `load`), [`registry`] (`pull`, `push`,
//! `login`, `logout`), [`container`] (`container ...` and the lifecycle verbs), [`run`] (`run`,
//! `exec`), [`system`] (`gc`, `system prune`, `info`, `version`), [`network`] (`network ...`).
//! [`output`] writes, [`exit`] turns a failure into the exit status, [`progress`] and [`table`]
//! draw what the library reports.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use strata::store::Store;

/// `println!` that returns a [`output::StdoutError`] instead of panicking when stdout is a closed
/// pipe. Every line the CLI prints goes through it (a unit test checks there is no `println!`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::output::StdoutError)
    }};
}

mod args;
mod build;
mod container;
mod exit;
mod image;
mod network;
mod output;
mod progress;
mod registry;
mod run;
mod system;
mod table;

use args::Cmd;

#[derive(Parser)]
#[command(name = "strata", version, about = "Overlay-filesystem snapshotter and container runtime layer")]
struct Cli {
    /// State directory [default: /var/lib/strata; rootless: $XDG_DATA_HOME/strata, else
    /// ~/.local/share/strata].
    #[arg(long, global = true, env = "STRATA_ROOT")]
    root: Option<PathBuf>,
    /// More logging (repeat for more); RUST_LOG overrides. Before the command (`strata -v run`):
    /// after it, `-v` is `run`'s volume, as in podman.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Background completion of lazily pulled layers (`pull --lazy`) by the strata-fuse that
    /// mounts them: `off`, `on` (at most 50% of the time, never while a read waits) or a share
    /// in percent [default: on].
    #[arg(long, global = true, env = strata::container::LAZY_BACKGROUND_ENV, value_name = "off|on|PERCENT",
        value_parser = lazy_background)]
    lazy_background: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// `--lazy-background`'s value, checked.
fn lazy_background(v: &str) -> Result<String, String> {
    strata::registry::remote_layer::Background::parse(v)
        .map(|b| b.to_string())
        .ok_or_else(|| format!("{v:?}: off, on or a share in percent (1-100)"))
}

fn main() -> ExitCode {
    // The process that holds a rootless user's namespaces (see strata::userns): nothing else.
    if std::env::args_os().nth(1).is_some_and(|a| a == strata::userns::PAUSE_ARG) {
        strata::userns::pause_main();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return exit::usage(&e),
    };
    if let Some(b) = &cli.lazy_background {
        // Read where mounts start strata-fuse (and by the strata processes this one starts).
        // Single-threaded still.
        std::env::set_var(strata::container::LAZY_BACKGROUND_ENV, b);
    }
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
    let role = exit::Role::of(&cli.cmd);
    // An ordinary user works in the user namespace of rootless mode. Joined here, before
    // anything can start a thread: the kernel lets only a single-threaded process join one.
    if needs_store(&cli.cmd) && !rustix::process::geteuid().is_root() {
        // `system migrate` stops the pause process: none running, there is nothing to start.
        if matches!(cli.cmd, Cmd::System(system::SystemCmd::Migrate { .. })) {
            match strata::userns::running_pause() {
                Ok(Some(_)) => {}
                Ok(None) => {
                    eprintln!("no pause process runs: nothing to stop");
                    return ExitCode::SUCCESS;
                }
                Err(e) => return exit::fail(&anyhow::Error::new(e).context("system migrate"), role),
            }
        }
        if let Err(e) = strata::userns::enter() {
            return exit::fail(
                &anyhow::Error::new(e).context("entering rootless mode's user namespace"),
                role,
            );
        }
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => exit::fail(&e, role),
    }
}

/// Whether `cmd` works on the state root (and, for an ordinary user, in the user namespace).
/// Credentials are the user's own, the version needs nothing.
fn needs_store(cmd: &Cmd) -> bool {
    !matches!(cmd, Cmd::Login { .. } | Cmd::Logout { .. } | Cmd::Version { .. })
}

/// Every command works on the state root, which needs root: layers hold whiteouts (0:0 device
/// nodes) and overlay xattrs, and containers are overlay mounts. Root of the initial namespace
/// (root mode), or root of strata's own user namespace (rootless mode: `main` joined it).
/// Checked once, before anything is read or created; `--help` and `--version` never get here.
fn require_root(root: &std::path::Path) -> Result<()> {
    let euid = rustix::process::geteuid();
    if !euid.is_root() {
        anyhow::bail!(
            "strata runs as root, or rootless in its user namespace, and this is uid {} outside \
             it: the state root {} holds whiteout device nodes and overlay xattrs, and containers \
             are overlay mounts",
            euid.as_raw(),
            root.display()
        );
    }
    Ok(())
}

/// `--root`, else the default: `/var/lib/strata` for root, `$XDG_DATA_HOME/strata` (else
/// `~/.local/share/strata`) in rootless mode.
fn state_root(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        // Absolute, as every path strata records and mounts must be (`--root r` from the
        // state's parent directory is common in scripts).
        Some(r) => std::path::absolute(&r).with_context(|| format!("state root {}", r.display())),
        None if strata::userns::is_rootless() => Ok(strata::userns::default_data_root()?),
        None => Ok(PathBuf::from(Store::DEFAULT_ROOT)),
    }
}

fn open_store(root: &std::path::Path) -> Result<Store> {
    match Store::open(root) {
        Ok(s) => Ok(s),
        // Names the root already.
        Err(e @ strata::store::StoreError::NotADirectory { .. }) => Err(e.into()),
        Err(e) => Err(e).with_context(|| format!("opening state root {}", root.display())),
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    // Credentials are the user's own: no state root, no root needed.
    match cli.cmd {
        Cmd::Login { host, username, password, password_stdin, tls } => {
            return registry::login_cmd(&host, username, password, password_stdin, tls)
        }
        Cmd::Logout { host } => return registry::logout_cmd(&host),
        Cmd::Version { json } => return system::version_cmd(json),
        _ => {}
    }
    if let Cmd::Unshare { cmd } = &cli.cmd {
        match strata::userns::unshare_command(cmd)? {}
    }
    let root = state_root(cli.root)?;
    require_root(&root)?;
    let root = root.as_path();
    match cli.cmd {
        Cmd::Login { .. } | Cmd::Logout { .. } | Cmd::Version { .. } | Cmd::Unshare { .. } => {
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Build(a) => build::command(root, a),
        Cmd::Image(c) => image::command(root, c),
        Cmd::Container(c) => container::command(root, c),
        Cmd::System(c) => system::command(root, c),
        Cmd::Network(c) => network::command(root, c),
        Cmd::Run { image, name, rm, backend, process, net, detach, volume, stop_timeout, cmd } => {
            let extra = run::RunExtra { process, net, detach, volumes: volume, stop_timeout };
            run::run_cmd(root, &image, name, rm, backend, extra, cmd)
        }
        Cmd::Exec { name, process, cmd } => run::exec_cmd(root, name, process, cmd),
        Cmd::Pull { reference, name, platform, tls, jobs, quiet, lazy } => registry::pull_cmd(
            root,
            &reference,
            name,
            platform,
            tls,
            jobs,
            registry::PullFlags { quiet, lazy },
        ),
        Cmd::Push { name, reference, tls, quiet, chunk_size, compression } => registry::push_cmd(
            root,
            &name,
            reference.as_deref(),
            tls,
            quiet,
            chunk_size,
            compression.as_deref(),
        ),
        Cmd::Images { list } => image::command(root, image::ImageCmd::Ls { list }),
        Cmd::Rmi { names, force } => image::rmi(root, names, force),
        Cmd::Tag(args) => image::command(root, image::ImageCmd::Tag(args)),
        Cmd::History(args) => image::command(root, image::ImageCmd::History(args)),
        Cmd::Commit(args) => container::command(root, container::ContainerCmd::Commit(args)),
        Cmd::Diff(args) => container::command(root, container::ContainerCmd::Diff(args)),
        Cmd::Save { names, output, format } => image::save_cmd(root, &names, &output, &format),
        Cmd::Load { input, name, jobs } => image::load_cmd(root, &input, name, jobs),
        Cmd::Ps { list, all } => container::ps_cmd(root, &list, all),
        Cmd::Inspect { name } => container::inspect_cmd(root, name),
        Cmd::Logs { name, follow } => container::logs_cmd(root, &name, follow),
        Cmd::Rm { names, force } => container::rm_containers(root, &names, force),
        Cmd::Start { names, attach, backend } => container::start_cmd(root, &names, attach, backend),
        Cmd::Stop { names, time } => container::stop_cmd(root, &names, time),
        Cmd::Kill { names, signal } => container::kill_cmd(root, &names, &signal),
        Cmd::Restart { names, time } => container::restart_cmd(root, &names, time),
        Cmd::Port { name, port } => run::port_cmd(root, &name, port.as_deref()),
        Cmd::Wait { names } => container::wait_cmd(root, &names),
        Cmd::Pause { names } => container::pause_cmd(root, &names),
        Cmd::Unpause { names } => container::unpause_cmd(root, &names),
        Cmd::Gc => system::gc_cmd(root),
        Cmd::Info { json } => system::info_cmd(root, json),
    }
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

    /// The CLI prints through `outln!`: `println!` panics when stdout is a closed pipe. Every
    /// source file of the CLI is read.
    #[test]
    fn no_println() {
        fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read src") {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    rust_files(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        rust_files(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        assert!(files.len() >= 10, "the CLI's sources: {files:?}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            let found = text
                .lines()
                .filter(|l| l.contains(concat!("print", "ln!(")) && !l.contains("eprint"))
                .count();
            assert_eq!(found, 0, "{}: use outln! instead", file.display());
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
