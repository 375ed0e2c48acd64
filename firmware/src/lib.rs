//! rum-firmware: picks the firmware for a VM from QEMU's firmware interop
//! descriptors (`*/qemu/firmware/*.json`) instead of hard-coded paths, and
//! gives each VM its own copy of the UEFI variable store.

mod descriptor;

pub use descriptor::{Descriptor, FlashFile, Mapping, glob};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error(
        "No UEFI firmware for {architecture} machine {machine} in {}; install it (Debian/Ubuntu: `ovmf`, Fedora: `edk2-ovmf`, Arch: `edk2-ovmf`)",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoUefi {
        architecture: String,
        machine: String,
        searched: Vec<PathBuf>,
    },
    #[error("Cannot read firmware descriptor {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot create the UEFI variable store {}", .path.display())]
    Nvram {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the VM should boot with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    Bios,
    Uefi,
}

/// What the caller wants; `machine` must be a concrete type (`pc-q35-10.0`),
/// not an alias such as `q35`.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub architecture: &'a str,
    pub machine: &'a str,
    pub interface: Interface,
    pub secure_boot: bool,
}

/// The chosen firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// A BIOS image from a descriptor, or `None` for QEMU's built-in default (SeaBIOS).
    Bios { file: Option<PathBuf> },
    Uefi {
        code: FlashFile,
        vars_template: FlashFile,
        /// Secure-boot builds need `smm=on` and a secure pflash.
        requires_smm: bool,
        description: String,
    },
}

/// Descriptor directories in QEMU's order: distro, then sysadmin, then user.
/// A file in a later directory replaces the same-named file of an earlier one.
pub fn search_dirs(xdg_config_home: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = vec![
        PathBuf::from("/usr/share/qemu/firmware"),
        PathBuf::from("/etc/qemu/firmware"),
    ];
    if let Some(config) = xdg_config_home {
        dirs.push(config.join("qemu/firmware"));
    }
    dirs
}

/// Every readable descriptor, overridden by name and sorted by file name
/// (the priority order: `50-foo.json` before `60-bar.json`). Files that do
/// not parse are skipped, as QEMU's own consumers do; an empty file masks
/// the same-named file of an earlier directory.
pub fn load(dirs: &[PathBuf]) -> Result<Vec<(PathBuf, Descriptor)>, FirmwareError> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                by_name.insert(name, entry.path());
            }
        }
    }
    let mut out = Vec::new();
    for path in by_name.into_values() {
        let text = std::fs::read_to_string(&path).map_err(|source| FirmwareError::Read {
            path: path.clone(),
            source,
        })?;
        if let Ok(descriptor) = serde_json::from_str::<Descriptor>(&text) {
            out.push((path, descriptor));
        }
    }
    Ok(out)
}

/// The first descriptor, in priority order, that fits the request.
pub fn select(
    descriptors: &[(PathBuf, Descriptor)],
    request: &Request<'_>,
    searched: &[PathBuf],
) -> Result<Firmware, FirmwareError> {
    let interface = match request.interface {
        Interface::Bios => "bios",
        Interface::Uefi => "uefi",
    };
    let fits = |d: &Descriptor| {
        d.interface_types.iter().any(|t| t == interface)
            && d.supports(request.architecture, request.machine)
            && d.has_feature("secure-boot") == request.secure_boot
            && !d.has_feature("amd-sev-es")
            && !d.has_feature("intel-tdx")
    };
    for (_, d) in descriptors.iter().filter(|(_, d)| fits(d)) {
        match (&d.mapping, request.interface) {
            (Mapping::Memory { filename }, Interface::Bios) => {
                return Ok(Firmware::Bios {
                    file: Some(filename.clone()),
                });
            }
            (Mapping::Flash(flash), Interface::Uefi) if flash.mode == "split" => {
                let Some(vars) = &flash.nvram_template else {
                    continue;
                };
                if flash.executable.filename.is_file() && vars.filename.is_file() {
                    return Ok(Firmware::Uefi {
                        code: flash.executable.clone(),
                        vars_template: vars.clone(),
                        requires_smm: d.has_feature("requires-smm"),
                        description: d.description.clone(),
                    });
                }
            }
            _ => {}
        }
    }
    match request.interface {
        Interface::Bios => Ok(Firmware::Bios { file: None }),
        Interface::Uefi => Err(FirmwareError::NoUefi {
            architecture: request.architecture.to_owned(),
            machine: request.machine.to_owned(),
            searched: searched.to_vec(),
        }),
    }
}

/// Gives the VM its own variable store: a copy of the template, made once
/// (through a temporary name, so a crash never leaves a short copy).
pub fn ensure_nvram(vars_template: &Path, nvram: &Path) -> Result<bool, FirmwareError> {
    if nvram.is_file() {
        return Ok(false);
    }
    let err = |source| FirmwareError::Nvram {
        path: nvram.to_path_buf(),
        source,
    };
    let tmp = nvram.with_extension("tmp");
    std::fs::copy(vars_template, &tmp).map_err(err)?;
    std::fs::rename(&tmp, nvram).map_err(err)?;
    Ok(true)
}

#[cfg(test)]
mod tests;
