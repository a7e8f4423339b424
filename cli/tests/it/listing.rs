//! Listing and inspecting what a root holds, as docker and podman users type it: image ls -q /
//! --json, image rm of several names, image history, container inspect, ps.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).expect("json")
}

/// `image ls --json` carries what the table shows, with `digest` and RFC 3339 `created`; `-q`
/// prints each image ID once; `image rm` takes several names and removes all it can.
#[test]
fn image_ls_and_rm_of_several_names() {
    if !privileged("image_ls_and_rm_of_several_names") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let oci = fx.join("oci");
    let d1 = root.ok(&["image", "import", &format!("{}:busybox", oci.display()), "--name", "a"]);
    root.ok(&["image", "import", &format!("{}:busybox", oci.display()), "--name", "b"]);
    root.ok(&["image", "import", &format!("{}:multi", oci.display()), "--name", "m"]);
    let ls = json_of(&root.ok(&["image", "ls", "--json"]));
    let rows = ls.as_array().expect("array");
    assert_eq!(rows.len(), 3);
    let a = rows.iter().find(|r| r["name"] == "a:latest").expect("a");
    assert_eq!(a["digest"], d1.trim());
    assert_eq!(a["layers"].as_array().map(Vec::len), Some(1));
    assert!(a["size"].as_u64().expect("size") > 1_000_000);
    let created = a["created"].as_str().expect("created");
    assert!(created.len() == 20 && created.ends_with('Z') && created.as_bytes()[10] == b'T', "{created}");
    let m = inspect_layers(&root, "m");
    assert_eq!(
        rows.iter().find(|r| r["name"] == "m:latest").expect("m")["layers"].as_array().map(Vec::len),
        Some(m)
    );
    // The image ID is the config digest, as docker and podman show it.
    let id =
        |name: &str| json_of(&root.ok(&["image", "inspect", name]))["id"].as_str().expect("id").to_string();
    let (id1, id2) = (id("a"), id("m"));
    assert_ne!(short(&id1), short(&d1));
    let table = root.ok(&["image", "ls"]);
    assert!(table.lines().any(|l| l.starts_with("a ") && l.contains(&short(&id1))), "{table}");
    let q = root.ok(&["image", "ls", "-q"]);
    let mut want = vec![short(&id1), short(&id2)];
    want.sort();
    let mut got: Vec<String> = q.lines().map(str::to_string).collect();
    got.sort();
    assert_eq!(got, want, "one ID per manifest");

    root.ok(&["container", "create", "m", "c"]);
    let out = root.cmd(&["image", "rm", "a", "m", "nope", "b"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("removing image m: image \"m\" is used by container(s) c"), "{err}");
    assert!(err.contains("removing image nope: image \"nope\" not found"), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>(),
        ["Untagged: a:latest", "Untagged: b:latest"]
    );
    let names: Vec<String> = json_of(&root.ok(&["image", "ls", "--json"]))
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(names, ["m:latest"]);
}

fn short(d: &str) -> String {
    d.trim().trim_start_matches("sha256:")[..12].to_string()
}

fn inspect_layers(root: &Root, name: &str) -> usize {
    json_of(&root.ok(&["image", "inspect", name]))["layers"].as_array().expect("layers").len()
}

/// `image history` lists the config's history newest first; the steps that added layers name them
/// in the config's diff_id order and carry their sizes; a commit's message is its comment.
#[test]
fn image_history_follows_the_config() {
    if !privileged("image_history_follows_the_config") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let oci = fx.join("oci");
    root.ok(&["image", "import", &format!("{}:multi", oci.display()), "--name", "m"]);
    let inspect = json_of(&root.ok(&["image", "inspect", "m"]));
    let config = &inspect["config"];
    let hist = json_of(&root.ok(&["image", "history", "m", "--json"]));
    let steps = hist.as_array().expect("array");
    let conf_hist = config["history"].as_array().expect("history");
    assert_eq!(steps.len(), conf_hist.len());
    for (s, h) in steps.iter().rev().zip(conf_hist) {
        assert_eq!(s["created_by"], h["created_by"]);
        assert_eq!(s["created"], h["created"]);
    }
    let added: Vec<&Value> =
        steps.iter().rev().filter(|s| !s["diff_id"].is_null()).map(|s| &s["diff_id"]).collect();
    let diff_ids: Vec<&Value> = config["rootfs"]["diff_ids"].as_array().expect("diff_ids").iter().collect();
    assert_eq!(added, diff_ids);
    for (s, l) in
        steps.iter().rev().filter(|s| !s["diff_id"].is_null()).zip(inspect["layers"].as_array().expect("l"))
    {
        assert_eq!(s["size"], l["size"]);
    }
    root.ok(&["container", "create", "m", "c"]);
    root.ok(&["container", "commit", "c", "m2", "-m", "my change"]);
    let hist = json_of(&root.ok(&["image", "history", "m2", "--json"]));
    assert_eq!(hist[0]["comment"], "my change");
    assert_eq!(hist[0]["created_by"], "strata commit");
    assert_eq!(hist.as_array().expect("array").len(), steps.len() + 1);
    let table = root.ok(&["image", "history", "m2"]);
    assert!(
        table.lines().nth(1).is_some_and(|l| l.contains("strata commit") && l.contains("my change")),
        "{table}"
    );
}

/// `container inspect` shows the manifest, the layers, the paths and the mount and run state;
/// `ps` lists the running containers only.
#[test]
fn container_inspect_and_ps() {
    if !privileged("container_inspect_and_ps") {
        return;
    }
    let fx = fixtures();
    let root = Root::new();
    let digest = root.ok(&["image", "import", &format!("{}:busybox", fx.join("oci").display())]);
    root.ok(&["container", "create", "busybox", "idle"]);
    let i = json_of(&root.ok(&["container", "inspect", "idle"]));
    assert_eq!(i["digest"], digest.trim());
    assert_eq!(i["image"], "busybox:latest");
    assert_eq!(i["layers"].as_array().expect("layers").len(), 1);
    // The upper dir is the container's snapshot's tree, `snapshots/<id>/fs`.
    let upper = std::path::Path::new(i["upper"].as_str().expect("upper"));
    assert!(upper.starts_with(root.path().join("snapshots")) && upper.ends_with("fs"), "{upper:?}");
    assert!(upper.is_dir(), "{upper:?}");
    assert_eq!(std::path::Path::new(i["work"].as_str().expect("work")), upper.with_file_name("work"));
    assert!(i["mounted"].is_null() && i["backend"].is_null() && i["running"] == false);
    assert_eq!(i["status"], "created");
    assert!(i["created"].as_str().is_some_and(|c| c.ends_with('Z')), "RFC 3339: {i}");
    let at = root.ok(&["container", "mount", "idle", "--backend", "kernel"]);
    let i = json_of(&root.ok(&["container", "inspect", "idle"]));
    assert_eq!(i["mounted"], at.trim());
    assert_eq!(i["backend"], "kernel");
    root.ok(&["container", "umount", "idle"]);
    root.ok(&["container", "mount", "idle", "--backend", "fuse"]);
    assert_eq!(json_of(&root.ok(&["container", "inspect", "idle"]))["backend"], "fuse");
    root.ok(&["container", "umount", "idle"]);

    let run = BackgroundRun::start(&root, "busybox", "busy", &["--", "sleep", "30"]);
    let until = Instant::now() + Duration::from_secs(20);
    let ps = loop {
        let ps = json_of(&root.ok(&["ps", "--json"]));
        if !ps.as_array().expect("array").is_empty() {
            break ps;
        }
        assert!(Instant::now() < until, "busy never showed in ps");
        std::thread::sleep(Duration::from_millis(50));
    };
    let ps = ps.as_array().expect("array");
    assert_eq!(ps.len(), 1, "only the running container: {ps:?}");
    assert_eq!(ps[0]["name"], "busy");
    assert_eq!(ps[0]["running"], true);
    assert!(ps[0]["process"].as_str().expect("process").starts_with("strata run, pid"));
    assert!(root.ok(&["ps"]).lines().any(|l| l.starts_with("busy ")));
    root.ok(&["container", "rm", "--force", "busy"]);
    run.wait();
    assert!(json_of(&root.ok(&["ps", "--json"])).as_array().expect("array").is_empty());
}
