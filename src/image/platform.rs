//! Platforms (`os/arch[/variant]`): the host's, parsing `--platform`, and choosing an index's
//! manifest or checking a config by one.

use oci_spec::image::{Descriptor, ImageIndex};
use serde_json::Value;

use super::{list_for_message, ImageError, Resolved};

/// A platform `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this host, in GOOS/GOARCH terms.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "arm" => "arm",
            other => other,
        };
        Platform { os: "linux".into(), arch: arch.into(), variant: None }
    }

    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => {
                Ok(Platform { os: os.to_string(), arch: arch.to_string(), variant: None })
            }
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => {
                Ok(Platform { os: os.to_string(), arch: arch.to_string(), variant: Some(v.to_string()) })
            }
            _ => Err(format!("bad platform {s:?}: expected OS/ARCH[/VARIANT]")),
        }
    }

    fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        p.os().to_string() == self.os
            && p.architecture().to_string() == self.arch
            && match (&self.variant, p.variant()) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                (None, _) => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Whether the config of `r` states platform `p`; else the same error as an index without it.
pub fn check_config_platform(r: &Resolved, p: &Platform) -> Result<(), ImageError> {
    let v: Value = serde_json::from_slice(&r.config).unwrap_or(Value::Null);
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).filter(|x| !x.is_empty());
    let (os, arch, variant) = (field("os"), field("architecture"), field("variant"));
    let matches = os == Some(p.os.as_str())
        && arch == Some(p.arch.as_str())
        && p.variant.as_deref().is_none_or(|want| variant == Some(want));
    if matches {
        return Ok(());
    }
    let stated = match (os, arch, variant) {
        (Some(os), Some(arch), Some(var)) => vec![format!("{os}/{arch}/{var}")],
        (Some(os), Some(arch), None) => vec![format!("{os}/{arch}")],
        _ => vec![],
    };
    Err(ImageError::NoPlatform {
        source_name: r.source.describe(),
        platform: p.to_string(),
        available: list_for_message(&stated, "none stated"),
    })
}

/// From an index, choose the descriptor for `platform` (or the only one).
/// Returns the descriptor and whether it was chosen by its stated platform.
pub fn choose_platform<'a>(
    source_name: &str,
    index: &'a ImageIndex,
    platform: &Platform,
) -> Result<(&'a Descriptor, bool), ImageError> {
    let ms = index.manifests();
    if let Some(d) = ms.iter().find(|d| d.platform().as_ref().is_some_and(|p| platform.matches(p))) {
        return Ok((d, true));
    }
    if ms.len() == 1 && ms[0].platform().is_none() {
        return Ok((&ms[0], false));
    }
    Err(ImageError::NoPlatform {
        source_name: source_name.to_string(),
        platform: platform.to_string(),
        available: platforms_of(index),
    })
}

fn platforms_of(index: &ImageIndex) -> String {
    let v: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| match p.variant() {
            Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
            None => format!("{}/{}", p.os(), p.architecture()),
        })
        .collect();
    list_for_message(&v, "none stated")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parse() {
        assert_eq!(
            Platform::parse("linux/arm64/v8"),
            Ok(Platform { os: "linux".into(), arch: "arm64".into(), variant: Some("v8".into()) })
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/").is_err());
    }
}
