//! Going back to a checkpoint and provisioning from there: the body of
//! `rum retry`, and what `rum up` does with a provisioning a killed command
//! left unfinished. Its own module so that `up` and `retry` both use it
//! without using each other.

use super::checkpoints;
use super::checkpoints::{POST_SYSTEM, PRE_PROVISION};
use super::error::LifecycleError;
use super::error::{ReloadError, SnapshotError};
use super::provisioning;
use super::reload;
use super::snapshots;
use super::{Instance, runtime};
use crate::exit::Exit;
use crate::output::Reporter;
use crate::provision::scripts::{scripts, system_hash};
use crate::state::{Milestone, State};
use rum_agent::protocol::{RunOn, Script};

/// What `rum retry` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryMode {
    /// Restore the deepest checkpoint that still matches and run the rest.
    Full,
    /// Restore `post-system` and run only the boot steps (`--from boot`).
    FromBoot,
    /// Start again at this system step (`--from NAME`).
    FromStep(String),
    /// Provisioning is done: delete rum's snapshots (`--done`).
    Done,
    /// Start over from the base image with a rebuilt seed: a reboot (`--reset`).
    Reset,
}

impl RetryMode {
    /// From the command line's flags, which clap keeps exclusive.
    pub fn from_flags(from: Option<&str>, done: bool, reset: bool) -> Self {
        match (from, done, reset) {
            (Some("boot"), _, _) => RetryMode::FromBoot,
            (Some(step), _, _) => RetryMode::FromStep(step.to_owned()),
            (_, true, _) => RetryMode::Done,
            (_, _, true) => RetryMode::Reset,
            _ => RetryMode::Full,
        }
    }
}

/// `retry` for a caller that holds the instance lock (`rum up` going on with
/// a provisioning an earlier, killed command left unfinished).
pub fn retry_locked(
    instance: &Instance,
    mode: RetryMode,
    strict: bool,
    reporter: &Reporter,
) -> Result<Exit, LifecycleError> {
    let paths = &instance.paths;
    let mut state = snapshots::load_state(instance)?;
    if mode == RetryMode::Done {
        return drop_snapshots(instance, &mut state, reporter);
    }
    if !state.snapshots.contains_key(PRE_PROVISION) {
        return Err(SnapshotError::NotRecorded(PRE_PROVISION.into()).into());
    }
    // What a retry cannot apply: named at the end, or refused up front.
    let unapplied: Vec<_> = reload::changes(instance)?
        .into_iter()
        .filter(|c| !c.applies.is_applied_by_retry())
        .collect();
    if strict && !unapplied.is_empty() {
        reload::show(&unapplied, reporter);
        let keys: Vec<_> = unapplied.iter().map(|c| c.key.as_str()).collect();
        return Err(ReloadError::Strict(keys.join(", ")).into());
    }
    // Read before anything is restored: a missing file leaves the VM as it is.
    let all = scripts(&instance.config)?;
    let system: Vec<Script> = all
        .iter()
        .filter(|s| s.run_on == RunOn::System)
        .cloned()
        .collect();
    let (tag, first) = match &mode {
        RetryMode::FromBoot => from_boot(&state, &system, reporter),
        RetryMode::FromStep(name) => {
            let Some(at) = system.iter().position(|s| &s.name == name) else {
                return Err(LifecycleError::UnknownStep {
                    name: name.clone(),
                    known: system.iter().map(|s| s.name.clone()).collect(),
                });
            };
            resume(&state, &system, at, reporter)
        }
        _ => resume(&state, &system, system.len(), reporter),
    };
    reporter.note("Files under [[mounts]] live on the host: the rollback does not touch them.");

    let rt = runtime();
    let (mut tag, mut first) = (tag, first);
    let mut failures = 0;
    let (client, info) = loop {
        match snapshots::restore(instance, &mut state, &tag, &rt, reporter) {
            Ok(restored) => break restored,
            // A step checkpoint QEMU cannot load (deleted behind rum's back,
            // refused): forget it and go back to an earlier one.
            Err(LifecycleError::Snapshot(e @ (SnapshotError::Qmp(_) | SnapshotError::Ram(_))))
                if first > 0 =>
            {
                failures += 1;
                let why = format!("the `{tag}` checkpoint could not be loaded: {e}");
                reporter.warn(&format!("{why}; falling back to an earlier one"));
                state.retrying(Milestone::SnapshotTaken, failures, 0, &why);
                if let Ok(deleted) =
                    snapshots::delete(instance, &mut state, std::slice::from_ref(&tag))
                {
                    deleted.warn(reporter);
                } else {
                    state.snapshots.remove(&tag);
                    super::ledger::record(paths, &state, reporter);
                }
                (tag, first) = resume(&state, &system, first - 1, reporter);
            }
            Err(e) => return Err(e),
        }
    };
    reset_provisioning(&mut state, first < system.len());
    let run = provisioning::Run {
        all: &all,
        first,
        in_place: false,
    };
    let status = provisioning::provision(instance, &mut state, &info, client, run, &rt, reporter)?;
    let ok = status == Exit::Success;
    reload::show(&unapplied, reporter);
    reporter.result(
        if ok { "Provisioned after the rollback" } else { "Provisioning failed after the rollback" },
        &serde_json::json!({ "instance": paths.id, "restored": tag, "provisioned": ok, "attempt": state.provision_attempts }),
    );
    Ok(status)
}

/// The checkpoint to restore for a run that should start at system step
/// `at` (`system.len()`: after every system step), and the first step that
/// then runs: the deepest checkpoint before `at` that matches the scripts
/// on disk now, else `pre-provision`.
fn resume(state: &State, system: &[Script], at: usize, reporter: &Reporter) -> (String, usize) {
    let (tag, first) = checkpoints::resume_point(state, system, at);
    if first < at && at < system.len() {
        reporter.note(&format!(
            "No checkpoint right before `{}` matches the steps on disk; starting at `{}`",
            system[at].name, system[first].name
        ));
    }
    (tag, first)
}

/// `--from boot` needs a `post-system` checkpoint taken after the same
/// system scripts as now; otherwise it says why and does a full retry.
fn from_boot(state: &State, system: &[Script], reporter: &Reporter) -> (String, usize) {
    let now = system_hash(system);
    match state.snapshots.get(POST_SYSTEM) {
        Some(record) if record.system_scripts.as_deref() == Some(now.as_str()) => {
            (POST_SYSTEM.to_owned(), system.len())
        }
        Some(_) => {
            reporter.warn(
                "The system scripts changed since the post-system checkpoint; doing a full retry",
            );
            (PRE_PROVISION.to_owned(), 0)
        }
        None => {
            reporter.warn("There is no post-system checkpoint yet (no system phase has succeeded); doing a full retry");
            (PRE_PROVISION.to_owned(), 0)
        }
    }
}

/// What the restored checkpoint holds: when no system step runs again, it
/// was taken after all of them succeeded, whatever the last attempt recorded.
fn reset_provisioning(state: &mut State, system_runs: bool) {
    if system_runs {
        state.reset(Milestone::SystemProvisioned);
    } else if !state.is_completed(Milestone::SystemProvisioned) {
        state.complete(Milestone::SystemProvisioned);
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
    match snapshots::delete(instance, state, &tags) {
        Ok(_) => step.done(),
        Err(e) => {
            step.fail(&e.to_string());
            return Err(e);
        }
    }
    state.reset(Milestone::SnapshotTaken);
    // This write holds the delete's records too: it alone is worth a warning.
    let unrecorded = state.save(&instance.paths.state_file()).err();
    snapshots::Deleted { unrecorded }.warn(reporter);
    reporter.result(
        &format!(
            "Deleted {}; `rum retry` now needs a new `rum up` on a fresh VM",
            tags.join(", ")
        ),
        &serde_json::json!({ "deleted": tags }),
    );
    Ok(Exit::Success)
}
