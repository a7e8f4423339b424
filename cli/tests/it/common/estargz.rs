//! One-layer eStargz images built by hand for the lazy-pull tests: a tar of given entries,
//! written by strata's eStargz writer with given options, pushed to the loopback registry with
//! the TOC annotation, its TOC parsed back for the test to find chunks and landmarks in.

use strata::seekable::footer::{estargz_toc_range, parse_estargz_footer};
use strata::seekable::write::{write_estargz, EstargzOptions};
use strata::seekable::Toc;

use super::registry::Registry;
use super::{put_blob, set_tag};

/// What [`push_one_layer`] pushed.
pub struct OneLayer {
    /// The layer's blob digest (`sha256:…`) and bytes.
    pub blob: String,
    pub bytes: Vec<u8>,
    /// The layer's diff_id (`sha256:…`).
    pub diff_id: String,
    /// Its verified TOC.
    pub toc: Toc,
}

/// A one-layer eStargz image of `entries` (in tar order; a path ending in `/` is a directory,
/// 0755, else a regular file, 0644; every mtime 1700000000), written with `opts` and pushed to
/// `reg` as `repo:esgz`.
pub fn push_one_layer(
    reg: &Registry,
    repo: &str,
    entries: &[(&str, &[u8])],
    opts: &EstargzOptions,
) -> OneLayer {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_ustar();
        let dir = path.ends_with('/');
        h.set_entry_type(if dir { tar::EntryType::Directory } else { tar::EntryType::Regular });
        h.set_size(data.len() as u64);
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, *data).expect("tar");
    }
    let tar = b.into_inner().expect("tar");
    let (info, blob) = write_estargz(&tar[..], Vec::new(), opts).expect("estargz");
    let off = parse_estargz_footer(&blob[blob.len() - 51..]).expect("footer");
    let r = estargz_toc_range(blob.len() as u64, off).expect("toc range");
    let toc = Toc::from_estargz(&blob[r.start as usize..r.end as usize], off, &info.toc_digest).expect("toc");

    let layout = tempfile::tempdir_in(reg.dir.path()).expect("tempdir");
    let dir = layout.path();
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    std::fs::write(dir.join("index.json"), br#"{"schemaVersion":2,"manifests":[]}"#).expect("index");
    let (ld, ls) = put_blob(dir, &blob);
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]}, "rootfs": {"type": "layers", "diff_ids": [info.diff_id.to_string()]}});
    let (cd, cs) = put_blob(dir, &serde_json::to_vec(&config).expect("json"));
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls,
            "annotations": {"containerd.io/snapshot/stargz/toc.digest": info.toc_digest.to_string(),
                "io.containers.estargz.uncompressed-size": info.uncompressed_size.to_string()}}]});
    set_tag(dir, "esgz", &serde_json::to_vec(&manifest).expect("json"));
    reg.push(&format!("oci:{}:esgz", dir.display()), &format!("{repo}:esgz"), false);
    OneLayer { blob: ld, bytes: blob, diff_id: info.diff_id.to_string(), toc }
}
