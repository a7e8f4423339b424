use super::*;

fn p(s: &str) -> Containerfile {
    parse(Path::new("Containerfile"), s.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn perr(s: &str) -> ParseError {
    parse(Path::new("dir/Containerfile"), s.as_bytes()).expect_err("should not parse")
}

fn shell(i: &Instruction) -> &str {
    match &i.args {
        Args::Shell(s) => s,
        Args::Exec(v) => panic!("exec form {v:?}"),
    }
}

#[test]
fn keywords_lines_and_forms() {
    let f = p("from busybox AS Build\n\nrun echo hi\nCMD [\"sh\", \"-c\"]\nENTRYPOINT [\"a\" \nCMD []\n");
    let k: Vec<_> = f.instructions.iter().map(|i| (i.keyword, i.line)).collect();
    assert_eq!(
        k,
        [
            (Keyword::From, 1),
            (Keyword::Run, 3),
            (Keyword::Cmd, 4),
            (Keyword::Entrypoint, 5),
            (Keyword::Cmd, 6)
        ]
    );
    assert_eq!(from_parts(&f.instructions[0]).unwrap(), ("busybox".into(), Some("build".into())));
    assert_eq!(f.instructions[2].args, Args::Exec(vec!["sh".into(), "-c".into()]));
    // Not valid JSON: the shell form, as written (buildkit does the same).
    assert_eq!(shell(&f.instructions[3]), "[\"a\"");
    assert_eq!(f.instructions[4].args, Args::Exec(vec![]));
}

#[test]
fn continuations_comments_and_blank_lines() {
    let f = p("FROM a\nRUN echo a \\\n  # a comment inside\n\n   b \\  \n\tc\n# trailing\nRUN x\\\n");
    assert_eq!(shell(&f.instructions[1]), "echo a    b \tc");
    assert_eq!(f.instructions[1].line, 2);
    // A continuation at the end of the file ends the instruction.
    assert_eq!(shell(&f.instructions[2]), "x");
    assert_eq!(f.instructions[2].line, 8);
}

#[test]
fn escape_directive() {
    let f = p("# escape=`\nFROM a\nRUN dir c:\\ `\n  d:\\\n");
    assert_eq!(f.escape, '`');
    assert_eq!(shell(&f.instructions[1]), "dir c:\\   d:\\");
    // After anything else a directive is a comment.
    let f = p("# a comment\n# escape=`\nFROM a\nRUN a `\n");
    assert_eq!(f.escape, '\\');
    assert_eq!(shell(&f.instructions[1]), "a `");
    // Other directives and case.
    let f = p("#syntax=docker/dockerfile:1\n#  ESCAPE = ` \nFROM a\n");
    assert_eq!(f.escape, '`');
    assert_eq!(perr("# escape=`\n# escape=\\\nFROM a").problem, Problem::EscapeTwice);
    let e = perr("# escape=x\nFROM a");
    assert_eq!((e.line, e.problem), (1, Problem::BadEscape("x".into())));
}

#[test]
fn flags() {
    let f =
        p("FROM --platform=linux/amd64 a\nCOPY --from=build --chown=1:2 --chmod=0755 a b\nADD --link x y\n");
    let c = &f.instructions[1];
    assert_eq!(c.flag("from"), Some("build"));
    assert_eq!(c.flag("chown"), Some("1:2"));
    assert_eq!(c.flag("chmod"), Some("0755"));
    assert_eq!(list(c), ["a", "b"]);
    assert_eq!(c.text(), "COPY --from=build --chown=1:2 --chmod=0755 a b");
    assert_eq!(f.instructions[0].flag("platform"), Some("linux/amd64"));
    let e = perr("FROM a\n\nCOPY --frm=x a b\n");
    assert_eq!(e.line, 3);
    assert_eq!(e.problem, Problem::UnknownFlag { keyword: Keyword::Copy, flag: "frm".into() });
    assert_eq!(e.to_string(), "dir/Containerfile:3: unknown flag for COPY: --frm");
    assert_eq!(perr("FROM a\nCOPY --from a b").problem, Problem::FlagNeedsValue("from".into()));
}

#[test]
fn heredocs() {
    let f = p("FROM a\nRUN <<EOF\necho $HOME\n  EOF\nEOF\nRUN cat <<-\"A\" >x && cat <<B\n\t\tone\n\tA\ntwo\nB\nCOPY <<x.txt /dst\nbody\nx.txt\n");
    let r = &f.instructions[1];
    assert_eq!(shell(r), "<<EOF");
    assert_eq!(
        r.heredocs,
        [Heredoc { name: "EOF".into(), content: "echo $HOME\n  EOF\n".into(), expand: true }]
    );
    let r = &f.instructions[2];
    assert_eq!(r.line, 6);
    assert_eq!(
        r.heredocs,
        [
            Heredoc { name: "A".into(), content: "one\n".into(), expand: false },
            Heredoc { name: "B".into(), content: "two\n".into(), expand: true },
        ]
    );
    assert_eq!(f.instructions[3].heredocs[0].content, "body\n");
    assert_eq!(f.instructions[3].line, 11);
    // Not heredocs: inside quotes, a shift, a here-string, CMD.
    let f = p("FROM a\nRUN echo '<<EOF' \"<<X\" $((1<<2)) <<<str\nCMD cat <<EOF\n");
    assert!(f.instructions[1].heredocs.is_empty());
    assert!(f.instructions[2].heredocs.is_empty());
    let e = perr("FROM a\nRUN <<EOF\nnever ends\n");
    assert_eq!((e.line, e.problem), (2, Problem::UnterminatedHeredoc("EOF".into())));
}

#[test]
fn env_label_arg_forms() {
    let f = p("FROM a\nENV A=1 B=\"two words\" C=x\\ y\nENV OLD some value  \nLABEL \"k.x\"=v\nARG X Y=2\n");
    let e = '\\';
    assert_eq!(
        name_values(&f.instructions[1], e).unwrap(),
        [("A".into(), "1".into()), ("B".into(), "\"two words\"".into()), ("C".into(), "x\\ y".into())]
    );
    assert_eq!(name_values(&f.instructions[2], e).unwrap(), [("OLD".into(), "some value".into())]);
    assert_eq!(name_values(&f.instructions[3], e).unwrap(), [("\"k.x\"".into(), "v".into())]);
    assert_eq!(
        arg_names(&f.instructions[4], e).unwrap(),
        [("X".into(), None), ("Y".into(), Some("2".into()))]
    );
    let f = p("FROM a\nENV A=1 B\nLABEL k\nENV ONLY\nARG a-b\n");
    assert!(name_values(&f.instructions[1], e).is_err());
    assert!(name_values(&f.instructions[2], e).is_err());
    assert!(name_values(&f.instructions[3], e).is_err());
    assert!(arg_names(&f.instructions[4], e).is_err());
}

#[test]
fn bad_instructions_name_their_line() {
    let e = perr("FROM a\n# c\nFRUM b\n");
    assert_eq!((e.line, e.problem.clone()), (3, Problem::UnknownInstruction("FRUM".into())));
    assert_eq!(perr("FROM a\nRUN\n").problem, Problem::NoArguments(Keyword::Run));
    assert_eq!(perr("FROM a\nSHELL sh -c\n").problem, Problem::NeedsJson(Keyword::Shell));
    assert_eq!(perr("FROM a\nSHELL []\n").problem, Problem::NeedsJson(Keyword::Shell));
    let f = p("FROM a b\n");
    assert!(from_parts(&f.instructions[0]).is_err());
    let f = p("FROM a AS 1x\n");
    assert!(from_parts(&f.instructions[0]).is_err());
}

#[test]
fn odd_bytes_never_panic() {
    // CRLF, a BOM, invalid UTF-8, NULs, lone escapes, multi-byte characters at every cut.
    let f = p("\u{feff}FROM a\r\nRUN b \\\r\n c\r\n");
    assert_eq!(shell(&f.instructions[1]), "b  c");
    let samples: &[&[u8]] = &[
        b"\xff\xfe\x00FROM",
        b"FROM a\nRUN \xff\xff",
        b"\\",
        b"`",
        b"#",
        b"# escape=",
        b"FROM a\nCOPY <<",
        b"FROM a\nCOPY <<'",
        b"FROM a\nRUN <<-\n",
        b"FROM a\nENV \"",
        b"FROM a\nARG =",
        b"FROM a\nRUN [\"\\ud800\"]",
        b"--",
        b"FROM --",
        b"FROM -- a",
        "FROM \u{1F600}\nRUN \u{e9}\\".as_bytes(),
    ];
    for s in samples {
        if let Ok(f) = parse(Path::new("f"), s) {
            for i in &f.instructions {
                let _ = (name_values(i, f.escape), arg_names(i, f.escape), from_parts(i), list(i), i.text());
            }
        }
    }
    // Every prefix of a file full of features.
    let full = "# escape=\\\nFROM --platform=x a AS b\nRUN <<-'E' cat\n\tx\nE\nENV A=\"1 2\" \\\n B=3\nCOPY [\"a\",\"b\"]\n";
    for cut in 0..=full.len() {
        if let Ok(f) = parse(Path::new("f"), &full.as_bytes()[..cut]) {
            for i in &f.instructions {
                let _ = (name_values(i, '\\'), arg_names(i, '\\'));
            }
        }
    }
}
