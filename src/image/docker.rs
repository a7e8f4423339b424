//! docker-archives (`docker save`): `manifest.json`, the config named there and its layers, which
//! state no digest or size of their own.

use super::{
    diff_ids, list_for_message, parse_json, printable, Files, Format, ImageError, LayerRef, Resolved,
    METADATA_LIMIT,
};
use crate::digest::Sha256Digest;

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    pub(super) repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The hex a docker-archive file name carries: `<hex>.json`, `blobs/sha256/<hex>`, `<hex>/layer.tar`.
fn hex_in_name(name: &str) -> Option<Sha256Digest> {
    let n = name.trim_start_matches("./");
    let cand = match n.strip_prefix("blobs/sha256/") {
        Some(rest) => rest,
        None => n.strip_suffix(".json")?,
    };
    Sha256Digest::from_hex(cand).ok()
}

pub(super) fn resolve_docker(files: Files, tag: Option<String>) -> Result<Resolved, ImageError> {
    let what = format!("{}: manifest.json", files.describe());
    let entries: Vec<DockerManifestEntry> = parse_json(&files.read("manifest.json", METADATA_LIMIT)?, &what)?;
    let all_tags: Vec<String> =
        entries.iter().flat_map(|e| e.repo_tags.clone().unwrap_or_default()).collect();
    let entry = match &tag {
        Some(t) => entries
            .iter()
            .find(|e| {
                e.repo_tags.as_ref().is_some_and(|tags| {
                    tags.iter().any(|x| x == t || x.rsplit_once(':').is_some_and(|(_, tt)| tt == t))
                })
            })
            .ok_or_else(|| ImageError::NoSuchTag {
                source_name: files.describe(),
                tag: printable(t, 80),
                available: list_for_message(&all_tags, "no tags"),
            })?,
        None => match entries.as_slice() {
            [] => return Err(ImageError::Invalid { what, reason: "no images listed".into() }),
            [one] => one,
            _ => {
                return Err(ImageError::Ambiguous {
                    source_name: files.describe(),
                    available: list_for_message(&all_tags, "no tags"),
                })
            }
        },
    };
    let config = files.read(&entry.config, METADATA_LIMIT)?;
    let config_digest = Sha256Digest::of(&config);
    let cwhat = format!("{}: {}", files.describe(), entry.config);
    if let Some(named) = hex_in_name(&entry.config) {
        if named != config_digest {
            return Err(ImageError::DigestMismatch {
                what: cwhat,
                expected: named.to_string(),
                actual: config_digest.to_string(),
            });
        }
    }
    let ids = diff_ids(&config, &cwhat)?;
    if ids.len() != entry.layers.len() {
        return Err(ImageError::Invalid {
            what,
            reason: format!("{} layers but the config lists {} diff_ids", entry.layers.len(), ids.len()),
        });
    }
    let layers = entry
        .layers
        .iter()
        .zip(ids)
        .map(|(file, diff_id)| LayerRef {
            file: file.clone(),
            digest: file.strip_prefix("blobs/sha256/").and_then(|h| Sha256Digest::from_hex(h).ok()),
            size: None,
            media_type: None,
            diff_id,
        })
        .collect();
    let name = tag.or_else(|| entry.repo_tags.as_ref().and_then(|t| t.first().cloned()));
    Ok(Resolved {
        format: Format::DockerArchive,
        source: Box::new(files),
        name,
        manifest: None,
        config,
        config_digest,
        layers,
    })
}
