//! Validated sha256 digests. Every digest that reaches a path join goes through [`Sha256Digest`].

use std::fmt;
use std::str::FromStr;

/// Digest parsing errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("malformed digest {0:?}: expected sha256:<64 lowercase hex>")]
    Malformed(String),
    #[error("unsupported digest algorithm in {0:?}: only sha256 is supported")]
    Algorithm(String),
}

impl DigestError {
    /// Always [`ErrorKind::InvalidArgument`](crate::error::ErrorKind): the digest text is bad.
    pub fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::InvalidArgument
    }
}

/// A `sha256:<64 lowercase hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest {
    hex: String,
}

impl Sha256Digest {
    /// Parse `sha256:<hex>`; rejects any other algorithm, length, case or character.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let (alg, hex) = s.split_once(':').ok_or_else(|| DigestError::Malformed(s.to_string()))?;
        if alg != "sha256" {
            // Still reject path-like garbage under a foreign algorithm name.
            if oci_spec::image::Digest::from_str(s).is_ok() {
                return Err(DigestError::Algorithm(s.to_string()));
            }
            return Err(DigestError::Malformed(s.to_string()));
        }
        Self::from_hex(hex).map_err(|_| DigestError::Malformed(s.to_string()))
    }

    /// From the 64 hex characters alone.
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Sha256Digest { hex: hex.to_string() })
        } else {
            Err(DigestError::Malformed(hex.to_string()))
        }
    }

    /// From raw hash bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Sha256Digest { hex: hex::encode(bytes) }
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest as _;
        Sha256Digest::from_bytes(&sha2::Sha256::digest(data))
    }

    /// The 64 hex characters: safe as a single path component.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, as image IDs are shown.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    /// As an oci-spec digest.
    pub fn to_oci(&self) -> oci_spec::image::Digest {
        // A validated sha256 digest always parses.
        oci_spec::image::Digest::from_str(&self.to_string()).expect("validated sha256 digest")
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Sha256Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&oci_spec::image::Digest> for Sha256Digest {
    type Error = DigestError;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        Self::parse(d.as_ref())
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl PartialEq<str> for Sha256Digest {
    fn eq(&self, other: &str) -> bool {
        other.strip_prefix("sha256:") == Some(self.hex.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_malformed() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(Sha256Digest::parse(&good).is_ok());
        for bad in [
            "sha256:../x".to_string(),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}/", "a".repeat(63)),
            format!("sha256:{}", "g".repeat(64)),
            "sha256:".to_string(),
            "nocolon".to_string(),
        ] {
            assert_eq!(Sha256Digest::parse(&bad), Err(DigestError::Malformed(bad.clone())), "{bad}");
        }
        let other = format!("sha512:{}", "a".repeat(128));
        assert_eq!(Sha256Digest::parse(&other), Err(DigestError::Algorithm(other.clone())));
    }

    #[test]
    fn round_trips_through_sqlite_and_refuses_malformed_rows() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (d TEXT)").unwrap();
        let d = Sha256Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap();
        c.execute("INSERT INTO t VALUES (?1)", [&d]).unwrap();
        let back: Sha256Digest = c.query_row("SELECT d FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(back, d);
        let text: String = c.query_row("SELECT d FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(text, d.to_string());
        c.execute("INSERT INTO t VALUES ('sha256:../../etc')", []).unwrap();
        let bad = c.query_row("SELECT d FROM t WHERE d LIKE '%etc'", [], |r| r.get::<_, Sha256Digest>(0));
        assert!(matches!(bad, Err(rusqlite::Error::FromSqlConversionFailure(..))), "{bad:?}");
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{d}\""));
    }
}
