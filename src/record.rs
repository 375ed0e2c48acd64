//! rum's JSON records (`state.json`, `vm.json`, `applied.json`): read back
//! with an error that names the file and how to recover from its damage,
//! written private and atomic (`fsutil::write_private`).

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A file rum writes and reads back as JSON.
pub trait Record: Serialize + DeserializeOwned {
    /// What a user does when the file is damaged, after "…is damaged;".
    const RECOVERY: &'static str;
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("Cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is damaged ({source}); {recovery}", .path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
        recovery: &'static str,
    },
}

/// The record at `path`; `None` when there is no such file.
pub fn load<T: Record>(path: &Path) -> Result<Option<T>, RecordError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RecordError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| RecordError::Damaged {
            path: path.to_path_buf(),
            source,
            recovery: T::RECOVERY,
        })
}

/// Writes `record` to `path`, 0600, whole or not at all.
pub fn save<T: Record>(record: &T, path: &Path) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).expect("records serialize");
    crate::fsutil::write_private(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Probe {
        n: u32,
    }

    impl Record for Probe {
        const RECOVERY: &'static str = "remove it";
    }

    #[test]
    fn missing_is_none_and_damage_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.json");
        assert_eq!(load::<Probe>(&path).unwrap(), None);
        save(&Probe { n: 3 }, &path).unwrap();
        assert_eq!(load::<Probe>(&path).unwrap(), Some(Probe { n: 3 }));
        std::fs::write(&path, b"{\"n\": \"x\"").unwrap();
        let err = load::<Probe>(&path).unwrap_err().to_string();
        assert!(err.contains("probe.json is damaged"), "{err}");
        assert!(err.ends_with("; remove it"), "{err}");
    }
}
