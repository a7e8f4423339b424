//! Parsing `/proc/self/mountinfo` (see proc_pid_mountinfo(5)).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_id: u64,
    pub parent_id: u64,
    /// `major:minor` of the filesystem.
    pub dev: String,
    /// Root of the mount within its filesystem.
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub mount_options: String,
    /// Optional fields (`shared:N`, `master:N`, ...).
    pub optional: Vec<String>,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

/// Undo the kernel's octal escaping (`\040` space, `\011` tab, `\012` newline, `\134` backslash).
pub fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            if v <= 255 {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn path(field: &str) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

fn text(field: &str) -> String {
    String::from_utf8_lossy(&unescape(field)).into_owned()
}

/// Parse one mountinfo line; `None` when malformed.
pub fn parse_line(line: &str) -> Option<MountInfo> {
    let mut it = line.split(' ');
    let mount_id = it.next()?.parse().ok()?;
    let parent_id = it.next()?.parse().ok()?;
    let dev = it.next()?.to_string();
    let root = path(it.next()?);
    let mount_point = path(it.next()?);
    let mount_options = it.next()?.to_string();
    let mut optional = Vec::new();
    loop {
        let f = it.next()?;
        if f == "-" {
            break;
        }
        optional.push(f.to_string());
    }
    let fs_type = text(it.next()?);
    let source = text(it.next()?);
    let super_options = text(it.next().unwrap_or(""));
    Some(MountInfo {
        mount_id,
        parent_id,
        dev,
        root,
        mount_point,
        mount_options,
        optional,
        fs_type,
        source,
        super_options,
    })
}

/// Parse the whole text; malformed lines are skipped (with a trace).
pub fn parse(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let parsed = parse_line(l);
            if parsed.is_none() {
                tracing::warn!(line = l, "skipping malformed mountinfo line");
            }
            parsed
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escapes_and_optional_fields() {
        let l = r"36 35 98:0 /mnt1 /mnt/a\040dir\011tab\134x rw,noatime master:1 shared:7 - overlay overlay rw,lowerdir=/l\0401:/l2";
        let m = parse_line(l).unwrap();
        assert_eq!(m.mount_id, 36);
        assert_eq!(m.parent_id, 35);
        assert_eq!(m.dev, "98:0");
        assert_eq!(m.root, PathBuf::from("/mnt1"));
        assert_eq!(m.mount_point, PathBuf::from("/mnt/a dir\ttab\\x"));
        assert_eq!(m.optional, vec!["master:1", "shared:7"]);
        assert_eq!(m.fs_type, "overlay");
        assert_eq!(m.source, "overlay");
        assert_eq!(m.super_options, "rw,lowerdir=/l 1:/l2");
    }

    #[test]
    fn no_optional_fields_and_malformed() {
        let m = parse_line("1 0 0:1 / / rw - ext4 /dev/vda rw").unwrap();
        assert!(m.optional.is_empty());
        assert_eq!(m.mount_point, PathBuf::from("/"));
        assert!(parse_line("1 0 0:1 / / rw ext4").is_none());
        assert!(parse_line("x 0 0:1 / / rw - ext4 a b").is_none());
        assert_eq!(parse("garbage\n1 0 0:1 / / rw - ext4 /dev/vda rw\n").len(), 1);
    }

    #[test]
    fn unescape_leaves_non_octal_alone() {
        assert_eq!(unescape(r"a\b\08\040"), b"a\\b\\08 ".to_vec());
        assert_eq!(unescape(r"end\04"), b"end\\04".to_vec());
    }
}
