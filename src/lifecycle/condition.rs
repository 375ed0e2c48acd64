//! What a VM is now, for `rum status`, `rum list` and `rum up`: running
//! (and how far the work of `rum up` got), died (QEMU gone without
//! `rum down`), or stopped; and which of a running VM's mounts lost their
//! virtiofsd.

use super::checkpoints::PRE_PROVISION;
use super::{MountRecord, RuntimeInfo, running_qemu};
use crate::instance::InstancePaths;
use crate::state::{Milestone, State, Status};
use crate::vm::process;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Running {
        pid: u32,
        readiness: Readiness,
    },
    /// QEMU is gone but its runtime record is not: it was not stopped by
    /// rum (`rum down` removes the record), it died under the VM.
    Died,
    Stopped,
}

pub fn condition(paths: &InstancePaths, state: &State) -> Condition {
    match running_qemu(paths) {
        Some(pid) => Condition::Running {
            pid,
            readiness: readiness(state),
        },
        None if paths.runtime_info().exists() => Condition::Died,
        None => Condition::Stopped,
    }
}

impl Condition {
    /// A word or two for `rum list`.
    pub fn label(self) -> &'static str {
        match self {
            Condition::Running {
                readiness: Readiness::Ready,
                ..
            } => "running",
            Condition::Running {
                readiness: Readiness::Unfinished(_),
                ..
            } => "running, not ready",
            Condition::Running {
                readiness: Readiness::Failed(_),
                ..
            } => "provisioning failed",
            Condition::Died => "died",
            Condition::Stopped => "stopped",
        }
    }
}

/// Whether a VM whose QEMU runs is ready for use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// An earlier `rum up` stopped before this (killed, interrupted, or it
    /// gave up waiting): the next `rum up` finishes it.
    Unfinished(Milestone),
    /// Provisioning ran and failed: `rum retry` runs it again.
    Failed(Milestone),
}

/// How far the work of `rum up` got: the agent, the pre-provision
/// snapshot and provisioning, in order.
pub fn readiness(state: &State) -> Readiness {
    let pre_provision = state.snapshots.contains_key(PRE_PROVISION);
    let steps = [
        (
            Milestone::AgentReady,
            state.is_completed(Milestone::AgentReady),
        ),
        (Milestone::SnapshotTaken, pre_provision),
        (
            Milestone::SystemProvisioned,
            state.is_completed(Milestone::SystemProvisioned),
        ),
        (
            Milestone::BootProvisioned,
            state.is_completed(Milestone::BootProvisioned),
        ),
    ];
    let Some((first, _)) = steps.into_iter().find(|(_, done)| !done) else {
        return Readiness::Ready;
    };
    let failed = state
        .milestones
        .get(&first)
        .is_some_and(|m| m.status == Status::Failed);
    match first {
        Milestone::SystemProvisioned | Milestone::BootProvisioned if failed => {
            Readiness::Failed(first)
        }
        _ => Readiness::Unfinished(first),
    }
}

/// The mounts of the VM running as `info` whose virtiofsd is gone: the
/// guest sees errors on them until `rum down` and `rum up`.
pub fn dead_mounts(info: &RuntimeInfo) -> Vec<MountRecord> {
    info.mounts
        .iter()
        .zip(&info.virtiofsd_pids)
        .filter(|(_, pid)| !process::alive(**pid))
        .map(|(mount, _)| mount.clone())
        .collect()
}
