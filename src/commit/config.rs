//! The new image config, derived from the parent's: the layer's diff_id and a history entry
//! added, `--author`/`--change` applied, unknown fields kept.

use serde_json::{json, Map, Value};

use super::changes::apply_changes;
use super::{CommitError, CommitOptions, Result};
use crate::digest::Sha256Digest;

pub use crate::time::rfc3339;

/// Build the new image config from the parent's: unknown fields are kept.
pub fn derive_config(
    parent: &[u8],
    diff_id: &Sha256Digest,
    created: &str,
    opts: &CommitOptions,
    image: &str,
) -> Result<Value> {
    let bad = |reason: String| CommitError::BadImage { image: image.to_string(), reason };
    let mut cfg: Value = serde_json::from_slice(parent)
        .map_err(|source| CommitError::Config { image: image.to_string(), source })?;
    let obj = cfg.as_object_mut().ok_or_else(|| bad("config is not a JSON object".into()))?;
    let rootfs = obj.entry("rootfs").or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    let ids = rootfs
        .as_object_mut()
        .ok_or_else(|| bad("config rootfs is not an object".into()))?
        .entry("diff_ids")
        .or_insert_with(|| json!([]));
    ids.as_array_mut()
        .ok_or_else(|| bad("config rootfs.diff_ids is not an array".into()))?
        .push(Value::String(diff_id.to_string()));
    let mut h = Map::new();
    h.insert("created".into(), created.into());
    h.insert("created_by".into(), "strata commit".into());
    if let Some(a) = &opts.author {
        h.insert("author".into(), a.as_str().into());
    }
    if let Some(c) = &opts.message {
        h.insert("comment".into(), c.as_str().into());
    }
    let hist = obj.entry("history").or_insert_with(|| json!([]));
    if !hist.is_array() {
        *hist = json!([]);
    }
    if let Some(a) = hist.as_array_mut() {
        a.push(Value::Object(h));
    }
    obj.insert("created".into(), created.into());
    match &opts.author {
        Some(a) => {
            obj.insert("author".into(), a.as_str().into());
        }
        None => {
            obj.remove("author");
        }
    }
    let cc = obj.entry("config").or_insert_with(|| json!({}));
    if !cc.is_object() {
        *cc = json!({});
    }
    apply_changes(cc, &opts.changes)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_derivation() {
        let parent = br#"{"architecture":"amd64","os":"linux","x-extra":{"k":1},
            "config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},
            "history":[{"created_by":"base"}],"author":"old"}"#;
        let d = Sha256Digest::from_hex(&"b".repeat(64)).unwrap();
        let opts = CommitOptions {
            author: Some("me".into()),
            message: Some("msg".into()),
            changes: vec!["ENV X=1".into()],
            ..Default::default()
        };
        let c = derive_config(parent, &d, &rfc3339(0), &opts, "p").unwrap();
        assert_eq!(c["rootfs"]["diff_ids"], json!(["sha256:aa", d.to_string()]));
        assert_eq!(c["x-extra"], json!({"k": 1}));
        assert_eq!(c["created"], "1970-01-01T00:00:00Z");
        assert_eq!(c["author"], "me");
        assert_eq!(c["config"], json!({"Cmd": ["sh"], "Env": ["X=1"]}));
        assert_eq!(
            c["history"][1],
            json!({"created": "1970-01-01T00:00:00Z", "created_by": "strata commit", "author": "me", "comment": "msg"})
        );
        assert!(derive_config(b"[]", &d, "t", &opts, "p").is_err());
    }
}
