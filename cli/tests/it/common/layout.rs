//! Images made from hand-made layer tars, and trees too deep for path-based tools.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{put_blob, set_tag, sha};

/// Write an OCI layout at `dir` with one image tagged `tag` made of the given (uncompressed)
/// layer tars, gzipped.
pub fn layout_with_layers(dir: &Path, tag: &str, layers: &[Vec<u8>]) {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(l).expect("gzip");
        let gz = gz.finish().expect("gzip");
        diff_ids.push(sha(l));
        let (d, s) = put_blob(dir, &gz);
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s}));
    }
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let (cd, cs) = put_blob(dir, &serde_json::to_vec(&config).expect("json"));
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs}, "layers": descs});
    if !dir.join("index.json").exists() {
        fs::write(dir.join("index.json"), br#"{"schemaVersion":2,"manifests":[]}"#).expect("index");
    }
    set_tag(dir, tag, &serde_json::to_vec(&manifest).expect("json"));
}

/// [`super::capture`] of the tree below `dir/top`, through the directory's descriptor
/// (`/proc/self/fd/N/`), so that paths up to `PATH_MAX` below `top` can be read whatever the
/// length of `dir`. Paths are relative to `top`.
pub fn capture_below(dir: &Path, top: &str) -> strata_test_support::tree::Tree {
    let d = fs::File::open(dir.join(top)).expect("open top directory");
    super::capture(Path::new(&format!("/proc/self/fd/{}/", d.as_raw_fd())))
}
