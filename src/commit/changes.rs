//! `docker commit --change` instructions (Dockerfile syntax) applied to an image config.

use serde_json::{json, Value};

use super::{CommitError, Result};

/// `config[field]` as a set (JSON object of empty objects, as Docker writes ExposedPorts and
/// Volumes), with `keys` added.
fn add_keys(c: &mut serde_json::Map<String, Value>, field: &str, keys: Vec<String>) {
    let m = c.entry(field).or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    if let Some(m) = m.as_object_mut() {
        for k in keys {
            m.insert(k, json!({}));
        }
    }
}

/// Split Dockerfile-style words: whitespace separated, with "double" and 'single' quotes and
/// backslash escapes.
fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                have = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => match chars.next() {
                Some(n) => {
                    cur.push(n);
                    have = true;
                }
                None => return Err("trailing backslash".into()),
            },
            (_, c) => {
                cur.push(c);
                have = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if have {
        out.push(cur);
    }
    Ok(out)
}

/// `["a","b"]` (JSON form) or None when `s` is not a JSON array of strings.
fn json_array(s: &str) -> Option<Vec<String>> {
    let t = s.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

fn key_values(args: &str, legacy_space_form: bool) -> Result<Vec<(String, String)>, String> {
    let words = split_words(args)?;
    if words.is_empty() {
        return Err("needs at least one KEY=VALUE".into());
    }
    if legacy_space_form && !words[0].contains('=') {
        // `ENV KEY value with spaces`.
        let (k, v) = args.trim().split_once(char::is_whitespace).ok_or("needs KEY=VALUE or KEY VALUE")?;
        let v = split_words(v)?.join(" ");
        return Ok(vec![(k.to_string(), v)]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{w:?} is not KEY=VALUE")),
        })
        .collect()
}

fn ports(args: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for w in split_words(args)? {
        let (p, proto) = match w.split_once('/') {
            Some((p, proto)) => (p, proto.to_ascii_lowercase()),
            None => (w.as_str(), "tcp".to_string()),
        };
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(format!("{w:?}: protocol must be tcp, udp or sctp"));
        }
        let num = |s: &str| s.parse::<u16>().map_err(|_| format!("{w:?}: bad port number {s:?}"));
        let (lo, hi) = match p.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(p)?, num(p)?),
        };
        if lo > hi {
            return Err(format!("{w:?}: empty port range"));
        }
        for port in lo..=hi {
            out.push(format!("{port}/{proto}"));
        }
    }
    if out.is_empty() {
        return Err("needs at least one port".into());
    }
    Ok(out)
}

/// Apply `docker commit --change` instructions to an image config's `config` object.
///
/// Supported: `CMD`, `ENTRYPOINT` (JSON array, or shell form → `["/bin/sh","-c",...]`; as in a
/// Dockerfile, `ENTRYPOINT` clears the inherited `Cmd` unless a `CMD` is among the changes),
/// `ENV K=V...` (or `ENV K V`), `WORKDIR` (relative to the previous one), `USER`, `LABEL k=v...`,
/// `EXPOSE port[/proto]` (and ranges), `VOLUME` (JSON array or words), `STOPSIGNAL`.
pub fn apply_changes(config: &mut Value, changes: &[String]) -> Result<()> {
    if !config.is_object() {
        *config = json!({});
    }
    let cmd_set =
        changes.iter().any(|c| c.split_whitespace().next().is_some_and(|w| w.eq_ignore_ascii_case("CMD")));
    for change in changes {
        let err = |reason: String| CommitError::Change { change: change.clone(), reason };
        let t = change.trim();
        let (instr, args) = match t.split_once(char::is_whitespace) {
            Some((i, a)) => (i, a.trim()),
            None => (t, ""),
        };
        let Some(c) = config.as_object_mut() else { return Err(err("config is not an object".into())) };
        let upper = instr.to_ascii_uppercase();
        if args.is_empty() && upper != "CMD" && upper != "ENTRYPOINT" {
            return Err(err(format!("{upper} needs an argument")));
        }
        let exec_form = |args: &str| -> Value {
            match json_array(args) {
                Some(v) => json!(v),
                None if args.is_empty() => Value::Null,
                None => json!(["/bin/sh", "-c", args]),
            }
        };
        match upper.as_str() {
            "CMD" => {
                c.insert("Cmd".into(), exec_form(args));
            }
            "ENTRYPOINT" => {
                c.insert("Entrypoint".into(), exec_form(args));
                if !cmd_set {
                    c.insert("Cmd".into(), Value::Null);
                }
            }
            "ENV" => {
                let kvs = key_values(args, true).map_err(err)?;
                let env = c.entry("Env").or_insert_with(|| json!([]));
                if !env.is_array() {
                    *env = json!([]);
                }
                let Some(list) = env.as_array_mut() else { return Err(err("Env is not an array".into())) };
                for (k, v) in kvs {
                    let entry = Value::String(format!("{k}={v}"));
                    let prefix = format!("{k}=");
                    match list
                        .iter_mut()
                        .find(|e| e.as_str().is_some_and(|s| s.starts_with(&prefix) || s == k))
                    {
                        Some(slot) => *slot = entry,
                        None => list.push(entry),
                    }
                }
            }
            "LABEL" => {
                let kvs = key_values(args, false).map_err(err)?;
                let labels = c.entry("Labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                if let Some(m) = labels.as_object_mut() {
                    for (k, v) in kvs {
                        m.insert(k, Value::String(v));
                    }
                }
            }
            "WORKDIR" => {
                let w = split_words(args).map_err(err)?.join(" ");
                let prev = c.get("WorkingDir").and_then(|v| v.as_str()).unwrap_or("/").to_string();
                let joined =
                    if w.starts_with('/') { w } else { format!("{}/{}", prev.trim_end_matches('/'), w) };
                c.insert("WorkingDir".into(), Value::String(joined));
            }
            "USER" => {
                let w = split_words(args).map_err(err)?;
                if w.len() != 1 {
                    return Err(err("USER takes one argument: USER[:GROUP]".into()));
                }
                c.insert("User".into(), Value::String(w[0].clone()));
            }
            "EXPOSE" => {
                let ps = ports(args).map_err(err)?;
                add_keys(c, "ExposedPorts", ps);
            }
            "VOLUME" => {
                let vols = match json_array(args) {
                    Some(v) => v,
                    None => split_words(args).map_err(err)?,
                };
                if vols.is_empty() || vols.iter().any(|v| v.is_empty()) {
                    return Err(err("VOLUME needs non-empty paths".into()));
                }
                add_keys(c, "Volumes", vols);
            }
            "STOPSIGNAL" => {
                let w = split_words(args).map_err(err)?;
                if w.len() != 1 {
                    return Err(err("STOPSIGNAL takes one signal name or number".into()));
                }
                c.insert("StopSignal".into(), Value::String(w[0].clone()));
            }
            "" => return Err(err("empty instruction".into())),
            "RUN" | "COPY" | "ADD" | "FROM" | "ARG" | "ONBUILD" | "HEALTHCHECK" | "SHELL" | "MAINTAINER" => {
                return Err(err(format!("{upper} is not supported by commit")));
            }
            _ => {
                return Err(err(format!(
                    "unknown instruction {instr:?}: expected CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, \
                     EXPOSE, VOLUME or STOPSIGNAL"
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(changes: &[&str]) -> Result<Value> {
        let mut c = json!({ "Cmd": ["sh"], "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/srv", "Unknown": 7 });
        apply_changes(&mut c, &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        Ok(c)
    }

    #[test]
    fn changes() {
        let c = changed(&[
            r#"CMD ["nginx", "-g", "daemon off;"]"#,
            "ENV A=2 B=\"two words\"",
            "ENV C some value",
            "WORKDIR app",
            "USER 1000:1000",
            "LABEL org.example=yes other='x y'",
            "EXPOSE 80 53/udp 8000-8001",
            "VOLUME /data /logs",
            "stopsignal SIGQUIT",
        ])
        .unwrap();
        assert_eq!(
            c,
            json!({
                "Cmd": ["nginx", "-g", "daemon off;"],
                "Env": ["PATH=/bin", "A=2", "B=two words", "C=some value"],
                "WorkingDir": "/srv/app",
                "User": "1000:1000",
                "Labels": { "org.example": "yes", "other": "x y" },
                "ExposedPorts": { "80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {} },
                "Volumes": { "/data": {}, "/logs": {} },
                "StopSignal": "SIGQUIT",
                "Unknown": 7,
            })
        );
        // Shell form; ENTRYPOINT resets an inherited CMD, but not one set alongside.
        let c = changed(&["ENTRYPOINT echo hi"]).unwrap();
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(c["Cmd"], Value::Null);
        let c = changed(&["ENTRYPOINT [\"/init\"]", "CMD run"]).unwrap();
        assert_eq!(c["Entrypoint"], json!(["/init"]));
        assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "run"]));
        let c = changed(&["VOLUME [\"/a b\"]", "WORKDIR /abs"]).unwrap();
        assert_eq!(c["Volumes"], json!({"/a b": {}}));
        assert_eq!(c["WorkingDir"], "/abs");
        for bad in [
            "FROBNICATE x",
            "RUN make",
            "EXPOSE 99999",
            "EXPOSE 80/icmp",
            "ENV =x",
            "LABEL novalue",
            "USER",
            "ENV A=\"open",
        ] {
            let e = changed(&[bad]).unwrap_err();
            assert!(matches!(&e, CommitError::Change { change, .. } if change == bad), "{bad}: {e}");
        }
        let e = changed(&["FROBNICATE x"]).unwrap_err().to_string();
        assert!(e.contains("unknown instruction") && e.contains("FROBNICATE"), "{e}");
    }
}
