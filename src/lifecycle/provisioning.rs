//! The provisioning loop shared by `rum up` and `rum retry`: the
//! pre-provision snapshot, the system steps each with its checkpoint (the
//! last one is `post-system`), the boot steps, and what the user sees when
//! a step fails.

use super::checkpoints;
use super::error::LifecycleError;
use super::milestones::Milestones;
use super::snapshots::{self, POST_SYSTEM, PRE_PROVISION};
use super::{Instance, RuntimeInfo};
use crate::exit::Exit;
use crate::output::Reporter;
use crate::provision::run::{self, Attempt};
use crate::provision::scripts::system_hash;
use crate::state::{Milestone, State};
use rum_agent::Client;
use rum_agent::protocol::{RunOn, Script};

/// Takes `pre-provision` if there is none yet: once per VM, before any script.
pub fn ensure_pre_provision(
    instance: &Instance,
    state: &mut State,
    info: &RuntimeInfo,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<(), LifecycleError> {
    if state.snapshots.contains_key(PRE_PROVISION) {
        return Ok(());
    }
    Milestones::new(state, &instance.paths, reporter).run(
        Milestone::SnapshotTaken,
        "Taking the pre-provision snapshot",
        |_, state| {
            rt.block_on(snapshots::save(
                instance,
                state,
                PRE_PROVISION,
                info,
                None,
                None,
            ))
        },
    )
}

/// Runs the system steps from `first` on (those before it were restored
/// from their checkpoint and are shown as cached), each followed by its
/// checkpoint, then the boot steps, with live output. Returns Success, or
/// Failure after telling the user how to go on (the VM keeps running).
#[allow(clippy::too_many_arguments)]
pub fn provision(
    instance: &Instance,
    state: &mut State,
    info: &RuntimeInfo,
    client: &Client,
    all: &[Script],
    first: usize,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<Exit, LifecycleError> {
    let (system, boot): (Vec<Script>, Vec<Script>) =
        all.iter().cloned().partition(|s| s.run_on == RunOn::System);
    state.provision_attempts += 1;
    let number = state.provision_attempts;
    state.save(&instance.paths.state_file())?;
    // A phase with no scripts is trivially done.
    if system.is_empty() {
        state.complete(Milestone::SystemProvisioned);
    }
    if boot.is_empty() {
        state.complete(Milestone::BootProvisioned);
    }
    let mut attempt = Attempt {
        number,
        started: crate::clock::unix_now(),
        ok: true,
        scripts: Vec::new(),
    };
    let dir = instance.paths.attempt_dir(number);
    let run = |scripts: &[Script], range| {
        rt.block_on(run::run(client, scripts, range, number, &dir, reporter))
    };

    // A phase of one step is shown as the phase; it needs no cached line.
    if system.len() > 1 {
        for i in 0..first.min(system.len()) {
            reporter.phase_finished(&run::title(&system, i), Some(true), "cached");
        }
    }
    if first < system.len() {
        state.start(Milestone::SystemProvisioned);
        for i in first..system.len() {
            let (result, logged) = run(&system, i..i + 1)?;
            attempt.scripts.extend(logged.scripts);
            if !result.ok {
                let failed = failure(&result);
                state.fail(Milestone::SystemProvisioned, &failed);
                if !boot.is_empty() {
                    reporter.phase_finished("Running boot provisioning", None, "skipped");
                }
                return finish_failed(instance, state, attempt, &failed, reporter);
            }
            keep_checkpoint(instance, state, info, &system, i, rt, reporter);
        }
        state.complete(Milestone::SystemProvisioned);
        state.save(&instance.paths.state_file())?;
    }
    if !boot.is_empty() {
        state.start(Milestone::BootProvisioned);
        let (result, logged) = run(&boot, 0..boot.len())?;
        attempt.scripts.extend(logged.scripts);
        if !result.ok {
            let failed = failure(&result);
            state.fail(Milestone::BootProvisioned, &failed);
            return finish_failed(instance, state, attempt, &failed, reporter);
        }
        state.complete(Milestone::BootProvisioned);
    }
    write_attempt(instance, &attempt)?;
    state.save(&instance.paths.state_file())?;
    reporter.line("Ready");
    Ok(Exit::Success)
}

/// The checkpoint after system step `index`, keyed by everything run since
/// `pre-provision` (`post-system` after the last step, also keyed by the
/// system scripts' hash for `--from boot`). One that matches already stays.
/// A failed save is a warning: a retry then restores an earlier one.
fn keep_checkpoint(
    instance: &Instance,
    state: &mut State,
    info: &RuntimeInfo,
    system: &[Script],
    index: usize,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) {
    let Some(pre) = state.snapshots.get(PRE_PROVISION).cloned() else {
        return;
    };
    let key = checkpoints::chain(&pre, system).swap_remove(index);
    if checkpoints::find(state, &key).is_some() {
        return;
    }
    let tag = checkpoints::tag(system, index);
    let last = tag == POST_SYSTEM;
    let step = reporter.step(if last {
        "Keeping a post-system checkpoint".to_owned()
    } else {
        format!("Keeping a checkpoint after `{}`", system[index].name)
    });
    let hash = last.then(|| system_hash(system));
    match rt.block_on(snapshots::save(
        instance,
        state,
        &tag,
        info,
        hash,
        Some(key),
    )) {
        Ok(()) => step.done(),
        Err(e) => step.fail(&e.to_string()),
    }
}

/// Which script failed and how, for the milestone's error.
fn failure(result: &rum_agent::protocol::ProvisionResult) -> String {
    result
        .failed
        .as_ref()
        .map(|f| format!("step `{}` failed ({})", f.name, f.exit))
        .unwrap_or_default()
}

fn finish_failed(
    instance: &Instance,
    state: &mut State,
    attempt: Attempt,
    failed: &str,
    reporter: &Reporter,
) -> Result<Exit, LifecycleError> {
    let attempt = Attempt {
        ok: false,
        ..attempt
    };
    write_attempt(instance, &attempt)?;
    state.save(&instance.paths.state_file())?;
    reporter.line(&format!(
        "Provisioning failed: {failed} — VM kept running for debugging"
    ));
    reporter.note("  Use `rum ssh` to debug, `rum log --failed` for logs.");
    reporter.note("  Edit your script, then run `rum retry` to rollback and re-provision.");
    Ok(Exit::Failure)
}

fn write_attempt(instance: &Instance, attempt: &Attempt) -> Result<(), LifecycleError> {
    let path = instance.paths.attempt_result(attempt.number);
    std::fs::create_dir_all(path.parent().expect("attempt dir")).map_err(|source| {
        LifecycleError::Write {
            path: path.clone(),
            source,
        }
    })?;
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(attempt).expect("serializes"),
    )
    .map_err(|source| LifecycleError::Write { path, source })
}
