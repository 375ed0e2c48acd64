//! Plain-QEMU guests on the test image, for tests that must not depend on
//! rum's own command line: q35, SeaBIOS or OVMF, a qcow2 overlay (the cached
//! image is never written), an optional NoCloud seed on virtio-scsi, user-mode
//! networking with SSH forwarded from 127.0.0.1, serial console to a file.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::firmware::{self, Firmware};
use super::ssh::{HostKeys, Ssh, SshKey};
use super::{E2e, free_port, wait_until};

const POLL: Duration = Duration::from_millis(250);

pub struct GuestBuilder<'e> {
    env: &'e E2e,
    name: String,
    firmware: Firmware,
    seed: Option<PathBuf>,
    disk_size: Option<String>,
    memory_mb: u32,
    cpus: u32,
    extra: Vec<OsString>,
}

impl E2e {
    /// A plain-QEMU guest named `name` (its files go to `<root>/<name>/`).
    pub fn guest(&self, name: &str, firmware: Firmware) -> GuestBuilder<'_> {
        GuestBuilder {
            env: self,
            name: name.to_string(),
            firmware,
            seed: None,
            disk_size: None,
            memory_mb: 1024,
            // One vCPU, as rum's test VMs: two guests with two each on two
            // host cores starve each other's boots.
            cpus: 1,
            extra: Vec::new(),
        }
    }
}

impl<'e> GuestBuilder<'e> {
    /// Attaches a NoCloud seed ISO as a read-only SCSI CD-ROM.
    pub fn seed(mut self, iso: &Path) -> Self {
        self.seed = Some(iso.to_path_buf());
        self
    }

    /// Overlay size (`qemu-img` syntax, e.g. `4G`); default: the image's size.
    pub fn disk_size(mut self, size: &str) -> Self {
        self.disk_size = Some(size.to_string());
        self
    }

    pub fn memory_mb(mut self, memory_mb: u32) -> Self {
        self.memory_mb = memory_mb;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Extra QEMU arguments, appended last.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// Creates the overlay (and NVRAM) and starts QEMU.
    pub fn boot(self) -> Guest<'e> {
        let env = self.env;
        let dir = env.dir(&self.name);
        let overlay = dir.join("overlay.qcow2");
        let mut create = Command::new(&env.tools.qemu_img);
        create
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&env.tools.image)
            .arg(&overlay)
            .args(&self.disk_size);
        run_ok(&mut create);

        let ssh_port = free_port();
        let serial_log = dir.join("serial.log");
        let mut qemu = Command::new(&env.tools.qemu);
        qemu.args(["-name", &self.name, "-machine", "q35"])
            .args(["-accel", &env.tools.accel])
            // The CPU rum gives its VMs.
            .args([
                "-cpu",
                if env.tools.accel == "tcg" {
                    rum::vm::qemu_args::TCG_CPU
                } else {
                    rum::vm::qemu_args::KVM_CPU
                },
            ])
            .args(["-m", &self.memory_mb.to_string()])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-display", "none"])
            .arg("-serial")
            .arg(file_arg("file:", &serial_log));
        if self.firmware == Firmware::Uefi {
            let ovmf = firmware::ovmf();
            let vars = dir.join("OVMF_VARS");
            fs::copy(&ovmf.vars_template, &vars).expect("copy the OVMF vars template");
            set_writable(&vars);
            qemu.arg("-drive")
                .arg(pflash(0, &ovmf.code, &ovmf.code_format, true));
            qemu.arg("-drive")
                .arg(pflash(1, &vars, &ovmf.vars_format, false));
        }
        qemu.arg("-drive")
            .arg(file_arg("if=none,id=root,format=qcow2,file=", &overlay))
            // bootindex: firmware must not try network boot first.
            .args(["-device", "virtio-blk-pci,drive=root,bootindex=0"]);
        if let Some(seed) = &self.seed {
            // Not media=cdrom on AHCI: Debian's cloud kernel has no AHCI driver.
            qemu.args(["-device", "virtio-scsi-pci,id=scsi0"])
                .arg("-drive")
                .arg(file_arg(
                    "if=none,id=seed,format=raw,media=cdrom,readonly=on,file=",
                    seed,
                ))
                .args(["-device", "scsi-cd,drive=seed,bus=scsi0.0"]);
        }
        qemu.arg("-netdev")
            .arg(format!("user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"))
            .args(["-device", "virtio-net-pci,netdev=net0"])
            .args(&self.extra);

        let stderr_log = dir.join("qemu-stderr.log");
        let stderr = File::create(&stderr_log).expect("create the QEMU stderr log");
        qemu.stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("clone the QEMU log handle"))
            .stderr(stderr);
        eprintln!("[e2e] {}: {:?}", self.name, qemu);
        let started = Instant::now();
        let pid = env.procs.spawn(&mut qemu);
        Guest {
            env,
            name: self.name,
            dir,
            pid,
            ssh_port,
            serial_log,
            stderr_log,
            started,
        }
    }
}

/// A running plain-QEMU guest; dropping it stops QEMU.
pub struct Guest<'e> {
    env: &'e E2e,
    pub name: String,
    pub dir: PathBuf,
    pub pid: u32,
    /// Host port forwarded to the guest's port 22.
    pub ssh_port: u16,
    pub serial_log: PathBuf,
    pub stderr_log: PathBuf,
    /// When QEMU was started.
    pub started: Instant,
}

impl Guest<'_> {
    /// The serial console so far.
    pub fn serial(&self) -> String {
        fs::read(&self.serial_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Panics if QEMU has exited, with its exit status and stderr.
    pub fn assert_running(&self) {
        if let Some(status) = self.env.procs.try_wait(self.pid) {
            panic!(
                "QEMU for {} exited ({status}); stderr:\n{}",
                self.name,
                fs::read_to_string(&self.stderr_log).unwrap_or_default()
            );
        }
    }

    /// Waits for `text` on the serial console; returns the time since QEMU started.
    pub fn wait_for_serial(&self, text: &str, timeout: Duration) -> Duration {
        let found = wait_until(timeout, POLL, || {
            self.assert_running();
            self.serial().contains(text)
        });
        assert!(
            found,
            "{}: {text:?} did not appear on the serial console within {timeout:?}",
            self.name
        );
        self.started.elapsed()
    }

    /// SSH settings for `user` with `key`, pinning the host key on first contact.
    pub fn ssh(&self, user: &str, key: &SshKey) -> Ssh {
        Ssh {
            user: user.to_string(),
            port: self.ssh_port,
            key: key.private.clone(),
            known_hosts: self.dir.join("known_hosts"),
            host_keys: HostKeys::AcceptNew,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Waits until `ssh` can run a command; returns the time since QEMU started.
    pub fn wait_for_ssh(&self, ssh: &Ssh, timeout: Duration) -> Duration {
        let mut last = None;
        let ok = wait_until(timeout, Duration::from_secs(2), || {
            self.assert_running();
            let out = ssh.run("true");
            let ok = out.status.success();
            last = Some(out);
            ok
        });
        assert!(
            ok,
            "{}: no SSH login as {} on port {} within {timeout:?}; last ssh stderr: {}",
            self.name,
            ssh.user,
            ssh.port,
            last.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default()
        );
        self.started.elapsed()
    }
}

impl Drop for Guest<'_> {
    fn drop(&mut self) {
        self.env.procs.stop(self.pid);
    }
}

fn pflash(unit: u8, file: &Path, format: &str, readonly: bool) -> OsString {
    let mut arg = OsString::from(format!(
        "if=pflash,unit={unit},format={format},readonly={}",
        if readonly { "on" } else { "off" }
    ));
    arg.push(",file=");
    arg.push(escape_commas(file));
    arg
}

/// `prefix` followed by `path`, with commas doubled as QEMU's option syntax wants.
fn file_arg(prefix: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(prefix);
    arg.push(escape_commas(path));
    arg
}

fn escape_commas(path: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut escaped = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        escaped.push(b);
        if b == b',' {
            escaped.push(b',');
        }
    }
    OsString::from_vec(escaped)
}

fn set_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
