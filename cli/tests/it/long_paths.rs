//! Paths as long as an image may hold (4,095 bytes, 255-byte components): a container changes files
//! there, and `container diff`, `container commit` and an export read back in a fresh root all see
//! the change. Absolute paths to such files are longer than the kernel takes (`PATH_MAX`), so the
//! test reaches them through directory descriptors, as strata must.

use crate::common;
use crate::common::layout;
use crate::common::tarw;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use common::*;
use rustix::fs::{Mode, OFlags};
use strata_test_support::tree::assert_trees_eq;
use tarw::{tar, E};

/// Component `i` of the deep directory chain: 255 bytes.
fn comp(i: usize) -> String {
    format!("{i:02}{}", "d".repeat(253))
}

/// The deep directory: 15 components of 255 bytes (3,839 bytes).
fn deep_dir() -> String {
    (1..=15).map(comp).collect::<Vec<_>>().join("/")
}

/// A 255-byte file name of `c`s: in the deep dir, a path of exactly 4,095 bytes. The file to
/// delete (`g`) has 251 bytes, so that its whiteout `.wh.ggg…` is 255 bytes and 4,095 in all:
/// a longer one cannot be imported (strata, like the kernel, refuses components over 255 bytes).
fn leaf(c: char) -> String {
    c.to_string().repeat(if c == 'g' { 251 } else { 255 })
}

/// The image layer: the chain of directories, and in the deepest one `f…` (to change) and `g…`
/// (to delete).
fn deep_layer() -> Vec<u8> {
    let mut entries = Vec::new();
    let mut p = String::new();
    for i in 1..=15 {
        if !p.is_empty() {
            p.push('/');
        }
        p.push_str(&comp(i));
        let name = format!("{p}/");
        entries.push(E::dir(&name).pax("path", &name));
    }
    for (c, data) in [('f', "old contents\n"), ('g', "to be deleted\n")] {
        let name = format!("{}/{}", deep_dir(), leaf(c));
        assert!(name.len() == 4095 || c == 'g', "{}", name.len());
        entries.push(E::file(&name, data).pax("path", &name));
    }
    tar(entries)
}

/// Open the deep directory below `base`, one component at a time.
fn open_deep(base: &Path) -> OwnedFd {
    let mut fd =
        rustix::fs::open(base, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).expect("open base");
    for i in 1..=15 {
        fd = rustix::fs::openat(
            &fd,
            comp(i),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("open component {i}: {e}"));
    }
    fd
}

fn read_at(dir: &OwnedFd, name: &str) -> Option<String> {
    let fd = match rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return None,
        Err(e) => panic!("open {name}: {e}"),
    };
    let mut s = String::new();
    fs::File::from(fd).read_to_string(&mut s).expect("read");
    Some(s)
}

fn mounted(root: &Root, name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(root.ok(&["container", "mount", name]).trim())
}

#[test]
fn changes_at_path_max_diff_commit_and_export() {
    if !privileged("changes_at_path_max_diff_commit_and_export") {
        return;
    }
    let root = Root::new();
    let src = root.path().join("src-layout");
    layout::layout_with_layers(&src, "deep", &[deep_layer()]);
    root.ok(&["image", "import", &format!("{}:deep", src.display()), "--name", "deep"]);
    root.ok(&["container", "create", "deep", "c"]);

    // Change, create and delete through the mount, by descriptors.
    let at = mounted(&root, "c");
    {
        let d = open_deep(&at);
        assert_eq!(read_at(&d, &leaf('f')).as_deref(), Some("old contents\n"), "the image as imported");
        let w = |name: &str, data: &str| {
            let fd = rustix::fs::openat(
                &d,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o644),
            )
            .unwrap_or_else(|e| panic!("write {}: {e}", &name[..1]));
            fs::File::from(fd).write_all(data.as_bytes()).expect("write");
        };
        w(&leaf('f'), "new contents\n");
        w(&leaf('n'), "a new file\n");
        rustix::fs::unlinkat(&d, leaf('g'), rustix::fs::AtFlags::empty()).expect("delete");
    }
    let view = layout::capture_below(&at, &comp(1));
    assert_eq!(view.entries.len(), 16, "14 directories and 2 files below the first: {view:?}");
    root.ok(&["container", "umount", "c"]);

    let diff = root.ok(&["container", "diff", "c"]);
    let mut want = Vec::new();
    let mut p = String::new();
    for i in 1..=15 {
        p.push('/');
        p.push_str(&comp(i));
        want.push(format!("C {p}"));
    }
    want.push(format!("C {p}/{}", leaf('f')));
    want.push(format!("D {p}/{}", leaf('g')));
    want.push(format!("A {p}/{}", leaf('n')));
    assert_eq!(diff.lines().collect::<Vec<_>>(), want, "container diff");

    root.ok(&["container", "commit", "c", "committed"]);
    let ex = root.path().join("export");
    root.ok(&["image", "export", "committed", &format!("{}:v1", ex.display())]);

    // The export, imported into a fresh root and mounted as a view, shows the container's view.
    let fresh = Root::new();
    fresh.ok(&["image", "import", &format!("{}:v1", ex.display()), "--name", "again"]);
    fresh.ok(&["container", "create", "again", "v", "--read-only"]);
    let at = mounted(&fresh, "v");
    let got = layout::capture_below(&at, &comp(1));
    {
        let d = open_deep(&at);
        assert_eq!(read_at(&d, &leaf('f')).as_deref(), Some("new contents\n"));
        assert_eq!(read_at(&d, &leaf('n')).as_deref(), Some("a new file\n"));
        assert_eq!(read_at(&d, &leaf('g')), None, "deleted file stays deleted");
    }
    fresh.ok(&["container", "umount", "v"]);
    assert_trees_eq(&got, &view, "view of the re-imported export vs the container's view");
}
