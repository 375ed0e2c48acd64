//! The resolved configuration: defaults applied, every value checked. The rest
//! of rum trusts these types and never re-validates.

use super::size::ByteSize;
use crate::image::{Checksum, ImageSource};
use serde::Serialize;
use std::net::IpAddr;
use std::num::NonZeroU16;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The config file, absolute.
    pub file: PathBuf,
    /// The directory relative paths in the file are resolved against.
    pub dir: PathBuf,
    pub name: String,
    pub image: Image,
    pub resources: Resources,
    pub network: Network,
    pub ports: Vec<PortForward>,
    pub mounts: Vec<Mount>,
    pub drives: Vec<Drive>,
    pub filesystems: Vec<Filesystem>,
    pub provision: Provision,
    pub ssh: Ssh,
    pub user: User,
    pub advanced: Advanced,
}

impl Config {
    /// The guest directory `rum ssh` and `rum exec` start in: the target
    /// of the mount marked `default`.
    pub fn start_dir(&self) -> Option<&str> {
        self.mounts
            .iter()
            .find(|m| m.default)
            .map(|m| m.target.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    /// Flattened: `config check -o json` shows `image.kind` and `image.value`.
    #[serde(flatten)]
    pub base: ImageSource,
    /// `[image] sha256`: what the base must hash to (else a published sums file).
    pub sha256: Option<Checksum>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    pub cpus: u32,
    pub memory_mb: u64,
    pub disk: ByteSize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Network {
    pub hostname: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortForward {
    pub host: NonZeroU16,
    pub guest: NonZeroU16,
    pub bind: IpAddr,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mount {
    /// Host directory, absolute and canonical.
    pub source: PathBuf,
    /// Guest mount point, absolute and normalised.
    pub target: String,
    pub readonly: bool,
    /// virtiofs tag, unique within the VM.
    pub tag: String,
    /// Where `rum ssh` and `rum exec` start (at most one mount).
    pub default: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Drive {
    pub name: String,
    pub size: ByteSize,
}

/// A virtio-blk serial holds at most 20 bytes (`VIRTIO_BLK_ID_BYTES`); QEMU
/// drops the rest, so drive names must differ within their first 20.
pub const VIRTIO_SERIAL_LEN: usize = 20;

impl Drive {
    /// The serial QEMU gives this drive, by which the guest tells it from the
    /// others (`/dev/disk/by-id/virtio-<serial>`): the name's first
    /// [`VIRTIO_SERIAL_LEN`] characters (drive names are ASCII).
    pub fn serial(&self) -> &str {
        match self.name.char_indices().nth(VIRTIO_SERIAL_LEN) {
            Some((at, _)) => &self.name[..at],
            None => &self.name,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    Ext4,
    Xfs,
    Btrfs,
    Zfs,
}

impl FsKind {
    pub const ALL: [FsKind; 4] = [FsKind::Ext4, FsKind::Xfs, FsKind::Btrfs, FsKind::Zfs];

    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Zfs => "zfs",
        }
    }

    /// Whether one filesystem of this kind may span several drives.
    pub fn multi_drive(self) -> bool {
        matches!(self, FsKind::Btrfs | FsKind::Zfs)
    }

    /// The layouts `mode` may name; empty when the kind has none.
    pub fn modes(self) -> &'static [&'static str] {
        match self {
            FsKind::Ext4 | FsKind::Xfs => &[],
            FsKind::Btrfs => &["single", "raid0", "raid1", "raid1c3", "raid1c4", "raid10"],
            FsKind::Zfs => &["stripe", "mirror", "raidz", "raidz1", "raidz2", "raidz3"],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Filesystem {
    pub kind: FsKind,
    /// Names of `[drives]` entries, at least one.
    pub drives: Vec<String>,
    pub target: String,
    pub mode: Option<String>,
    /// ZFS pool name (zfs only).
    pub pool: Option<String>,
}

/// The provisioning steps of each phase, in the order they run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Provision {
    pub system: Vec<Step>,
    pub boot: Vec<Step>,
}

/// Steps a phase may hold (their run order stays within the phase's range).
pub const MAX_STEPS: usize = 100;

/// One provisioning step: a script with a name unique across both phases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub name: String,
    pub script: Script,
    /// Runs again after a failure, on the VM restored to the checkpoint
    /// before it, at most this many times (0–`MAX_RETRIES`).
    pub retries: u8,
    /// A checkpoint after it (system steps; off for cheap ones).
    pub checkpoint: bool,
}

/// The most `retries` a step may ask for.
pub const MAX_RETRIES: i64 = 5;

/// A provisioning script: inline text, or a file read again before every run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Script {
    Inline(String),
    /// Absolute path of a script file.
    File(PathBuf),
}

#[derive(Debug, Clone, Serialize)]
pub struct Ssh {
    pub user: String,
    /// The ssh client `rum ssh` runs.
    pub command: String,
    pub authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Advanced {
    pub accel: Accel,
    pub machine: String,
    pub firmware: FirmwareChoice,
    /// QEMU binary; `None` finds `qemu-system-x86_64` on PATH.
    pub qemu: Option<PathBuf>,
    pub agent_transport: AgentTransport,
    /// rum's step checkpoints kept at most (besides `pre-provision`).
    pub checkpoints: u32,
    /// Where a new VM's RAM lives (fixed when the VM is made).
    pub guest_ram: GuestRam,
    /// The serial console logs in as `[user] name` (`rum console`).
    pub autologin: bool,
}

/// The checkpoint budget when rum.toml names none.
pub const DEFAULT_CHECKPOINTS: u32 = 8;
/// The most checkpoints `[advanced] checkpoints` may ask for.
pub const MAX_CHECKPOINTS: i64 = 64;

/// Generates `ALL`, `as_str` and `parse` for a config enum written as a string.
macro_rules! config_enum {
    ($name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

config_enum!(Accel { Auto = "auto", Kvm = "kvm", Tcg = "tcg" });
config_enum!(FirmwareChoice { Auto = "auto", Bios = "bios", Uefi = "uefi" });
config_enum!(AgentTransport { Auto = "auto", Vsock = "vsock", Serial = "serial" });
// `auto`: a file on /dev/shm where it has room, which snapshots leave out
// and copy on their own; `memfd`: memory snapshots write into the qcow2.
config_enum!(GuestRam { Auto = "auto", Memfd = "memfd" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drive_serial_is_the_first_20_characters_of_its_name() {
        let drive = |name: &str| Drive {
            name: name.to_owned(),
            size: ByteSize::from_bytes(1 << 30),
        };
        assert_eq!(drive("data").serial(), "data");
        assert_eq!(
            drive("a-very-long-drive-name-indeed").serial(),
            "a-very-long-drive-na"
        );
        assert_eq!(
            drive("exactly-twenty-chars").serial().len(),
            VIRTIO_SERIAL_LEN
        );
    }
}
