//! The snapshot core without mounting anything: metadata semantics as containerd's
//! `snapshots/testsuite` states them, mounts derived from parent chains, and the mount calls a
//! 500-layer stack makes, recorded by [`kernel_overlay::RecordingSyscall`]. The same model is
//! mounted for real by `tests/snapshots.rs`, once with the kernel and once with strata-fuse.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::meta::snapshots as rows;
use crate::store::Store;
use crate::store::{ImageLayerRow, NewImage};
use sha2::{Digest as _, Sha256};

fn store() -> (tempfile::TempDir, Store) {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(&t.path().join("root")).unwrap();
    (t, s)
}

fn no_labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// A layer directory with one file, and its row; returns its diff_id.
fn add_layer(store: &mut Store, n: usize) -> Sha256Digest {
    let d = crate::digest::Sha256Digest::from_bytes(&Sha256::digest(format!("layer {n}").as_bytes()));
    let dir = store.layer_path(&d);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("file-{n}")), n.to_string()).unwrap();
    store.insert_layer(&d, 1, 2).unwrap();
    d
}

/// Chain IDs as snapshot keys.
fn keys(diff_ids: &[Sha256Digest]) -> Vec<String> {
    chain_ids(diff_ids).iter().map(ToString::to_string).collect()
}

fn put_image(store: &mut Store, name: &str, diff_ids: &[Sha256Digest]) {
    let layers = diff_ids
        .iter()
        .map(|d| ImageLayerRow {
            diff_id: d.clone(),
            blob_digest: d.clone(),
            media_type: crate::image::MT_OCI_LAYER.into(),
            blob_size: 1,
            size: 1,
        })
        .collect();
    let m = Sha256Digest::from_bytes(&Sha256::digest(name.as_bytes()));
    Snapshots::new(store)
        .publish_image(&NewImage {
            name,
            manifest_digest: &m,
            config_digest: &m,
            blobs: vec![],
            layers,
            lease: None,
        })
        .unwrap();
}

fn id_of(store: &Store, key: &str) -> i64 {
    rows::get(store.meta().conn(), key).unwrap().id
}

fn path(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn option<'a>(m: &'a Mount, key: &str) -> Option<&'a str> {
    m.options.iter().find_map(|o| o.strip_prefix(&format!("{key}=")))
}

#[test]
fn prepare_commit_and_views_derive_containerd_mounts() {
    let (_t, mut store) = store();
    let mut s = Snapshots::new(&mut store);
    let m = s.prepare("a", None, &no_labels()).unwrap();
    let a = id_of(s.store(), "a");
    let a_fs = fs_dir(s.store(), a);
    assert_eq!(
        m,
        [Mount {
            fs_type: "bind".into(),
            source: a_fs.display().to_string(),
            options: vec!["rw".into(), "rbind".into()]
        }]
    );
    assert!(work_dir(s.store(), a).is_dir());
    fs::write(a_fs.join("hello"), b"hi").unwrap();
    fs::create_dir(a_fs.join("d")).unwrap();
    s.commit("a-c", "a", &no_labels()).unwrap();
    let info = s.stat("a-c").unwrap();
    assert_eq!((info.kind, info.parent.as_deref()), (Kind::Committed, None));
    assert!(matches!(s.stat("a").unwrap_err().kind(), ErrorKind::NotFound));
    // Commit is a rename: same id, same tree, no work dir left.
    assert_eq!(id_of(s.store(), "a-c"), a);
    assert_eq!(fs::read(a_fs.join("hello")).unwrap(), b"hi");
    assert!(!work_dir(s.store(), a).exists());
    let u = s.usage("a-c").unwrap();
    assert_eq!(u.inodes, 3, "fs, hello, d");
    assert!(u.size >= 4096, "{u:?}");

    // A view of one committed parent: a read-only bind of the parent's tree.
    let v = s.view("v", Some("a-c"), &no_labels()).unwrap();
    assert_eq!(
        v,
        [Mount {
            fs_type: "bind".into(),
            source: a_fs.display().to_string(),
            options: vec!["ro".into(), "rbind".into()]
        }]
    );
    assert_eq!(s.stat("v").unwrap().kind, Kind::View);

    // An active child: an overlay over the parent, its own tree as upper.
    let b = s.prepare("b", Some("a-c"), &no_labels()).unwrap();
    let bid = id_of(s.store(), "b");
    assert_eq!((b.len(), b[0].fs_type.as_str(), b[0].source.as_str()), (1, "overlay", "overlay"));
    assert_eq!(option(&b[0], "lowerdir"), Some(a_fs.to_str().unwrap()));
    assert_eq!(option(&b[0], "upperdir").map(path), Some(fs_dir(s.store(), bid)));
    assert_eq!(option(&b[0], "workdir").map(path), Some(work_dir(s.store(), bid)));
    for o in ["index=off", "redirect_dir=nofollow", "metacopy=off"] {
        assert!(b[0].options.iter().any(|x| x == o), "{o} in {:?}", b[0].options);
    }
    assert!(!b[0].options.iter().any(|x| x == "ro"));
    s.commit("b-c", "b", &no_labels()).unwrap();

    // A view over two: a read-only overlay, top first.
    let v2 = s.view("v2", Some("b-c"), &no_labels()).unwrap();
    let lowers = format!("{}:{}", fs_dir(s.store(), bid).display(), a_fs.display());
    assert_eq!(option(&v2[0], "lowerdir"), Some(lowers.as_str()));
    assert!(option(&v2[0], "upperdir").is_none() && v2[0].options.iter().any(|x| x == "ro"));
    assert_eq!(s.stat("v2").unwrap().parent.as_deref(), Some("b-c"));

    // What strata mounts itself: the same chain.
    let spec = s.overlay_spec("v2").unwrap();
    assert_eq!(spec.lowers, [fs_dir(s.store(), bid), a_fs.clone()]);
    assert!(spec.upper.is_none());
    let names: Vec<String> = s.walk().unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["a-c", "v", "b-c", "v2"]);
}

#[test]
fn errors_have_containerd_kinds() {
    let (_t, mut store) = store();
    let mut s = Snapshots::new(&mut store);
    s.prepare("a", None, &no_labels()).unwrap();
    let e = s.prepare("a", None, &no_labels()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    let e = s.prepare("x", Some("nope"), &no_labels()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // An active parent is not a parent.
    let e = s.prepare("x", Some("a"), &no_labels()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(s.stat("x").is_err(), "a failed prepare leaves no row");
    s.commit("a-c", "a", &no_labels()).unwrap();
    let e = s.commit("again", "a-c", &no_labels()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    s.view("v", Some("a-c"), &no_labels()).unwrap();
    assert_eq!(s.commit("v-c", "v", &no_labels()).unwrap_err().kind(), ErrorKind::FailedPrecondition);
    s.prepare("b", Some("a-c"), &no_labels()).unwrap();
    assert_eq!(s.commit("a-c", "b", &no_labels()).unwrap_err().kind(), ErrorKind::AlreadyExists);
    // A parent with children stays; containerd looks for "remove" in the message.
    let e = s.remove("a-c").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("remove"), "{e}");
    assert_eq!(s.remove("missing").unwrap_err().kind(), ErrorKind::NotFound);
    let b = id_of(s.store(), "b");
    s.remove("b").unwrap();
    assert!(!dir(s.store(), b).exists(), "removed with its directory");
    s.remove("v").unwrap();
    s.remove("a-c").unwrap();
    assert!(s.walk().unwrap().is_empty());
    let mut info = Info {
        name: "missing".into(),
        parent: None,
        kind: Kind::Active,
        labels: no_labels(),
        created: 0,
        updated: 0,
    };
    assert_eq!(s.update(&info, &[]).unwrap_err().kind(), ErrorKind::NotFound);
    s.prepare("c", None, &no_labels()).unwrap();
    info.name = "c".into();
    assert_eq!(s.update(&info, &["parent".into()]).unwrap_err().kind(), ErrorKind::InvalidArgument);
}

#[test]
fn update_replaces_or_edits_labels_and_touches_updated() {
    let (_t, mut store) = store();
    let mut s = Snapshots::new(&mut store);
    let l = |kv: &[(&str, &str)]| {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()
    };
    s.prepare("a", None, &l(&[("x", "1"), ("y", "2")])).unwrap();
    let before = s.stat("a").unwrap();
    assert_eq!(before.labels, l(&[("x", "1"), ("y", "2")]));
    assert_eq!(before.created, before.updated);
    let mut info = before.clone();
    info.labels = l(&[("x", "10"), ("z", "3")]);
    // One label set, one absent one removed, the rest kept.
    let after = s.update(&info, &["labels.x".into(), "labels.y".into()]).unwrap();
    assert_eq!(after.labels, l(&[("x", "10")]));
    assert!(after.updated > before.updated);
    assert_eq!(after.created, before.created);
    // No field paths: all labels replaced.
    let after = s.update(&info, &[]).unwrap();
    assert_eq!(after.labels, l(&[("x", "10"), ("z", "3")]));
    assert_eq!(s.stat("a").unwrap().labels, after.labels);
    // Labels survive commit as given to it.
    s.commit("a-c", "a", &l(&[("k", "v")])).unwrap();
    let committed = s.stat("a-c").unwrap();
    assert_eq!(committed.labels, l(&[("k", "v")]));
    // As containerd's storage: a commit makes a new snapshot, created and updated at commit.
    assert_eq!(committed.created, committed.updated);
    assert!(committed.created > after.updated);
}

#[test]
fn cleanup_removes_only_what_no_row_owns() {
    let (_t, mut store) = store();
    let mut s = Snapshots::new(&mut store);
    s.prepare("a", None, &no_labels()).unwrap();
    let a = id_of(s.store(), "a");
    let snaps = s.store().snapshots_dir();
    for orphan in ["999", "new-5-123", "gone-7-1"] {
        fs::create_dir_all(snaps.join(orphan).join("fs/deep")).unwrap();
    }
    let mut removed = s.cleanup().unwrap();
    removed.sort();
    assert_eq!(removed.len(), 3, "{removed:?}");
    let left: Vec<String> =
        fs::read_dir(&snaps).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(left, [a.to_string()]);
    assert!(s.cleanup().unwrap().is_empty());
    // An orphan holding the id a rolled-back create left is replaced by the next create.
    let next = a + 1;
    fs::create_dir_all(snaps.join(next.to_string()).join("fs/junk")).unwrap();
    s.prepare("b", None, &no_labels()).unwrap();
    assert_eq!(id_of(s.store(), "b"), next);
    assert_eq!(fs::read_dir(fs_dir(s.store(), next)).unwrap().count(), 0);
}

#[test]
fn image_chains_are_committed_snapshots_sharing_layer_directories() {
    let (_t, mut store) = store();
    let l: Vec<Sha256Digest> = (0..3).map(|n| add_layer(&mut store, n)).collect();
    put_image(&mut store, "three", &l);
    let chain = keys(&l);
    assert_eq!(chain[0], l[0].to_string(), "ChainID(L0) = DiffID(L0)");
    let expected1 =
        format!("sha256:{}", hex::encode(Sha256::digest(format!("{} {}", l[0], l[1]).as_bytes())));
    assert_eq!(chain[1], expected1);
    let s = Snapshots::new(&mut store);
    for (i, c) in chain.iter().enumerate() {
        let info = s.stat(c).unwrap();
        assert_eq!(info.kind, Kind::Committed);
        assert_eq!(info.parent.as_ref(), if i == 0 { None } else { Some(&chain[i - 1]) });
    }
    // Two of the same layers under another image: the same snapshots, no new rows.
    let n = s.walk().unwrap().len();
    put_image(&mut store, "two", &l[..2]);
    assert_eq!(Snapshots::new(&mut store).walk().unwrap().len(), n);
    // The same layers in another order: other chains, the same layer directories.
    put_image(&mut store, "swapped", &[l[1].clone(), l[0].clone()]);
    let swapped = keys(&[l[1].clone(), l[0].clone()]);
    let top = rows::get(store.meta().conn(), &swapped[1]).unwrap();
    let spec_parent = {
        let mut s = Snapshots::new(&mut store);
        s.view("v", Some(&swapped[1]), &no_labels()).unwrap();
        s.overlay_spec("v").unwrap()
    };
    assert_eq!(spec_parent.lowers.len(), 2);
    for (lower, layer) in spec_parent.lowers.iter().zip([&l[0], &l[1]]) {
        assert_eq!(fs::canonicalize(lower).unwrap(), fs::canonicalize(store.layer_path(layer)).unwrap());
    }
    assert_eq!(fs::read_to_string(spec_parent.lowers[0].join("file-0")).unwrap(), "0");
    assert_eq!(top.diff_id.as_ref(), Some(&l[0]));
    // Usage of a layer-backed snapshot is its layer's recorded size.
    assert_eq!(Snapshots::new(&mut store).usage(&chain[0]).unwrap(), Usage { size: 1, inodes: 2 });

    // gc: chains no image names go (not those under a view), their layers then too.
    Snapshots::new(&mut store).remove("v").unwrap();
    store.remove_image("swapped").unwrap();
    store.remove_image("three").unwrap();
    let pruned = Snapshots::new(&mut store).prune_image_chains().unwrap();
    assert_eq!(pruned.len(), 3, "three's top, and swapped's chain top down");
    for gone in [&chain[2], &swapped[1], &swapped[0]] {
        assert_eq!(Snapshots::new(&mut store).stat(gone).unwrap_err().kind(), ErrorKind::NotFound);
    }
    for kept in [&chain[0], &chain[1]] {
        assert!(Snapshots::new(&mut store).stat(kept).is_ok(), "image two still names {kept}");
    }
    store.remove_image("two").unwrap();
    crate::images::gc(&mut store).unwrap();
    assert!(Snapshots::new(&mut store).walk().unwrap().is_empty());
    assert!(store.layers().unwrap().is_empty(), "layers freed once no chain holds them");
}

/// The acceptance case: 500 lowers (overlayfs's limit). containerd mounts with one mount(2)
/// option string after making lowers relative to their common parent; so does kernel_overlay's
/// legacy path. Both fit in a page with `snapshots/<id>/fs` names.
#[test]
fn five_hundred_layers_fit_one_page() {
    let (_t, mut store) = store();
    let l: Vec<Sha256Digest> = (0..500).map(|n| add_layer(&mut store, n)).collect();
    put_image(&mut store, "deep", &l);
    let top = keys(&l).pop().unwrap();
    let mut s = Snapshots::new(&mut store);
    let m = s.prepare("c", Some(&top), &no_labels()).unwrap();
    let lowerdir = option(&m[0], "lowerdir").unwrap();
    assert_eq!(lowerdir.split(':').count(), 500);
    // containerd's compaction: strip the common directory, which must be `snapshots/`.
    let snaps = format!("{}/", s.store().snapshots_dir().display());
    let relative: Vec<&str> =
        lowerdir.split(':').map(|p| p.strip_prefix(&snaps).expect("under snapshots/")).collect();
    let compact =
        m[0].options
            .iter()
            .map(|o| {
                if o.starts_with("lowerdir=") {
                    format!("lowerdir={}", relative.join(":"))
                } else {
                    o.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(",");
    assert!(compact.len() < kernel_overlay::LEGACY_OPTIONS_MAX, "{} bytes", compact.len());
    // Every lower resolves to its layer.
    for (p, d) in lowerdir.split(':').zip(l.iter().rev()) {
        assert_eq!(fs::canonicalize(p).unwrap(), fs::canonicalize(s.store().layer_path(d)).unwrap());
    }

    // strata's own legacy mount(2) of the same snapshot: relative names, one call, one page.
    let spec = s.overlay_spec("c").unwrap();
    let sys = kernel_overlay::RecordingSyscall::new();
    let method = kernel_overlay::mount_with(
        &sys,
        &spec,
        Path::new("/mnt/target"),
        kernel_overlay::MountOptions { force_legacy: true },
    )
    .unwrap();
    assert_eq!(method, kernel_overlay::MountMethod::LegacyRelative);
    let calls = sys.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let kernel_overlay::Call::Mount { data, cwd, read_only, .. } = &calls[0] else { panic!("{calls:?}") };
    assert!(data.len() < kernel_overlay::LEGACY_OPTIONS_MAX, "{} bytes", data.len());
    assert_eq!(cwd.as_deref(), Some(s.store().snapshots_dir().as_path()));
    assert!(!read_only);
    let text = String::from_utf8(data.clone()).unwrap();
    let top_id = id_of(s.store(), &top);
    let head = format!("lowerdir={}/fs:{}/fs:", top_id, top_id - 1);
    assert!(text.starts_with(&head), "{head} ... in {}", &text[..80]);
}

#[test]
fn known_layers_are_committed_over_a_matching_parent_without_unpacking() {
    let (_t, mut store) = store();
    let l: Vec<Sha256Digest> = (0..2).map(|n| add_layer(&mut store, n)).collect();
    put_image(&mut store, "two", &l);
    let chain = keys(&l);
    let refl = |c: &str| BTreeMap::from([("containerd.io/snapshot.ref".to_string(), c.to_string())]);
    let mut s = Snapshots::new(&mut store);
    // A chain the store does not hold: nothing made.
    let other = keys(&[l[1].clone()]);
    assert_eq!(s.commit_known_layer("ns/1/x", None, &other[0], &no_labels()).unwrap(), None);
    // Bottom layer, no parent: a committed snapshot backed by the layer.
    let bottom = s.commit_known_layer("ns/1/a", None, &chain[0], &refl(&chain[0])).unwrap().unwrap();
    assert_eq!((bottom.kind, bottom.parent.as_deref()), (Kind::Committed, None));
    assert_eq!(bottom.labels, refl(&chain[0]));
    // The top layer over that parent: its chain matches.
    let top = s.commit_known_layer("ns/1/b", Some("ns/1/a"), &chain[1], &no_labels()).unwrap().unwrap();
    assert_eq!(top.parent.as_deref(), Some("ns/1/a"));
    // The top layer's chain over no parent, or over a parent containerd applied itself: refused.
    assert_eq!(s.commit_known_layer("ns/1/c", None, &chain[1], &no_labels()).unwrap(), None);
    s.prepare("ns/1/own-tmp", None, &no_labels()).unwrap();
    s.commit("ns/1/own", "ns/1/own-tmp", &no_labels()).unwrap();
    assert_eq!(s.commit_known_layer("ns/1/d", Some("ns/1/own"), &chain[1], &no_labels()).unwrap(), None);
    // A name taken: already exists; a missing parent: not found.
    let e = s.commit_known_layer("ns/1/b", Some("ns/1/a"), &chain[1], &no_labels()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    let e = s.commit_known_layer("ns/1/e", Some("nope"), &chain[1], &no_labels()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // A view over the reused chain shows the layers' files, from the shared layer directories.
    s.view("ns/1/v", Some("ns/1/b"), &no_labels()).unwrap();
    let spec = s.overlay_spec("ns/1/v").unwrap();
    assert_eq!(spec.lowers.len(), 2);
    assert_eq!(fs::read_to_string(spec.lowers[0].join("file-1")).unwrap(), "1");
    assert_eq!(fs::read_to_string(spec.lowers[1].join("file-0")).unwrap(), "0");
    assert_eq!(s.usage("ns/1/b").unwrap(), Usage { size: 1, inodes: 2 });
    // The image's own chain is untouched, and the layer stays held after the image goes.
    store.remove_image("two").unwrap();
    crate::images::gc(&mut store).unwrap();
    let v = Snapshots::new(&mut store).overlay_spec("ns/1/v").unwrap();
    assert_eq!(fs::read_to_string(v.lowers[0].join("file-1")).unwrap(), "1");
}

#[test]
fn committed_snapshots_are_found_by_label_and_parent() {
    let (_t, mut store) = store();
    let mut s = Snapshots::new(&mut store);
    let refl = |c: &str| BTreeMap::from([("containerd.io/snapshot.ref".to_string(), c.to_string())]);
    let find = |s: &Snapshots<'_>, parent: Option<&str>, v: &str| {
        s.committed_labelled(parent, "containerd.io/snapshot.ref", v).unwrap().map(|i| i.name)
    };
    // Two layers containerd applied in namespace a, each labelled with its chain at commit.
    s.prepare("a/1/x", None, &refl("c1")).unwrap();
    assert_eq!(find(&s, None, "c1"), None, "an active snapshot is no target");
    s.commit("a/2/c1", "a/1/x", &refl("c1")).unwrap();
    s.prepare("a/3/y", Some("a/2/c1"), &refl("c2")).unwrap();
    s.commit("a/4/c2", "a/3/y", &refl("c2")).unwrap();
    assert_eq!(find(&s, None, "c1").as_deref(), Some("a/2/c1"));
    assert_eq!(find(&s, Some(""), "c1").as_deref(), Some("a/2/c1"), "an empty parent is none");
    assert_eq!(find(&s, Some("a/2/c1"), "c2").as_deref(), Some("a/4/c2"));
    // Over another parent, with another value or another label, or over a missing parent: none.
    assert_eq!(find(&s, None, "c2"), None);
    assert_eq!(find(&s, Some("a/2/c1"), "c1"), None);
    assert_eq!(find(&s, Some("a/2/c1"), "c3"), None);
    assert_eq!(find(&s, Some("nope"), "c2"), None);
    assert_eq!(s.committed_labelled(None, "other", "c1").unwrap(), None);
    // The oldest of two matches.
    s.prepare("b/5/z", None, &no_labels()).unwrap();
    s.commit("b/6/c1", "b/5/z", &refl("c1")).unwrap();
    assert_eq!(find(&s, None, "c1").as_deref(), Some("a/2/c1"));
    s.remove("a/4/c2").unwrap();
    s.remove("a/2/c1").unwrap();
    assert_eq!(find(&s, None, "c1").as_deref(), Some("b/6/c1"));
}
