//! Stopping a VM (`rum down`) and removing it (`rum destroy`).

use super::error::DestroyError;
use super::{Instance, runtime};
use crate::output::Reporter;
use crate::state::{Milestone, State};
use crate::vm::{process, qemu};
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

/// How long the guest gets to power off after the ACPI button.
pub const POWERDOWN_GRACE: Duration = Duration::from_secs(90);

/// What `stop` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub stopped: Option<qemu::Stopped>,
    pub virtiofsd: usize,
}

/// Stops QEMU (politely unless `force`) and every virtiofsd of the instance,
/// clears its runtime dir and forgets the boot milestones. The caller holds the lock.
pub fn stop(instance: &Instance, force: bool) -> Stop {
    let paths = &instance.paths;
    let stopped = instance.qemu_pid().map(|pid| {
        runtime().block_on(qemu::stop(&paths.qmp_socket(), pid, POWERDOWN_GRACE, force))
    });
    let mut virtiofsd = 0;
    for pid_file in paths.virtiofsd_pid_files() {
        if let Some(pid) = process::find(&pid_file, "virtiofsd") {
            process::terminate(pid, Duration::from_secs(5));
            virtiofsd += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&paths.runtime);
    if let Ok(mut state) = State::load(&paths.state_file()) {
        if let Some(ram) = &state.ram {
            ram.remove();
        }
        state.reset(Milestone::Booted);
        state.reset(Milestone::AgentReady);
        let _ = state.save(&paths.state_file());
    }
    Stop { stopped, virtiofsd }
}

/// Asks on the terminal; refuses without one.
pub fn confirm_destroy(
    instance: &Instance,
    snapshots: u32,
    reporter: &Reporter,
) -> Result<(), DestroyError> {
    let id = instance.paths.id.to_string();
    if !std::io::stdin().is_terminal() {
        return Err(DestroyError::HasSnapshots {
            instance: id,
            count: snapshots,
        });
    }
    reporter.note(&format!(
        "`{id}` has {snapshots} snapshot(s); destroying removes them and the VM's disks."
    ));
    eprint!("Destroy `{id}`? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(DestroyError::NotConfirmed(id)),
    }
}

/// Removes the instance's data and runtime dirs (never the image cache).
pub fn remove(instance: &Instance) -> Result<(), DestroyError> {
    for dir in [&instance.paths.runtime, &instance.paths.data] {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DestroyError::Remove {
                    path: dir.clone(),
                    source,
                });
            }
        }
    }
    Ok(())
}
