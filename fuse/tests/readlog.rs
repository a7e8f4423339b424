//! `-o readlog=FILE`: the lower files opened for reading, each once, in the order of their first
//! open, by the lower that served them; nothing for the upper layer, for opens that write (the
//! file is copied up), for directories or for lookups.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;

use common::*;

#[test]
fn the_read_log_lists_lower_files_read_in_first_open_order() {
    if !can_run() {
        return;
    }
    let t = scratch();
    let s = Stack::new(t.path(), 2);
    let (l1, l2) = (&s.lowers[0], &s.lowers[1]);
    fs::create_dir(l2.join("d")).expect("mkdir");
    for (dir, name) in
        [(l2, "a"), (l2, "d/x"), (l2, "same"), (l2, "w"), (l2, "n\nl"), (l1, "y"), (l1, "same")]
    {
        fs::write(dir.join(name), name).expect("write lower file");
    }
    fs::write(s.upper.join("u"), "u").expect("write upper file");
    let log = t.path().join("read.log");
    let mut g = s.mount_fuse(&format!("readlog={}", log.display()));
    let m = &s.mnt;

    assert_eq!(fs::read(m.join("d/x")).expect("read d/x"), b"d/x");
    assert_eq!(fs::read(m.join("y")).expect("read y"), b"y");
    // The top lower's copy is the one read.
    assert_eq!(fs::read(m.join("same")).expect("read same"), b"same");
    assert_eq!(fs::read(m.join("d/x")).expect("read d/x again"), b"d/x");
    assert_eq!(fs::read(m.join("u")).expect("read u"), b"u");
    // Opened for writing: copied up first, then the upper's file; read again, still the upper's.
    OpenOptions::new().append(true).open(m.join("w")).expect("open w").write_all(b"+").expect("append");
    assert_eq!(fs::read(m.join("w")).expect("read w"), b"w+");
    assert_eq!(fs::read(m.join("n\nl")).expect("read n\\nl"), b"n\nl");
    // Listed and looked up, not opened.
    assert_eq!(fs::read_dir(m.join("d")).expect("readdir").count(), 1);
    assert!(fs::metadata(m.join("a")).expect("stat a").is_file());
    g.unmount();

    assert_eq!(fs::read_to_string(&log).expect("read log"), "1\td/x\n0\ty\n0\tsame\n1\tn\\012l\n");
}
