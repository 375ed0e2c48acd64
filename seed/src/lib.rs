//! rum-seed: the NoCloud seed rum hands cloud-init — cloud-config rendering
//! (`cloud_config`) and a native ISO 9660 writer (`iso`), volume id `cidata`.

pub mod cloud_config;
pub mod iso;
pub mod shell;

pub use cloud_config::{HostKey, MountArgs, RenderError, SeedArgs};

use iso::{IsoError, IsoFile};
use sha2::{Digest, Sha256};
use std::io::Write;

/// The volume id cloud-init's NoCloud datasource looks for.
pub const VOLUME_ID: &str = "cidata";

/// The rendered files of a seed and the identity they hash to.
#[derive(Debug, Clone)]
pub struct Seed<'a> {
    pub files: Vec<IsoFile<'a>>,
    /// Hex SHA-256 over every file's name, mode and bytes: when it changes,
    /// the seed on disk is stale.
    pub identity: String,
}

impl<'a> Seed<'a> {
    pub fn render(args: &'a SeedArgs<'a>) -> Result<Self, RenderError> {
        let files = cloud_config::render(args)?;
        let identity = identity(&files);
        Ok(Self { files, identity })
    }

    /// Writes the ISO image; returns its size in bytes.
    pub fn write_iso(&self, out: &mut impl Write) -> Result<u64, IsoError> {
        iso::write(VOLUME_ID, &self.files, out)
    }
}

fn identity(files: &[IsoFile<'_>]) -> String {
    let mut hash = Sha256::new();
    for file in files {
        // Length-prefixed fields, so no two file sets hash the same stream.
        for field in [
            file.name.as_bytes(),
            &file.mode.to_le_bytes(),
            file.data.as_ref(),
        ] {
            hash.update((field.len() as u64).to_le_bytes());
            hash.update(field);
        }
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_follows_names_modes_and_bytes() {
        let base = [IsoFile::new("a", b"x".as_slice(), 0o644)];
        let id = identity(&base);
        assert_eq!(id, identity(&base));
        assert_ne!(id, identity(&[IsoFile::new("b", b"x".as_slice(), 0o644)]));
        assert_ne!(id, identity(&[IsoFile::new("a", b"y".as_slice(), 0o644)]));
        assert_ne!(id, identity(&[IsoFile::new("a", b"x".as_slice(), 0o755)]));
        assert_ne!(
            identity(&[IsoFile::new("ab", b"".as_slice(), 0)]),
            identity(&[IsoFile::new("a", b"b".as_slice(), 0)])
        );
    }
}
