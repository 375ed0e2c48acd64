//! The provisioning loop shared by `rum up` and `rum retry`: the
//! pre-provision snapshot, the system steps each with its checkpoint (the
//! last one is `post-system`), the boot steps, and what the user sees when
//! a step fails.

use super::checkpoints;
use super::checkpoints::{POST_SYSTEM, PRE_PROVISION};
use super::error::{LifecycleError, SnapshotError};
use super::milestones::Milestones;
use super::snapshots::{self, Recorded};
use super::{Instance, RuntimeInfo};
use crate::drift::Applies;
use crate::exit::Exit;
use crate::output::Reporter;
use crate::provision::ProvisionError;
use crate::provision::run::{self, Attempt};
use crate::provision::scripts::system_hash;
use crate::state::{Milestone, RamKind, State};
use rum_agent::Client;
use rum_agent::protocol::{RunOn, Script};

/// Takes `pre-provision` if there is none yet: once per VM, before any script.
pub fn ensure_pre_provision(
    instance: &Instance,
    state: &mut State,
    info: &RuntimeInfo,
    client: &Client,
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
            // A stream holds every page the guest touched, page cache and
            // freed pages too: a smaller one when the balloon takes them.
            if info.devices.ram == RamKind::Stream
                && info.devices.free_page_reporting
                && let Err(e) = rt.block_on(super::guest::shrink_memory(client))
            {
                tracing::warn!("could not drop the guest's page cache: {e}");
            }
            rt.block_on(snapshots::save(
                instance,
                state,
                PRE_PROVISION,
                info,
                Some(client),
                Recorded::default(),
                reporter,
            ))
        },
    )
}

/// Which steps run, and how.
pub struct Run<'a> {
    /// The steps, system then boot.
    pub all: &'a [Script],
    /// The first system step to run (those before it were restored from
    /// their checkpoint and are shown as cached).
    pub first: usize,
    /// On the VM as it is (`rum provision`): no checkpoints are taken, none
    /// restored for a step's `retries`, and a phase left out of `all` keeps
    /// its milestone.
    pub in_place: bool,
}

/// Runs the system steps from `run.first` on, each followed by its
/// checkpoint, then the boot steps, with live output. Returns Success, or
/// Failure after telling the user how to go on (the VM keeps running).
pub fn provision(
    instance: &Instance,
    state: &mut State,
    info: &RuntimeInfo,
    client: Client,
    run: Run<'_>,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<Exit, LifecycleError> {
    let Run {
        all,
        first,
        in_place,
    } = run;
    let (system, boot): (Vec<Script>, Vec<Script>) =
        all.iter().cloned().partition(|s| s.run_on == RunOn::System);
    state.provision_attempts += 1;
    let number = state.provision_attempts;
    super::ledger::record(&instance.paths, state, reporter);
    super::reload::record(instance, &[Applies::Now]);
    // A phase with no scripts is trivially done.
    if system.is_empty() && !in_place {
        state.complete(Milestone::SystemProvisioned);
    }
    if boot.is_empty() && !in_place {
        state.complete(Milestone::BootProvisioned);
    }
    let mut attempt = Attempt {
        number,
        started: crate::clock::unix_now(),
        ok: true,
        scripts: Vec::new(),
    };
    let dir = instance.paths.attempt_dir(number);
    let run = |client: &Client, scripts: &[Script], range, try_number| {
        rt.block_on(async {
            let ran = run::run(client, scripts, range, number, try_number, &dir, reporter).await;
            match ran {
                // An agent gone quiet may be a guest QEMU paused on a full disk.
                Err(ProvisionError::Agent(
                    rum_agent::Error::Closed(_) | rum_agent::Error::NoAnswer { .. },
                )) if let Some(full) = super::disk_full::explain(instance).await => {
                    Err(LifecycleError::from(full))
                }
                ran => Ok(ran?),
            }
        })
    };

    // A phase of one step is shown as the phase; it needs no cached line.
    if system.len() > 1 {
        for i in 0..first.min(system.len()) {
            reporter.phase_finished(&run::title(&system, i), Some(true), "cached");
        }
    }
    // A restore starts a new agent session, and the serial channel takes one
    // client at a time: the old session is dropped before a step runs again.
    let mut client = Some(client);
    if first < system.len() {
        state.start(Milestone::SystemProvisioned);
        let mut tries = vec![0u8; system.len()];
        let mut i = first;
        while i < system.len() {
            let policy = StepPolicy::of(&instance.config, &system[i].name, in_place);
            let session = client.as_ref().expect("a session between runs");
            let (result, logged) = run(session, &system, i..i + 1, u32::from(tries[i]) + 1)?;
            attempt.scripts.extend(logged.scripts);
            if result.ok {
                if policy.checkpoint {
                    keep_checkpoint(instance, state, info, session, &system, i, rt, reporter);
                }
                i += 1;
                continue;
            }
            let failed = failure(&result);
            if tries[i] < policy.retries {
                tries[i] += 1;
                drop(client.take());
                let (restored, from) = run_again(
                    instance, state, &system, i, tries[i], &policy, &failed, rt, reporter,
                )?;
                client = Some(restored);
                i = from;
                continue;
            }
            state.fail(Milestone::SystemProvisioned, &failed);
            if !boot.is_empty() {
                reporter.phase_finished("Running boot provisioning", None, "skipped");
            }
            return finish_failed(instance, state, attempt, &failed, reporter);
        }
        state.complete(Milestone::SystemProvisioned);
        super::ledger::record(&instance.paths, state, reporter);
    }
    let client = client.expect("a session after the system steps");
    if !boot.is_empty() {
        state.start(Milestone::BootProvisioned);
        let (result, logged) = run(&client, &boot, 0..boot.len(), 1)?;
        attempt.scripts.extend(logged.scripts);
        if !result.ok {
            let failed = failure(&result);
            state.fail(Milestone::BootProvisioned, &failed);
            return finish_failed(instance, state, attempt, &failed, reporter);
        }
        state.complete(Milestone::BootProvisioned);
    }
    write_attempt(instance, &attempt, reporter);
    super::ledger::record(&instance.paths, state, reporter);
    reporter.line("Ready");
    Ok(Exit::Success)
}

/// What rum.toml says about running a system step: the generated
/// filesystems step takes the defaults.
struct StepPolicy {
    retries: u8,
    checkpoint: bool,
}

impl StepPolicy {
    fn of(config: &crate::config::Config, name: &str, in_place: bool) -> Self {
        if in_place {
            return StepPolicy {
                retries: 0,
                checkpoint: false,
            };
        }
        match config.provision.system.iter().find(|s| s.name == name) {
            Some(step) => StepPolicy {
                retries: step.retries,
                checkpoint: step.checkpoint,
            },
            None => StepPolicy {
                retries: 0,
                checkpoint: true,
            },
        }
    }
}

/// Step `index` failed and may run again: after 1 s, 2 s, 4 s…, on the VM
/// restored to the deepest checkpoint before it (a clean VM, never the one
/// it failed on). Returns the restored VM's agent and the step to go on at.
#[allow(clippy::too_many_arguments)]
fn run_again(
    instance: &Instance,
    state: &mut State,
    system: &[Script],
    index: usize,
    tried: u8,
    policy: &StepPolicy,
    failed: &str,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<(Client, usize), LifecycleError> {
    let delay = std::time::Duration::from_secs(1 << (tried - 1));
    state.retrying(
        Milestone::SystemProvisioned,
        u32::from(tried),
        delay.as_millis() as u64,
        failed,
    );
    super::ledger::record(&instance.paths, state, reporter);
    reporter.phase_again(
        &run::title(system, index),
        &format!("attempt {} of {}", tried + 1, policy.retries + 1),
    );
    std::thread::sleep(delay);
    let (tag, from) = checkpoints::resume_point(state, system, index);
    let (client, _) = snapshots::restore(instance, state, &tag, rt, reporter)?;
    Ok((client, from))
}

/// The checkpoint after system step `index`, keyed by everything run since
/// `pre-provision` (`post-system` after the last step, also keyed by the
/// system scripts' hash for `--from boot`). One that matches, taken with
/// the same devices, stays.
/// A failed save is a warning: a retry then restores an earlier one.
#[allow(clippy::too_many_arguments)]
fn keep_checkpoint(
    instance: &Instance,
    state: &mut State,
    info: &RuntimeInfo,
    client: &Client,
    system: &[Script],
    index: usize,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) {
    let Some(pre) = state.snapshots.get(PRE_PROVISION).cloned() else {
        return;
    };
    let keys = checkpoints::chain(&pre, system);
    let key = keys[index].clone();
    // One taken with other mounts plugged in would load only into a QEMU
    // started afresh: it is taken again with the devices the VM has now.
    let same_devices = |tag: &String| {
        state.snapshots[tag]
            .devices
            .differences(&info.devices)
            .is_empty()
    };
    if checkpoints::find(state, &key).is_some_and(|tag| same_devices(&tag)) {
        return;
    }
    let tag = checkpoints::tag(system, index);
    let budget = instance.config.advanced.checkpoints as usize;
    let prune = checkpoints::to_prune(state, &keys, budget, &tag);
    if !prune.is_empty() {
        match snapshots::delete(instance, state, &prune) {
            Ok(deleted) => {
                reporter.note(&format!(
                    "Deleted checkpoint {} to keep at most {budget} ([advanced] checkpoints)",
                    prune.join(", ")
                ));
                deleted.warn(reporter);
            }
            Err(e) => reporter.warn(&format!("Could not delete old checkpoints: {e}")),
        }
    }
    let last = tag == POST_SYSTEM;
    let step = reporter.step(if last {
        "Keeping a post-system checkpoint".to_owned()
    } else {
        format!("Keeping a checkpoint after `{}`", system[index].name)
    });
    let recorded = Recorded {
        system_scripts: last.then(|| system_hash(system)),
        key: Some(key),
    };
    match rt.block_on(snapshots::save(
        instance,
        state,
        &tag,
        info,
        Some(client),
        recorded,
        reporter,
    )) {
        Ok(()) => step.done(),
        // A retry then restores an earlier checkpoint; provisioning goes on.
        Err(LifecycleError::Snapshot(e @ SnapshotError::NoSpace { .. })) => {
            step.skip("not enough free space");
            reporter.warn(&e.to_string());
        }
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
    write_attempt(instance, &attempt, reporter);
    super::ledger::record(&instance.paths, state, reporter);
    reporter.line(&format!(
        "Provisioning failed: {failed} — VM kept running for debugging"
    ));
    reporter.note("  Use `rum ssh` to debug, `rum log --failed` for logs.");
    reporter.note("  Edit your script, then run `rum retry` to rollback and re-provision.");
    Ok(Exit::Failure)
}

fn write_attempt(instance: &Instance, attempt: &Attempt, reporter: &Reporter) {
    let path = instance.paths.attempt_result(attempt.number);
    let json = serde_json::to_vec_pretty(attempt).expect("serializes");
    let paths = &instance.paths;
    let written = super::ledger::with_room(paths, || {
        crate::fsutil::create_private_dir_all(path.parent().expect("attempt dir"))?;
        crate::fsutil::write_private(&path, &json)
    });
    match written {
        Ok(room) => room.warn(paths, reporter),
        Err(e) => {
            super::ledger::unrecorded(reporter, &format!("Cannot write {}: {e}", path.display()))
        }
    }
}
