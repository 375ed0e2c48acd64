//! What a VM is made of, fully resolved: the input of the pure QEMU command
//! line builder and of the device set a snapshot is checked against.

use rum_firmware::Firmware;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

/// Block node of the root disk; also where snapshots keep the VM state.
pub const ROOT_NODE: &str = "root";
/// The virtio-serial port name the guest agent opens.
pub const AGENT_PORT: &str = "org.rum.agent.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// Which kind of firmware boots the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareKind {
    Bios,
    Uefi,
}

/// How the host reaches the guest agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Serial,
    Vsock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentChannel {
    /// virtio-serial port backed by a host Unix socket.
    Serial {
        socket: PathBuf,
    },
    Vsock {
        cid: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    pub name: String,
    pub path: PathBuf,
    /// What names it in the guest: /dev/disk/by-id/virtio-<serial>.
    pub serial: String,
}

/// A virtiofs share served by a virtiofsd listening on `socket`, on the
/// root bus, or on spare root port `port` (where it was plugged in while
/// the VM ran; a QEMU started to load a snapshot taken since has it there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    pub socket: PathBuf,
    pub source: PathBuf,
    pub target: String,
    pub readonly: bool,
    pub port: Option<u8>,
}

/// virtiofsd's files for a share on spare port `port` are numbered from here.
pub const PLUGGED_INDEX: usize = 100;

/// The number of the virtiofsd files (socket, pid, log) of the share on
/// spare port `port`.
pub fn plugged_index(port: u8) -> usize {
    PLUGGED_INDEX + usize::from(port)
}

/// A host port forwarded to a guest port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub bind: IpAddr,
    pub host: u16,
    pub guest: u16,
}

impl From<&crate::config::PortForward> for Forward {
    fn from(p: &crate::config::PortForward) -> Self {
        Self {
            bind: p.bind,
            host: p.host.get(),
            guest: p.guest.get(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub name: String,
    pub accel: Accel,
    pub machine: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub firmware: Firmware,
    pub nvram: PathBuf,
    pub overlay: PathBuf,
    pub drives: Vec<Drive>,
    pub seed: PathBuf,
    pub agent: AgentChannel,
    pub mac: String,
    pub ssh_port: u16,
    pub forwards: Vec<Forward>,
    pub shares: Vec<Share>,
    /// Spare PCIe root ports `hp0`, `hp1`, … for devices plugged later.
    pub hotplug_ports: u8,
    /// Guest RAM in this shared file (else memfd, or QEMU's own memory).
    pub ram_file: Option<PathBuf>,
    /// A balloon through which the guest hands back free pages, so that
    /// snapshots and RAM copies skip them.
    pub free_page_reporting: bool,
    /// A VM generation ID (`guid=auto`): a new one in every QEMU, so a
    /// guest restored into a fresh QEMU reseeds its RNG itself.
    pub vm_generation_id: bool,
    /// Under TCG, a CPU without 5-level paging (`max,la57=off`): TCG walks
    /// guest page tables in software, and the fifth level made a Debian
    /// boot a fifth slower.
    pub tcg_la57_off: bool,
    pub qmp: PathBuf,
    pub serial_log: PathBuf,
    /// QEMU's own messages, also after it daemonized (why it exited).
    pub qemu_log: PathBuf,
    /// The serial console's socket (`rum console`).
    pub console: PathBuf,
    pub pid_file: PathBuf,
    /// Start with the CPUs stopped (to load a snapshot before anything runs).
    pub paused: bool,
}

impl VmSpec {
    /// Block nodes a snapshot covers: the root disk and every drive.
    pub fn snapshot_nodes(&self) -> Vec<String> {
        snapshot_nodes(self.drives.iter().map(|d| d.name.as_str()))
    }

    pub fn firmware_kind(&self) -> FirmwareKind {
        match self.firmware {
            Firmware::Bios { .. } => FirmwareKind::Bios,
            Firmware::Uefi { .. } => FirmwareKind::Uefi,
        }
    }

    pub fn transport(&self) -> Transport {
        match self.agent {
            AgentChannel::Serial { .. } => Transport::Serial,
            AgentChannel::Vsock { .. } => Transport::Vsock,
        }
    }
}

/// The block nodes of the root disk and of the named drives, root first.
pub fn snapshot_nodes<'a>(drives: impl Iterator<Item = &'a str>) -> Vec<String> {
    std::iter::once(ROOT_NODE.to_owned())
        .chain(drives.map(drive_node))
        .collect()
}

pub fn drive_node(name: &str) -> String {
    format!("drive-{name}")
}

/// The file behind each snapshot node of an instance (`drive-NAME` is a
/// drive, the root node the overlay).
pub fn node_files(
    nodes: &[String],
    overlay: &std::path::Path,
    drive: impl Fn(&str) -> PathBuf,
) -> Vec<(String, PathBuf)> {
    nodes
        .iter()
        .map(|node| {
            let path = match node.strip_prefix("drive-") {
                Some(name) => drive(name),
                None => overlay.to_path_buf(),
            };
            (node.clone(), path)
        })
        .collect()
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl fmt::Display for FirmwareKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FirmwareKind::Bios => "bios",
            FirmwareKind::Uefi => "uefi",
        })
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Serial => "serial",
            Transport::Vsock => "vsock",
        })
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} → {}", self.bind, self.host, self.guest)
    }
}
