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

    /// The 64 hex characters: safe as a single path component.
    pub fn hex(&self) -> &str {
        &self.hex
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
}
