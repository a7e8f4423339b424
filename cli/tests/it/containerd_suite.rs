//! containerd's own snapshotter conformance suite (`snapshots/testsuite`, from Debian's
//! golang-github-containerd-containerd-dev) against strata-snapshotter, through containerd's
//! `snapshots/proxy` gRPC client: the harness is tests/containerd/suite, built by `go test -c` in
//! GOPATH mode, offline (rootless_containerd.rs runs the same binary rootless). Every case must
//! pass; the only skip allowed is the one the suite makes for every snapshotter, overlayfs
//! included (Rename).

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Output};

/// strata-snapshotter, built beside this test binary (`cargo build --workspace` builds it;
/// scripts/test.sh does so before running tests).
pub fn snapshotter_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("strata-snapshotter");
    assert!(
        bin.is_file(),
        "{} not built: run `cargo build -p strata-snapshotter` (scripts/test.sh builds the workspace)",
        bin.display()
    );
    bin
}

/// Skips the suite itself allows for every snapshotter (`t.Skip` in the suite's own code).
const SUITE_SKIPS: &[&str] = &["TestStrata/Rename"];

/// The suite's test binary (`go test -c` of tests/containerd/suite), built once per run of this
/// test binary into target/go-bin (reachable by the rootless tests' users), then renamed into
/// place: a binary is there whole or not at all.
pub fn suite_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let cache = common::repo().join("target/go-cache");
        let dir = common::repo().join("target/go-bin");
        std::fs::create_dir_all(&cache).expect("go cache dir");
        std::fs::create_dir_all(&dir).expect("go bin dir");
        let bin = dir.join("strata-suite.test");
        let tmp = dir.join(format!("strata-suite.test.{}", std::process::id()));
        let out = Command::new("go")
            .args(["test", "-c", "-o"])
            .arg(&tmp)
            .arg(".")
            .current_dir(common::repo().join("tests/containerd/suite"))
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOFLAGS", "")
            .env("GOCACHE", &cache)
            .output()
            .expect("run go test -c (golang-go installed? scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "go test -c tests/containerd/suite: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &bin).expect("rename the suite binary into place");
        bin
    })
    .clone()
}

/// What one run of the suite binary printed (`-test.v`): every case must pass but the skips the
/// suite makes for every snapshotter, and all of them must have run. The passed cases.
pub fn check_suite_output(out: &Output, started: std::time::Instant) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result = |word: &str| -> Vec<String> {
        stdout
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix(&format!("--- {word}: ")))
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect()
    };
    let (passed, failed, skipped) = (result("PASS"), result("FAIL"), result("SKIP"));
    eprintln!(
        "containerd testsuite: {} passed, {} failed, {} skipped in {:.1} s",
        passed.len(),
        failed.len(),
        skipped.len(),
        started.elapsed().as_secs_f64()
    );
    let tail: String =
        stdout.lines().rev().take(200).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(failed.is_empty(), "failing cases {failed:?}:\n{tail}\n{stderr}");
    assert!(out.status.success(), "the suite failed ({}):\n{tail}\n{stderr}", out.status);
    let bad_skips: Vec<&String> = skipped.iter().filter(|s| !SUITE_SKIPS.contains(&s.as_str())).collect();
    assert!(bad_skips.is_empty(), "skipped cases the overlayfs snapshotter runs: {bad_skips:?}");
    // The suite's 21 cases less Rename, plus the parent test; fewer means less ran.
    assert!(passed.len() >= 21, "only {} cases passed: {passed:?}\n{tail}", passed.len());
    passed
}

#[test]
fn containerd_snapshotter_conformance_suite() {
    if !common::privileged("containerd_snapshotter_conformance_suite") {
        return;
    }
    let bin = suite_binary();
    let started = std::time::Instant::now();
    let out = Command::new(&bin)
        .args(["-test.v", "-test.count=1"])
        .env("STRATA_SNAPSHOTTER", snapshotter_bin())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the suite binary");
    check_suite_output(&out, started);
}
