//! Instance ids: the VM name plus a hash of the config file's path, so two
//! projects whose directories share a name never share a VM.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct InstanceId(String);

/// Hex digits of the path hash kept in the id.
const HASH_CHARS: usize = 8;

impl InstanceId {
    /// `config_file` should be canonical so every way of naming it agrees.
    pub fn new(name: &str, config_file: &Path) -> Self {
        let digest = Sha256::digest(config_file.as_os_str().as_encoded_bytes());
        let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("{name}-{}", &hash[..HASH_CHARS]))
    }

    /// The id an instance directory is named by, if `name` is one.
    pub fn parse(name: &str) -> Option<Self> {
        let (vm, hash) = name.rsplit_once('-')?;
        let valid = !vm.is_empty()
            && hash.len() == HASH_CHARS
            && hash
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        valid.then(|| Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hash part alone: short, for paths that must stay short.
    pub fn short(&self) -> &str {
        &self.0[self.0.len() - HASH_CHARS..]
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_in_different_directories_differs() {
        let a = InstanceId::new("web", Path::new("/home/a/web/rum.toml"));
        let b = InstanceId::new("web", Path::new("/home/b/web/rum.toml"));
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("web-"));
        assert_eq!(a, InstanceId::new("web", Path::new("/home/a/web/rum.toml")));
        assert_eq!(a.short().len(), HASH_CHARS);
        assert_eq!(InstanceId::parse(a.as_str()), Some(a));
        for not_one in ["web", "web-1234", "-1234abcd", "web-1234ABCD", ".locks"] {
            assert_eq!(InstanceId::parse(not_one), None, "{not_one}");
        }
    }
}
