//! Hostile layers through the whole import: each a tiny hand-made tar in a real OCI layout,
//! imported by the strata binary. Nothing outside the store changes, the command fails naming the
//! layer and the entry, and nothing half-written stays in the store.

use crate::common;
use crate::common::layout;
use crate::common::tarw;

use std::fs;
use std::path::Path;

use common::*;
use strata_test_support::tree::{Options, Tree};
use tarw::{tar, E};

struct Case {
    root: Root,
    sentinel: std::path::PathBuf,
    before: Tree,
}

fn case() -> Case {
    let root = Root::new();
    // The sentinel sits next to the store, where `../` from a layer directory would land.
    let sentinel = root.path().join("sentinel");
    fs::create_dir_all(sentinel.join("dir")).expect("sentinel");
    fs::write(sentinel.join("file"), "precious").expect("sentinel file");
    fs::write(sentinel.join("dir/inner"), "inner").expect("sentinel file");
    let before =
        Tree::capture_with(&sentinel, &Options { mtime: true, ..Options::default() }).expect("capture");
    Case { root, sentinel, before }
}

impl Case {
    /// Import the layers into a store *inside* the case dir; returns stderr (or "" on success).
    fn import(&self, layers: &[Vec<u8>]) -> (bool, String) {
        let layout = self.root.path().join("layout");
        let _ = fs::remove_dir_all(&layout);
        layout::layout_with_layers(&layout, "t", layers);
        let store = self.root.path().join("store");
        let out = std::process::Command::new(STRATA)
            .arg("--root")
            .arg(&store)
            .args(["image", "import", &format!("{}:t", layout.display()), "--name", "h"])
            .output()
            .expect("run strata");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn assert_untouched(&self) {
        let after = Tree::capture_with(&self.sentinel, &Options { mtime: true, ..Options::default() })
            .expect("capture");
        strata_test_support::tree::assert_trees_eq(&self.before, &after, "sentinel");
        for p in ["/etc/passwd-strata-pwned", "/tmp/strata-pwned"] {
            assert!(!Path::new(p).exists(), "{p} was created");
        }
    }

    fn assert_fails(&self, layers: &[Vec<u8>], entry: &str) {
        let (ok, err) = self.import(layers);
        assert!(!ok, "import of a hostile layer succeeded");
        assert!(err.contains("layer sha256:"), "error names the layer: {err}");
        assert!(err.contains(entry), "error names the entry {entry:?}: {err}");
        self.assert_untouched();
        let store = self.root.path().join("store");
        let layers_left: Vec<_> = fs::read_dir(store.join("layers/sha256")).expect("layers").collect();
        assert!(layers_left.is_empty(), "no layer directory left");
        let staging: Vec<_> = fs::read_dir(store.join("staging")).expect("staging").collect();
        assert!(staging.is_empty(), "no staging debris: {staging:?}");
    }
}

#[test]
fn dotdot_escape_is_refused() {
    if !privileged("dotdot_escape_is_refused") {
        return;
    }
    let c = case();
    c.assert_fails(&[tar([E::file("../../sentinel/file", "pwned")])], "../../sentinel/file");
    c.assert_fails(&[tar([E::file("a/../../../sentinel/new", "pwned")])], "sentinel/new");
}

#[test]
fn write_through_symlink_is_refused_or_confined() {
    if !privileged("write_through_symlink_is_refused_or_confined") {
        return;
    }
    let c = case();
    let sentinel = c.sentinel.display().to_string();
    // Absolute symlink to the sentinel, then a file through it.
    c.assert_fails(&[tar([E::symlink("link", &sentinel), E::file("link/file", "pwned")])], "link/file");
    // Relative chain climbing out.
    c.assert_fails(
        &[tar([E::symlink("a", "../../.."), E::symlink("b", "a/sentinel"), E::file("b/dir/inner", "pwned")])],
        "b/dir/inner",
    );
}

#[test]
fn hardlink_and_whiteout_escapes_are_refused() {
    if !privileged("hardlink_and_whiteout_escapes_are_refused") {
        return;
    }
    let c = case();
    c.assert_fails(&[tar([E::hardlink("h", "../../sentinel/file")])], "h");
    c.assert_fails(
        &[tar([E::symlink("d", c.sentinel.display().to_string()), E::file("d/.wh.file", "")])],
        "d/.wh.file",
    );
}

#[test]
fn symlinks_in_lower_layers_do_not_redirect_upper_layers() {
    if !privileged("symlinks_in_lower_layers_do_not_redirect_upper_layers") {
        return;
    }
    // Each layer is unpacked into its own directory: a symlink from layer 1 does not exist while
    // layer 2 is unpacked, so layer 2's `etc/x` is a plain directory entry in layer 2.
    let c = case();
    let sentinel = c.sentinel.display().to_string();
    let (ok, err) =
        c.import(&[tar([E::symlink("etc", &sentinel)]), tar([E::dir("etc"), E::file("etc/file", "mine")])]);
    assert!(ok, "{err}");
    c.assert_untouched();
    // And the merged view shows layer 2's directory, not the host's.
    let store = c.root.path().join("store");
    let s = |args: &[&str]| {
        let out =
            std::process::Command::new(STRATA).arg("--root").arg(&store).args(args).output().expect("strata");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    s(&["container", "create", "h", "v", "--read-only"]);
    let at = s(&["container", "mount", "v"]);
    assert_eq!(fs::read_to_string(Path::new(&at).join("etc/file")).expect("etc/file"), "mine");
    s(&["container", "rm", "--force", "v"]);
    c.assert_untouched();
}

#[test]
fn gigantic_pax_header_fails_cleanly() {
    if !privileged("gigantic_pax_header_fails_cleanly") {
        return;
    }
    let c = case();
    let big = vec![b'a'; 20 << 20];
    c.assert_fails(&[tar([E::file("f", "x").pax("comment", &big)])], "header");
}
