//! Layer compression: the one place that knows each kind's media type, its magic bytes, its
//! `--compression` name and how to read it. (Writing is `commit::compress::Compressor`, which
//! takes a [`Compression`] too.)

use std::io::{self, BufRead, BufReader, Read};

/// The layer media types (re-exported by [`crate::image`]): defined here, below the image
/// sources, so that this module uses nothing above it.
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MT_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// How a layer's tar is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A `--compression` value that names no compression strata writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?}: expected gzip, zstd or none")]
pub struct UnknownCompression(pub String);

impl Compression {
    /// The compression a layer media type declares (OCI's and docker's, distributable or not);
    /// `None` for a type that is no layer.
    pub fn of_media_type(mt: &str) -> Option<Compression> {
        match mt.replace(".nondistributable", "").as_str() {
            MT_OCI_LAYER | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            MT_OCI_LAYER_GZIP
            | MT_DOCKER_LAYER_GZIP
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
            MT_OCI_LAYER_ZSTD => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// By magic bytes (docker-archive layers and rootfs tarballs have no media type).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI media type of a layer compressed so.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => MT_OCI_LAYER,
            Compression::Gzip => MT_OCI_LAYER_GZIP,
            Compression::Zstd => MT_OCI_LAYER_ZSTD,
        }
    }

    /// The plain tar of `r`, compressed so. gzip reads every member (multi-member gzip exists
    /// in the wild); `r` is buffered here, so pass the raw reader.
    pub fn decoder<'a, R: Read + 'a>(self, r: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(r),
            Compression::Gzip => {
                Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 18, r)))
            }
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        })
    }

    /// The plain tar of `r`, whatever its compression (told by its first bytes).
    pub fn sniffing_decoder<'a, R: BufRead + 'a>(mut r: R) -> io::Result<Box<dyn Read + 'a>> {
        let c = Compression::sniff(r.fill_buf()?);
        Ok(match c {
            Compression::None => Box::new(r),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        })
    }
}

impl std::str::FromStr for Compression {
    type Err = UnknownCompression;

    /// A `--compression` value: `gzip`, `zstd` or `none`.
    fn from_str(s: &str) -> Result<Compression, UnknownCompression> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            _ => Err(UnknownCompression(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn media_types_round_trip() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(Compression::of_media_type(c.media_type()), Some(c));
        }
        assert_eq!(Compression::of_media_type(MT_DOCKER_LAYER_GZIP), Some(Compression::Gzip));
        assert_eq!(
            Compression::of_media_type("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::of_media_type("application/x-evil"), None);
        assert_eq!("zstd".parse::<Compression>(), Ok(Compression::Zstd));
        assert!("lz4".parse::<Compression>().unwrap_err().to_string().contains("lz4"));
    }

    #[test]
    fn decoders_read_what_encoders_wrote() {
        let plain = b"a tar would be here".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain[..1000]).unwrap();
        let mut two = gz.finish().unwrap();
        // A second gzip member: read as well.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain[1000..]).unwrap();
        two.extend(gz.finish().unwrap());
        let zst = zstd::encode_all(&plain[..], 1).unwrap();
        for (c, data) in [(Compression::Gzip, &two), (Compression::Zstd, &zst), (Compression::None, &plain)] {
            let mut out = Vec::new();
            c.decoder(data.as_slice()).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, plain, "{c:?}");
            let mut out = Vec::new();
            Compression::sniffing_decoder(BufReader::new(data.as_slice()))
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, plain, "sniffed {c:?}");
        }
    }
}
