//! What the CLI writes: lines to stdout that a closed pipe cannot panic ([`crate::outln!`]),
//! one failure among several names, sizes, tar output to a file or stdout.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};

/// Writing to stdout failed (see [`crate::outln!`]).
#[derive(Debug, thiserror::Error)]
#[error("writing to standard output")]
pub struct StdoutError(#[source] pub std::io::Error);

/// Write `text` to stdout as it is (see [`crate::outln!`]).
pub fn out(text: &str) -> Result<(), StdoutError> {
    use std::io::Write as _;
    std::io::stdout().lock().write_all(text.as_bytes()).map_err(StdoutError)
}

/// One failure of a command given several names, on stderr: the others still run.
pub fn report_failure(what: &str, name: &str, e: &anyhow::Error) {
    eprintln!(
        "strata: error: {what} {}: {}",
        strata::image::printable(name, 100),
        strata::image::printable(&format!("{e:#}"), 4096)
    );
}

/// Run `f` for each name, as docker does with several names: each one done is printed on
/// stdout, each failure on stderr; the exit status is 1 when any failed.
pub fn each_name(names: &[String], what: &str, mut f: impl FnMut(&str) -> Result<()>) -> Result<ExitCode> {
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

pub fn human(n: u64) -> String {
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

/// Write to `path` (`-`: stdout, refused when it is a terminal) through `f`: a file is written
/// under a temporary name next to it and renamed when complete, and removed on failure.
pub fn write_output<E>(
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
