//! What can go wrong with an instance's directories and lock.

use crate::lock::Holder;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("Neither $XDG_DATA_HOME nor $HOME is set; set one so rum knows where to keep VMs")]
    NoHome,
    #[error("Cannot create {}", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot read {}", .path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a private directory of this user (owner uid {owner}, mode {mode:o}); remove it and retry", .path.display())]
    UnsafeDir {
        path: PathBuf,
        owner: u32,
        mode: u32,
    },
    #[error("Socket path {} is {len} bytes, over the {limit}-byte limit of Unix sockets; set XDG_RUNTIME_DIR to a shorter directory", .path.display())]
    SocketPathTooLong {
        path: PathBuf,
        len: usize,
        limit: usize,
    },
    #[error("Cannot open the lock file {}", .path.display())]
    LockFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Instance `{instance}` is busy: {holder} holds its lock; wait for it to finish{}", .holder.pid().map(|p| format!(", or stop it with `kill {p}`")).unwrap_or_default())]
    Busy { instance: String, holder: Holder },
}

impl InstanceError {
    /// Errors the user fixes by changing their environment, not by retrying.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            InstanceError::NoHome | InstanceError::SocketPathTooLong { .. }
        )
    }
}
