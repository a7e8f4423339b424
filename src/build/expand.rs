//! Variable expansion in a Containerfile word, as buildkit's shell lexer does it for the
//! instructions that expand (FROM, COPY, ADD, ENV, ARG, LABEL, EXPOSE, USER, WORKDIR, VOLUME,
//! STOPSIGNAL and their flags): `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME-word}`,
//! `${NAME:+word}`, `${NAME+word}`, `${NAME:?message}`, `${NAME?message}`; quotes removed
//! (single quotes literal, double quotes expand); the escape character makes the next
//! character literal. An unset name expands to nothing. RUN, CMD and ENTRYPOINT are not
//! expanded here: their shell does it, with the stage's ENV and ARGs in its environment.

/// Why a word cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(char),
    #[error("bad substitution: {0}")]
    BadSubstitution(String),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
}

/// Expands one word; `vars` looks a name up (`None` when unset).
pub fn word(s: &str, escape: char, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let chars: Vec<char> = s.chars().collect();
    let mut lex = Lex { chars: &chars, pos: 0, escape, vars };
    lex.until(None)
}

struct Lex<'a> {
    chars: &'a [char],
    pos: usize,
    escape: char,
    vars: &'a dyn Fn(&str) -> Option<String>,
}

impl Lex<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Reads up to `stop` (consumed) or the end.
    fn until(&mut self, stop: Option<char>) -> Result<String, ExpandError> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok(out);
            }
            if c == '\'' {
                self.pos += 1;
                out.push_str(&self.single_quoted()?);
            } else if c == '"' {
                self.pos += 1;
                out.push_str(&self.double_quoted()?);
            } else if c == '$' {
                out.push_str(&self.dollar()?);
            } else if c == self.escape {
                self.pos += 1;
                if let Some(n) = self.next() {
                    out.push(n);
                }
            } else {
                self.pos += 1;
                out.push(c);
            }
        }
        match stop {
            Some(s) => Err(ExpandError::Unterminated(s)),
            None => Ok(out),
        }
    }

    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(ExpandError::Unterminated('\'')),
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, ExpandError> {
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(ExpandError::Unterminated('"')),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) => {
                    self.pos += 1;
                    if c == self.escape {
                        match self.peek() {
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.pos += 1;
                                out.push(n);
                            }
                            _ => out.push(c),
                        }
                    } else {
                        out.push(c);
                    }
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        if let Some(c) = self.peek().filter(|c| c.is_ascii_digit()) {
            self.pos += 1;
            name.push(c);
            return name;
        }
        while let Some(c) = self.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
            self.pos += 1;
            name.push(c);
        }
        name
    }

    /// At a `$`.
    fn dollar(&mut self) -> Result<String, ExpandError> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok((self.vars)(&name).unwrap_or_default());
        }
        self.pos += 1;
        let name = self.name();
        if name.is_empty() {
            return Err(ExpandError::BadSubstitution(self.rest_of_brace()));
        }
        let value = (self.vars)(&name);
        let colon = self.peek() == Some(':');
        if colon {
            self.pos += 1;
        }
        let op = self.next();
        if op == Some('}') && !colon {
            return Ok(value.unwrap_or_default());
        }
        // With a colon an empty value counts as unset.
        let set = match &value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        match op {
            Some('-') => {
                let w = self.until(Some('}'))?;
                Ok(if set { value.unwrap_or_default() } else { w })
            }
            Some('+') => {
                let w = self.until(Some('}'))?;
                Ok(if set { w } else { String::new() })
            }
            Some('?') => {
                let w = self.until(Some('}'))?;
                match value {
                    Some(v) if set => Ok(v),
                    _ => Err(ExpandError::Required {
                        message: if w.is_empty() { "parameter not set or null".into() } else { w },
                        name,
                    }),
                }
            }
            None => Err(ExpandError::Unterminated('}')),
            Some(c) => {
                Err(ExpandError::BadSubstitution(format!("${{{name}{}{c}", if colon { ":" } else { "" })))
            }
        }
    }

    fn rest_of_brace(&mut self) -> String {
        let mut s = String::from("${");
        while let Some(c) = self.next() {
            s.push(c);
            if c == '}' {
                break;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(s: &str) -> Result<String, ExpandError> {
        let vars = |n: &str| match n {
            "A" => Some("a".to_string()),
            "E" => Some(String::new()),
            "SP" => Some("x y".to_string()),
            _ => None,
        };
        word(s, '\\', &vars)
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(ex("$A/${A}/$B/x").unwrap(), "a/a//x");
        assert_eq!(ex("${A}b $Ab").unwrap(), "ab ");
        assert_eq!(ex("$ $/ 5$").unwrap(), "$ $/ 5$");
        assert_eq!(ex("${SP}").unwrap(), "x y");
    }

    #[test]
    fn modifiers() {
        assert_eq!(ex("${B:-dflt}").unwrap(), "dflt");
        assert_eq!(ex("${E:-dflt}").unwrap(), "dflt");
        assert_eq!(ex("${E-dflt}").unwrap(), "");
        assert_eq!(ex("${A:-dflt}").unwrap(), "a");
        assert_eq!(ex("${A:+x}").unwrap(), "x");
        assert_eq!(ex("${E:+x}").unwrap(), "");
        assert_eq!(ex("${E+x}").unwrap(), "x");
        assert_eq!(ex("${B:+x}").unwrap(), "");
        assert_eq!(ex("${B:-${A}-$A}").unwrap(), "a-a");
        assert_eq!(ex("${A:?}").unwrap(), "a");
        assert!(matches!(ex("${B:?gone}"), Err(ExpandError::Required { message, .. }) if message == "gone"));
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(ex("'$A'").unwrap(), "$A");
        assert_eq!(ex("\"$A b\"").unwrap(), "a b");
        assert_eq!(ex("\\$A").unwrap(), "$A");
        assert_eq!(ex("\"\\$A \\n \\\"\"").unwrap(), "$A \\n \"");
        assert_eq!(ex("a\\ b").unwrap(), "a b");
        assert_eq!(word("`$A", '`', &|_| Some("v".into())).unwrap(), "$A");
    }

    #[test]
    fn malformed_is_an_error_never_a_panic() {
        assert_eq!(ex("'abc"), Err(ExpandError::Unterminated('\'')));
        assert_eq!(ex("\"abc"), Err(ExpandError::Unterminated('"')));
        assert_eq!(ex("${A"), Err(ExpandError::Unterminated('}')));
        assert_eq!(ex("${A:-x"), Err(ExpandError::Unterminated('}')));
        assert!(matches!(ex("${}"), Err(ExpandError::BadSubstitution(_))));
        assert!(matches!(ex("${A%x}"), Err(ExpandError::BadSubstitution(_))));
        for s in ["$", "${", "${:", "\\", "'", "\"\\", "${A:", "${A:-", "$\u{1F600}", "${\u{1F600}}"] {
            let _ = ex(s);
        }
    }
}
