//! `vm.json` in the runtime dir: how the running VM was started, for
//! `status`, `ssh`, `exec` and `down`. Gone with the runtime dir.

use super::error::UpError;
use crate::instance::InstancePaths;
use crate::record::{self, Record, RecordError};
use crate::state::DeviceSet;
use crate::vm::spec::{Accel, FirmwareKind, Forward, Transport};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub pid: u32,
    /// Unix time (seconds) QEMU was started.
    pub started: u64,
    pub qemu_version: String,
    pub accel: Accel,
    pub machine: String,
    pub firmware: FirmwareKind,
    pub agent_transport: Transport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_cid: Option<u32>,
    pub ssh_port: u16,
    pub ports: Vec<Forward>,
    /// Each virtiofs mount; its virtiofsd's pid is at the same index below.
    pub mounts: Vec<MountRecord>,
    pub virtiofsd_pids: Vec<u32>,
    /// What a snapshot must have been taken with to load into this QEMU.
    pub devices: DeviceSet,
    /// Block nodes snapshots cover (root first: it holds the VM state).
    pub snapshot_nodes: Vec<String>,
}

/// A host directory shared into the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub source: PathBuf,
    pub target: String,
}

impl Record for RuntimeInfo {
    const RECOVERY: &'static str =
        "`rum down --force` stops the VM, and the next `rum up` writes it again";
}

impl RuntimeInfo {
    /// The record; `None` when there is none (the VM is not running).
    pub fn load(path: &Path) -> Result<Option<Self>, RecordError> {
        record::load(path)
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        record::save(self, path)
    }

    /// Saves it as the VM's `vm.json`, a failure named with the path.
    pub fn store(&self, paths: &InstancePaths) -> Result<(), UpError> {
        let path = paths.runtime_info();
        self.save(&path)
            .map_err(|source| UpError::Write { path, source })
    }
}

impl fmt::Display for MountRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}", self.source.display(), self.target)
    }
}
