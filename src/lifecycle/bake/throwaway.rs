//! The throwaway copy a bake generalises: the flattened image booted in a
//! QEMU of its own (the VM's machine, firmware and seed; no shares, drives
//! or forwards), its guest stripped of this VM's identity through the agent,
//! then powered off. The user's VM is never touched.

use super::super::Instance;
use super::super::boot::select_firmware;
use super::super::error::{BakeError, LifecycleError, UpError};
use super::super::plan::{self, Inputs};
use super::super::ports::free_port;
use crate::identity::GuestIdentity;
use crate::output::Reporter;
use crate::vm::host::{Host, Kvm};
use crate::vm::spec::AgentChannel;
use crate::vm::{process, qemu, qemu_args};
use rum_agent::protocol::ExecRequest;
use rum_agent::{Client, ConnectOptions, Endpoint};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the copy may take to boot to its agent.
const BOOT: Duration = Duration::from_secs(600);
/// How long its guest may take to power off once asked.
const POWER_OFF: Duration = Duration::from_secs(180);

/// Strips what makes a guest this VM, so a VM made from the image runs
/// cloud-init again as itself: cloud-init's state and logs, the machine
/// id, SSH host keys, the user rum created, rum's own state, fstab lines
/// and console autologin; the agent and its unit too unless `keep_agent`.
pub fn generalise_script(user: &str, keep_agent: bool) -> String {
    let mut s = String::from(
        "set -u\n\
         # A stage still running would write its state again after the clean.\n\
         cloud-init status --wait >/dev/null 2>&1 || true\n\
         sync\n\
         cloud-init clean --logs\n\
         # Empty, not absent: systemd makes a new id at the next boot (machine-id(5)).\n\
         : > /etc/machine-id\n\
         rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*\n",
    );
    s += &format!(
        "user={}\n\
         if id \"$user\" >/dev/null 2>&1; then pkill -KILL -u \"$user\" || true; userdel --force --remove \"$user\"; fi\n",
        rum_seed::shell::quote(user)
    );
    s += "rm -f /etc/sudoers.d/90-cloud-init-users\n\
          rm -rf /var/lib/rum\n\
          sed -i '/# rum-managed/d' /etc/fstab\n\
          rm -f /etc/systemd/system/serial-getty@ttyS0.service.d/rum-autologin.conf\n";
    if !keep_agent {
        s += &format!(
            "systemctl disable {unit} 2>/dev/null || true\n\
             rm -f /etc/systemd/system/{unit} {agent}\n",
            unit = rum_seed::cloud_config::AGENT_UNIT,
            agent = rum_seed::cloud_config::AGENT_PATH,
        );
    }
    // Freed blocks become holes in the copy (its disk has discard=unmap).
    s += "fstrim -a >/dev/null 2>&1 || true\nsync\n";
    s
}

/// A QEMU started for the copy, stopped when dropped.
struct Running {
    pid: u32,
}

impl Drop for Running {
    fn drop(&mut self) {
        if process::alive(self.pid) {
            process::terminate(self.pid, Duration::from_secs(5));
        }
    }
}

/// Removes what a bake killed in `work` left: first the copy's QEMU (a
/// daemonized QEMU outlives the rum that started it), then the files.
pub fn clear_leftover(work: &Path) {
    let marker = work.join("qmp.sock");
    if let Some(pid) = process::find(&work.join("qemu.pid"), &marker.to_string_lossy()) {
        process::terminate(pid, Duration::from_secs(5));
    }
    let _ = std::fs::remove_dir_all(work);
}

/// Boots `image` (in `work`), generalises its guest and powers it off.
pub fn generalise(
    instance: &Instance,
    kvm_hangs: bool,
    image: &Path,
    work: &Path,
    keep_agent: bool,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<(), LifecycleError> {
    let config = &instance.config;
    let paths = &instance.paths;
    let mut host = Host::probe(config.advanced.qemu.as_deref()).map_err(UpError::from)?;
    if kvm_hangs && host.kvm == Kvm::Hardware {
        host.kvm = Kvm::Absent;
    }
    let machine = host
        .resolve_machine(&config.advanced.machine)
        .map_err(UpError::from)?;
    let firmware = select_firmware(instance, &machine)?;
    let guest = GuestIdentity::ensure(paths)?;
    let accel_env = std::env::var("RUM_ACCEL").ok();
    let planned = plan::plan(&Inputs {
        config,
        paths,
        host: &host,
        machine,
        accel_env: accel_env.as_deref(),
        firmware,
        mac: &guest.mac_address,
        ssh_port: free_port()?,
        paused: false,
        hotplug_ports: 0,
        shares: &[],
        plugged: &[],
        ram: None,
        free_page_reporting: false,
        vm_generation_id: false,
        tcg_la57_off: true,
    })?;
    let mut spec = planned.spec;
    let file = |name: &str| work.join(name);
    spec.name = format!("{}-bake", spec.name);
    spec.overlay = image.to_path_buf();
    spec.drives.clear();
    spec.forwards.clear();
    // Its own variable store: the VM's is copied, never shared.
    if paths.nvram().exists() {
        std::fs::copy(paths.nvram(), file("nvram.fd")).map_err(|source| LifecycleError::Write {
            path: file("nvram.fd"),
            source,
        })?;
    }
    spec.nvram = file("nvram.fd");
    let agent_socket = file("agent.sock");
    spec.agent = AgentChannel::Serial {
        socket: agent_socket.clone(),
    };
    spec.qmp = file("qmp.sock");
    spec.console = file("console.sock");
    spec.serial_log = file("serial.log");
    spec.qemu_log = file("qemu.log");
    spec.pid_file = file("qemu.pid");

    let step = reporter.step("Booting a throwaway copy to generalise it");
    let args = qemu_args::qemu_args(&spec);
    let pid =
        qemu::start(&host.qemu, &args, &spec.pid_file, &spec.qemu_log).map_err(UpError::from)?;
    let running = Running { pid };
    crate::testhook::pause("bake_generalise");
    let client = match rt.block_on(connect(pid, &agent_socket, &spec.serial_log)) {
        Ok(client) => client,
        Err(e) => {
            step.fail(&e.to_string());
            return Err(e.into());
        }
    };
    step.done();

    let step = reporter.step("Removing this VM's identity from the copy");
    let script = generalise_script(&config.user.name, keep_agent);
    let out = rt
        .block_on(client.exec_output(ExecRequest::shell(script)))
        .map_err(LifecycleError::AgentCall)?;
    if out.status.code != Some(0) {
        let e = BakeError::Generalise(
            out.status.code.unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        );
        step.fail(&e.to_string());
        return Err(e.into());
    }
    step.done();

    let step = reporter.step("Powering the copy off");
    // The agent goes down with the guest: the call may not come back.
    let _ = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            client.exec_output(ExecRequest::shell("systemctl --no-block poweroff")),
        )
        .await
    });
    drop(client);
    if !process::wait_for(POWER_OFF, || !process::alive(pid)) {
        step.fail("it did not power off; stopped");
    } else {
        step.done();
    }
    drop(running);
    Ok(())
}

/// The copy's agent, once it answers; fails as soon as its QEMU is gone.
async fn connect(pid: u32, socket: &Path, serial_log: &Path) -> Result<Client, BakeError> {
    let started = Instant::now();
    let options = ConnectOptions {
        retry: Duration::from_millis(500),
        timeout: Duration::from_secs(10),
    };
    let endpoint = Endpoint::Serial(PathBuf::from(socket));
    loop {
        if let Ok(client) = Client::connect(&endpoint, &options).await {
            return Ok(client);
        }
        if !process::alive(pid) || started.elapsed() > BOOT {
            return Err(BakeError::NoAgent(BOOT, serial_log.display().to_string()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_strips_identity_and_keeps_the_agent_only_when_asked() {
        let s = generalise_script("dev", false);
        assert!(s.contains("cloud-init clean --logs") && s.contains(": > /etc/machine-id"));
        assert!(s.contains("/etc/ssh/ssh_host_*"));
        assert!(s.contains("user=dev\n") && s.contains("userdel --force --remove"));
        assert!(s.contains("rm -f /etc/systemd/system/rum-agent.service /usr/local/bin/rum-agent"));
        let kept = generalise_script("it's", true);
        assert!(!kept.contains("rum-agent.service"));
        assert!(kept.contains(r#"user='it'\''s'"#), "{kept}");
    }
}
