//! One VM's identity, files and lock.

pub(crate) mod dirs;
mod error;
mod id;
mod lock;
mod paths;

pub use crate::lock::Holder;
pub use dirs::BaseDirs;
pub use error::InstanceError;
pub use id::InstanceId;
pub use lock::{InstanceLock, LockWait};
pub use paths::{ATTEMPT_RESULT, InstancePaths, MAX_SOCKET_PATH, OVERLAY_FILE};
