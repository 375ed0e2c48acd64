//! `[advanced]`: accelerator, machine, firmware, QEMU binary, agent channel.

use super::Checker;
use crate::config::model::{
    Accel, Advanced, AgentTransport, DEFAULT_CHECKPOINTS, FirmwareChoice, GuestRam, MAX_CHECKPOINTS,
};
use crate::config::raw::RawAdvanced;
use crate::config::span::KeyPath;
use crate::image::source::resolve_host_path;
use std::path::{Path, PathBuf};

pub const DEFAULT_MACHINE: &str = "q35";

pub(super) fn advanced(c: &mut Checker, raw: RawAdvanced, dir: &Path) -> Advanced {
    let path = KeyPath::root().key("advanced");
    c.ignored(
        &raw.libvirt_uri,
        path.key("libvirt_uri"),
        "rum drives QEMU directly, without libvirt",
    );
    let accel = match (raw.accel, raw.domain_type) {
        (Some(text), _) => c.choice(path.key("accel"), &text, Accel::NAMES, Accel::parse),
        // libvirt-era files said domain_type = "kvm" | "qemu".
        (None, Some(kind)) => c.choice(
            path.key("domain_type"),
            &kind,
            &["kvm", "qemu"],
            |k| match k {
                "kvm" => Some(Accel::Kvm),
                "qemu" => Some(Accel::Tcg),
                _ => None,
            },
        ),
        (None, None) => Some(Accel::Auto),
    }
    .unwrap_or(Accel::Auto);
    let machine = raw.machine.unwrap_or_else(|| DEFAULT_MACHINE.into());
    let machine_ok = !machine.is_empty()
        && machine
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_'));
    if !machine_ok {
        c.problem(
            path.key("machine"),
            format!("`{machine}` is not a QEMU machine type such as \"q35\""),
        );
    }
    let firmware = raw
        .firmware
        .and_then(|t| {
            c.choice(
                path.key("firmware"),
                &t,
                FirmwareChoice::NAMES,
                FirmwareChoice::parse,
            )
        })
        .unwrap_or(FirmwareChoice::Auto);
    let agent_transport = raw
        .agent_transport
        .and_then(|t| {
            c.choice(
                path.key("agent_transport"),
                &t,
                AgentTransport::NAMES,
                AgentTransport::parse,
            )
        })
        .unwrap_or(AgentTransport::Auto);
    let qemu = raw.qemu.and_then(|text| {
        let file = if text.contains('/') {
            resolve_host_path(&text, dir)
        } else {
            PathBuf::from(&text)
        };
        if file.is_absolute() && !c.trust_host_paths && !is_executable(&file) {
            c.problem(
                path.key("qemu"),
                format!("`{}` is not an executable file", file.display()),
            );
            None
        } else {
            Some(file)
        }
    });
    let checkpoints = match raw.checkpoints {
        None => DEFAULT_CHECKPOINTS,
        Some(n @ 1..=MAX_CHECKPOINTS) => n as u32,
        Some(n) => {
            c.problem(
                path.key("checkpoints"),
                format!("is {n}; give 1 to {MAX_CHECKPOINTS} (step checkpoints kept at most)"),
            );
            DEFAULT_CHECKPOINTS
        }
    };
    let guest_ram = raw
        .guest_ram
        .and_then(|t| c.choice(path.key("guest_ram"), &t, GuestRam::NAMES, GuestRam::parse))
        .unwrap_or(GuestRam::Auto);
    Advanced {
        accel,
        machine,
        firmware,
        qemu,
        agent_transport,
        checkpoints,
        guest_ram,
        autologin: raw.autologin.unwrap_or(false),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
