//! The CNI protocol (containernetworking/cni SPEC.md, version 1.0.0), small enough to own: a
//! plugin is an executable found by its `type` in the plugin path, run with the network
//! configuration as JSON on stdin and the `CNI_*` variables in its environment; it answers ADD
//! with a result on stdout, and any failure with an error object (`code`, `msg`, `details`) and a
//! non-zero exit.
//!
//! A configuration list runs plugin by plugin: ADD in order, each plugin given the previous one's
//! result as `prevResult`; DEL in reverse order, each given the list's final ADD result; CHECK in
//! order with that result too. A plugin that declares `capabilities` gets the matching keys of
//! the runtime's `runtimeConfig` (`portMappings` for portmap).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ErrorKind;

/// Where Debian's `containernetworking-plugins` and upstream's tarball put the plugins.
pub const DEFAULT_PLUGIN_PATH: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];

/// The CNI version strata writes its configurations in.
pub const CNI_VERSION: &str = "1.0.0";

/// A plugin's answer to ADD (the spec's "Success" result), as far as strata reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

/// An interface a plugin created; `sandbox` is the netns path for those inside the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address (CIDR notation), its gateway, and the index in `interfaces` it is on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl CniResult {
    /// The first IPv4 address of an interface inside the container (without its prefix length).
    pub fn container_ipv4(&self) -> Option<std::net::Ipv4Addr> {
        let inside = |i: &IpConfig| {
            i.interface.and_then(|n| self.interfaces.get(n)).is_none_or(|itf| itf.sandbox.is_some())
        };
        self.ips.iter().filter(|i| inside(i)).find_map(|i| i.address.split('/').next()?.parse().ok())
    }
}

/// The error object a plugin prints when it fails.
#[derive(Debug, Clone, Deserialize)]
struct ErrorBody {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// What running a plugin can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error(
        "CNI plugin {plugin:?} not found in {dirs} (install Debian's containernetworking-plugins \
         package: apt-get install containernetworking-plugins)"
    )]
    PluginNotFound { plugin: String, dirs: String },
    /// The plugin's own error object (the spec's codes: 1 incompatible version, 4 invalid
    /// environment, 7 invalid configuration, 11 try again later, 100+ the plugin's own).
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}{}", details_suffix(details))]
    Plugin { plugin: String, command: &'static str, code: u32, msg: String, details: String },
    #[error(
        "CNI plugin {plugin} {command} exited with {status} and no error result{}",
        details_suffix(stderr)
    )]
    Crashed { plugin: String, command: &'static str, status: std::process::ExitStatus, stderr: String },
    #[error("running CNI plugin {}", path.display())]
    Exec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} {command} printed a result strata cannot read")]
    BadResult {
        plugin: String,
        command: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("CNI configuration list {name:?}: {reason}")]
    BadConfig { name: String, reason: String },
}

fn details_suffix(d: &str) -> String {
    let d = d.trim();
    if d.is_empty() {
        String::new()
    } else {
        format!(" ({d})")
    }
}

impl CniError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            CniError::PluginNotFound { .. } => ErrorKind::NotFound,
            CniError::Plugin { code: 4 | 7, .. } | CniError::BadConfig { .. } => ErrorKind::InvalidArgument,
            CniError::Plugin { code: 11, .. } => ErrorKind::FailedPrecondition,
            CniError::Exec { source, .. } => ErrorKind::of_io(source),
            _ => ErrorKind::Internal,
        }
    }
}

/// A network configuration list: a name, a version, plugins in order (each a JSON object with
/// its `type`; kept as JSON so any plugin's options pass through).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfList {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    pub plugins: Vec<Value>,
}

/// Who and where: the `CNI_*` environment of one call, and the runtime's `runtimeConfig`.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub container_id: &'a str,
    /// The netns path; `None` when it is gone (DEL then only releases what the host holds).
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    /// `CNI_ARGS` (`K=V;K=V`).
    pub args: &'a str,
    /// Capability arguments by name (`portMappings`), passed to plugins that declare them.
    pub runtime_config: &'a Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Del,
    Check,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Add => "ADD",
            Op::Del => "DEL",
            Op::Check => "CHECK",
        }
    }
}

/// The plugin driver: where to find plugins.
#[derive(Debug, Clone)]
pub struct Cni {
    paths: Vec<PathBuf>,
}

impl Default for Cni {
    fn default() -> Self {
        Cni::new(DEFAULT_PLUGIN_PATH.iter().map(PathBuf::from).collect())
    }
}

impl Cni {
    pub fn new(paths: Vec<PathBuf>) -> Cni {
        Cni { paths }
    }

    /// The plugin path from `STRATA_CNI_PATH` (colon-separated) if set, else the default.
    pub fn from_env() -> Cni {
        match std::env::var_os("STRATA_CNI_PATH") {
            Some(p) if !p.is_empty() => Cni::new(std::env::split_paths(&p).collect()),
            _ => Cni::default(),
        }
    }

    /// The executable of plugin `kind` (its `type`).
    pub fn find(&self, kind: &str) -> Result<PathBuf, CniError> {
        let valid = !kind.is_empty() && !kind.contains('/') && kind != "." && kind != "..";
        if valid {
            for dir in &self.paths {
                let p = dir.join(kind);
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
        let dirs = self.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
        Err(CniError::PluginNotFound { plugin: kind.to_string(), dirs })
    }

    /// ADD the container to every network of `list`, in order; the final result, raw (to record
    /// and hand back to DEL and CHECK) and parsed.
    pub fn add(&self, list: &ConfList, inv: &Invocation<'_>) -> Result<(Value, CniResult), CniError> {
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let out = self.exec(list, plugin, Op::Add, inv, prev.as_ref())?;
            prev = Some(out.ok_or_else(|| CniError::BadConfig {
                name: list.name.clone(),
                reason: format!("plugin {} printed no result to ADD", plugin_type(plugin)),
            })?);
        }
        let raw = prev.unwrap_or_else(|| serde_json::json!({ "cniVersion": list.cni_version }));
        let parsed = serde_json::from_value(raw.clone()).map_err(|source| CniError::BadResult {
            plugin: list.plugins.last().map(plugin_type).unwrap_or_default(),
            command: Op::Add.name(),
            source,
        })?;
        Ok((raw, parsed))
    }

    /// CHECK every plugin of `list` against the recorded ADD result.
    pub fn check(&self, list: &ConfList, inv: &Invocation<'_>, result: &Value) -> Result<(), CniError> {
        for plugin in &list.plugins {
            self.exec(list, plugin, Op::Check, inv, Some(result))?;
        }
        Ok(())
    }

    /// DEL from every plugin of `list`, in reverse order. Every plugin is asked even when one
    /// fails (so that one failure leaks nothing the others hold); the first failure is returned.
    pub fn del(&self, list: &ConfList, inv: &Invocation<'_>, result: Option<&Value>) -> Result<(), CniError> {
        let mut first = None;
        for plugin in list.plugins.iter().rev() {
            if let Err(e) = self.exec(list, plugin, Op::Del, inv, result) {
                tracing::warn!(error = %crate::error::report(&e), "CNI DEL");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Run one plugin of `list`; its stdout parsed as JSON when it printed anything.
    fn exec(
        &self,
        list: &ConfList,
        plugin: &Value,
        op: Op,
        inv: &Invocation<'_>,
        prev: Option<&Value>,
    ) -> Result<Option<Value>, CniError> {
        let kind = plugin_type(plugin);
        let path = self.find(&kind)?;
        let conf = plugin_config(list, plugin, inv.runtime_config, prev)
            .map_err(|reason| CniError::BadConfig { name: list.name.clone(), reason })?;
        let stdin = serde_json::to_vec(&conf).map_err(|source| CniError::BadResult {
            plugin: kind.clone(),
            command: op.name(),
            source,
        })?;
        let netns = inv.netns.map(|p| p.as_os_str().to_os_string()).unwrap_or_default();
        tracing::debug!(plugin = %kind, command = op.name(), container = inv.container_id, "CNI");
        let mut cmd = Command::new(&path);
        cmd.env("CNI_COMMAND", op.name())
            .env("CNI_CONTAINERID", inv.container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", inv.ifname)
            .env("CNI_ARGS", inv.args)
            .env("CNI_PATH", self.cni_path())
            .env("PATH", plugin_search_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // ETXTBSY: the plugin was just installed (or written by a test) and a process forked
        // meanwhile still holds it open for writing, for a moment.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 20 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => break r.map_err(|source| CniError::Exec { path: path.clone(), source })?,
            }
        };
        if let Some(mut w) = child.stdin.take() {
            // A plugin that exits without reading its stdin (EPIPE) answers through its status.
            let _ = w.write_all(&stdin);
        }
        let out = child.wait_with_output().map_err(|source| CniError::Exec { path: path.clone(), source })?;
        if !out.status.success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&out.stdout) {
                Ok(b) => CniError::Plugin {
                    plugin: kind,
                    command: op.name(),
                    code: b.code,
                    msg: b.msg,
                    details: b.details,
                },
                Err(_) => CniError::Crashed {
                    plugin: kind,
                    command: op.name(),
                    status: out.status,
                    stderr: tail(&String::from_utf8_lossy(&out.stderr), 2000),
                },
            });
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&out.stdout).map(Some).map_err(|source| CniError::BadResult {
            plugin: kind,
            command: op.name(),
            source,
        })
    }

    fn cni_path(&self) -> OsString {
        std::env::join_paths(&self.paths).unwrap_or_default()
    }
}

/// Plugins run `iptables`, `ip` and friends: a PATH that has the sbin directories.
fn plugin_search_path() -> OsString {
    let mut p = std::env::var_os("PATH").unwrap_or_default();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !std::env::split_paths(&p).any(|x| x == Path::new(d)) {
            if !p.is_empty() {
                p.push(":");
            }
            p.push(d);
        }
    }
    p
}

fn tail(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().rev().nth(max) {
        Some((i, _)) => format!("...{}", &s[i..]),
        None => s.to_string(),
    }
}

fn plugin_type(plugin: &Value) -> String {
    plugin.get("type").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// The configuration one plugin of a list reads: its own object with the list's `name` and
/// `cniVersion`, `prevResult`, and the `runtimeConfig` keys its `capabilities` ask for.
pub fn plugin_config(
    list: &ConfList,
    plugin: &Value,
    runtime_config: &Map<String, Value>,
    prev: Option<&Value>,
) -> Result<Value, String> {
    let Some(obj) = plugin.as_object() else {
        return Err("a plugin is not a JSON object".to_string());
    };
    if plugin_type(plugin).is_empty() {
        return Err("a plugin has no \"type\"".to_string());
    }
    let mut conf = obj.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let wanted: Map<String, Value> = obj
        .get("capabilities")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, on)| on.as_bool() == Some(true))
        .filter_map(|(k, _)| Some((k.clone(), runtime_config.get(k)?.clone())))
        .collect();
    if !wanted.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(wanted));
    }
    Ok(Value::Object(conf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> ConfList {
        ConfList {
            cni_version: CNI_VERSION.into(),
            name: "n".into(),
            plugins: vec![
                json!({"type": "bridge", "bridge": "b0"}),
                json!({"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}),
            ],
        }
    }

    #[test]
    fn plugin_config_chains_and_filters_capabilities() {
        let mut rc = Map::new();
        rc.insert("portMappings".into(), json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]));
        rc.insert("bandwidth".into(), json!({"ingressRate": 1}));
        let l = list();
        let first = plugin_config(&l, &l.plugins[0], &rc, None).unwrap();
        assert_eq!(first["name"], "n");
        assert_eq!(first["cniVersion"], CNI_VERSION);
        assert!(first.get("prevResult").is_none());
        assert!(first.get("runtimeConfig").is_none(), "bridge asked for no capability: {first}");
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]});
        let second = plugin_config(&l, &l.plugins[1], &rc, Some(&prev)).unwrap();
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["runtimeConfig"], json!({"portMappings": rc["portMappings"]}));
        assert!(plugin_config(&l, &json!({"bridge": "x"}), &rc, None).is_err());
        assert!(plugin_config(&l, &json!([1]), &rc, None).is_err());
    }

    #[test]
    fn result_parses_the_spec_example() {
        let r: CniResult = serde_json::from_value(json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "00:11:22:33:44:55"},
                {"name": "eth0", "mac": "00:11:22:33:44:66", "sandbox": "/var/run/netns/blue"}
            ],
            "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["10.1.0.1"]}
        }))
        .unwrap();
        assert_eq!(r.container_ipv4(), Some("10.1.0.5".parse().unwrap()));
        assert_eq!(r.routes[0].dst, "0.0.0.0/0");
        assert_eq!(r.dns.nameservers, vec!["10.1.0.1"]);
    }

    #[test]
    fn missing_plugin_names_the_debian_package() {
        let cni = Cni::new(vec![PathBuf::from("/nonexistent-cni-dir")]);
        let e = cni.find("bridge").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let msg = e.to_string();
        assert!(msg.contains("containernetworking-plugins") && msg.contains("/nonexistent-cni-dir"), "{msg}");
        assert!(matches!(cni.find("../bin/sh"), Err(CniError::PluginNotFound { .. })));
    }

    /// Two fake plugins that log what they were asked: ADD in order with the first one's result
    /// as the second one's prevResult, DEL in reverse with the final result, the CNI_* env set.
    #[test]
    fn list_chains_add_and_dels_in_reverse() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        for (name, ip) in [("first", "10.0.0.2/24"), ("second", "10.0.0.3/24")] {
            let script = dir.path().join(name);
            let body = format!(
                "#!/bin/sh\nin=$(cat)\necho \"$CNI_COMMAND {name} $CNI_CONTAINERID $CNI_IFNAME $CNI_NETNS $in\" >>{log}\n\
                 [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"{ip}\"}}]}}'\nexit 0\n",
                log = log.display()
            );
            std::fs::write(&script, body).unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let cni = Cni::new(vec![PathBuf::from("/nonexistent"), dir.path().to_path_buf()]);
        let l = ConfList {
            cni_version: CNI_VERSION.into(),
            name: "n".into(),
            plugins: vec![json!({"type": "first"}), json!({"type": "second"})],
        };
        let rc = Map::new();
        let inv = Invocation {
            container_id: "cid",
            netns: Some(Path::new("/ns")),
            ifname: "eth0",
            args: "",
            runtime_config: &rc,
        };
        let (raw, parsed) = cni.add(&l, &inv).unwrap();
        assert_eq!(parsed.ips[0].address, "10.0.0.3/24");
        cni.del(&l, &inv, Some(&raw)).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let heads: Vec<String> =
            lines.iter().map(|l| l.split(' ').take(5).collect::<Vec<_>>().join(" ")).collect();
        assert_eq!(
            heads,
            [
                "ADD first cid eth0 /ns",
                "ADD second cid eth0 /ns",
                "DEL second cid eth0 /ns",
                "DEL first cid eth0 /ns"
            ]
        );
        let conf =
            |i: usize| -> Value { serde_json::from_str(lines[i].splitn(6, ' ').nth(5).unwrap()).unwrap() };
        assert!(conf(0).get("prevResult").is_none());
        assert_eq!(conf(1)["prevResult"]["ips"][0]["address"], "10.0.0.2/24");
        assert_eq!(conf(2)["prevResult"], raw);
        assert_eq!(conf(3)["prevResult"], raw);
    }

    /// A fake plugin that fails with an error object: the object becomes a typed error.
    #[test]
    fn plugin_error_object_becomes_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("failing");
        std::fs::write(
            &script,
            "#!/bin/sh\ncat >/dev/null\necho '{\"cniVersion\":\"1.0.0\",\"code\":7,\"msg\":\"bad subnet\",\
             \"details\":\"10.0.0.0/33\"}'\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let cni = Cni::new(vec![dir.path().to_path_buf()]);
        let l = ConfList {
            cni_version: CNI_VERSION.into(),
            name: "n".into(),
            plugins: vec![json!({"type": "failing"})],
        };
        let rc = Map::new();
        let inv =
            Invocation { container_id: "c", netns: None, ifname: "eth0", args: "", runtime_config: &rc };
        let e = cni.add(&l, &inv).unwrap_err();
        match &e {
            CniError::Plugin { code, msg, details, command, .. } => {
                assert_eq!(
                    (*code, msg.as_str(), details.as_str(), *command),
                    (7, "bad subnet", "10.0.0.0/33", "ADD")
                );
            }
            other => panic!("not a plugin error: {other:?}"),
        }
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("bad subnet (10.0.0.0/33)"), "{e}");
    }
}
