//! OCI image layouts and oci-archives: the index, the manifest for a platform and the config,
//! each read bounded and verified against its descriptor.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

use super::{
    choose_platform, diff_ids, layer_compression, list_for_message, parse_json, printable, Files, Format,
    ImageError, LayerRef, Platform, Resolved, METADATA_LIMIT, MT_DOCKER_LIST, REF_NAME,
};
use crate::digest::Sha256Digest;

/// Read a blob named by a descriptor, bounded, and verify its size and digest.
fn read_verified(
    files: &Files,
    desc: &Descriptor,
    what: &str,
) -> Result<(Vec<u8>, Sha256Digest), ImageError> {
    let what = format!("{}: {what} {}", files.describe(), desc.digest());
    let d = Sha256Digest::parse(desc.digest().as_ref())
        .map_err(|e| ImageError::Digest { what: what.clone(), source: e })?;
    if desc.size() > METADATA_LIMIT {
        return Err(ImageError::Invalid {
            what,
            reason: format!("{} bytes is larger than the {METADATA_LIMIT}-byte metadata limit", desc.size()),
        });
    }
    let data = files.read(&format!("blobs/sha256/{}", d.hex()), METADATA_LIMIT)?;
    if data.len() as u64 != desc.size() {
        return Err(ImageError::SizeMismatch { what, expected: desc.size(), actual: data.len() as u64 });
    }
    let actual = Sha256Digest::of(&data);
    if actual != d {
        return Err(ImageError::DigestMismatch { what, expected: d.to_string(), actual: actual.to_string() });
    }
    Ok((data, d))
}

pub fn is_index(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageIndex) || mt.to_string() == MT_DOCKER_LIST
}

pub(super) fn tags_of(index: &ImageIndex) -> Vec<String> {
    index
        .manifests()
        .iter()
        .filter_map(|d| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned())
        .collect()
}

/// Also returns whether the manifest was chosen by a platform an index states for it.
pub(super) fn resolve_oci(
    format: Format,
    files: Files,
    tag: Option<String>,
    platform: &Platform,
) -> Result<(Resolved, bool), ImageError> {
    let mut by_platform = false;
    let what = format!("{}: index.json", files.describe());
    let index: ImageIndex = parse_json(&files.read("index.json", METADATA_LIMIT)?, &what)?;
    let tags = tags_of(&index);
    // Pick the top-level descriptor: by tag, the only one, or a platform among untagged ones.
    let (desc, name) = match &tag {
        Some(t) => {
            let d = index
                .manifests()
                .iter()
                .find(|d| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)) == Some(t))
                .ok_or_else(|| ImageError::NoSuchTag {
                    source_name: files.describe(),
                    tag: printable(t, 80),
                    available: list_for_message(&tags, "no tags"),
                })?;
            (d.clone(), Some(t.clone()))
        }
        None => {
            let ms = index.manifests();
            if ms.is_empty() {
                return Err(ImageError::Invalid { what, reason: "the index lists no manifests".into() });
            }
            let mut distinct: Vec<&Descriptor> = Vec::new();
            for d in ms {
                if !distinct.iter().any(|x| x.digest() == d.digest()) {
                    distinct.push(d);
                }
            }
            let mut named = tags.clone();
            named.sort();
            named.dedup();
            if distinct.len() == 1 {
                let name = distinct[0].annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned();
                (distinct[0].clone(), name)
            } else if named.len() > 1 {
                // Several images by name (strata save, skopeo into one layout), not the platforms
                // of one image: the caller names one, or loads them all.
                return Err(ImageError::Ambiguous {
                    source_name: files.describe(),
                    available: list_for_message(&tags, "untagged"),
                });
            } else if ms.iter().all(|d| d.platform().is_some()) {
                let (d, matched) = choose_platform(&files.describe(), &index, platform)?;
                by_platform = matched;
                (d.clone(), None)
            } else {
                return Err(ImageError::Ambiguous {
                    source_name: files.describe(),
                    available: list_for_message(&tags, "untagged"),
                });
            }
        }
    };
    // Follow nested indexes down to a manifest (bounded depth: a hostile layout may loop).
    let mut desc = desc;
    for _ in 0..8 {
        if !is_index(desc.media_type()) {
            break;
        }
        let (data, _) = read_verified(&files, &desc, "index")?;
        let nested: ImageIndex =
            parse_json(&data, &format!("{}: index {}", files.describe(), desc.digest()))?;
        let (d, matched) = choose_platform(&files.describe(), &nested, platform)?;
        by_platform = matched;
        desc = d.clone();
    }
    if is_index(desc.media_type()) {
        return Err(ImageError::Invalid {
            what: files.describe(),
            reason: "indexes nested too deeply".into(),
        });
    }
    let (mdata, mdigest) = read_verified(&files, &desc, "manifest")?;
    let mwhat = format!("{}: manifest {}", files.describe(), mdigest);
    let manifest: ImageManifest = parse_json(&mdata, &mwhat)?;
    let (config, config_digest) = read_verified(&files, manifest.config(), "config")?;
    let cwhat = format!("{}: config {}", files.describe(), config_digest);
    let layers = manifest_layers(&manifest, &mwhat, &config, &cwhat)?;
    Ok((
        Resolved {
            format,
            source: Box::new(files),
            name,
            manifest: Some((mdata, mdigest)),
            config,
            config_digest,
            layers,
        },
        by_platform,
    ))
}

/// The layers of a verified manifest, each paired with its diff_id from the verified config
/// (`mwhat` and `cwhat` name the two in messages). Each layer's `file` is
/// `blobs/sha256/<hex>`, where a layout holds it.
pub fn manifest_layers(
    manifest: &ImageManifest,
    mwhat: &str,
    config: &[u8],
    cwhat: &str,
) -> Result<Vec<LayerRef>, ImageError> {
    let diff_ids = diff_ids(config, cwhat)?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(ImageError::Invalid {
            what: mwhat.to_string(),
            reason: format!(
                "{} layers but the config lists {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (l, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let d = Sha256Digest::parse(l.digest().as_ref())
            .map_err(|e| ImageError::Digest { what: format!("{mwhat}: layer"), source: e })?;
        let mt = l.media_type().to_string();
        layer_compression(&mt)?;
        layers.push(LayerRef {
            file: format!("blobs/sha256/{}", d.hex()),
            digest: Some(d),
            size: Some(l.size()),
            media_type: Some(mt),
            diff_id,
        });
    }
    Ok(layers)
}
