//! The exclusive per-instance lock that mutating commands hold.

use super::error::InstanceError;
use crate::lock::{FileLock, Holder, Wait};
use std::path::Path;

pub use crate::lock::Wait as LockWait;

/// Held until dropped; the kernel releases it if the process dies.
#[derive(Debug)]
pub struct InstanceLock {
    _lock: FileLock,
}

impl InstanceLock {
    /// Takes the lock at `path` for `command` (e.g. "rum up").
    pub fn acquire(
        path: &Path,
        instance: &str,
        command: &str,
        wait: Wait,
    ) -> Result<Self, InstanceError> {
        match FileLock::acquire(path, command, wait) {
            Ok(Ok(lock)) => Ok(Self { _lock: lock }),
            Ok(Err(holder)) => Err(InstanceError::Busy {
                instance: instance.to_owned(),
                holder,
            }),
            Err(source) => Err(InstanceError::LockFile {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Who holds the lock at `path` right now, if anyone.
    pub fn current_holder(path: &Path) -> Option<Holder> {
        FileLock::holder_of(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_error_names_instance_holder_and_how_to_stop_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let _held = InstanceLock::acquire(&path, "web-1", "rum up", LockWait::No).unwrap();
        let err = InstanceLock::acquire(&path, "web-1", "rum down", LockWait::No).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`rum up`"), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("web-1"), "{text}");
        assert!(text.contains("kill"), "{text}");
    }
}
