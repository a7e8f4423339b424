//! strata-fuse's read log (`-o readlog=FILE`), read back: per lower layer, the regular files
//! the container opened for reading, each once, in the order of their first open.
//!
//! strata-fuse writes one line per file (its `readlog` module): the lower's index in
//! `lowerdir=` (0: the top one), a tab, the path in that layer with `\` written `\\` and bytes
//! below 0x20 and 0x7f written `\NNN` (octal). A line without its newline (a daemon killed
//! while writing it) is not a line.

/// The files of the log, in its order: (lower index, path in the layer).
pub fn parse(log: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let complete = log.iter().rposition(|&b| b == b'\n').map_or(&log[..0], |end| &log[..end]);
    for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match parse_line(line) {
            Some(entry) => out.push(entry),
            None => {
                tracing::warn!(line = %String::from_utf8_lossy(line), "read log: a malformed line, skipped")
            }
        }
    }
    out
}

fn parse_line(line: &[u8]) -> Option<(usize, Vec<u8>)> {
    let tab = line.iter().position(|&b| b == b'\t')?;
    let lower = std::str::from_utf8(&line[..tab]).ok()?.parse().ok()?;
    let mut path = Vec::with_capacity(line.len() - tab);
    let mut rest = &line[tab + 1..];
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            path.push(b);
            continue;
        }
        match rest {
            [b'\\', tail @ ..] => {
                path.push(b'\\');
                rest = tail;
            }
            [d0, d1, d2, tail @ ..] if [*d0, *d1, *d2].iter().all(u8::is_ascii_digit) => {
                let digit = |d: u8| (d < b'8').then(|| u32::from(d - b'0'));
                let v = digit(*d0)? * 64 + digit(*d1)? * 8 + digit(*d2)?;
                path.push(u8::try_from(v).ok()?);
                rest = tail;
            }
            _ => return None,
        }
    }
    (!path.is_empty()).then_some((lower, path))
}

/// The log's files by image layer, bottom first (`layers` of them; lower 0 is the top one, the
/// image's last layer), each layer's in the log's order. Lowers beyond the image's layers and
/// paths that are not UTF-8 (no seekable layer can name them) are left out.
pub fn by_layer(entries: &[(usize, Vec<u8>)], layers: usize) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new(); layers];
    for (lower, path) in entries {
        let (Some(i), Ok(p)) = (layers.checked_sub(lower + 1), String::from_utf8(path.clone())) else {
            tracing::warn!(lower, path = %String::from_utf8_lossy(path), "read log: a file outside the image's layers, left out");
            continue;
        };
        out[i].push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What strata-fuse writes (its own unit test writes the same escapes) reads back; a cut
    /// last line and malformed lines are left out.
    #[test]
    fn lines_read_back() {
        let log = b"1\td/x\n0\ty\n12\ta\\\\b\\012c\\011d\\177\xc3\xa9\nbad\n0\tbad\\9\n0\t\n2\tcut";
        assert_eq!(
            parse(log),
            vec![(1, b"d/x".to_vec()), (0, b"y".to_vec()), (12, b"a\\b\nc\td\x7f\xc3\xa9".to_vec())]
        );
        assert!(parse(b"").is_empty());
    }

    /// Lower 0 is the image's top layer; a lower the image does not have is left out.
    #[test]
    fn lowers_map_to_layers_bottom_first() {
        let entries =
            vec![(1, b"bin/sh".to_vec()), (0, b"a".to_vec()), (3, b"x".to_vec()), (0, b"b".to_vec())];
        assert_eq!(
            by_layer(&entries, 2),
            vec![vec!["bin/sh".to_string()], vec!["a".to_string(), "b".to_string()]]
        );
    }
}
