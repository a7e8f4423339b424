//! A state root from before snapshots opens on them: the database migration (meta) and the move
//! of the containers' directories (the store), seen through the container's mounts.

use std::fs;

use rusqlite::Connection;

use crate::digest::Sha256Digest;
use crate::meta::{chain_ids, container_snapshot_key, Kind, SCHEMA, SCHEMA_V1, SCHEMA_VERSION};
use crate::store::Store;

/// A state root as strata wrote it before snapshots (schema version 1, container dirs under
/// `containers/<name>/{upper,work,rootfs,empty}`) opens with every image a snapshot chain and
/// every container a snapshot over the chain it stood on, its upper and work dirs moved there
/// whole; opening again changes nothing.
#[test]
fn a_version_1_root_opens_on_snapshots() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let hex = |n: u8| format!("{:064x}", n);
    let (l1, l2) = (format!("sha256:{}", hex(1)), format!("sha256:{}", hex(2)));
    let (d1, d2) = (Sha256Digest::parse(&l1).unwrap(), Sha256Digest::parse(&l2).unwrap());
    let [m1, c1, b1, b2] = [3u8, 4, 5, 6].map(|n| format!("sha256:{}", hex(n)));
    for sub in ["blobs/sha256", "staging", "locks"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    for (n, l) in [(1u8, &l1), (2, &l2)] {
        let d = root.join("layers/sha256").join(hex(n));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("from-{n}")), l.as_bytes()).unwrap();
    }
    for (c, ro) in [("rw", false), ("ro", true)] {
        let d = root.join("containers").join(c);
        for sub in ["rootfs", "empty"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        if !ro {
            fs::create_dir_all(d.join("upper/etc")).unwrap();
            fs::write(d.join("upper/etc/written"), b"by the container").unwrap();
            fs::create_dir_all(d.join("work/work")).unwrap();
        }
    }
    {
        let c = Connection::open(root.join("strata.db")).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute_batch(SCHEMA_V1).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute_batch(&format!(
            "INSERT INTO layers VALUES ('{l1}', 10, 1, 0), ('{l2}', 20, 2, 0);
             INSERT INTO images VALUES ('app', '{m1}', '{c1}', 0);
             INSERT INTO image_layers VALUES ('app', 0, '{l1}', '{b1}', 'mt', 5),
                                             ('app', 1, '{l2}', '{b2}', 'mt', 6);
             INSERT INTO containers VALUES ('rw', 'app', 0, 0, 0, '{m1}', '{c1}'),
                                           ('ro', 'app', 1, 0, 0, '{m1}', '{c1}');
             INSERT INTO container_layers SELECT c.name, il.idx, il.diff_id, il.blob_digest,
                 il.media_type, il.blob_size FROM containers c JOIN image_layers il ON il.name = c.image;"
        ))
        .unwrap();
    }
    for round in 0..2 {
        let store = Store::open(&root).unwrap();
        let chain: Vec<String> =
            chain_ids(&[d1.clone(), d2.clone()]).iter().map(ToString::to_string).collect();
        let top = store.snapshots_ref_stat(&chain[1]);
        assert_eq!((top.kind, top.parent.as_deref()), (Kind::Committed, Some(chain[0].as_str())));
        let rw = store.container_row("rw").unwrap().unwrap();
        let ro = store.container_row("ro").unwrap().unwrap();
        assert_eq!(store.snapshots_ref_stat(&container_snapshot_key("rw")).kind, Kind::Active);
        assert_eq!(store.snapshots_ref_stat(&container_snapshot_key("ro")).kind, Kind::View);
        let p = crate::container::paths(&store, &rw);
        assert_eq!(p.upper, crate::snapshot::fs_dir(&store, rw.snapshot.unwrap()), "round {round}");
        assert_eq!(fs::read(p.upper.join("etc/written")).unwrap(), b"by the container");
        assert!(p.work.join("work").is_dir(), "work moved whole");
        assert!(!root.join("containers/rw/upper").exists() && !root.join("containers/rw/work").exists());
        assert!(root.join("containers/rw/rootfs").is_dir(), "the mount point stays");
        let spec = crate::container::overlay_spec(&store, &rw).unwrap();
        let layer = |n: u8| fs::canonicalize(root.join("layers/sha256").join(hex(n))).unwrap();
        assert_eq!(spec.lowers, [layer(2), layer(1)], "top first");
        assert_eq!(spec.upper.as_deref(), Some(p.upper.as_path()));
        let spec = crate::container::overlay_spec(&store, &ro).unwrap();
        assert!(spec.upper.is_none() && spec.lowers.len() == 2);
        let v: i64 = store.meta().conn().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        // Version 3: canonical image names, the containers following; `containers.image`
        // references nothing (only the snapshot is a foreign key), and no row was lost.
        assert_eq!((rw.image.as_str(), ro.image.as_str()), ("app:latest", "app:latest"));
        assert_eq!(store.image("app").unwrap().unwrap().name, "app:latest");
        assert_eq!(store.image("app:latest").unwrap().unwrap().layers.len(), 2);
        assert_eq!(store.container_layers("rw").unwrap().len(), 2);
        let mut st = store
            .meta()
            .conn()
            .prepare("SELECT \"table\" FROM pragma_foreign_key_list('containers')")
            .unwrap();
        let refs: Vec<String> = st.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(refs, ["snapshots"]);
        let fk: bool = store.meta().conn().query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
        assert!(fk, "foreign keys are on again after the migration");
    }
}
