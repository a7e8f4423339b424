//! `/etc/subuid` and `/etc/subgid`: the subordinate id ranges a user may map (`NAME:START:COUNT`
//! or `UID:START:COUNT` per line, as shadow's `newuidmap` reads them).

use std::path::Path;

use super::UserNsError;

/// A subordinate range: `count` host ids from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIdRange {
    pub start: u32,
    pub count: u32,
}

/// The ranges of the user named `name` (or numbered `id`) in the text of a subid file, in file
/// order. Comments, blank and malformed lines are skipped; empty ranges too.
pub fn parse_subid(text: &str, name: &str, id: u32) -> Vec<SubIdRange> {
    let id = id.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.trim().splitn(3, ':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            if who != name && who != id {
                return None;
            }
            let r = SubIdRange { start: start.parse().ok()?, count: count.parse().ok()? };
            (r.count > 0).then_some(r)
        })
        .collect()
}

/// The user's ranges in `file` (`/etc/subuid` or `/etc/subgid`); none when the file is missing.
pub fn subordinate_ranges(file: &Path, name: &str, id: u32) -> Result<Vec<SubIdRange>, UserNsError> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(parse_subid(&text, name, id)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(source) => Err(UserNsError::Io { path: file.to_path_buf(), source }),
    }
}

/// The line a user without subordinate ids is told to add (podman's and useradd's default
/// size: 65536 ids), at a start past every range the file already gives out.
pub fn suggested_line(text: &str, name: &str) -> String {
    let end = text
        .lines()
        .filter_map(|l| {
            let mut f = l.trim().splitn(3, ':');
            let (_, start, count) = (f.next()?, f.next()?, f.next()?);
            Some(u64::from(start.parse::<u32>().ok()?) + u64::from(count.parse::<u32>().ok()?))
        })
        .max()
        .unwrap_or(100_000)
        .max(100_000);
    format!("{name}:{end}:65536")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let text = "# comment\nalice:100000:65536\n1001:165536:65536\nbob:x:1\nalice:300000:10\ncarol:1:0\n";
        assert_eq!(
            parse_subid(text, "alice", 1000),
            vec![SubIdRange { start: 100000, count: 65536 }, SubIdRange { start: 300000, count: 10 }]
        );
        assert_eq!(parse_subid(text, "dave", 1001), vec![SubIdRange { start: 165536, count: 65536 }]);
        assert!(parse_subid(text, "bob", 5).is_empty(), "malformed");
        assert!(parse_subid(text, "carol", 6).is_empty(), "empty range");
        assert_eq!(suggested_line(text, "erin"), "erin:300010:65536");
        assert_eq!(suggested_line("", "erin"), "erin:100000:65536");
    }
}
