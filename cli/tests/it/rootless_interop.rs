//! Rootless strata and rootless podman, the same user, through a loopback registry: an image a
//! rootless strata commits is pulled and run by rootless podman, and one rootless podman commits
//! is pulled and run by rootless strata; owners, whiteouts and contents as each made them.

use std::process::{Command, Output};

use crate::common::privileged;
use crate::common::registry::{Registry, RegistryOpts};
use crate::common::user::TestUser;

/// Rootless podman as `user`: native overlay, no cgroups (nothing delegated), no events file, a
/// short run root of the user's own (containers/storage refuses one over 50 characters).
fn podman(user: &TestUser, runroot: &std::path::Path, args: &[&str]) -> Output {
    let mut all = vec!["--runroot", runroot.to_str().expect("utf8")];
    all.extend(["--cgroup-manager", "cgroupfs", "--events-backend", "none", "--storage-driver", "overlay"]);
    all.extend(args);
    user.command("podman", &all).output().expect("run podman")
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A run root for the user's podman: short, in /tmp, the user's own.
struct RunRoot(tempfile::TempDir);

impl RunRoot {
    fn new(user: &TestUser) -> RunRoot {
        let dir = tempfile::Builder::new().prefix("strl-pod-").tempdir_in("/tmp").expect("tempdir");
        std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid)).expect("chown");
        RunRoot(dir)
    }
}

impl Drop for RunRoot {
    fn drop(&mut self) {
        // Files podman's namespace made belong to subordinate ids.
        let _ = Command::new("chmod").arg("-R").arg("u+rwX").arg(self.0.path()).output();
    }
}

const CHECK: &str =
    "cat /etc/motd; stat -c %u:%g /etc/motd /srv/d; test -e /bin/ls && echo ls-still-there; true";

#[test]
fn strata_and_podman_rootless_exchange_images() {
    if !privileged("strata_and_podman_rootless_exchange_images") {
        return;
    }
    let reg = Registry::start(RegistryOpts::default());
    let user = TestUser::new(true);
    let run = RunRoot::new(&user);
    let runroot = run.0.path();
    user.import_busybox();
    // strata commits, podman runs.
    let change = "echo from-strata > /etc/motd && chown 1000:1000 /etc/motd && rm /bin/ls \
                  && mkdir -p /srv/d && chown 33:44 /srv/d";
    user.ok(&["run", "--name", "c", "--network", "none", "busybox", "--", "sh", "-c", change]);
    user.ok(&["container", "commit", "c", "snap"]);
    let dest = format!("{}/strata/snap:1", reg.addr);
    let digest = user.ok(&["push", "-q", "snap", &dest, "--tls-verify=false"]).trim().to_string();
    let digestfile = user.home.join("pulled.digest");
    let pull = ["pull", "-q", "--tls-verify=false"];
    ok(podman(&user, runroot, &[&pull[..], &[&format!("docker://{dest}")]].concat()), "podman pull");
    let out = ok(
        podman(&user, runroot, &["run", "--rm", "--network", "none", &dest, "sh", "-c", CHECK]),
        "podman run",
    );
    assert_eq!(out, "from-strata\n1000:1000\n33:44\n", "podman runs strata's rootless commit");
    let inspect =
        ok(podman(&user, runroot, &["image", "inspect", "--format", "{{.Digest}}", &dest]), "inspect");
    assert_eq!(inspect.trim(), digest, "podman has the manifest strata pushed");

    // podman commits, strata runs.
    let pchange = "echo from-podman > /etc/motd && chown 7:8 /etc/motd && rm /bin/sync && rm -rf /srv/d \
                   && mkdir /srv/e && chown 44:55 /srv/e";
    ok(
        podman(&user, runroot, &["run", "--name", "pc", "--network", "none", &dest, "sh", "-c", pchange]),
        "podman run",
    );
    ok(podman(&user, runroot, &["commit", "-q", "pc", "localhost/pimg"]), "podman commit");
    let pdest = format!("{}/podman/img:1", reg.addr);
    let df = digestfile.to_string_lossy().into_owned();
    let push = ["push", "-q", "--tls-verify=false", "--digestfile", &df, "localhost/pimg"];
    ok(podman(&user, runroot, &[&push[..], &[&format!("docker://{pdest}")]].concat()), "podman push");
    let pushed = std::fs::read_to_string(&digestfile).expect("digest file");
    assert_eq!(
        user.ok(&["pull", "-q", &pdest, "--tls-verify=false"]).trim(),
        pushed.trim(),
        "the manifest podman pushed"
    );
    let check = "cat /etc/motd; stat -c %u:%g /etc/motd /srv/e; ls /srv; test -e /bin/sync && echo sync-still-there; true";
    let out = user.ok(&["run", "--rm", "--network", "none", &pdest, "--", "sh", "-c", check]);
    assert_eq!(out, "from-podman\n7:8\n44:55\ne\n", "strata runs podman's rootless commit");
    let _ = podman(&user, runroot, &["rm", "-f", "pc"]);
}
