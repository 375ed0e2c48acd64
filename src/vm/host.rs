//! What this host offers, probed once per command: the QEMU binary and its
//! version, whether KVM and vhost-vsock are usable, and the concrete machine
//! type behind an alias such as `q35`.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("QEMU ({}) is not installed or cannot run; install qemu-system-x86 (QEMU 9 or newer)", .0.display())]
    NoQemu(PathBuf),
    #[error("{} is QEMU {version}; rum needs QEMU 9 or newer", .path.display())]
    OldQemu { path: PathBuf, version: String },
    #[error("QEMU has no machine type `{0}`; see `qemu-system-x86_64 -machine help`")]
    UnknownMachine(String),
    #[error(
        "virtiofsd is not installed; install the virtiofsd package or run `cargo install virtiofsd`"
    )]
    NoVirtiofsd,
    #[error("RUM_VIRTIOFSD names {}, which does not exist", .0.display())]
    NoVirtiofsdAt(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub qemu: PathBuf,
    pub qemu_version: String,
    pub kvm: bool,
    pub vhost_vsock: bool,
}

impl Host {
    pub fn probe(qemu: Option<&Path>) -> Result<Self, HostError> {
        let qemu = qemu
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"));
        let out = Command::new(&qemu)
            .arg("--version")
            .output()
            .map_err(|_| HostError::NoQemu(qemu.clone()))?;
        if !out.status.success() {
            return Err(HostError::NoQemu(qemu));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.split_whitespace().nth(3).unwrap_or("0").to_owned();
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 9 {
            return Err(HostError::OldQemu {
                path: qemu,
                version,
            });
        }
        Ok(Self {
            qemu,
            qemu_version: version,
            kvm: usable("/dev/kvm"),
            vhost_vsock: usable("/dev/vhost-vsock"),
        })
    }

    /// The concrete type behind `machine` (`q35` → `pc-q35-10.0`), from
    /// `-machine help`; a concrete name is returned as it is.
    pub fn resolve_machine(&self, machine: &str) -> Result<String, HostError> {
        let out = Command::new(&self.qemu)
            .args(["-machine", "help"])
            .output()
            .map_err(|_| HostError::NoQemu(self.qemu.clone()))?;
        parse_machine_help(&String::from_utf8_lossy(&out.stdout), machine)
            .ok_or_else(|| HostError::UnknownMachine(machine.to_owned()))
    }
}

/// A device node this user can open for reading and writing.
fn usable(path: &str) -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .is_ok()
}

fn parse_machine_help(help: &str, machine: &str) -> Option<String> {
    help.lines().find_map(|line| {
        let name = line.split_whitespace().next()?;
        (name == machine).then(|| match line.split_once("(alias of ") {
            Some((_, rest)) => rest.trim_end_matches(')').trim().to_owned(),
            None => name.to_owned(),
        })
    })
}

/// Finds virtiofsd: `RUM_VIRTIOFSD` if set, else where distributions and
/// `cargo install` put it.
pub fn find_virtiofsd() -> Result<PathBuf, HostError> {
    if let Some(path) = std::env::var_os("RUM_VIRTIOFSD") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(HostError::NoVirtiofsdAt(path))
        };
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("virtiofsd"))
                .collect()
        })
        .unwrap_or_default();
    candidates.extend(["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"].map(PathBuf::from));
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/virtiofsd"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or(HostError::NoVirtiofsd)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELP: &str = "Supported machines are:\n\
        microvm              microvm (i386)\n\
        pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-10.0)\n\
        pc-i440fx-10.0       Standard PC (i440FX + PIIX, 1996) (default)\n\
        q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-10.0)\n\
        pc-q35-10.0          Standard PC (Q35 + ICH9, 2009)\n";

    #[test]
    fn aliases_resolve_to_concrete_machines() {
        assert_eq!(
            parse_machine_help(HELP, "q35").as_deref(),
            Some("pc-q35-10.0")
        );
        assert_eq!(
            parse_machine_help(HELP, "pc").as_deref(),
            Some("pc-i440fx-10.0")
        );
        assert_eq!(
            parse_machine_help(HELP, "pc-q35-10.0").as_deref(),
            Some("pc-q35-10.0")
        );
        assert_eq!(parse_machine_help(HELP, "virt"), None);
    }
}
