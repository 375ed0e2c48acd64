//! Images rum baked from a provisioned VM (`rum image bake`): their names,
//! and where each came from.

use super::known;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where a baked image came from, kept in its cache metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The instance it was baked from.
    pub instance: String,
    /// The snapshot it was baked from; `None` for the disk as it was.
    pub snapshot: Option<String>,
    /// That instance's rum.toml.
    pub config: PathBuf,
    /// The system steps recorded as run, each with its script's hash.
    pub steps: Vec<BakedStep>,
    /// The guest agent and its unit were kept (`--keep-agent`).
    pub keep_agent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BakedStep {
    pub name: String,
    pub sha256: String,
}

/// Whether the cache holds a baked image `name` (of this user's cache).
pub fn is_cached(name: &str) -> bool {
    crate::instance::BaseDirs::from_env()
        .ok()
        .and_then(|dirs| super::Cache::new(&dirs).get(name))
        .is_some_and(|meta| meta.baked.is_some())
}

/// Why a name cannot be a baked image's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "`{0}` is not a valid image name; use lowercase letters, digits, `.`, `_` or `-`, starting with a letter or digit (at most 64)"
    )]
    Invalid(String),
    #[error("`{0}` is the name of a distro image rum downloads; choose another name")]
    BuiltIn(String),
}

/// A name `[image] base` reads as a name (not a path or URL), free of the
/// built-in names.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    let looks_like_file = [".qcow2", ".img", ".raw"]
        .iter()
        .any(|ext| name.ends_with(ext));
    if !first_ok || !rest_ok || name.len() > 64 || looks_like_file {
        return Err(NameError::Invalid(name.to_owned()));
    }
    if known::lookup(name).is_some() {
        return Err(NameError::BuiltIn(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_names_and_spare_the_built_in_ones() {
        for ok in ["golden", "web-1.2", "a_b", "9lives"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Golden", "-x", ".x", "a/b", "a b", "x.qcow2", "ümlaut"] {
            assert!(
                matches!(check_name(bad), Err(NameError::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!(
            check_name("debian-12"),
            Err(NameError::BuiltIn("debian-12".into()))
        );
    }
}
