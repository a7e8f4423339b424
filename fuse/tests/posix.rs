//! The pjdfstest POSIX suite (crate pjdfstest 0.2.2, installed by `scripts/setup.sh` into
//! `target/tools`) on strata-fuse and on kernel overlayfs over identical stacks: every test that
//! fails on strata-fuse must fail on the kernel too. `scripts/posix-fuse.sh` shows the details.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::*;

/// The suite's configuration (shared with scripts/posix-fuse.sh).
const CONFIG: &str = include_str!("pjdfstest.toml");

fn pjdfstest_bin() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let local = root.join("target/tools/bin/pjdfstest");
    if local.is_file() {
        return Some(local);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("pjdfstest")).find(|p| p.is_file())
}

/// Test name -> status ("ok", "FAILED", "skipped", ...) from the suite's output.
fn run_suite(bin: &Path, config: &Path, dir: &Path) -> (BTreeMap<String, String>, String) {
    let out = Command::new(bin)
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .arg("-c")
        .arg(config)
        .arg("-p")
        .arg(dir)
        .output()
        .expect("run pjdfstest");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut res = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let (Some(name), Some(status)) = (it.next(), it.next()) {
            if name.contains("::") && !line.starts_with(char::is_whitespace) {
                res.insert(name.to_string(), status.to_string());
            }
        }
    }
    (res, text)
}

fn failed(res: &BTreeMap<String, String>) -> Vec<&String> {
    res.iter().filter(|(_, s)| *s != "ok" && *s != "skipped").map(|(n, _)| n).collect()
}

fn stack(root: &Path) -> Stack {
    let s = Stack::new(root, 2);
    // l2 (bottom): t/a, b; l1 (top): t/c. The suite runs in the merged directory t.
    fs::create_dir(s.lowers[1].join("t")).unwrap();
    fs::create_dir(s.lowers[0].join("t")).unwrap();
    fs::write(s.lowers[1].join("t/a"), "a").unwrap();
    fs::write(s.lowers[1].join("b"), "b").unwrap();
    fs::write(s.lowers[0].join("t/c"), "c").unwrap();
    // The suite's other users must reach the mount.
    for d in [root, &s.lowers[0], &s.lowers[1], &s.upper, &s.mnt] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    for l in &s.lowers {
        fs::set_permissions(l.join("t"), fs::Permissions::from_mode(0o755)).unwrap();
    }
    s
}

#[test]
fn pjdfstest_no_regressions_vs_kernel() {
    if !can_run() {
        return;
    }
    let Some(bin) = pjdfstest_bin() else {
        if std::env::var_os("CI").is_some() {
            panic!("pjdfstest not found (target/tools/bin/pjdfstest or PATH): run scripts/setup.sh");
        }
        eprintln!("SKIPPED: pjdfstest not found (target/tools/bin/pjdfstest or PATH); run scripts/setup.sh");
        return;
    };
    let t = scratch();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let config = t.path().join("pjdfstest.toml");
    fs::write(&config, CONFIG).unwrap();
    let ks = stack(&t.path().join("kernel"));
    let fs_ = stack(&t.path().join("fuse"));

    let clock = Instant::now();
    let (kernel, ktext) = {
        let _g = ks.mount_kernel();
        run_suite(&bin, &config, &ks.mnt.join("t"))
    };
    let ksecs = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let (fuse, ftext) = {
        let _g = fs_.mount_fuse("");
        run_suite(&bin, &config, &fs_.mnt.join("t"))
    };
    let fsecs = clock.elapsed().as_secs_f64();

    assert!(kernel.len() > 300, "too few pjdfstest results on the kernel:\n{ktext}");
    assert_eq!(kernel.len(), fuse.len(), "different test sets:\n{ftext}");
    let kfail = failed(&kernel);
    let ffail = failed(&fuse);
    let regressions: Vec<_> = ffail.iter().filter(|n| !kfail.contains(n)).collect();
    eprintln!(
        "pjdfstest: kernel {} passed, {} failed ({ksecs:.1} s); strata-fuse {} passed, {} failed ({fsecs:.1} s)",
        kernel.values().filter(|s| *s == "ok").count(),
        kfail.len(),
        fuse.values().filter(|s| *s == "ok").count(),
        ffail.len()
    );
    assert!(regressions.is_empty(), "fail on strata-fuse, pass on the kernel: {regressions:?}\n{ftext}");
}
