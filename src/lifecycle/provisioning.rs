//! The provisioning loop shared by `rum up` and `rum retry`: the
//! pre-provision snapshot, the system phase, the post-system checkpoint,
//! the boot phase, and what the user sees when a script fails.

use super::error::LifecycleError;
use super::milestones::Milestones;
use super::snapshots::{self, POST_SYSTEM, PRE_PROVISION};
use super::{Instance, RuntimeInfo};
use crate::exit::Exit;
use crate::output::Reporter;
use crate::provision::run::{self, Attempt};
use crate::provision::scripts::{scripts, system_hash};
use crate::state::{Milestone, State};
use rum_agent::Client;
use rum_agent::protocol::{RunOn, Script};

/// Which scripts a run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phases {
    /// System then boot scripts (after a restore of `pre-provision`).
    All,
    /// Boot scripts only (after a restore of `post-system`).
    BootOnly,
}

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
        |_, state| rt.block_on(snapshots::save(instance, state, PRE_PROVISION, info, None)),
    )
}

/// Runs the scripts of `phases`, with live output; keeps a `post-system`
/// checkpoint after a system phase that succeeded. Returns Success, or
/// Failure after telling the user how to go on (the VM keeps running).
pub fn provision(
    instance: &Instance,
    state: &mut State,
    info: &RuntimeInfo,
    client: &Client,
    phases: Phases,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<Exit, LifecycleError> {
    let all = scripts(&instance.config)?;
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
        started: 0,
        ok: true,
        scripts: Vec::new(),
    };

    let dir = instance.paths.attempt_dir(number);
    let run_phase = |scripts| rt.block_on(run::run(client, scripts, number, &dir, reporter));

    if phases == Phases::All && !system.is_empty() {
        state.start(Milestone::SystemProvisioned);
        let (result, logged) = run_phase(system)?;
        attempt.started = logged.started;
        attempt.scripts.extend(logged.scripts);
        if !result.ok {
            let failed = failure(&result);
            state.fail(Milestone::SystemProvisioned, &failed);
            if !boot.is_empty() {
                reporter.phase_finished("Running boot provisioning", None, "skipped");
            }
            return finish_failed(instance, state, attempt, &failed, reporter);
        }
        state.complete(Milestone::SystemProvisioned);
        state.save(&instance.paths.state_file())?;
        keep_post_system(instance, state, info, &all, rt, reporter);
    }
    if !boot.is_empty() {
        state.start(Milestone::BootProvisioned);
        let (result, logged) = run_phase(boot)?;
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

/// A checkpoint after the system phase, keyed by the system scripts' hash,
/// so `rum retry --from boot` can skip a system phase that has not changed.
fn keep_post_system(
    instance: &Instance,
    state: &mut State,
    info: &RuntimeInfo,
    all: &[Script],
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) {
    let hash = system_hash(all);
    let current = state
        .snapshots
        .get(POST_SYSTEM)
        .and_then(|r| r.system_scripts.as_deref());
    if current == Some(hash.as_str()) {
        return;
    }
    let step = reporter.step("Keeping a post-system checkpoint");
    let saved = rt.block_on(snapshots::save(
        instance,
        state,
        POST_SYSTEM,
        info,
        Some(hash),
    ));
    match saved {
        Ok(()) => step.done(),
        // Only `--from boot` needs it; a full retry still works.
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
