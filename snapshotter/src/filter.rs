//! containerd's filter syntax (`github.com/containerd/containerd/filters`) for List: each filter
//! string is a `,`-separated list of selectors that must all match, and a snapshot is listed when
//! any filter string matches (none: every snapshot). A selector is `FIELDPATH[OP VALUE]` with
//! `OP` one of `==`, `!=`, `~=` (the value is a regular expression that must match somewhere in
//! the field, as Go's `regexp.MatchString`); without an operator it tests that the field is present. Fields and
//! values may be quoted with `"`, and a value also with `|` or `/` (containerd's alternative
//! quotes). The snapshot fields are `name`, `parent`, `kind` and `labels.KEY`. As containerd's
//! snapshot storage adaptor has it, `name`, `parent` and `kind` are always present (`parent==""`
//! matches a snapshot without one), and `!=` compares a missing field as the empty string.

use strata::snapshot::Info;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("filter {input:?}: {msg} at byte {pos}")]
pub struct FilterError {
    pub input: String,
    pub pos: usize,
    pub msg: String,
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal,
    NotEqual,
    Matches(regex::Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
    value: String,
}

/// Parsed filters: any of the alternatives, each all of its selectors.
#[derive(Debug, Clone, Default)]
pub struct Filters(Vec<Vec<Selector>>);

impl Filters {
    pub fn parse<S: AsRef<str>>(filters: &[S]) -> Result<Filters, FilterError> {
        let mut out = Vec::new();
        for f in filters {
            let f = f.as_ref();
            if f.is_empty() {
                // containerd: the empty filter matches everything.
                out.push(Vec::new());
                continue;
            }
            out.push(Parser { input: f, pos: 0 }.selectors()?);
        }
        Ok(Filters(out))
    }

    pub fn matches(&self, info: &Info) -> bool {
        self.0.is_empty() || self.0.iter().any(|all| all.iter().all(|s| s.matches(info)))
    }
}

impl Selector {
    fn matches(&self, info: &Info) -> bool {
        let field: Option<String> = match self.path.as_slice() {
            [f] if f == "name" => Some(info.name.clone()),
            [f] if f == "parent" => Some(info.parent.clone().unwrap_or_default()),
            [f] if f == "kind" => Some(info.kind.as_str().to_string()),
            [f, rest @ ..] if f == "labels" && !rest.is_empty() => info.labels.get(&rest.join(".")).cloned(),
            _ => None,
        };
        match &self.op {
            Op::Present => field.is_some(),
            Op::Equal => field.is_some_and(|v| v == self.value),
            Op::NotEqual => field.unwrap_or_default() != self.value,
            Op::Matches(re) => field.is_some_and(|v| re.is_match(&v)),
        }
    }
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, msg: impl Into<String>) -> FilterError {
        FilterError { input: self.input.to_string(), pos: self.pos, msg: msg.into() }
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if !c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    fn selectors(&mut self) -> Result<Vec<Selector>, FilterError> {
        let mut all = vec![self.selector()?];
        loop {
            self.skip_space();
            match self.peek() {
                None => return Ok(all),
                Some(',') => {
                    self.pos += 1;
                    all.push(self.selector()?);
                }
                Some(c) => return Err(self.err(format!("unexpected {c:?}"))),
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, FilterError> {
        let mut path = vec![self.field()?];
        loop {
            self.skip_space();
            if self.peek() == Some('.') {
                self.pos += 1;
                path.push(self.field()?);
            } else {
                break;
            }
        }
        self.skip_space();
        let rest = &self.input[self.pos..];
        let token = ["==", "!=", "~="].into_iter().find(|t| rest.starts_with(t));
        let Some(token) = token else {
            if rest.is_empty() || rest.starts_with(',') {
                return Ok(Selector { path, op: Op::Present, value: String::new() });
            }
            return Err(self.err("expected an operator (==, !=, ~=) or ','"));
        };
        self.pos += 2;
        self.skip_space();
        let start = self.pos;
        let value = self.value()?;
        let op = match token {
            "==" => Op::Equal,
            "!=" => Op::NotEqual,
            _ => Op::Matches(regex::Regex::new(&value).map_err(|e| FilterError {
                input: self.input.to_string(),
                pos: start,
                msg: format!("bad regular expression: {e}"),
            })?),
        };
        Ok(Selector { path, op, value })
    }

    /// `"quoted"` or `[A-Za-z][A-Za-z0-9_]*`.
    fn field(&mut self) -> Result<String, FilterError> {
        self.skip_space();
        match self.peek() {
            Some('"') => self.quoted('"'),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    if !(c.is_ascii_alphanumeric() || c == '_') {
                        break;
                    }
                    self.pos += 1;
                }
                Ok(self.input[start..self.pos].to_string())
            }
            _ => Err(self.err("expected a field name")),
        }
    }

    /// A quoted value, or everything up to a space or `,`.
    fn value(&mut self) -> Result<String, FilterError> {
        match self.peek() {
            Some(q @ ('"' | '|' | '/')) => self.quoted(q),
            _ => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    if c.is_whitespace() || c == ',' {
                        break;
                    }
                    self.pos += c.len_utf8();
                }
                if start == self.pos {
                    return Err(self.err("expected a value"));
                }
                Ok(self.input[start..self.pos].to_string())
            }
        }
    }

    /// Go string syntax with quote `q` (the common escapes).
    fn quoted(&mut self, q: char) -> Result<String, FilterError> {
        self.pos += q.len_utf8();
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated quoted string"));
            };
            self.pos += c.len_utf8();
            if c == q {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some(e) = self.peek() else {
                return Err(self.err("unterminated escape"));
            };
            self.pos += e.len_utf8();
            out.push(match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '\\' => '\\',
                e if e == q => e,
                e => return Err(self.err(format!("unsupported escape \\{e}"))),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use strata::snapshot::Kind;

    fn info(name: &str, parent: Option<&str>, kind: Kind, labels: &[(&str, &str)]) -> Info {
        Info {
            name: name.into(),
            parent: parent.map(Into::into),
            kind,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            created: 0,
            updated: 0,
        }
    }

    fn names(filters: &[&str], all: &[Info]) -> Vec<String> {
        let f = Filters::parse(filters).unwrap();
        all.iter().filter(|i| f.matches(i)).map(|i| i.name.clone()).collect()
    }

    #[test]
    fn containerd_walk_cases() {
        let gc = ("containerd.io/gc.root", "check-walk");
        let all = vec![
            info("a-np", None, Kind::Active, &[gc]),
            info("p", None, Kind::Committed, &[gc]),
            info("a", Some("p"), Kind::Active, &[gc]),
            info("v", Some("p"), Kind::View, &[gc]),
            info("p-wl", None, Kind::Committed, &[gc, ("l", "1")]),
            info("a-wl", Some("p-wl"), Kind::Active, &[gc, ("l", "2")]),
            info("v-wl", Some("p-wl"), Kind::View, &[gc, ("l", "3")]),
            info("a-np-wl", None, Kind::Active, &[gc, ("l", "2")]),
            info("other", None, Kind::Active, &[]),
        ];
        assert_eq!(names(&[r#"labels."containerd.io/gc.root"==check-walk"#], &all).len(), 8);
        assert_eq!(
            names(&[r#"kind==active,labels."containerd.io/gc.root"==check-walk"#], &all),
            ["a-np", "a", "a-wl", "a-np-wl"]
        );
        assert_eq!(names(&["name==p", "name==a-np-wl"], &all), ["p", "a-np-wl"]);
        assert_eq!(names(&["name==a-wl,labels.l"], &all), ["a-wl"]);
        assert_eq!(names(&["parent==p"], &all), ["a", "v"]);
        assert_eq!(
            names(&[r#"parent!="",labels."containerd.io/gc.root"==check-walk"#], &all),
            ["a", "v", "a-wl", "v-wl"]
        );
        assert_eq!(names(&["labels.l"], &all), ["p-wl", "a-wl", "v-wl", "a-np-wl"]);
        assert_eq!(names(&["labels.l==2"], &all), ["a-wl", "a-np-wl"]);
        assert_eq!(names(&["labels.l==|2|"], &all), ["a-wl", "a-np-wl"]);
        // What containerd's metadata store asks after a Prepare answered `already exists`.
        assert_eq!(names(&[r#"labels."containerd.io/gc.root"==check-walk,parent=="""#], &all).len(), 4);
        assert_eq!(names(&["labels.l!=2"], &all).len(), 7, "a missing label is not 2");
        assert_eq!(names(&[" kind == view "], &all), ["v", "v-wl"]);
        assert_eq!(names(&[], &all).len(), 9);
        assert_eq!(names(&[""], &all).len(), 9);
        // ~= matches a regular expression anywhere in the field, as Go's MatchString.
        assert_eq!(names(&["name~=wl"], &all), ["p-wl", "a-wl", "v-wl", "a-np-wl"]);
        assert_eq!(names(&["name~=^a-"], &all), ["a-np", "a-wl", "a-np-wl"]);
        assert_eq!(names(&["kind~=/^(view|committed)$/"], &all), ["p", "v", "p-wl", "v-wl"]);
        assert_eq!(names(&["labels.l~=[13]"], &all), ["p-wl", "v-wl"]);
        assert!(names(&["labels.missing~=.*"], &all).is_empty(), "a missing field never matches");
    }

    #[test]
    fn malformed_filters_are_errors() {
        for bad in ["==x", "name==", "name=x", "name==\"x", "name==a b", "name~=(", "name~=a[", "name,,"] {
            let e = Filters::parse(&[bad]).expect_err(bad);
            assert_eq!(e.input, bad);
        }
    }
}
