//! The QEMU command line for a VM: a pure function of a fully resolved spec
//! (no probing here; `host` does that once).

use super::spec::{AGENT_PORT, Accel, AgentChannel, Forward, ROOT_NODE, VmSpec, drive_node};
use rum_firmware::Firmware;
use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Spare root ports are `hp0`, `hp1`, …
const HOTPLUG_PORT: &str = "hp";

/// The bus of spare root port `port`.
pub fn hotplug_bus(port: u8) -> String {
    format!("{HOTPLUG_PORT}{port}")
}

/// The chardev and the device of the share on spare root port `port`,
/// whether plugged in while the VM ran or started there.
pub fn plugged_chardev(port: u8) -> String {
    format!("hpfs{port}")
}

pub fn plugged_device(port: u8) -> String {
    format!("hpdev{port}")
}

/// The user-mode network's id, which `hostfwd_add`/`hostfwd_remove` name.
pub const NETDEV: &str = "net0";

/// A forward's `hostfwd` rule: `tcp:BIND:HOST-:GUEST`.
pub fn hostfwd_rule(f: &Forward) -> String {
    format!("{}-:{}", hostfwd_source(f), f.guest)
}

/// The host side of a forward, which `hostfwd_remove` takes: `tcp:BIND:HOST`.
pub fn hostfwd_source(f: &Forward) -> String {
    let bind = match f.bind {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    format!("tcp:{bind}:{}", f.host)
}

/// The CPU a VM gets under KVM: the host's.
pub const KVM_CPU: &str = "host";
/// The CPU a VM made now gets under TCG: without 5-level paging, whose page
/// tables TCG walks in software (boots took 0.80x as long).
pub const TCG_CPU: &str = "max,la57=off";

pub fn qemu_args(spec: &VmSpec) -> Vec<OsString> {
    let mut a = Args::default();
    let name = escape(&spec.name);
    a.plain(["-name", &format!("{name},process=rum-{name}")]);
    a.plain([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-daemonize",
    ]);
    a.path("-pidfile", "", &spec.pid_file);
    // A log file keeps the daemon's stderr open (else it is /dev/null), so
    // why QEMU exits ("terminating on signal 15 from pid …", a failed
    // assertion) stays in it; guest errors are few.
    a.plain(["-d", "guest_errors"]);
    a.path("-D", "", &spec.qemu_log);
    let (accel, cpu) = match spec.accel {
        Accel::Kvm => ("kvm", KVM_CPU),
        Accel::Tcg if spec.tcg_la57_off => ("tcg", TCG_CPU),
        Accel::Tcg => ("tcg", "max"),
    };
    let mut machine = format!("{},accel={accel}", spec.machine);
    if let Firmware::Uefi { requires_smm, .. } = &spec.firmware {
        machine += if *requires_smm { ",smm=on" } else { ",smm=off" };
        machine += ",pflash0=fw-code,pflash1=fw-vars";
    }
    // vhost-user (virtiofsd) needs guest RAM it can map: a shared file
    // (which snapshots leave out) or shared memfd, from the start when a
    // share may be plugged in later.
    if let Some(file) = &spec.ram_file {
        machine += ",memory-backend=mem0";
        let backend = format!(
            "memory-backend-file,id=mem0,size={}M,share=on,mem-path=",
            spec.memory_mb
        );
        a.path("-object", &backend, file);
    } else if !spec.shares.is_empty() || spec.hotplug_ports > 0 {
        machine += ",memory-backend=mem0";
        a.plain([
            "-object",
            &format!(
                "memory-backend-memfd,id=mem0,size={}M,share=on",
                spec.memory_mb
            ),
        ]);
    }
    a.plain(["-machine", &machine, "-cpu", cpu]);
    a.plain([
        "-smp",
        &spec.cpus.to_string(),
        "-m",
        &format!("{}M", spec.memory_mb),
    ]);
    if spec.paused {
        a.plain(["-S"]);
    }
    a.path("-qmp", "unix:", &spec.qmp)
        .suffix(",server=on,wait=off");
    // A socket `rum console` attaches to; every byte also goes to the log,
    // attached or not.
    a.path("-chardev", "socket,id=serial0,path=", &spec.console)
        .suffix(",server=on,wait=off,logappend=on");
    a.suffix_path(",logfile=", &spec.serial_log);
    a.plain(["-serial", "chardev:serial0"]);

    if let Firmware::Uefi {
        code, requires_smm, ..
    } = &spec.firmware
    {
        a.path(
            "-blockdev",
            "driver=file,node-name=fw-code,read-only=on,filename=",
            &code.filename,
        );
        a.path(
            "-blockdev",
            "driver=file,node-name=fw-vars,filename=",
            &spec.nvram,
        );
        if *requires_smm {
            a.plain(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
        }
    } else if let Firmware::Bios { file: Some(file) } = &spec.firmware {
        a.path("-bios", "", file);
    }

    disk(&mut a, ROOT_NODE, &spec.overlay);
    a.plain([
        "-device",
        &format!("virtio-blk-pci,drive={ROOT_NODE},bootindex=0"),
    ]);
    for drive in &spec.drives {
        let node = drive_node(&drive.name);
        disk(&mut a, &node, &drive.path);
        // The serial names the drive in the guest: /dev/disk/by-id/virtio-<name>.
        a.plain([
            "-device",
            &format!("virtio-blk-pci,drive={node},serial={}", drive.serial),
        ]);
    }
    // The seed is a CD on virtio-scsi: q35's AHCI has no driver in Debian's cloud kernel.
    a.plain(["-device", "virtio-scsi-pci,id=scsi0"]);
    a.path(
        "-blockdev",
        "driver=file,node-name=seed-file,read-only=on,filename=",
        &spec.seed,
    );
    a.plain([
        "-blockdev",
        "driver=raw,node-name=seed,file=seed-file,read-only=on",
    ]);
    a.plain(["-device", "scsi-cd,drive=seed,bus=scsi0.0"]);

    let mut netdev = format!(
        "user,id={NETDEV},hostfwd=tcp:127.0.0.1:{}-:22",
        spec.ssh_port
    );
    for f in &spec.forwards {
        netdev += &format!(",hostfwd={}", hostfwd_rule(f));
    }
    a.plain([
        "-netdev",
        &netdev,
        "-device",
        &format!("virtio-net-pci,netdev={NETDEV},mac={}", spec.mac),
    ]);

    match &spec.agent {
        AgentChannel::Serial { socket } => {
            a.plain(["-device", "virtio-serial-pci,id=vser0"]);
            a.path(
                "-chardev",
                "socket,id=agent0,server=on,wait=off,path=",
                socket,
            );
            a.plain([
                "-device",
                &format!("virtserialport,bus=vser0.0,chardev=agent0,name={AGENT_PORT}"),
            ]);
        }
        AgentChannel::Vsock { cid } => {
            a.plain(["-device", &format!("vhost-vsock-pci,guest-cid={cid}")])
        }
    }
    let root = spec.shares.iter().filter(|s| s.port.is_none());
    for (i, share) in root.enumerate() {
        a.path("-chardev", &format!("socket,id=fs{i},path="), &share.socket);
        a.plain([
            "-device",
            &format!("vhost-user-fs-pci,chardev=fs{i},tag={}", share.tag),
        ]);
    }
    a.plain(["-device", "virtio-rng-pci"]);
    // Last, so that the devices before them keep their slots.
    for i in 0..spec.hotplug_ports {
        a.plain([
            "-device",
            &format!(
                "pcie-root-port,id={},chassis={},bus=pcie.0",
                hotplug_bus(i),
                u32::from(i) + 1
            ),
        ]);
    }
    if spec.free_page_reporting {
        a.plain([
            "-device",
            "virtio-balloon-pci,id=balloon0,free-page-reporting=on",
        ]);
    }
    if spec.vm_generation_id {
        a.plain(["-device", "vmgenid,id=vmgenid0,guid=auto"]);
    }
    // Where they were plugged in, as `device_add` put them there.
    for share in &spec.shares {
        let Some(port) = share.port else { continue };
        let chardev = plugged_chardev(port);
        a.path(
            "-chardev",
            &format!("socket,id={chardev},path="),
            &share.socket,
        );
        a.plain([
            "-device",
            &format!(
                "vhost-user-fs-pci,id={},chardev={chardev},tag={},bus={}",
                plugged_device(port),
                share.tag,
                hotplug_bus(port)
            ),
        ]);
    }
    a.0
}

/// A QEMU with no guest, only the given qcow2 disks (node, file) and a QMP
/// socket: for changing the snapshots of a stopped VM.
pub fn offline_args(qmp: &Path, disks: &[(String, PathBuf)]) -> Vec<OsString> {
    let mut a = Args::default();
    a.plain(["-nodefaults", "-machine", "none", "-display", "none", "-S"]);
    a.path("-qmp", "unix:", qmp).suffix(",server=on,wait=off");
    for (node, path) in disks {
        disk(&mut a, node, path);
    }
    a.0
}

/// `discard=unmap`: clusters qcow2 frees (a deleted snapshot, a guest's
/// TRIM) become holes in the file, so a delete gives the host its space.
fn disk(a: &mut Args, node: &str, path: &Path) {
    a.path(
        "-blockdev",
        &format!("driver=file,node-name={node}-file,discard=unmap,filename="),
        path,
    );
    a.plain([
        "-blockdev",
        &format!("driver=qcow2,node-name={node},file={node}-file"),
    ]);
}

/// QEMU option values double their commas.
fn escape(text: &str) -> String {
    text.replace(',', ",,")
}

/// `prefix` + `path` with its commas doubled, any bytes kept.
fn escaped_path(prefix: &str, path: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut value = prefix.as_bytes().to_vec();
    for &b in path.as_os_str().as_bytes() {
        value.push(b);
        if b == b',' {
            value.push(b',');
        }
    }
    OsString::from_vec(value)
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn plain<const N: usize>(&mut self, args: [&str; N]) {
        self.0.extend(args.iter().map(OsString::from));
    }

    /// `flag` then `prefix` + `path` (commas escaped, any bytes kept).
    fn path(&mut self, flag: &str, prefix: &str, path: &Path) -> &mut Self {
        self.0.push(OsString::from(flag));
        self.0.push(escaped_path(prefix, path));
        self
    }

    /// Extends the last argument with `prefix` + `path`, as `path` does.
    fn suffix_path(&mut self, prefix: &str, path: &Path) -> &mut Self {
        let last = self.0.last_mut().expect("an argument to extend");
        last.push(escaped_path(prefix, path));
        self
    }

    fn suffix(&mut self, text: &str) {
        let last = self.0.last_mut().expect("an argument to extend");
        last.push(OsStr::new(text));
    }
}

#[cfg(test)]
mod tests;
