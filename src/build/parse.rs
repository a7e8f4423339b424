//! The Containerfile grammar: bytes in, a list of instructions out, each with the line it starts
//! on. Nothing is expanded here (ARG/ENV values are known only while a stage is built, see
//! `expand.rs`); words keep their quotes so expansion can tell quoted from bare text.
//!
//! The rules are buildkit's, as buildah 1.28 applies them:
//! - parser directives (`# escape=`, `# syntax=`, `# check=`) only before anything else: the first
//!   line that is not a directive (a comment, a blank line, an instruction) ends them; an
//!   unknown directive is a comment; `escape` twice is an error.
//! - a line whose first non-blank character is `#` is a comment, also between continued lines;
//!   blank lines inside a continuation are skipped.
//! - the escape character (`\` or `` ` ``) at the end of a line, trailing blanks allowed,
//!   continues the instruction on the next line (the escape removed, no newline kept).
//! - the keyword is case-insensitive; flags (`--name=value`) come first in the arguments.
//! - RUN, CMD, ENTRYPOINT, SHELL, COPY, ADD and VOLUME take a JSON array of strings (the exec
//!   form); arguments that do not parse as one are the shell form, as written.
//! - RUN, COPY and ADD take heredocs: `<<NAME` (`<<-NAME` strips leading tabs, a quoted name turns
//!   expansion off) whose bodies follow the instruction, each ended by a line `NAME`.
//!
//! Any bytes are accepted as input: invalid UTF-8 is replaced, never a panic; every error names
//! the file and the line.

use std::fmt;
use std::path::{Path, PathBuf};

/// The error of a Containerfile that cannot be read as one.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {problem}", file.display())]
pub struct ParseError {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    pub problem: Problem,
}

impl ParseError {
    pub fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::InvalidArgument
    }
}

/// What is wrong at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    UnknownInstruction(String),
    NoArguments(Keyword),
    UnknownFlag {
        keyword: Keyword,
        flag: String,
    },
    FlagNeedsValue(String),
    EscapeTwice,
    BadEscape(String),
    UnterminatedHeredoc(String),
    NeedsJson(Keyword),
    /// Free text: the form an instruction's arguments must take.
    Syntax(String),
    NoFrom,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnknownInstruction(w) => write!(f, "unknown instruction: {w}"),
            Problem::NoArguments(k) => write!(f, "{k} requires at least one argument"),
            Problem::UnknownFlag { keyword, flag } => write!(f, "unknown flag for {keyword}: --{flag}"),
            Problem::FlagNeedsValue(n) => write!(f, "flag --{n} needs a value (--{n}=VALUE)"),
            Problem::EscapeTwice => f.write_str("only one escape parser directive can be used"),
            Problem::BadEscape(v) => write!(f, "invalid escape token '{v}' does not match ` or \\"),
            Problem::UnterminatedHeredoc(n) => write!(f, "heredoc {n} is not terminated"),
            Problem::NeedsJson(k) => write!(f, "{k} requires the arguments to be in JSON form"),
            Problem::Syntax(s) => f.write_str(s),
            Problem::NoFrom => f.write_str("no FROM before the first instruction"),
        }
    }
}

macro_rules! keywords {
    ($($k:ident => $s:literal),* $(,)?) => {
        /// An instruction's keyword.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Keyword { $($k),* }
        impl Keyword {
            pub fn as_str(self) -> &'static str { match self { $(Keyword::$k => $s),* } }
            fn parse(word: &str) -> Option<Keyword> {
                $(if word.eq_ignore_ascii_case($s) { return Some(Keyword::$k); })*
                None
            }
        }
    };
}

keywords! {
    From => "FROM", Run => "RUN", Cmd => "CMD", Label => "LABEL", Maintainer => "MAINTAINER",
    Expose => "EXPOSE", Env => "ENV", Add => "ADD", Copy => "COPY", Entrypoint => "ENTRYPOINT",
    Volume => "VOLUME", User => "USER", Workdir => "WORKDIR", Arg => "ARG", Onbuild => "ONBUILD",
    StopSignal => "STOPSIGNAL", Healthcheck => "HEALTHCHECK", Shell => "SHELL",
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Keyword {
    /// The flags an instruction takes (`--name[=value]`); any other is an error.
    fn flags(self) -> &'static [&'static str] {
        match self {
            Keyword::From => &["platform"],
            Keyword::Run => &["mount", "network", "security"],
            Keyword::Copy => &["from", "chown", "chmod", "link", "parents", "exclude"],
            Keyword::Add => &["chown", "chmod", "checksum", "keep-git-dir", "link", "exclude"],
            Keyword::Healthcheck => &["interval", "timeout", "start-period", "start-interval", "retries"],
            _ => &[],
        }
    }

    fn takes_json(self) -> bool {
        matches!(
            self,
            Keyword::Run
                | Keyword::Cmd
                | Keyword::Entrypoint
                | Keyword::Shell
                | Keyword::Copy
                | Keyword::Add
                | Keyword::Volume
        )
    }

    fn takes_heredocs(self) -> bool {
        matches!(self, Keyword::Run | Keyword::Copy | Keyword::Add)
    }
}

/// An instruction's arguments after its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// A JSON array of strings, taken literally.
    Exec(Vec<String>),
    /// The rest of the line as written (continuations joined, ends trimmed).
    Shell(String),
}

/// A `--name[=value]` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub name: String,
    pub value: Option<String>,
}

/// A heredoc's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    /// Every line with its `\n`.
    pub content: String,
    /// False when the name was quoted: the body is taken literally.
    pub expand: bool,
}

/// One instruction as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub keyword: Keyword,
    /// The line the instruction starts on (1-based).
    pub line: usize,
    pub flags: Vec<Flag>,
    pub args: Args,
    pub heredocs: Vec<Heredoc>,
}

impl Instruction {
    /// The value of flag `name` (the last one given wins).
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags.iter().rev().find(|f| f.name == name).and_then(|f| f.value.as_deref())
    }

    /// The arguments as one line: the shell form as written, the exec form as JSON.
    pub fn args_text(&self) -> String {
        match &self.args {
            Args::Shell(s) => s.clone(),
            Args::Exec(v) => serde_json::to_string(v).unwrap_or_default(),
        }
    }

    /// The instruction as one line (flags included), the text history and cache keys use.
    pub fn text(&self) -> String {
        let mut out = self.keyword.as_str().to_string();
        for f in &self.flags {
            out.push_str(" --");
            out.push_str(&f.name);
            if let Some(v) = &f.value {
                out.push('=');
                out.push_str(v);
            }
        }
        let args = self.args_text();
        if !args.is_empty() {
            out.push(' ');
            out.push_str(&args);
        }
        out
    }
}

/// A parsed Containerfile.
#[derive(Debug, Clone)]
pub struct Containerfile {
    pub file: PathBuf,
    pub escape: char,
    pub instructions: Vec<Instruction>,
}

impl Containerfile {
    /// An error at `line` of this file.
    pub fn error(&self, line: usize, problem: Problem) -> ParseError {
        ParseError { file: self.file.clone(), line, problem }
    }
}

/// Parses `bytes`, read from `file` (named in errors).
pub fn parse(file: &Path, bytes: &[u8]) -> Result<Containerfile, ParseError> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let err = |line: usize, problem: Problem| ParseError { file: file.to_path_buf(), line, problem };

    let mut escape = '\\';
    let mut seen_escape = false;
    let mut i = 0;
    while i < lines.len() {
        let Some((name, value)) = directive(lines[i]) else { break };
        if name.eq_ignore_ascii_case("escape") {
            if seen_escape {
                return Err(err(i + 1, Problem::EscapeTwice));
            }
            seen_escape = true;
            escape = match value {
                "\\" => '\\',
                "`" => '`',
                _ => return Err(err(i + 1, Problem::BadEscape(value.to_string()))),
            };
        }
        i += 1;
    }

    let mut out = Vec::new();
    while i < lines.len() {
        if is_skipped(lines[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let mut joined = String::new();
        loop {
            let line = lines[i];
            i += 1;
            match continued(line, escape) {
                Some(head) => {
                    joined.push_str(head);
                    while i < lines.len() && is_skipped(lines[i]) {
                        i += 1;
                    }
                    if i == lines.len() {
                        break;
                    }
                }
                None => {
                    joined.push_str(line);
                    break;
                }
            }
        }
        let (ins, next) =
            instruction(&joined, start + 1, &lines, i, escape).map_err(|p| err(start + 1, p))?;
        i = next;
        out.push(ins);
    }
    Ok(Containerfile { file: file.to_path_buf(), escape, instructions: out })
}

/// `# name=value` as a parser directive reads it.
fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix('#')?.trim_start();
    let name_len = rest.find(|c: char| !c.is_ascii_alphanumeric())?;
    let (name, after) = rest.split_at(name_len);
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let value = after.trim_start().strip_prefix('=')?.trim();
    Some((name, value))
}

fn is_skipped(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// The line without its continuation mark, when it has one.
fn continued(line: &str, escape: char) -> Option<&str> {
    let t = line.trim_end_matches([' ', '\t']);
    let head = t.strip_suffix(escape)?;
    // An escaped escape character is a literal one, not a continuation (buildkit's rule is the
    // plain suffix match; so is buildah's), so no further check here.
    Some(head)
}

fn instruction(
    joined: &str,
    line: usize,
    lines: &[&str],
    next: usize,
    escape: char,
) -> Result<(Instruction, usize), Problem> {
    let joined = joined.trim();
    let (word, rest) = match joined.find(char::is_whitespace) {
        Some(at) => (&joined[..at], joined[at..].trim_start()),
        None => (joined, ""),
    };
    let keyword = Keyword::parse(word).ok_or_else(|| Problem::UnknownInstruction(word.to_string()))?;
    let (flags, rest) = take_flags(keyword, rest)?;
    let mut heredocs = Vec::new();
    let mut next = next;
    if keyword.takes_heredocs() && !rest.starts_with('[') {
        for (name, strip_tabs, expand) in heredoc_marks(rest, escape) {
            let (content, after) = heredoc_body(lines, next, &name, strip_tabs)?;
            next = after;
            heredocs.push(Heredoc { name, content, expand });
        }
    }
    let args = if keyword.takes_json() && rest.starts_with('[') {
        match serde_json::from_str::<Vec<String>>(rest) {
            Ok(v) => Args::Exec(v),
            Err(_) => Args::Shell(rest.to_string()),
        }
    } else {
        Args::Shell(rest.to_string())
    };
    if keyword == Keyword::Shell && !matches!(&args, Args::Exec(v) if !v.is_empty()) {
        return Err(Problem::NeedsJson(keyword));
    }
    let empty = match &args {
        Args::Shell(s) => s.is_empty(),
        Args::Exec(v) => {
            v.is_empty() && !matches!(keyword, Keyword::Cmd | Keyword::Entrypoint | Keyword::Run)
        }
    };
    if empty && !matches!(keyword, Keyword::Cmd | Keyword::Entrypoint) {
        return Err(Problem::NoArguments(keyword));
    }
    Ok((Instruction { keyword, line, flags, args, heredocs }, next))
}

fn take_flags(keyword: Keyword, mut rest: &str) -> Result<(Vec<Flag>, &str), Problem> {
    let mut flags = Vec::new();
    while let Some(after) = rest.strip_prefix("--") {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let token = &after[..end];
        if token.is_empty() {
            break; // `--` alone ends the flags, as a word of the arguments
        }
        let (name, value) = match token.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (token, None),
        };
        if !keyword.flags().contains(&name) {
            return Err(Problem::UnknownFlag { keyword, flag: name.to_string() });
        }
        if value.is_none() && !matches!(name, "link" | "parents" | "keep-git-dir") {
            return Err(Problem::FlagNeedsValue(name.to_string()));
        }
        flags.push(Flag { name: name.to_string(), value });
        rest = after[end..].trim_start();
    }
    Ok((flags, rest))
}

/// The heredoc marks of an instruction's arguments, in order: name, `<<-`, expanded.
fn heredoc_marks(args: &str, escape: char) -> Vec<(String, bool, bool)> {
    let mut marks = Vec::new();
    let chars: Vec<char> = args.chars().collect();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) if c == escape => i += 1,
            Some(_) => {}
            None if c == escape => i += 1,
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '<'
                && (i == 0 || chars[i - 1].is_whitespace())
                && chars.get(i + 1) == Some(&'<')
                && chars.get(i + 2) != Some(&'<') =>
            {
                let mut j = i + 2;
                let strip = chars.get(j) == Some(&'-');
                if strip {
                    j += 1;
                }
                let q = chars.get(j).copied().filter(|c| *c == '\'' || *c == '"');
                if q.is_some() {
                    j += 1;
                }
                let begin = j;
                while j < chars.len()
                    && (chars[j].is_ascii_alphanumeric() || matches!(chars[j], '_' | '-' | '.'))
                {
                    j += 1;
                }
                let name: String = chars[begin..j].iter().collect();
                let closed = match q {
                    Some(q) if chars.get(j) == Some(&q) => {
                        j += 1;
                        true
                    }
                    Some(_) => false,
                    None => true,
                };
                if !name.is_empty() && closed {
                    marks.push((name, strip, q.is_none()));
                }
                i = j;
                continue;
            }
            None => {}
        }
        i += 1;
    }
    marks
}

/// The body of heredoc `name` starting at `lines[from]`, and the index after its end line.
fn heredoc_body(
    lines: &[&str],
    from: usize,
    name: &str,
    strip_tabs: bool,
) -> Result<(String, usize), Problem> {
    let mut content = String::new();
    for (k, line) in lines.iter().enumerate().skip(from) {
        let line = if strip_tabs { line.trim_start_matches('\t') } else { line };
        if line == name {
            return Ok((content, k + 1));
        }
        content.push_str(line);
        content.push('\n');
    }
    Err(Problem::UnterminatedHeredoc(name.to_string()))
}

/// Splits shell-form arguments into words at blanks outside quotes, keeping quotes and escapes
/// (buildkit's `parseWords`): `a="b c" d` is `a="b c"`, `d`.
pub fn words(s: &str, escape: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == escape {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
            continue;
        }
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                cur.push(c);
            }
            None if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
                cur.push(c);
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// ENV's and LABEL's `name=value ...` (or the old `name value` form of ENV), unexpanded.
pub fn name_values(ins: &Instruction, escape: char) -> Result<Vec<(String, String)>, Problem> {
    let Args::Shell(s) = &ins.args else {
        return Err(Problem::Syntax(format!("{} takes name=value pairs, not JSON", ins.keyword)));
    };
    let ws = words(s, escape);
    let first = ws.first().ok_or(Problem::NoArguments(ins.keyword))?;
    if !first.contains('=') {
        if ins.keyword == Keyword::Label {
            return Err(Problem::Syntax(format!(
                "LABEL: can't find = in {first:?}. Must be of the form: name=value"
            )));
        }
        let value = s.trim_start()[first.len()..].trim();
        if value.is_empty() {
            return Err(Problem::Syntax(format!("{} must have two arguments", ins.keyword)));
        }
        return Ok(vec![(first.clone(), value.to_string())]);
    }
    ws.iter()
        .map(|w| match w.split_once('=') {
            Some((n, v)) if !n.is_empty() => Ok((n.to_string(), v.to_string())),
            _ => Err(Problem::Syntax(format!("can't find = in {w:?}. Must be of the form: name=value"))),
        })
        .collect()
}

/// ARG's `name[=default] ...`, unexpanded.
pub fn arg_names(ins: &Instruction, escape: char) -> Result<Vec<(String, Option<String>)>, Problem> {
    let s = ins.args_text();
    words(&s, escape)
        .into_iter()
        .map(|w| {
            let (n, v) = match w.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (w, None),
            };
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Problem::Syntax(format!("ARG: invalid name {n:?}")));
            }
            Ok((n, v))
        })
        .collect()
}

/// FROM's image and optional stage name (`image [AS name]`).
pub fn from_parts(ins: &Instruction) -> Result<(String, Option<String>), Problem> {
    let ws: Vec<&str> = match &ins.args {
        Args::Shell(s) => s.split_whitespace().collect(),
        Args::Exec(_) => Vec::new(),
    };
    match ws.as_slice() {
        [image] => Ok((image.to_string(), None)),
        [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !ok {
                return Err(Problem::Syntax(format!("invalid stage name {name:?}")));
            }
            Ok((image.to_string(), Some(name.to_ascii_lowercase())))
        }
        _ => Err(Problem::Syntax("FROM requires either one or three arguments (image [AS name])".into())),
    }
}

/// The whitespace-separated (or JSON) words of COPY, ADD, EXPOSE, VOLUME, unexpanded.
pub fn list(ins: &Instruction) -> Vec<String> {
    match &ins.args {
        Args::Exec(v) => v.clone(),
        Args::Shell(s) => s.split_whitespace().map(str::to_string).collect(),
    }
}

#[cfg(test)]
mod tests;
