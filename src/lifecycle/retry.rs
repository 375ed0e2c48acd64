//! `rum retry`: restore the snapshot taken before provisioning (live on a
//! running VM, into a fresh paused QEMU on a stopped one), set the guest
//! clock, re-read rum.toml and the scripts, and provision again.

use super::error::LifecycleError;
use super::error::SnapshotError;
use super::provisioning::{self, Phases};
use super::snapshots::{self, POST_SYSTEM, PRE_PROVISION};
use super::{Instance, runtime};
use crate::exit::Exit;
use crate::instance::LockWait;
use crate::output::Reporter;
use crate::provision::scripts::{scripts, system_hash};
use crate::state::{Milestone, State};

/// What `rum retry` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryMode {
    /// Restore `pre-provision` and run every script.
    Full,
    /// Restore `post-system` and run only the boot scripts (`--from boot`).
    FromBoot,
    /// Provisioning is done: delete rum's snapshots (`--done`).
    Done,
    /// Start over from the base image with a rebuilt seed: a reboot (`--reset`).
    Reset,
}

impl RetryMode {
    /// From the command line's flags, which clap keeps exclusive.
    pub fn from_flags(from_boot: bool, done: bool, reset: bool) -> Self {
        match (from_boot, done, reset) {
            (true, _, _) => RetryMode::FromBoot,
            (_, true, _) => RetryMode::Done,
            (_, _, true) => RetryMode::Reset,
            _ => RetryMode::Full,
        }
    }
}

pub fn retry(
    instance: &Instance,
    mode: RetryMode,
    reporter: &Reporter,
) -> Result<Exit, LifecycleError> {
    let paths = &instance.paths;
    if !paths.exists() {
        return Err(SnapshotError::NotRecorded(PRE_PROVISION.into()).into());
    }
    if mode == RetryMode::Reset {
        reset(instance, reporter)?;
        return super::up::up(instance, reporter);
    }
    let _lock = paths.lock("rum retry", LockWait::No)?;
    let mut state = State::load(&paths.state_file())?;
    if mode == RetryMode::Done {
        return drop_snapshots(instance, &mut state, reporter);
    }
    if !state.snapshots.contains_key(PRE_PROVISION) {
        return Err(SnapshotError::NotRecorded(PRE_PROVISION.into()).into());
    }
    let (tag, phases) = if mode == RetryMode::FromBoot {
        choose_from_boot(instance, &state, reporter)?
    } else {
        (PRE_PROVISION, Phases::All)
    };
    reporter.note("Files under [[mounts]] live on the host: the rollback does not touch them.");

    let rt = runtime();
    let (client, info) = snapshots::restore(instance, &mut state, tag, &rt, reporter)?;
    reset_provisioning(&mut state, phases);
    let status =
        provisioning::provision(instance, &mut state, &info, &client, phases, &rt, reporter)?;
    let ok = status == Exit::Success;
    reporter.result(
        if ok { "Provisioned after the rollback" } else { "Provisioning failed after the rollback" },
        &serde_json::json!({ "instance": paths.id, "restored": tag, "provisioned": ok, "attempt": state.provision_attempts }),
    );
    Ok(status)
}

/// `--from boot` needs a `post-system` checkpoint taken after the same
/// system scripts as now; otherwise it says why and does a full retry.
fn choose_from_boot(
    instance: &Instance,
    state: &State,
    reporter: &Reporter,
) -> Result<(&'static str, Phases), LifecycleError> {
    let now = system_hash(&scripts(&instance.config)?);
    match state.snapshots.get(POST_SYSTEM) {
        Some(record) if record.system_scripts.as_deref() == Some(now.as_str()) => {
            Ok((POST_SYSTEM, Phases::BootOnly))
        }
        Some(_) => {
            reporter.warn(
                "The system scripts changed since the post-system checkpoint; doing a full retry",
            );
            Ok((PRE_PROVISION, Phases::All))
        }
        None => {
            reporter.warn("There is no post-system checkpoint yet (no system phase has succeeded); doing a full retry");
            Ok((PRE_PROVISION, Phases::All))
        }
    }
}

fn reset_provisioning(state: &mut State, phases: Phases) {
    if phases == Phases::All {
        state.reset(Milestone::SystemProvisioned);
    }
    state.reset(Milestone::BootProvisioned);
}

/// `--done`: the provisioning loop is over; rum's snapshots go.
fn drop_snapshots(
    instance: &Instance,
    state: &mut State,
    reporter: &Reporter,
) -> Result<Exit, LifecycleError> {
    let tags: Vec<String> = state
        .snapshots
        .iter()
        .filter(|(_, r)| r.rum_owned)
        .map(|(t, _)| t.clone())
        .collect();
    if tags.is_empty() {
        reporter.result(
            "rum has no snapshots of this VM",
            &serde_json::json!({ "deleted": Vec::<String>::new() }),
        );
        return Ok(Exit::Success);
    }
    let step = reporter.step(format!("Deleting {}", tags.join(", ")));
    match snapshots::delete(instance, &tags) {
        Ok(()) => step.done(),
        Err(e) => {
            step.fail(&e.to_string());
            return Err(e);
        }
    }
    for tag in &tags {
        state.snapshots.remove(tag);
    }
    state.reset(Milestone::SnapshotTaken);
    state.save(&instance.paths.state_file())?;
    reporter.result(
        &format!(
            "Deleted {}; `rum retry` now needs a new `rum up` on a fresh VM",
            tags.join(", ")
        ),
        &serde_json::json!({ "deleted": tags }),
    );
    Ok(Exit::Success)
}

/// `--reset`: the root disk starts over from the base image and cloud-init
/// runs again with a rebuilt seed and a new instance-id. Keys, drives and
/// the provisioning history stay.
fn reset(instance: &Instance, reporter: &Reporter) -> Result<(), LifecycleError> {
    let paths = &instance.paths;
    let _lock = paths.lock("rum retry --reset", LockWait::No)?;
    let step = reporter.step("Resetting the VM to its base image (a reboot, not a restore)");
    super::stop::stop(instance, true);
    for file in [
        paths.overlay(),
        paths.seed_iso(),
        paths.seed_identity(),
        paths.cloud_init_instance_id(),
    ] {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                step.fail(&e.to_string());
                return Err(LifecycleError::Write {
                    path: file,
                    source: e,
                });
            }
            _ => {}
        }
    }
    let mut state = State::load(&paths.state_file())?;
    state.milestones.clear();
    // They lived in the overlay that is gone.
    state.snapshots.clear();
    state.save(&paths.state_file())?;
    step.done();
    Ok(())
}
