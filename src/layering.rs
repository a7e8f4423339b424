//! The stack has no loops: a check of the library's module graph, read from the sources.
//!
//! Every `src/**/*.rs` file belongs to the top-level module it sits under (`src/snapshot/mounts.rs`
//! to `snapshot`). Its references to other modules are every `crate::X` path (in `use` lines and in
//! code, `use crate::{X, Y::Z}` groups included) and, in a top-level file, `super::X`. Comments,
//! string literals and test code (`#[cfg(test)]` items and the files of `#[cfg(test)] mod x;`) are
//! not read: tests may use anything, the library may not.
//!
//! Asserted:
//! - no cycle passes through a module of the stack ([`STACK`]); a cycle found is printed, module by
//!   module;
//! - the layers at the centre use only layers below them ([`LAYERS`]: `meta` uses none of the
//!   others, `store` only `meta`, `snapshot` only those two, `images` only those three);
//! - nothing below the pipelines ([`BELOW_PIPELINES`]: the centre, the layer store, unpack, the
//!   containers) uses one of them ([`PIPELINES`]: import, commit, export, registry, rootfs, diff,
//!   run, the lifecycle verbs, optimize);
//! - only the store and the snapshot core use meta ([`META_USERS`]), by name or through the
//!   store's `meta()`, and no other module runs SQL.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The modules no cycle may pass through: the core and the pipelines above it, the runtime
/// (`runtime`, the signal trap, the foreground run, the monitor of detached runs, `run`, the
/// lifecycle verbs), and the helpers they use.
const STACK: &[&str] = &[
    "build",
    "optimize",
    "run",
    "lifecycle",
    "monitor",
    "runtime",
    "signals",
    "foreground",
    "cgroup",
    "network",
    "netsetup",
    "meta",
    "store",
    "snapshot",
    "images",
    "container",
    "layers",
    "import",
    "unpack",
    "tar",
    "commit",
    "export",
    "registry",
    "rootfs",
    "diff",
    "image",
    "compression",
    "seekable",
    "digest",
    "reference",
    "fsutil",
    "hashing",
    "time",
    "error",
    "fdwalk",
    "overlay_format",
    "userns",
];

/// The centre, bottom first: each may use only those before it.
const LAYERS: &[&str] = &["meta", "store", "snapshot", "images"];

/// The pipelines, and the verbs that run containers: what makes images and containers into
/// other things, above everything in [`BELOW_PIPELINES`].
const PIPELINES: &[&str] =
    &["import", "commit", "export", "registry", "rootfs", "diff", "run", "lifecycle", "optimize"];

/// The modules below every pipeline: the centre, the layer store (with unpack and the tar
/// format it reads) and the containers. None of them uses a module of [`PIPELINES`].
const BELOW_PIPELINES: &[&str] =
    &["meta", "store", "snapshot", "images", "layers", "unpack", "tar", "container"];

/// The only modules that use meta.
const META_USERS: &[&str] = &["meta", "store", "snapshot"];

/// Files of the binary, not the library, and this check.
const NOT_LIBRARY: &[&str] = &["main", "lib", "cli", "layering"];

/// The source with comments, string and char literals blanked out (newlines kept).
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !ident_char(b.get(i.wrapping_sub(1)))
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match b.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| b.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    Some('\n') => out.push('\n'),
                    _ => {}
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if b.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            out.push_str("\"\"");
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            i += 2;
            while i < b.len() && b[i] != '\'' {
                i += 1;
            }
            out.push_str("' '");
            i += 1;
        } else if c == '\'' && b.get(i + 2) == Some(&'\'') {
            out.push_str("' '");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_char(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// `code` without its `#[cfg(test)]` items; the names of `#[cfg(test)] mod x;` declarations.
fn without_tests(code: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut test_mods = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let end = item.find(['{', ';']).unwrap_or(item.len());
        let head = &item[..end];
        let mut skip = end;
        if item[end..].starts_with(';') {
            if let Some(name) = head.split_whitespace().skip_while(|w| *w != "mod").nth(1) {
                test_mods.push(name.to_string());
            }
            skip += 1;
        } else if item[end..].starts_with('{') {
            let mut depth = 0usize;
            for (k, ch) in item[end..].char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            skip = end + k + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        rest = &item[skip.min(item.len())..];
    }
    out.push_str(rest);
    (out, test_mods)
}

/// The identifiers at the top of each path in a `{...}` group starting at `s` (after the `{`).
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 1usize;
    let mut at_head = true;
    let mut word = String::new();
    for ch in s.chars() {
        if ch.is_alphanumeric() || ch == '_' {
            word.push(ch);
            continue;
        }
        if !word.is_empty() {
            if at_head && depth == 1 {
                heads.push(std::mem::take(&mut word));
            }
            word.clear();
            at_head = false;
        }
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => at_head = true,
            _ => {}
        }
    }
    heads
}

/// The modules a file's code refers to, by `crate::X` (and `super::X` when `top_level`).
fn references(code: &str, top_level: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let prefixes: &[&str] = if top_level { &["crate::", "super::"] } else { &["crate::"] };
    for p in prefixes {
        let mut rest = code;
        while let Some(at) = rest.find(p) {
            let before = rest[..at].chars().last();
            rest = &rest[at + p.len()..];
            if ident_char(before.as_ref()) {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                out.extend(group_heads(group));
            } else {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The library's files under `src` (its top-level module, the path, its code without comments,
/// literals and tests).
fn library_code(src: &Path) -> Vec<(String, PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut code = BTreeMap::new();
    let mut test_files = BTreeSet::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let (lib, test_mods) = without_tests(&code_only(&text));
        // `a.rs` and `a/mod.rs` declare children in `a/`; `lib.rs` in `src/`.
        let name = f.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let dir = match name {
            "mod" | "lib" => f.parent().map(Path::to_path_buf).unwrap_or_default(),
            _ => f.with_extension(""),
        };
        for m in test_mods {
            test_files.insert(dir.join(format!("{m}.rs")));
            test_files.insert(dir.join(&m).join("mod.rs"));
        }
        code.insert(f.clone(), lib);
    }
    let module_of = |f: &Path| -> String {
        let rel = f.strip_prefix(src).unwrap_or(f);
        let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
        first.unwrap_or_default().trim_end_matches(".rs").to_string()
    };
    code.into_iter()
        .filter(|(f, _)| !test_files.contains(f))
        .map(|(f, lib)| (module_of(&f), f, lib))
        .filter(|(m, _, _)| !NOT_LIBRARY.contains(&m.as_str()))
        .collect()
}

/// The module graph of the library under `src`: module -> the modules it uses.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = library_code(src);
    let modules: BTreeSet<String> = files.iter().map(|(m, _, _)| m.clone()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, f, lib) in &files {
        let top_level = f.parent() == Some(src)
            || (f.file_name().is_some_and(|n| n == "mod.rs")
                && f.parent().and_then(Path::parent) == Some(src));
        let uses = graph.entry(m.clone()).or_default();
        for r in references(lib, top_level) {
            if r != *m && modules.contains(&r) && !NOT_LIBRARY.contains(&r.as_str()) {
                uses.insert(r);
            }
        }
    }
    graph
}

/// A cycle through `start`, as the modules along it (`start` first and last), if there is one.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    // Depth-first search with an explicit path, from each successor back to `start`.
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    walk(graph, start, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn the_stack_has_no_loops() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    for m in STACK {
        assert!(
            graph.contains_key(*m),
            "module {m} is not in the graph (renamed? update STACK): {:?}",
            graph.keys()
        );
    }
    let mut problems = Vec::new();
    for m in STACK {
        if let Some(cycle) = cycle_through(&graph, m) {
            problems.push(format!("cycle: {}", cycle.join(" -> ")));
        }
    }
    for (i, m) in LAYERS.iter().enumerate() {
        for used in &graph[*m] {
            if !LAYERS[..i].contains(&used.as_str()) && !is_leaf(used) {
                problems.push(format!("{m} uses {used}, which is not below it"));
            }
        }
    }
    for m in BELOW_PIPELINES {
        for used in graph[*m].iter().filter(|u| PIPELINES.contains(&u.as_str())) {
            problems.push(format!("{m} uses {used}, a pipeline above it"));
        }
    }
    // meta is the store's and the snapshot core's: nothing else names it or reaches it through
    // the store, and no SQL runs anywhere else.
    for (m, uses) in &graph {
        if uses.contains("meta") && !META_USERS.contains(&m.as_str()) {
            problems.push(format!("{m} uses meta (only {META_USERS:?} may)"));
        }
    }
    for (m, f, code) in library_code(&src) {
        let at = f.strip_prefix(&src).unwrap_or(&f).display().to_string();
        if !META_USERS.contains(&m.as_str()) && (code.contains(".meta()") || code.contains(".meta_mut()")) {
            problems.push(format!("{at} reaches the database through the store (only {META_USERS:?} may)"));
        }
        let sql = ["rusqlite", ".execute(", ".execute_batch(", ".query_row(", ".query_map(", ".prepare("];
        if m != "meta" && sql.iter().any(|s| code.contains(s)) {
            problems.push(format!("{at} runs SQL (only meta may)"));
        }
    }
    let edges: Vec<String> = graph
        .iter()
        .map(|(m, uses)| format!("  {m} -> {}", uses.iter().cloned().collect::<Vec<_>>().join(" ")))
        .collect();
    assert!(problems.is_empty(), "{}\nthe module graph:\n{}", problems.join("\n"), edges.join("\n"));
}

/// Modules below the whole stack (helpers with no state of their own, and `userns`: which mode
/// this process runs in), which any layer may use.
fn is_leaf(m: &str) -> bool {
    matches!(m, "digest" | "error" | "time" | "fsutil" | "hashing" | "reference" | "fdwalk" | "userns")
}

#[test]
fn the_reader_sees_what_the_compiler_sees() {
    let code = code_only(
        "use crate::a::B; // crate::comment\nlet s = \"crate::string\"; let r = r#\"crate::raw\"#;\n\
         /* crate::block */ let c = '\"'; use crate::{b::C, c, d::{e, f}};\n\
         fn x<'a>(y: &'a str) { super::g(y) }\n#[cfg(test)]\nmod tests { use crate::h; }\n\
         #[cfg(test)]\nmod more;\nuse crate::i;",
    );
    let (lib, test_mods) = without_tests(&code);
    assert_eq!(test_mods, ["more"]);
    let refs: Vec<String> = references(&lib, true).into_iter().collect();
    assert_eq!(refs, ["a", "b", "c", "d", "g", "i"]);
    assert_eq!(references(&lib, false).len(), 5, "super:: is the crate only in a top-level file");
}
