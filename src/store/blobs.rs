//! The blob store: content-addressed files under `blobs/sha256/`, written whole or not at all.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::{random_token, IoContext, Result, Store, StoreError};
use crate::digest::Sha256Digest;

impl Store {
    pub fn has_blob(&self, d: &Sha256Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Read a whole (small) blob: manifests and configs.
    pub fn read_blob(&self, d: &Sha256Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        fs::read(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::MissingBlob { digest: d.to_string() }
            } else {
                StoreError::Io { path: p.clone(), source: e }
            }
        })
    }

    /// Write a small blob (manifest, config) atomically; returns its digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<Sha256Digest> {
        let d = Sha256Digest::from_bytes(&Sha256::digest(data));
        let dst = self.blob_path(&d);
        if dst.is_file() {
            return Ok(d);
        }
        let tmp = self.root.join("staging").join(format!("blob-{}", random_token()));
        let res = (|| -> io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, &dst)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.at(&dst)?;
        Ok(d)
    }

    /// Move a complete, verified file into the blob store.
    pub fn commit_blob_file(&self, tmp: &Path, d: &Sha256Digest) -> Result<()> {
        let dst = self.blob_path(d);
        fs::rename(tmp, &dst).at(&dst)
    }
}
