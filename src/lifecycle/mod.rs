//! The life of a VM: bring-up, stop, destroy, and what is known about a
//! running one. Commands in `commands/` are thin layers over these.

pub mod agent;
pub mod bake;
pub mod boot;
pub mod checkpoints;
pub mod condition;
mod disk_full;
pub mod error;
mod guest;
pub mod in_place;
mod ledger;
mod milestones;
pub mod plan;
mod ports;
pub mod provisioning;
pub mod reload;
pub mod retry;
mod rollback;
mod runtime;
mod shares;
pub mod snapshots;
pub mod stop;
pub mod up;
pub mod wait;

pub use error::{AgentError, BakeError, LifecycleError, ReloadError, SnapshotError};
pub use guest::tail as console_tail;
pub use runtime::{MountRecord, RuntimeInfo};

use crate::config::{self, Config};
use crate::instance::{BaseDirs, InstanceId, InstancePaths};
use crate::record::RecordError;
use std::path::{Path, PathBuf};

/// What a command works on: the project's rum.toml, or an instance named by
/// its id (`--instance`, e.g. after its project directory was deleted).
#[derive(Debug, Clone)]
pub enum Target {
    File(PathBuf),
    Id(String),
}

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

    pub fn open_target(target: &Target) -> Result<Self, LifecycleError> {
        match target {
            Target::File(file) => Self::open(file),
            Target::Id(id) => Self::by_id(id),
        }
    }

    /// The instance `id`, with its project's rum.toml where it still is,
    /// else the copy `rum up` saved beside the instance.
    fn by_id(id: &str) -> Result<Self, LifecycleError> {
        let dirs = BaseDirs::from_env()?;
        let unknown = || LifecycleError::UnknownInstance {
            id: id.to_owned(),
            known: dirs.instance_ids().iter().map(|i| i.to_string()).collect(),
        };
        let parsed = InstanceId::parse(id).ok_or_else(unknown)?;
        let paths = InstancePaths::resolve(parsed, &dirs)?;
        if !paths.exists() {
            return Err(unknown());
        }
        let original = paths
            .recorded_config()
            .ok_or_else(|| LifecycleError::NoSavedConfig(id.to_owned()))?;
        if original.is_file()
            && let Ok(instance) = Self::open(&original)
            && instance.paths.id.as_str() == id
        {
            return Ok(instance);
        }
        let loaded = config::load_saved(&paths.saved_config(), &original)?;
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
        running_qemu(&self.paths)
    }

    /// How the VM was started, if its QEMU runs.
    pub fn running(&self) -> Result<Option<RuntimeInfo>, RecordError> {
        if self.qemu_pid().is_none() {
            return Ok(None);
        }
        RuntimeInfo::load(&self.paths.runtime_info())
    }
}

/// The pid of the QEMU of the instance at `paths`, if it runs. Its command
/// line must name our QMP socket, so a reused pid is not taken for ours.
pub fn running_qemu(paths: &InstancePaths) -> Option<u32> {
    crate::vm::process::find(&paths.qemu_pid(), &paths.qmp_socket().to_string_lossy())
}

/// A single-threaded runtime for the async parts of a command (QMP, agent).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
