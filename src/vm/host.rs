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
    pub kvm: Kvm,
    pub vhost_vsock: bool,
}

/// What `/dev/kvm` gives this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kvm {
    /// No `/dev/kvm` this user can open.
    Absent,
    /// Backed by the CPU's VT-x or AMD-V.
    Hardware,
    /// It opens, but the CPU has neither VT-x nor AMD-V: a software KVM
    /// (PVM, on nested cloud VMs) that emulates an unmodified guest
    /// instruction by instruction, far slower than TCG.
    Emulated,
}

impl Kvm {
    /// What runs guests here, from whether `/dev/kvm` opens and the CPU's
    /// flags in `/proc/cpuinfo`.
    pub fn of(opens: bool, cpuinfo: &str) -> Self {
        let extensions = cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .flat_map(|l| l.split_whitespace())
            .any(|flag| flag == "vmx" || flag == "svm");
        match (opens, extensions) {
            (false, _) => Kvm::Absent,
            (true, true) => Kvm::Hardware,
            (true, false) => Kvm::Emulated,
        }
    }

    fn probe() -> Self {
        let opens = usable("/dev/kvm");
        let kvm = match std::fs::read_to_string("/proc/cpuinfo") {
            Ok(cpuinfo) => Self::of(opens, &cpuinfo),
            // Without the flags, /dev/kvm is taken at its word.
            Err(_) if opens => Kvm::Hardware,
            Err(_) => Kvm::Absent,
        };
        // Tests drive the stall fallback on a host that has only a software KVM.
        match kvm {
            Kvm::Emulated if std::env::var_os("RUM_TEST_KVM_IS_HARDWARE").is_some() => {
                Kvm::Hardware
            }
            kvm => kvm,
        }
    }
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
            kvm: Kvm::probe(),
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

    #[test]
    fn kvm_without_vt_x_or_amd_v_is_emulated() {
        let intel = "processor\t: 0\nflags\t\t: fpu vme de pse vmx ept\n";
        let amd = "processor\t: 0\nflags\t\t: fpu svm npt\n";
        // A nested cloud VM with PVM: a hypervisor flag and no VT-x.
        let pvm = "processor\t: 0\nflags\t\t: fpu vme hypervisor avx512f\nvmx flags\t: none\n";
        assert_eq!(Kvm::of(true, intel), Kvm::Hardware);
        assert_eq!(Kvm::of(true, amd), Kvm::Hardware);
        assert_eq!(Kvm::of(false, intel), Kvm::Absent);
        assert_eq!(Kvm::of(true, pvm), Kvm::Emulated);
    }

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
