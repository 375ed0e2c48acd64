//! The device set of a VM: what a snapshot's vmstate depends on. A snapshot
//! loads only into a QEMU with the same set; a difference is named to the user.

use super::qemu_args::{Accel, AgentChannel, VmSpec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSet {
    pub machine: String,
    pub accel: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub firmware: String,
    pub drives: Vec<String>,
    /// virtiofs tags, in order.
    pub mounts: Vec<String>,
    pub agent: String,
}

impl DeviceSet {
    pub fn of(spec: &VmSpec) -> Self {
        Self {
            machine: spec.machine.clone(),
            accel: match spec.accel {
                Accel::Kvm => "kvm".into(),
                Accel::Tcg => "tcg".into(),
            },
            cpus: spec.cpus,
            memory_mb: spec.memory_mb,
            firmware: match spec.firmware {
                rum_firmware::Firmware::Bios { .. } => "bios".into(),
                rum_firmware::Firmware::Uefi { .. } => "uefi".into(),
            },
            drives: spec.drives.iter().map(|d| d.name.clone()).collect(),
            mounts: spec.shares.iter().map(|s| s.tag.clone()).collect(),
            agent: match spec.agent {
                AgentChannel::Serial { .. } => "serial".into(),
                AgentChannel::Vsock { .. } => "vsock".into(),
            },
        }
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
        field("accelerator", self.accel.clone(), now.accel.clone());
        field("cpus", self.cpus.to_string(), now.cpus.to_string());
        field(
            "memory_mb",
            self.memory_mb.to_string(),
            now.memory_mb.to_string(),
        );
        field("firmware", self.firmware.clone(), now.firmware.clone());
        field("drives", list(&self.drives), list(&now.drives));
        field(
            "mounts (virtiofs tags)",
            list(&self.mounts),
            list(&now.mounts),
        );
        field("agent transport", self.agent.clone(), now.agent.clone());
        out
    }
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
            accel: "tcg".into(),
            cpus: 2,
            memory_mb: 1024,
            firmware: "bios".into(),
            drives: vec![],
            mounts: vec!["mnt-project".into()],
            agent: "serial".into(),
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
    }
}
