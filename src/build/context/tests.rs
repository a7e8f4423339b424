use super::*;
use std::os::unix::fs::{symlink, PermissionsExt};

fn ig(text: &str) -> Ignore {
    Ignore::parse(text)
}

#[test]
fn globs() {
    assert!(glob("*.go", "a.go"));
    assert!(!glob("*.go", "a.gox"));
    assert!(glob("a?c", "abc"));
    assert!(glob("[a-c]x", "bx"));
    assert!(!glob("[!a-c]x", "bx"));
    assert!(glob("[^a-c]x", "dx"));
    assert!(glob("[]]", "]"));
    assert!(glob("\\*", "*"));
    assert!(!glob("\\*", "a"));
    assert!(glob("*a*b*", "xxaybzb"));
    assert!(glob("", ""));
    for odd in ["[", "[a", "[a-", "\\", "[\\", "[]", "[!"] {
        let _ = glob(odd, "a");
    }
}

#[test]
fn ignore_patterns() {
    let i = ig("# comment\n\n*.log\n/build/\n**/tmp\ndocs/**/*.md\n!docs/keep.md\n./x/../y\n");
    assert!(i.excludes("a.log"));
    assert!(!i.excludes("d/a.log"), "* does not cross /");
    assert!(i.excludes("build"));
    assert!(i.excludes("build/deep/file"), "a parent matching excludes");
    assert!(i.excludes("tmp"));
    assert!(i.excludes("a/b/tmp/c"));
    assert!(i.excludes("docs/a.md"));
    assert!(i.excludes("docs/x/y/a.md"));
    assert!(!i.excludes("docs/keep.md"));
    assert!(i.excludes("y"));
    assert!(!i.excludes("x"));
    // The last matching pattern wins.
    let i = ig("!a\na\n");
    assert!(i.excludes("a"));
    let i = ig("dir\n!dir/keep\n");
    assert!(i.excludes("dir/other"));
    assert!(!i.excludes("dir/keep"));
}

fn tree() -> (tempfile::TempDir, Context) {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    fs::create_dir_all(r.join("src/sub")).unwrap();
    fs::write(r.join("src/a.txt"), "a").unwrap();
    fs::write(r.join("src/b.txt"), "b").unwrap();
    fs::write(r.join("src/c.log"), "c").unwrap();
    fs::write(r.join("src/sub/d.txt"), "d").unwrap();
    fs::create_dir(r.join("secret")).unwrap();
    fs::write(r.join("secret/key"), "k").unwrap();
    fs::write(r.join("secret/pub"), "p").unwrap();
    symlink("/", r.join("src/up")).unwrap();
    fs::write(r.join(".dockerignore"), "*/*.log\nsecret\n!secret/pub\n").unwrap();
    let c = Context::open(r).unwrap();
    (t, c)
}

#[test]
fn sources_and_walks() {
    let (_t, c) = tree();
    let p = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
    assert_eq!(c.sources("src/*.txt").unwrap(), p(&["src/a.txt", "src/b.txt"]));
    assert_eq!(c.sources("./src//a.txt").unwrap(), p(&["src/a.txt"]));
    assert_eq!(c.sources("/src/[ab].txt").unwrap(), p(&["src/a.txt", "src/b.txt"]));
    assert_eq!(c.sources("*/*.txt").unwrap(), p(&["src/a.txt", "src/b.txt"]));
    assert!(matches!(c.sources("src/c.log"), Err(ContextError::NotFound(_))));
    assert!(matches!(c.sources("nope*"), Err(ContextError::NotFound(_))));
    assert!(matches!(c.sources("../etc"), Err(ContextError::Outside(_))));
    assert!(matches!(c.sources("src/../../etc"), Err(ContextError::Outside(_))));
    assert!(matches!(c.sources("src/up/etc/passwd"), Err(ContextError::Outside(_))));
    // The symlink itself is a source; walks never follow it.
    assert_eq!(c.sources("src/up").unwrap(), p(&["src/up"]));
    assert_eq!(
        c.walk(Path::new("src")).unwrap(),
        p(&["src", "src/a.txt", "src/b.txt", "src/sub", "src/sub/d.txt", "src/up"])
    );
    assert_eq!(c.walk(Path::new("secret")).unwrap(), p(&["secret/pub"]));
    let all = c.walk(Path::new("")).unwrap();
    assert!(all.contains(&PathBuf::from(".dockerignore")));
    assert!(!all.contains(&PathBuf::from("secret/key")));
    assert!(!all.contains(&PathBuf::from("src/c.log")));
}

#[test]
fn containerignore_wins_over_dockerignore() {
    let (t, _) = tree();
    fs::write(t.path().join(".containerignore"), "src\n").unwrap();
    let c = Context::open(t.path()).unwrap();
    assert!(c.sources("src/a.txt").is_err());
    assert!(c.sources("secret/key").is_ok());
}

#[test]
fn digest_sees_content_and_metadata_not_times() {
    let (t, c) = tree();
    let srcs = c.sources("src").unwrap();
    let d0 = c.digest(&srcs).unwrap();
    let a = t.path().join("src/a.txt");
    // A new mtime only: the same digest.
    let f = fs::File::options().write(true).open(&a).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    assert_eq!(c.digest(&srcs).unwrap(), d0);
    // Content of the same size.
    fs::write(&a, "A").unwrap();
    let d1 = c.digest(&srcs).unwrap();
    assert_ne!(d1, d0);
    // Mode.
    fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).unwrap();
    let d2 = c.digest(&srcs).unwrap();
    assert_ne!(d2, d1);
    // A new file, then an excluded one (no change).
    fs::write(t.path().join("src/sub/e"), "").unwrap();
    let d3 = c.digest(&srcs).unwrap();
    assert_ne!(d3, d2);
    fs::write(t.path().join("src/x.log"), "ignored").unwrap();
    assert_eq!(c.digest(&srcs).unwrap(), d3);
    // A rename is a change.
    fs::rename(t.path().join("src/sub/e"), t.path().join("src/sub/f")).unwrap();
    assert_ne!(c.digest(&srcs).unwrap(), d3);
}
