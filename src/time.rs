//! Time as strata shows and stores it: Unix seconds, RFC 3339 (UTC, whole seconds) and docker's
//! "2 hours ago". The one place dates are formatted or parsed.

/// Now, in Unix seconds (0 if the clock is before 1970).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 (UTC, whole seconds) of a Unix time.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

/// RFC 3339 (UTC) of a time to the nanosecond (`nsec` in `0..1e9`), as Go's `RFC3339Nano`
/// writes it: the fraction without trailing zeros, none when it is zero.
pub fn rfc3339_exact(secs: i64, nsec: u32) -> String {
    let whole = rfc3339(secs);
    if nsec == 0 || nsec >= 1_000_000_000 {
        return whole;
    }
    let frac = format!("{nsec:09}");
    format!("{}.{}Z", whole.trim_end_matches('Z'), frac.trim_end_matches('0'))
}

/// Unix seconds of an RFC 3339 time (`2024-05-01T12:00:00Z`, `...T12:00:00.123456789+02:00`),
/// as image configs write `created`; fractions of a second are dropped. `None` when it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    parse_rfc3339_exact(s).map(|(secs, _)| secs)
}

/// [`parse_rfc3339`] keeping the fraction: (Unix seconds, nanoseconds `0..1e9`), the seconds
/// rounded down (`1969-12-31T23:59:59.5Z` is `(-1, 500_000_000)`), as a `timespec` has it. Digits
/// past the ninth are dropped. A seekable layer's TOC carries file times so (containers/storage
/// writes Go's `RFC3339Nano`).
pub fn parse_rfc3339_exact(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d, h, mi, sec) =
        (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(c - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    // Howard Hinnant's days_from_civil.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if mo > 2 { mo - 3 } else { mo + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86400 + h * 3600 + mi * 60 + sec - offset, nanos))
}

/// Unix seconds of an HTTP date in its one current form (RFC 9110's IMF-fixdate,
/// `Sun, 06 Nov 1994 08:49:37 GMT`), as `Last-Modified` carries it. `None` otherwise.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let mut w = s.split_whitespace();
    let (_day, d, mon, y, hms, gmt) = (w.next()?, w.next()?, w.next()?, w.next()?, w.next()?, w.next()?);
    if gmt != "GMT" || w.next().is_some() || d.len() != 2 || y.len() != 4 || hms.len() != 8 {
        return None;
    }
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let m = MONTHS.iter().position(|x| *x == mon)? + 1;
    parse_rfc3339(&format!("{y}-{m:02}-{d}T{hms}Z"))
}

/// How long ago `secs` was, as docker says it ("2 hours ago", "About a minute ago").
pub fn ago(secs: i64, now: i64) -> String {
    let d = (now - secs).max(0);
    let s = match d {
        0 => return "Less than a second ago".into(),
        1 => "1 second".into(),
        2..=59 => format!("{d} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", d / 60),
        3600..=7199 => "About an hour".into(),
        _ if d < 48 * 3600 => format!("{} hours", d / 3600),
        _ if d < 7 * 2 * 86400 => format!("{} days", d / 86400),
        _ if d < 30 * 3 * 86400 => format!("{} weeks", d / (7 * 86400)),
        _ if d < 365 * 2 * 86400 => format!("{} months", d / (30 * 86400)),
        _ => format!("{} years", d / (365 * 86400)),
    };
    format!("{s} ago")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT"), Some(1_700_000_000));
        for bad in
            ["", "Tue, 14 Nov 2023 22:13:20", "Tue, 14 Foo 2023 22:13:20 GMT", "Tue, 1 Nov 2023 22:13:20 GMT"]
        {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        for t in [0, 951_782_400, 1_700_000_000, -1, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{t}");
        }
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.123456789Z"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("2023-11-15T00:13:20+02:00"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("2023-11-14T20:13:20.5-02:00"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339_exact("2023-11-14T22:13:20.123456789Z"), Some((1_700_000_000, 123_456_789)));
        assert_eq!(parse_rfc3339_exact("2023-11-14T22:13:20.5Z"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(parse_rfc3339_exact("2023-11-14T22:13:20.0000000019Z"), Some((1_700_000_000, 1)));
        assert_eq!(parse_rfc3339_exact("1969-07-20T20:17:40Z"), Some((-14_182_940, 0)));
        assert_eq!(parse_rfc3339_exact("1969-12-31T23:59:59.25Z"), Some((-1, 250_000_000)));
        assert_eq!(rfc3339_exact(981_173_106, 123_456_789), "2001-02-03T04:05:06.123456789Z");
        assert_eq!(rfc3339_exact(-1, 250_000_000), "1969-12-31T23:59:59.25Z");
        assert_eq!(rfc3339_exact(0, 0), "1970-01-01T00:00:00Z");
        for (s, n) in [(1_700_000_000, 1), (-14_182_940, 0), (5, 500_000_000)] {
            assert_eq!(parse_rfc3339_exact(&rfc3339_exact(s, n)), Some((s, n)));
        }
        for bad in [
            "",
            "2023-11-14",
            "2023-13-14T22:13:20Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20Zjunk",
            "２０23-11-14T22:13:20Z",
            "2023-11-14T22:13:20+0200",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ago_as_docker() {
        let now = 1_000_000_000;
        for (d, want) in [
            (0, "Less than a second ago"),
            (1, "1 second ago"),
            (30, "30 seconds ago"),
            (90, "About a minute ago"),
            (600, "10 minutes ago"),
            (3700, "About an hour ago"),
            (7200, "2 hours ago"),
            (3 * 86400, "3 days ago"),
            (21 * 86400, "3 weeks ago"),
            (200 * 86400, "6 months ago"),
            (800 * 86400, "2 years ago"),
            (-50, "Less than a second ago"),
        ] {
            assert_eq!(ago(now - d, now), want, "{d}");
        }
    }
}
