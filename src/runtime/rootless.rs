//! The runtime spec in rootless mode, as rootless runtimes write it (`runc spec --rootless`):
//! strata already runs in its user namespace, so the container shares it (podman's default:
//! container ids are the namespace's, mapped to the user's subordinate range) and needs no
//! mappings of its own. What the namespace cannot do is taken out: cgroups (nothing is
//! delegated to the user: no cgroup path, no resources, no cgroup filesystem mount), a fresh
//! sysfs (bound from the host, read-only, instead) and mount options naming ids the namespace
//! does not map (devpts `gid=5` with a single-id mapping).

use oci_spec::runtime::{Mount, Spec};

/// `spec` made runnable in rootless mode.
pub fn adapt(spec: &mut Spec, mode: &crate::userns::Mode) {
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(None);
        linux.set_resources(None);
        linux.set_uid_mappings(None);
        linux.set_gid_mappings(None);
        if let Some(ns) = linux.namespaces_mut() {
            // The container lives in strata's user namespace: it must not make another.
            ns.retain(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::User);
        }
    }
    let mounts = spec.mounts().clone().unwrap_or_default();
    let mut out = Vec::with_capacity(mounts.len());
    for mut m in mounts {
        let dest = m.destination().to_string_lossy().trim_end_matches('/').to_string();
        if m.typ().as_deref() == Some("cgroup") || m.typ().as_deref() == Some("cgroup2") {
            continue;
        }
        if dest == "/sys" {
            let mut sys = Mount::default();
            sys.set_destination("/sys".into());
            sys.set_typ(Some("none".into()));
            sys.set_source(Some("/sys".into()));
            sys.set_options(Some(["rbind", "nosuid", "noexec", "nodev", "ro"].map(String::from).to_vec()));
            out.push(sys);
            continue;
        }
        if let Some(opts) = m.options().clone() {
            let kept: Vec<String> = opts
                .into_iter()
                .filter(|o| match (o.strip_prefix("uid="), o.strip_prefix("gid=")) {
                    (Some(id), _) => id.parse().is_ok_and(|id| mode.maps_uid(id)),
                    (_, Some(id)) => id.parse().is_ok_and(|id| mode.maps_gid(id)),
                    _ => true,
                })
                .collect();
            m.set_options(Some(kept));
        }
        out.push(m);
    }
    spec.set_mounts(Some(out));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userns::{mode_of, Mode};

    fn mount<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
        spec.mounts().as_ref()?.iter().find(|m| m.destination() == std::path::Path::new(dest))
    }

    #[test]
    fn rootless_spec() {
        let mut spec = Spec::default();
        if let Some(l) = spec.linux_mut() {
            l.set_cgroups_path(Some("/strata-x-c".into()));
        }
        let ranges = mode_of("0 1000 1\n1 100000 65536\n", "0 1000 1\n1 100000 65536\n");
        adapt(&mut spec, &ranges);
        let linux = spec.linux().as_ref().expect("linux");
        assert!(linux.cgroups_path().is_none() && linux.resources().is_none());
        assert!(spec.mounts().as_ref().expect("mounts").iter().all(|m| m.typ().as_deref() != Some("cgroup")));
        let sys = mount(&spec, "/sys").expect("/sys");
        assert_eq!(sys.source().as_deref(), Some(std::path::Path::new("/sys")));
        assert!(sys.options().as_ref().expect("options").contains(&"rbind".to_string()));
        let pts = mount(&spec, "/dev/pts").expect("/dev/pts").options().clone().expect("options");
        assert!(pts.contains(&"gid=5".to_string()), "gid 5 is mapped: {pts:?}");
        let mut single = Spec::default();
        adapt(&mut single, &mode_of("0 1000 1\n", "0 1000 1\n"));
        let pts = mount(&single, "/dev/pts").expect("/dev/pts").options().clone().expect("options");
        assert!(!pts.iter().any(|o| o.starts_with("gid=")), "gid 5 is not mapped: {pts:?}");
        // Root mode never calls adapt; a root spec keeps everything.
        let root = Spec::default();
        assert!(mount(&root, "/sys").is_some_and(|m| m.typ().as_deref() == Some("sysfs")));
        let _ = Mode::Root;
    }
}
