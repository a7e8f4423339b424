//! Filesystem helpers every part of strata shares: atomic writes with fsync, tree removal, syncfs.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Write `path` through `f` atomically: under a temporary name next to it (`.NAME.tmp-PID`),
/// fsynced, renamed over `path`, and the directory fsynced, so a crash leaves the old file or the
/// new one, never a torn one. The temporary file is removed when anything fails. `mode` applies to
/// a new file (the umask still applies).
pub fn atomic_write<E: From<io::Error>>(
    path: &Path,
    mode: u32,
    f: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), E> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a file name", path.display()))
    })?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let res = (|| -> Result<(), E> {
        let file = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        let mut w = io::BufWriter::with_capacity(1 << 20, file);
        f(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_parent(path)?;
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// fsync the directory holding `path`, so a rename into it is durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::File::open(dir)?.sync_all()
}

/// `syncfs(2)` on the filesystem holding `path`: one call after unpacking a whole layer.
pub fn syncfs(path: &Path) -> io::Result<()> {
    let f = fs::File::open(path)?;
    rustix::fs::syncfs(&f)?;
    Ok(())
}

/// Remove a file or a whole tree, making directories writable first (layers hold read-only dirs).
/// A path that does not exist is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(md) if md.is_dir() => match fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(_) => {
                // Directories without write permission (mode 0555 in an image) stop remove_dir_all
                // only for non-root; as root it succeeds. Retry after chmod for completeness.
                chmod_dirs_writable(path)?;
                fs::remove_dir_all(path)
            }
        },
        Ok(_) => fs::remove_file(path),
    }
}

fn chmod_dirs_writable(path: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(path)?;
    if md.is_dir() {
        let mut p = md.permissions();
        p.set_mode(0o700);
        fs::set_permissions(path, p)?;
        for e in fs::read_dir(path)? {
            chmod_dirs_writable(&e?.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_or_not_at_all() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        fs::write(&p, b"old").unwrap();
        atomic_write(&p, 0o600, |w| w.write_all(b"new")).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        // A failing writer leaves the old content and no temporary file.
        let e = atomic_write(&p, 0o600, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("boom"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "boom");
        assert_eq!(fs::read(&p).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["f"]);
        let e = atomic_write(&t.path().join("no/such/dir/f"), 0o600, |w| w.write_all(b"x")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn remove_tree_takes_read_only_dirs_and_missing_paths() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        fs::create_dir_all(d.join("ro/inner")).unwrap();
        fs::write(d.join("ro/inner/f"), b"x").unwrap();
        fs::set_permissions(d.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        remove_tree(&d).unwrap();
        assert!(!d.exists());
        remove_tree(&d).unwrap();
        let f = t.path().join("file");
        fs::write(&f, b"x").unwrap();
        remove_tree(&f).unwrap();
        assert!(!f.exists());
    }
}
