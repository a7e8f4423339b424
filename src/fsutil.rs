//! Filesystem helpers every part of strata shares: atomic writes with fsync, tree removal, syncfs.

mod atomic;

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub use atomic::{atomic_write, remove_stale_temps, temp_target, tmp_name, AtomicError, AtomicFile};

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

/// `N` random bytes from the kernel (getrandom); the clock's nanoseconds in the unlikely case it
/// fails, for names that must only differ, never for secrets.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    match rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()) {
        Ok(n) if n == N => b,
        _ => {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            for (i, x) in b.iter_mut().enumerate() {
                *x = t.as_nanos().to_le_bytes()[i % 16];
            }
            b
        }
    }
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
