//! A snapshot's record: when it was taken, with which QEMU, and the device
//! set its vmstate depends on. A snapshot loads only into a QEMU with the
//! same set; a difference is named to the user.

use crate::vm::spec::{Accel, FirmwareKind, Transport, VmSpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What a snapshot can only be loaded with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Unix time (seconds).
    pub created: u64,
    pub qemu_version: String,
    pub devices: DeviceSet,
    /// rum's own (`pre-provision`, `post-system`) rather than the user's.
    pub rum_owned: bool,
    /// For `post-system`: the hash of the system scripts that had run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_scripts: Option<String>,
    /// For a checkpoint after a system step: the key of everything run
    /// since `pre-provision` (`lifecycle::checkpoints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Where the guest's RAM is, when not in the qcow2 beside the devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<RamCopy>,
}

pub use crate::ram::RamCopy;

/// Where a VM's snapshots keep its RAM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RamKind {
    /// In the migration stream, in the qcow2 (memfd or QEMU's own memory).
    #[default]
    Stream,
    /// In a file of its own: the VM's RAM is a shared file left out of the
    /// stream (`x-ignore-shared`).
    File,
}

impl std::fmt::Display for RamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RamKind::Stream => "in the snapshot",
            RamKind::File => "a file of its own",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "The VM's devices changed since the `{tag}` snapshot ({changes}), so it cannot be loaded; undo the change, or `rum retry --done` and `rum destroy` to start over"
)]
pub struct DevicesChanged {
    pub tag: String,
    pub changes: String,
}

impl SnapshotRecord {
    /// What the snapshot costs on disk, given its VM state's size in the
    /// qcow2: that, plus what its RAM copy wrote.
    pub fn disk_bytes(&self, vm_state_size: u64) -> u64 {
        vm_state_size + self.ram.as_ref().map_or(0, |r| r.written)
    }

    /// Where its RAM is, for people.
    pub fn kind(&self) -> &'static str {
        match self.ram {
            Some(_) => "RAM file",
            None => "RAM in qcow2",
        }
    }

    /// The one check before any load: live, or into a fresh paused QEMU.
    pub fn check_loadable(&self, tag: &str, now: &DeviceSet) -> Result<(), DevicesChanged> {
        let changes = self.devices.differences(now);
        if changes.is_empty() {
            return Ok(());
        }
        Err(DevicesChanged {
            tag: tag.to_owned(),
            changes: changes.join("; "),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSet {
    pub machine: String,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mb: u64,
    pub firmware: FirmwareKind,
    pub drives: Vec<String>,
    /// virtiofs tags, in order.
    pub mounts: Vec<String>,
    pub agent: Transport,
    /// Spare PCIe root ports (with them, guest RAM is always shared memory).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hotplug_ports: u8,
    /// Shares plugged into spare ports while the VM ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugged: Vec<Plugged>,
    #[serde(default, skip_serializing_if = "RamKind::is_stream")]
    pub ram: RamKind,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub free_page_reporting: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vm_generation_id: bool,
    /// The guest's paging mode is in the snapshot: a CPU with 5-level
    /// paging cannot load one taken without, nor the reverse.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tcg_la57_off: bool,
}

impl RamKind {
    fn is_stream(&self) -> bool {
        *self == RamKind::Stream
    }
}

/// A virtiofs share: the host directory, and where the guest mounts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRecord {
    pub tag: String,
    pub source: PathBuf,
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
}

impl ShareRecord {
    pub fn of(mount: &crate::config::Mount) -> Self {
        Self {
            tag: mount.tag.clone(),
            source: mount.source.clone(),
            target: mount.target.clone(),
            readonly: mount.readonly,
        }
    }
}

/// A share plugged into spare root port `port` while the VM ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plugged {
    pub port: u8,
    #[serde(flatten)]
    pub share: ShareRecord,
}

impl Plugged {
    /// What a snapshot's load depends on: the tag on its port.
    pub fn slot(&self) -> String {
        format!("{}@hp{}", self.share.tag, self.port)
    }
}

impl DeviceSet {
    pub fn of(spec: &VmSpec) -> Self {
        Self {
            machine: spec.machine.clone(),
            accel: spec.accel,
            cpus: spec.cpus,
            memory_mb: spec.memory_mb,
            firmware: spec.firmware_kind(),
            drives: spec.drives.iter().map(|d| d.name.clone()).collect(),
            mounts: spec
                .shares
                .iter()
                .filter(|s| s.port.is_none())
                .map(|s| s.tag.clone())
                .collect(),
            agent: spec.transport(),
            hotplug_ports: spec.hotplug_ports,
            plugged: spec
                .shares
                .iter()
                .filter_map(|s| {
                    Some(Plugged {
                        port: s.port?,
                        share: ShareRecord {
                            tag: s.tag.clone(),
                            source: s.source.clone(),
                            target: s.target.clone(),
                            readonly: s.readonly,
                        },
                    })
                })
                .collect(),
            ram: if spec.ram_file.is_some() {
                RamKind::File
            } else {
                RamKind::Stream
            },
            free_page_reporting: spec.free_page_reporting,
            vm_generation_id: spec.vm_generation_id,
            tcg_la57_off: spec.accel == Accel::Tcg && spec.tcg_la57_off,
        }
    }

    /// Whether the two differ only in the shares plugged into spare ports:
    /// a QEMU started afresh with the other's plugged shares loads it.
    pub fn differs_only_in_plugged(&self, other: &DeviceSet) -> bool {
        let slots = |d: &DeviceSet| d.plugged.iter().map(Plugged::slot).collect::<Vec<_>>();
        slots(self) != slots(other)
            && DeviceSet {
                plugged: other.plugged.clone(),
                ..self.clone()
            } == *other
    }

    /// How `now` differs from `self` (the snapshot's), one line per change.
    pub fn differences(&self, now: &DeviceSet) -> Vec<String> {
        let mut out = Vec::new();
        let mut field = |name: &str, was: String, is: String| {
            if was != is {
                out.push(format!("{name}: {was} → {is}"));
            }
        };
        field("machine", self.machine.clone(), now.machine.clone());
        field("accelerator", self.accel.to_string(), now.accel.to_string());
        field("cpus", self.cpus.to_string(), now.cpus.to_string());
        field(
            "memory_mb",
            self.memory_mb.to_string(),
            now.memory_mb.to_string(),
        );
        field(
            "firmware",
            self.firmware.to_string(),
            now.firmware.to_string(),
        );
        field("drives", list(&self.drives), list(&now.drives));
        field(
            "mounts (virtiofs tags)",
            list(&self.mounts),
            list(&now.mounts),
        );
        field(
            "agent transport",
            self.agent.to_string(),
            now.agent.to_string(),
        );
        field(
            "spare PCIe ports",
            self.hotplug_ports.to_string(),
            now.hotplug_ports.to_string(),
        );
        let slots = |d: &DeviceSet| d.plugged.iter().map(Plugged::slot).collect::<Vec<_>>();
        field("plugged mounts", list(&slots(self)), list(&slots(now)));
        field("guest RAM", self.ram.to_string(), now.ram.to_string());
        field(
            "free page reporting",
            self.free_page_reporting.to_string(),
            now.free_page_reporting.to_string(),
        );
        field(
            "VM generation ID",
            self.vm_generation_id.to_string(),
            now.vm_generation_id.to_string(),
        );
        field(
            "TCG CPU without 5-level paging",
            self.tcg_la57_off.to_string(),
            now.tcg_la57_off.to_string(),
        );
        out
    }
}

/// An older record (none) reads and writes as it always did.
fn is_zero(n: &u8) -> bool {
    *n == 0
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> DeviceSet {
        DeviceSet {
            machine: "pc-q35-10.0".into(),
            accel: Accel::Tcg,
            cpus: 2,
            memory_mb: 1024,
            firmware: FirmwareKind::Bios,
            drives: vec![],
            mounts: vec!["mnt-project".into()],
            agent: Transport::Serial,
            hotplug_ports: 4,
            plugged: vec![],
            ram: RamKind::File,
            free_page_reporting: true,
            vm_generation_id: true,
            tcg_la57_off: true,
        }
    }

    #[test]
    fn names_each_change() {
        assert!(set().differences(&set()).is_empty());
        let mut now = set();
        now.mounts.push("srv".into());
        now.memory_mb = 2048;
        assert_eq!(
            set().differences(&now),
            [
                "memory_mb: 1024 → 2048",
                "mounts (virtiofs tags): mnt-project → mnt-project, srv"
            ]
        );
        let record = SnapshotRecord {
            created: 0,
            qemu_version: "10.0.2".into(),
            devices: set(),
            rum_owned: true,
            system_scripts: None,
            key: None,
            ram: None,
        };
        assert!(record.check_loadable("pre-provision", &set()).is_ok());
        let err = record.check_loadable("pre-provision", &now).unwrap_err();
        assert!(
            err.to_string()
                .contains("`pre-provision` snapshot (memory_mb: 1024 → 2048; mounts"),
            "{err}"
        );
        // A snapshot taken with 5-level paging needs a CPU that has it.
        let older = DeviceSet {
            tcg_la57_off: false,
            ..set()
        };
        assert_eq!(
            older.differences(&set()),
            ["TCG CPU without 5-level paging: false → true"]
        );
    }

    #[test]
    fn reads_the_strings_older_records_hold() {
        let json = r#"{"machine":"pc-q35-10.0","accel":"tcg","cpus":2,"memory_mb":1024,"firmware":"uefi","drives":[],"mounts":[],"agent":"serial"}"#;
        let set: DeviceSet = serde_json::from_str(json).unwrap();
        assert_eq!(
            (set.accel, set.firmware, set.agent),
            (Accel::Tcg, FirmwareKind::Uefi, Transport::Serial)
        );
        assert_eq!(serde_json::to_string(&set).unwrap(), json);
    }
}
