//! `vm.json` in the runtime dir: how the running VM was started, for
//! `status`, `ssh`, `exec` and `down`. Gone with the runtime dir.

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub pid: u32,
    /// Unix time (seconds) QEMU was started.
    pub started: u64,
    pub qemu_version: String,
    pub accel: String,
    pub machine: String,
    pub firmware: String,
    /// "serial" or "vsock".
    pub agent_transport: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_cid: Option<u32>,
    pub ssh_port: u16,
    /// `bind:host → guest` for each forward.
    pub ports: Vec<String>,
    /// `source → target` for each virtiofs mount, with virtiofsd pids.
    pub mounts: Vec<String>,
    pub virtiofsd_pids: Vec<u32>,
    /// What a snapshot must have been taken with to load into this QEMU.
    pub devices: crate::vm::devices::DeviceSet,
    /// Block nodes snapshots cover (root first: it holds the VM state).
    pub snapshot_nodes: Vec<String>,
}

impl RuntimeInfo {
    pub fn load(path: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        crate::fsutil::write_private(path, &serde_json::to_vec_pretty(self).expect("serializes"))
    }
}
