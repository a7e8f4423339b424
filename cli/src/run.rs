//! `run` and `exec`: the commands whose exit status is their container process's.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::args::{Backend, NetArgs, ProcessArgs};
use crate::open_store;

/// `exec`: runc exec in a running container; its status is ours.
pub fn exec_cmd(root: &Path, name: String, p: ProcessArgs, cmd: Vec<String>) -> Result<ExitCode> {
    let store = open_store(root)?;
    let process = p.into_overrides(cmd, Vec::new());
    let code = strata::run::exec(&store, &name, &process).with_context(|| format!("exec in {name}"))?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// `run` options beyond the basics.
pub struct RunExtra {
    pub process: ProcessArgs,
    pub net: NetArgs,
    pub detach: bool,
    pub volumes: Vec<String>,
    pub stop_timeout: u64,
}

pub fn run_cmd(
    root: &std::path::Path,
    image: &str,
    name: Option<String>,
    rm: bool,
    backend: Backend,
    extra: RunExtra,
    cmd: Vec<String>,
) -> Result<ExitCode> {
    let network = extra.net.into_options()?;
    // Remote layers (`pull --lazy`) are not completed: strata-fuse reads them on demand.
    let mut store = open_store(root)?;
    let mut opts = strata::run::RunOptions {
        image: image.to_string(),
        name,
        rm,
        backend: backend.into(),
        process: extra.process.into_overrides(cmd, extra.volumes),
        detach: extra.detach,
        stop_timeout: Some(std::time::Duration::from_secs(extra.stop_timeout)),
        monitor: None,
        network,
        timeout: None,
        read_log: None,
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

/// `port`: the ports a container publishes, as `docker port` prints them.
pub fn port_cmd(root: &Path, name: &str, port: Option<&str>) -> Result<ExitCode> {
    let store = open_store(root)?;
    strata::container::get(&store, name).with_context(|| format!("ports of {name}"))?;
    let ports = match strata::network::attachment(&store, name)? {
        Some(a) => a.ports,
        // Rootless mode's slirp4netns network.
        None => match strata::network::slirp::record(&store, name)? {
            Some(r) => r.ports,
            None => return Ok(ExitCode::SUCCESS),
        },
    };
    let want = port.map(|p| if p.contains('/') { p.to_string() } else { format!("{p}/tcp") });
    let mut shown = false;
    for m in &ports {
        let key = format!("{}/{}", m.container_port, m.protocol);
        match &want {
            None => outln!("{m}")?,
            Some(w) if *w == key => {
                let ip = m.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
                outln!("{ip}:{}", m.host_port)?
            }
            Some(_) => continue,
        }
        shown = true;
    }
    if let (Some(w), false) = (&want, shown) {
        anyhow::bail!("no public port {w} published for {name}");
    }
    Ok(ExitCode::SUCCESS)
}
