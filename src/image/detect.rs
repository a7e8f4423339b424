//! What a path holds: an OCI layout, an oci-archive or a docker-archive, by its kind, its first
//! bytes and the files in it; and what it is when it is none of them.

use std::io::Read;
use std::path::Path;

use super::{Files, Format, ImageError};

/// Whether `block` is a tar header (its checksum adds up) or the zero block ending an archive.
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    let block = &block[..512];
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let field = &block[148..156];
    let digits: String =
        field.iter().map(|&b| b as char).skip_while(|c| *c == ' ').take_while(|c| c.is_digit(8)).collect();
    let Ok(stated) = i64::from_str_radix(&digits, 8) else { return false };
    let spaces = 8 * i64::from(b' ');
    let outside = |i: &usize| !(148..156).contains(i);
    let unsigned: i64 =
        block.iter().enumerate().filter(|(i, _)| outside(i)).map(|(_, &b)| i64::from(b)).sum::<i64>()
            + spaces;
    let signed: i64 =
        block.iter().enumerate().filter(|(i, _)| outside(i)).map(|(_, &b)| i64::from(b as i8)).sum::<i64>()
            + spaces;
    stated == unsigned || stated == signed
}

/// What a file that is not a tar is, by its first bytes; and what to do about it.
fn not_a_tar(head: &[u8], len: u64) -> Option<(String, &'static str)> {
    const DECOMPRESS: &str = " (decompress it first)";
    let found = |what: &str, hint| Some((what.to_string(), hint));
    if len == 0 {
        return found("an empty file", "");
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return found("gzip-compressed data", DECOMPRESS);
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return found("zstd-compressed data", DECOMPRESS);
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return found("xz-compressed data", DECOMPRESS);
    }
    if head.starts_with(b"BZh") {
        return found("bzip2-compressed data", DECOMPRESS);
    }
    if head.starts_with(b"PK\x03\x04") {
        return found("a zip archive", "");
    }
    if is_tar_header(head) {
        return None;
    }
    if head.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b == b'{' || *b == b'[') {
        return found("a JSON file", " (for an OCI layout, give the directory that holds index.json)");
    }
    Some((format!("not a tar archive ({len} bytes of other data)"), ""))
}

/// Detect the format of `path`: by its kind, its first bytes, then the files it holds.
pub fn detect(path: &Path) -> Result<(Format, Files), ImageError> {
    let md = std::fs::metadata(path).map_err(|e| ImageError::Open { path: path.to_path_buf(), source: e })?;
    let not_an_image = |what: String, hint| ImageError::NotAnImage { path: path.to_path_buf(), what, hint };
    if md.is_dir() {
        use std::os::unix::fs::OpenOptionsExt;
        // A directory (or one of the files that say what it holds) the user cannot read is
        // named as such, not called "a directory without ..." (a rootless user's import).
        if let Err(source) = std::fs::read_dir(path) {
            return Err(ImageError::Open { path: path.to_path_buf(), source });
        }
        for name in ["oci-layout", "index.json", "manifest.json"] {
            // Never block on a FIFO, never follow a link (Files reads them beneath the root).
            let open = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path.join(name));
            match open {
                Err(source) if source.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(ImageError::Open { path: path.join(name), source });
                }
                _ => {}
            }
        }
        let files = Files::Dir(path.to_path_buf());
        if files.exists("oci-layout") || files.exists("index.json") {
            return Ok((Format::OciLayout, files));
        }
        if files.exists("manifest.json") {
            return Ok((Format::DockerArchive, files));
        }
        return Err(not_an_image("a directory without oci-layout, index.json or manifest.json".into(), ""));
    }
    if !md.is_file() {
        return Err(not_an_image("not a regular file or directory".into(), ""));
    }
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(|e| ImageError::Open { path: path.to_path_buf(), source: e })?;
    if let Some((what, hint)) = not_a_tar(&head, md.len()) {
        return Err(not_an_image(what, hint));
    }
    let files = Files::tar(path)?;
    if files.exists("oci-layout") || files.exists("index.json") {
        Ok((Format::OciArchive, files))
    } else if files.exists("manifest.json") {
        Ok((Format::DockerArchive, files))
    } else {
        Err(not_an_image("a tar archive without oci-layout, index.json or manifest.json".into(), ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_what_a_file_is() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_cksum();
        tar.append_data(&mut h, "a", &b"x"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        assert!(is_tar_header(&tar[..512]));
        assert_eq!(not_a_tar(&tar[..512], tar.len() as u64), None);
        assert_eq!(not_a_tar(&[0; 512], 1024), None, "an empty archive is a tar");
        let mut bad = tar[..512].to_vec();
        bad[0] ^= 1;
        assert!(!is_tar_header(&bad));
        let what = |head: &[u8]| not_a_tar(head, head.len() as u64).map(|(w, _)| w);
        assert_eq!(what(b""), Some("an empty file".into()));
        assert_eq!(what(&[0x1f, 0x8b, 8, 0]), Some("gzip-compressed data".into()));
        assert_eq!(what(&[0x28, 0xb5, 0x2f, 0xfd]), Some("zstd-compressed data".into()));
        assert_eq!(what(b"\xfd7zXZ\0"), Some("xz-compressed data".into()));
        assert_eq!(what(b"BZh91AY"), Some("bzip2-compressed data".into()));
        assert_eq!(what(b" {\"manifests\": []}"), Some("a JSON file".into()));
        assert_eq!(what(&[0x41; 100]), Some("not a tar archive (100 bytes of other data)".into()));
        assert_eq!(not_a_tar(&[0x1f, 0x8b], 2).map(|(_, h)| h), Some(" (decompress it first)"));
    }
}
