//! Picks OVMF for plain-QEMU UEFI boots from QEMU's firmware descriptors
//! (docs/interop/firmware.json), independently of rum's own firmware crate.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    Bios,
    /// OVMF without Secure Boot, with a per-guest copy of its vars template.
    Uefi,
}

/// OVMF code and vars template files and their formats.
pub struct Ovmf {
    pub code: PathBuf,
    pub code_format: String,
    pub vars_template: PathBuf,
    pub vars_format: String,
}

/// Descriptor directories from lowest to highest precedence; a file name in a
/// later one hides the same name in an earlier one.
const DESCRIPTOR_DIRS: [&str; 2] = ["/usr/share/qemu/firmware", "/etc/qemu/firmware"];

/// The first descriptor, by file name, of x86_64 q35 UEFI flash firmware with
/// a vars template and neither Secure Boot nor SMM.
pub fn ovmf() -> Ovmf {
    let mut descriptors = BTreeMap::new();
    for dir in DESCRIPTOR_DIRS {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "json") {
                descriptors.insert(entry.file_name(), entry.path());
            }
        }
    }
    descriptors
        .values()
        .filter_map(|path| {
            let json: Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
            suitable(&json)
        })
        .next()
        .unwrap_or_else(|| {
            panic!(
                "no non-Secure-Boot x86_64 q35 UEFI firmware in {DESCRIPTOR_DIRS:?}; install ovmf (scripts/install-prereqs)"
            )
        })
}

fn suitable(json: &Value) -> Option<Ovmf> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let is_uefi = strings(&json["interface-types"])
        .iter()
        .any(|t| t == "uefi");
    let features = strings(&json["features"]);
    let plain = !features
        .iter()
        .any(|f| f == "secure-boot" || f == "requires-smm" || f == "enrolled-keys");
    let q35 = json["targets"].as_array()?.iter().any(|t| {
        t["architecture"] == "x86_64"
            && strings(&t["machines"])
                .iter()
                .any(|m| m.starts_with("pc-q35-") || m == "q35")
    });
    let mapping = &json["mapping"];
    if !(is_uefi && plain && q35 && mapping["device"] == "flash") {
        return None;
    }
    let file = |key: &str| -> Option<(PathBuf, String)> {
        let path = PathBuf::from(mapping[key]["filename"].as_str()?);
        let format = mapping[key]["format"].as_str().unwrap_or("raw").to_string();
        path.is_file().then_some((path, format))
    };
    let (code, code_format) = file("executable")?;
    let (vars_template, vars_format) = file("nvram-template")?;
    Some(Ovmf {
        code,
        code_format,
        vars_template,
        vars_format,
    })
}
