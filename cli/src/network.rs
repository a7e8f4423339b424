//! `strata network ls|create|rm|inspect`: this root's networks, as docker shows them.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::json;

use strata::network::{self, Ipv4Net, Network};
use strata::store::Store;

use crate::output::{each_name, out};
use crate::table;

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// List networks (the default one, `bridge`, is created at first use).
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  strata network ls\n  strata network ls --json"
    )]
    Ls {
        /// One JSON object per network, as an array.
        #[arg(long)]
        json: bool,
    },
    /// Create a bridge network; its subnet is chosen among 10.89.N.0/24 unless given.
    #[command(after_help = "Examples:\n  strata network create backend\n  \
strata network create --subnet 10.77.0.0/24 lab")]
    Create {
        name: String,
        /// The subnet (CIDR). Refused when it overlaps a route of the host or another network.
        #[arg(long)]
        subnet: Option<String>,
    },
    /// Remove networks no container is attached to (their bridges too).
    #[command(visible_alias = "remove", after_help = "Example:\n  strata network rm backend lab")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show a network and the containers attached to it.
    #[command(
        after_help = "Examples:\n  strata network inspect bridge\n  strata network inspect backend --json"
    )]
    Inspect {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

/// Run a `network` command on the state root `root`.
pub fn command(root: &Path, c: NetworkCmd) -> Result<ExitCode> {
    let store = crate::open_store(root)?;
    network_cmd(&store, c)
}

fn network_cmd(store: &Store, c: NetworkCmd) -> Result<ExitCode> {
    match c {
        NetworkCmd::Ls { json } => {
            let nets = network::list(store).context("listing networks")?;
            if json {
                let v: Vec<_> = nets.iter().map(summary).collect();
                out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else {
                let rows: Vec<Vec<String>> = nets
                    .iter()
                    .map(|n| {
                        vec![
                            n.name.clone(),
                            "bridge".into(),
                            n.subnet.to_string(),
                            n.gateway.to_string(),
                            n.bridge.clone(),
                        ]
                    })
                    .collect();
                out(&table::table(&["NAME", "DRIVER", "SUBNET", "GATEWAY", "BRIDGE"], &rows))?;
            }
        }
        NetworkCmd::Create { name, subnet } => {
            let subnet = subnet
                .map(|s| s.parse::<Ipv4Net>().map_err(|e| anyhow::anyhow!("--subnet {s}: {e}")))
                .transpose()?;
            let n =
                network::create(store, &name, subnet).with_context(|| format!("creating network {name}"))?;
            out(&format!("{}\n", n.name))?;
        }
        NetworkCmd::Rm { names } => {
            return each_name(&names, "removing network", |name| Ok(network::remove(store, name).map(drop)?));
        }
        NetworkCmd::Inspect { name, json } => {
            let n = network::get(store, &name).with_context(|| format!("inspecting network {name}"))?;
            let attached: Vec<_> =
                network::attachments(store)?.into_iter().filter(|a| a.network == n.name).collect();
            if json {
                let mut v = summary(&n);
                let containers: serde_json::Map<String, serde_json::Value> = attached
                    .iter()
                    .map(|a| {
                        let r = a.cni_result();
                        let mac =
                            r.interfaces.iter().find(|i| i.sandbox.is_some()).and_then(|i| i.mac.clone());
                        let ip = r.ips.first().map(|i| i.address.clone());
                        let ports: Vec<String> = a.ports.iter().map(|p| p.to_string()).collect();
                        (
                            a.container.clone(),
                            json!({"IPv4Address": ip, "MacAddress": mac, "Ports": ports, "NetNS": a.netns}),
                        )
                    })
                    .collect();
                v["Containers"] = serde_json::Value::Object(containers);
                out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else {
                let mut s = format!(
                    "Name:      {}\nDriver:    bridge\nSubnet:    {}\nGateway:   {}\nBridge:    {}\nContainers:\n",
                    n.name, n.subnet, n.gateway, n.bridge
                );
                for a in &attached {
                    let ip = a.address().map(|i| i.to_string()).unwrap_or_else(|| "-".into());
                    s.push_str(&format!("  {}   {ip}\n", a.container));
                }
                out(&s)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(n: &Network) -> serde_json::Value {
    json!({"Name": n.name, "Driver": "bridge", "Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string(), "Bridge": n.bridge})
}
