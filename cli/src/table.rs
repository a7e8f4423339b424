//! Tables as docker prints them: a header row, columns as wide as their widest cell, three
//! spaces between columns, no padding after the last. And `--format`: a Go-template-like line
//! per row (`{{.ID}}\t{{.Repository}}`, `table ...` for a header, `{{json .}}` for the row as JSON).

use std::fmt::Write as _;

/// One row's cells, by the field names `--format` knows them as (`ID`, `Repository`, ...).
pub type Row = Vec<(&'static str, String)>;

/// Render `rows` as a table under `header` (the column titles, in the order of each row's cells).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i + 1 < width.len() {
                let _ = write!(l, "{c:<w$}   ", w = width[i]);
            } else {
                l.push_str(c);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// A `--format` template that does not parse, or names a field rows do not have.
#[derive(Debug, thiserror::Error)]
#[error("--format {template:?}: {reason}")]
pub struct FormatError {
    template: String,
    reason: String,
}

enum Piece {
    Text(String),
    Field(String),
    Json,
}

/// A parsed `--format` template: text with `{{.Field}}` and `{{json .}}` placeholders; `\t` and
/// `\n` are a tab and a newline; a leading `table ` also prints a header row of the field names
/// (as docker does).
pub struct Template {
    pieces: Vec<Piece>,
    table: bool,
    titles: Vec<(&'static str, &'static str)>,
}

impl Template {
    /// Parse `template`; `known` are the field names rows have, for the error message.
    pub fn parse(template: &str, known: &[&str]) -> Result<Template, FormatError> {
        let err = |reason: String| FormatError { template: template.to_string(), reason };
        let (table, body) = match template.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start())
            }
            _ => (false, template),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut pieces = Vec::new();
        let mut rest = body.as_str();
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let close = rest[open..].find("}}").ok_or_else(|| err("unclosed {{".into()))? + open;
            let inner = rest[open + 2..close].trim();
            if inner == "json ." {
                pieces.push(Piece::Json);
            } else if let Some(field) = inner.strip_prefix('.').filter(|f| known.contains(f)) {
                pieces.push(Piece::Field(field.to_string()));
            } else {
                return Err(err(format!(
                    "{{{{{inner}}}}}: fields are {}, or {{{{json .}}}}",
                    known.iter().map(|k| format!("{{{{.{k}}}}}")).collect::<Vec<_>>().join(", ")
                )));
            }
            rest = &rest[close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template { pieces, table, titles: Vec::new() })
    }

    /// Title `field`'s column `title` instead of its name in capitals (`ID`: `IMAGE ID`).
    pub fn title(mut self, field: &'static str, title: &'static str) -> Template {
        self.titles.push((field, title));
        self
    }

    /// The output for `rows`, each with its JSON form for `{{json .}}`. A `table` template lays
    /// its fields out as [`table`] columns under a header.
    pub fn render(&self, rows: &[(Row, String)]) -> String {
        let value =
            |row: &Row, f: &str| row.iter().find(|(k, _)| *k == f).map_or(String::new(), |(_, v)| v.clone());
        if self.table {
            let fields: Vec<&str> = self
                .pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::Field(f) => Some(f.as_str()),
                    _ => None,
                })
                .collect();
            let header: Vec<String> = fields
                .iter()
                .map(|f| {
                    self.titles
                        .iter()
                        .find(|(k, _)| k == f)
                        .map_or_else(|| header_of(f), |(_, t)| t.to_string())
                })
                .collect();
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            let cells: Vec<Vec<String>> =
                rows.iter().map(|(row, _)| fields.iter().map(|f| value(row, f)).collect()).collect();
            return table(&header, &cells);
        }
        let mut out = String::new();
        for (row, json) in rows {
            for p in &self.pieces {
                match p {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Json => out.push_str(json),
                    Piece::Field(f) => out.push_str(&value(row, f)),
                }
            }
            out.push('\n');
        }
        out
    }
}

/// `CreatedSince` -> `CREATED SINCE`, as docker titles a template's columns.
fn header_of(field: &str) -> String {
    let mut h = String::new();
    let mut lower_before = false;
    for c in field.chars() {
        if lower_before && c.is_uppercase() {
            h.push(' ');
        }
        lower_before = c.is_lowercase();
        h.extend(c.to_uppercase());
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_content() {
        let t = table(
            &["REPOSITORY", "TAG", "SIZE"],
            &[
                vec!["a".into(), "latest".into(), "1 MB".into()],
                vec!["longer/name".into(), "v1".into(), "".into()],
            ],
        );
        assert_eq!(t, "REPOSITORY    TAG      SIZE\na             latest   1 MB\nlonger/name   v1\n");
    }

    #[test]
    fn templates() {
        let known = ["ID", "Repository", "CreatedSince"];
        let rows = vec![
            (vec![("ID", "abc".to_string()), ("Repository", "busybox".into())], "{\"id\":1}".to_string()),
            (vec![("ID", "def".to_string()), ("Repository", "app".into())], "{\"id\":2}".to_string()),
        ];
        let t = Template::parse("{{.ID}}\\t{{ .Repository }}", &known).unwrap();
        assert_eq!(t.render(&rows), "abc\tbusybox\ndef\tapp\n");
        let t = Template::parse("{{json .}}", &known).unwrap();
        assert_eq!(t.render(&rows), "{\"id\":1}\n{\"id\":2}\n");
        let e = Template::parse("{{.Nope}}", &known).err().unwrap().to_string();
        assert!(e.contains("{{.Nope}}") && e.contains("{{.ID}}"), "{e}");
        assert!(Template::parse("{{.ID", &known).is_err());
        assert_eq!(header_of("CreatedSince"), "CREATED SINCE");
        let t = Template::parse("table {{.Repository}}\t{{.ID}}", &known).unwrap();
        assert_eq!(t.render(&rows), "REPOSITORY   ID\nbusybox      abc\napp          def\n");
    }
}
