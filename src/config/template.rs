//! The commented rum.toml that `rum init` writes.

use super::{DEFAULT_CPUS, DEFAULT_DISK, DEFAULT_MEMORY_MB};

/// What `rum init` asks for; everything else is left commented out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitAnswers {
    pub base: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub disk: String,
    /// Share the project directory at /mnt/project.
    pub mount_project: bool,
}

impl Default for InitAnswers {
    fn default() -> Self {
        Self {
            base: "debian-12".into(),
            cpus: DEFAULT_CPUS,
            memory_mb: DEFAULT_MEMORY_MB,
            disk: DEFAULT_DISK.into(),
            mount_project: true,
        }
    }
}

/// A TOML string literal, escaped by the TOML serializer.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

pub fn render(a: &InitAnswers) -> String {
    let mount = if a.mount_project {
        "[[mounts]]\nsource = \".\"              # host directory, relative to this file\ntarget = \"/mnt/project\"   # guest mount point (virtiofs)\n# readonly = false\n"
    } else {
        "# [[mounts]]\n# source = \".\"\n# target = \"/mnt/project\"\n"
    };
    format!(
        r#"# rum.toml: one VM for this project. `rum config check` validates it.
# name = "my-vm"        # default: the directory name (or FOO for FOO.rum.toml)

[image]
# A local qcow2/raw file, an http(s) URL, or a name such as "debian-12".
base = {base}

[resources]
cpus = {cpus}
memory_mb = {memory}
disk = {disk}             # root disk size: K, M, G or T

# [network]
# hostname = "devbox"   # default: derived from the VM name

# Forward host ports to the guest; bound to 127.0.0.1 unless `bind` says otherwise.
# [[ports]]
# host = 8080
# guest = 80

{mount}
# Extra disks, formatted and mounted for you.
# [drives.data]
# size = "10G"
#
# [[fs.ext4]]           # ext4, xfs, btrfs or zfs
# drive = "data"
# target = "/mnt/data"

# Provisioning runs through rum's guest agent with live output.
# `rum retry` restores the snapshot taken before it and runs it again.
# [provision.system]    # once per VM; [[provision.system]] for several steps
# name = "packages"     # optional; system-1, system-2, … by default
# script = """
# apt-get update && apt-get install -y build-essential
# """
# file = "provision/setup.sh"   # instead of `script`
#
# [provision.boot]      # on every boot
# script = "echo booted"

# [user]
# name = "rum"
# groups = ["docker"]

# [ssh]
# authorized_keys = ["ssh-ed25519 AAAA... you@host"]

# [advanced]
# accel = "auto"        # auto | kvm | tcg
# firmware = "auto"     # auto | bios | uefi
# machine = "q35"
# agent_transport = "auto"   # auto | vsock | serial
# guest_ram = "auto"    # auto (a file on /dev/shm, for fast snapshots) | memfd
"#,
        base = quoted(&a.base),
        cpus = a.cpus,
        memory = a.memory_mb,
        disk = quoted(&a.disk),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageSource;

    #[test]
    fn every_rendering_is_a_valid_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rum.toml");
        // A quote and a backslash prove the value goes through the TOML serializer.
        let url = r#"https://images.invalid/a"b\c.qcow2"#;
        for mount_project in [true, false] {
            let answers = InitAnswers {
                base: url.into(),
                mount_project,
                ..Default::default()
            };
            let loaded = crate::config::parse_str(&render(&answers), &file).unwrap();
            assert_eq!(loaded.config.mounts.len(), usize::from(mount_project));
            assert_eq!(loaded.config.image.base, ImageSource::Url(url.into()));
            assert!(loaded.warnings.is_empty());
        }
    }
}
