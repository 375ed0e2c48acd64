//! The life of a VM: bring-up, stop, destroy, and what is known about a
//! running one. Commands in `commands/` are thin layers over these.

pub mod agent;
pub mod boot;
pub mod checkpoints;
pub mod error;
mod guest;
pub mod in_place;
mod milestones;
pub mod plan;
mod ports;
pub mod provisioning;
pub mod reload;
pub mod retry;
mod runtime;
mod shares;
pub mod snapshots;
pub mod stop;
pub mod up;
pub mod wait;

pub use error::{AgentError, LifecycleError, ReloadError, SnapshotError};
pub use guest::tail as console_tail;
pub use runtime::{MountRecord, RuntimeInfo};

use crate::config::{self, Config};
use crate::instance::{BaseDirs, InstanceId, InstancePaths};
use std::path::Path;

/// A config and the files of the instance it describes.
pub struct Instance {
    pub config: Config,
    pub paths: InstancePaths,
    pub dirs: BaseDirs,
    pub warnings: Vec<config::Warning>,
}

impl Instance {
    pub fn open(config_file: &Path) -> Result<Self, LifecycleError> {
        let loaded = config::load(config_file)?;
        let dirs = BaseDirs::from_env()?;
        let paths = InstancePaths::resolve(
            InstanceId::new(&loaded.config.name, &loaded.config.file),
            &dirs,
        )?;
        Ok(Self {
            config: loaded.config,
            paths,
            dirs,
            warnings: loaded.warnings,
        })
    }

    /// The pid of this instance's QEMU, if it runs. Its command line must
    /// name our QMP socket, so a reused pid is not taken for ours.
    pub fn qemu_pid(&self) -> Option<u32> {
        self.paths.running_qemu()
    }

    /// How the VM was started, if its QEMU runs.
    pub fn running(&self) -> Option<RuntimeInfo> {
        self.qemu_pid()?;
        RuntimeInfo::load(&self.paths.runtime_info())
    }
}

/// A single-threaded runtime for the async parts of a command (QMP, agent).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
