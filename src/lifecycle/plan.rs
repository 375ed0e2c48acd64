//! The pure planner: rum.toml, what the host offers and the instance's paths
//! become the spec QEMU is started with (accelerator, firmware, agent
//! channel, vsock CID, disks, shares, forwards) and, once QEMU runs, the
//! runtime record. No probing and no files here.

use super::RuntimeInfo;
use super::error::UpError;
use super::runtime::MountRecord;
use crate::config::{Accel as AccelChoice, AgentTransport, Config, FirmwareChoice};
use crate::disk::BootNeeds;
use crate::instance::InstancePaths;
use crate::ram::RamFile;
use crate::state::{DeviceSet, Plugged, ShareRecord};
use crate::vm::host::{Host, Kvm};
use crate::vm::spec::{Accel, AgentChannel, Drive, Forward, Share, VmSpec, plugged_index};
use rum_firmware::{Firmware, Interface};

/// Everything the spec depends on, resolved by the caller.
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub paths: &'a InstancePaths,
    pub host: &'a Host,
    /// The concrete machine type behind the config's alias (e.g. `q35`).
    pub machine: String,
    /// `RUM_ACCEL`, which wins over `[advanced] accel`.
    pub accel_env: Option<&'a str>,
    pub firmware: Firmware,
    pub mac: &'a str,
    pub ssh_port: u16,
    /// Started with stopped CPUs, to load a snapshot first.
    pub paused: bool,
    /// The VM's spare PCIe root ports (`State::hotplug_ports`).
    pub hotplug_ports: u8,
    /// The shares on the root bus (`State::shares`, else rum.toml's).
    pub shares: &'a [ShareRecord],
    /// Shares to start plugged into spare ports: a snapshot's, to load it.
    pub plugged: &'a [Plugged],
    /// The VM's RAM file (`State::ram`).
    pub ram: Option<&'a RamFile>,
    /// `State::free_page_reporting`.
    pub free_page_reporting: bool,
    /// `State::vm_generation_id`.
    pub vm_generation_id: bool,
    /// `State::tcg_la57_off`.
    pub tcg_la57_off: bool,
}

/// The spec, and what the user should be told about how it was chosen.
pub struct Plan {
    pub spec: VmSpec,
    pub warnings: Vec<&'static str>,
}

pub fn plan(inputs: &Inputs<'_>) -> Result<Plan, UpError> {
    let Inputs {
        config,
        paths,
        host,
        ..
    } = inputs;
    let mut warnings = Vec::new();
    let accel = accel(inputs.accel_env, config.advanced.accel, host.kvm)?;
    if let Some(because) = accel.1 {
        warnings.push(because.warning());
    }
    let agent = agent_channel(config.advanced.agent_transport, host.vhost_vsock, paths)?;
    let spec = VmSpec {
        name: paths.id.to_string(),
        accel: accel.0,
        machine: inputs.machine.clone(),
        cpus: config.resources.cpus,
        memory_mb: config.resources.memory_mb,
        firmware: inputs.firmware.clone(),
        nvram: paths.nvram(),
        overlay: paths.overlay(),
        drives: config
            .drives
            .iter()
            .map(|d| Drive {
                name: d.name.clone(),
                path: paths.drive(&d.name),
                serial: d.serial().to_owned(),
            })
            .collect(),
        seed: paths.seed_iso(),
        agent,
        mac: inputs.mac.to_owned(),
        ssh_port: inputs.ssh_port,
        forwards: config.ports.iter().map(Forward::from).collect(),
        shares: shares(inputs),
        hotplug_ports: inputs.hotplug_ports,
        ram_file: inputs.ram.map(|r| r.live.clone()),
        free_page_reporting: inputs.free_page_reporting,
        vm_generation_id: inputs.vm_generation_id,
        tcg_la57_off: inputs.tcg_la57_off,
        qmp: paths.qmp_socket(),
        serial_log: paths.serial_log(),
        qemu_log: paths.qemu_log(),
        console: paths.console_socket(),
        pid_file: paths.qemu_pid(),
        paused: inputs.paused,
    };
    Ok(Plan { spec, warnings })
}

/// The shares on the root bus, then those a snapshot to load had plugged
/// into spare ports, each with its virtiofsd's socket.
fn shares(inputs: &Inputs<'_>) -> Vec<Share> {
    let root = inputs
        .shares
        .iter()
        .enumerate()
        .map(|(i, s)| share(inputs.paths, s, i, None));
    let plugged = inputs
        .plugged
        .iter()
        .map(|p| plugged_share(inputs.paths, &p.share, p.port));
    root.chain(plugged).collect()
}

/// The spec of `record` on spare root port `port`.
pub fn plugged_share(paths: &InstancePaths, record: &ShareRecord, port: u8) -> Share {
    share(paths, record, plugged_index(port), Some(port))
}

fn share(paths: &InstancePaths, record: &ShareRecord, index: usize, port: Option<u8>) -> Share {
    Share {
        tag: record.tag.clone(),
        socket: paths.virtiofs_socket(index),
        source: record.source.clone(),
        target: record.target.clone(),
        readonly: record.readonly,
        port,
    }
}

/// Spare PCIe root ports a new VM gets: a few on q35 (PCIe hot-plug needs
/// a free root port), none on machines without PCIe.
pub fn hotplug_ports(machine: &str) -> u8 {
    if machine.contains("q35") {
        HOTPLUG_PORTS
    } else {
        0
    }
}

/// Enough for a few mounts added while the VM runs.
const HOTPLUG_PORTS: u8 = 4;

/// Why `auto` chose TCG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcgBecause {
    NoKvm,
    EmulatedKvm,
}

impl TcgBecause {
    pub fn warning(self) -> &'static str {
        match self {
            TcgBecause::NoKvm => {
                "KVM is not usable here (/dev/kvm); using TCG, which is much slower"
            }
            TcgBecause::EmulatedKvm => {
                "/dev/kvm here is a software KVM (the CPU has no VT-x or AMD-V, as in a nested cloud VM), which runs ordinary guests far slower than TCG; using TCG. RUM_ACCEL=kvm tries it anyway"
            }
        }
    }
}

/// The accelerator, and why `auto` chose TCG if it did.
pub fn accel(
    env: Option<&str>,
    config: AccelChoice,
    kvm: Kvm,
) -> Result<(Accel, Option<TcgBecause>), UpError> {
    let (choice, source) = match env {
        Some(value) => match AccelChoice::parse(value) {
            Some(choice) => (choice, "RUM_ACCEL"),
            None => return Err(UpError::BadAccelEnv(value.to_owned())),
        },
        None => (config, "[advanced] accel"),
    };
    Ok(match (choice, kvm) {
        (AccelChoice::Tcg, _) => (Accel::Tcg, None),
        (AccelChoice::Kvm, Kvm::Absent) => return Err(UpError::NoKvm(source)),
        (AccelChoice::Kvm, _) | (AccelChoice::Auto, Kvm::Hardware) => (Accel::Kvm, None),
        (AccelChoice::Auto, Kvm::Absent) => (Accel::Tcg, Some(TcgBecause::NoKvm)),
        (AccelChoice::Auto, Kvm::Emulated) => (Accel::Tcg, Some(TcgBecause::EmulatedKvm)),
    })
}

/// vsock where the host has it (or it was asked for), else virtio-serial.
pub fn agent_channel(
    choice: AgentTransport,
    vhost_vsock: bool,
    paths: &InstancePaths,
) -> Result<AgentChannel, UpError> {
    let vsock = AgentChannel::Vsock {
        cid: vsock_cid(paths.id.as_str()),
    };
    let serial = AgentChannel::Serial {
        socket: paths.agent_socket(),
    };
    Ok(match choice {
        AgentTransport::Serial => serial,
        AgentTransport::Vsock if vhost_vsock => vsock,
        AgentTransport::Vsock => return Err(UpError::NoVsock),
        AgentTransport::Auto if vhost_vsock => vsock,
        AgentTransport::Auto => serial,
    })
}

/// UEFI only for an image that cannot boot otherwise: hybrid cloud images
/// boot either way, and SeaBIOS starts faster. `None`: no base image known.
pub fn firmware_interface(choice: FirmwareChoice, base_needs: Option<BootNeeds>) -> Interface {
    match choice {
        FirmwareChoice::Bios => Interface::Bios,
        FirmwareChoice::Uefi => Interface::Uefi,
        FirmwareChoice::Auto => match base_needs {
            Some(BootNeeds::Uefi) => Interface::Uefi,
            Some(BootNeeds::Bios | BootNeeds::Unknown) | None => Interface::Bios,
        },
    }
}

/// A guest CID from the instance id, clear of the reserved 0–2.
pub fn vsock_cid(id: &str) -> u32 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.as_bytes());
    3 + u32::from_le_bytes(digest[..4].try_into().expect("4 bytes")) % 0x7fff_0000
}

/// What is recorded about the VM once QEMU runs it.
pub fn record(
    spec: &VmSpec,
    pid: u32,
    started: u64,
    qemu_version: &str,
    virtiofsd_pids: Vec<u32>,
) -> RuntimeInfo {
    RuntimeInfo {
        pid,
        started,
        qemu_version: qemu_version.to_owned(),
        accel: spec.accel,
        machine: spec.machine.clone(),
        firmware: spec.firmware_kind(),
        agent_transport: spec.transport(),
        vsock_cid: match spec.agent {
            AgentChannel::Vsock { cid } => Some(cid),
            AgentChannel::Serial { .. } => None,
        },
        ssh_port: spec.ssh_port,
        ports: spec.forwards.clone(),
        mounts: spec
            .shares
            .iter()
            .filter(|s| s.port.is_none())
            .map(|s| MountRecord {
                source: s.source.clone(),
                target: s.target.clone(),
            })
            .collect(),
        virtiofsd_pids,
        devices: DeviceSet::of(spec),
        snapshot_nodes: spec.snapshot_nodes(),
    }
}

#[cfg(test)]
mod tests;
