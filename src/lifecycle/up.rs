//! `rum up`: take the instance lock, bring the VM up (resuming whatever an
//! earlier `up` completed, on its QEMU if that still runs), take
//! `pre-provision` once, and provision unless that already succeeded. A
//! failure rolls back only what this run made.

use super::boot::{self, Booted};
use super::condition::{Readiness, readiness};
use super::error::{LifecycleError, UpError};
use super::provisioning;
use super::reload;
use super::{Instance, RuntimeInfo, runtime};
use crate::exit::Exit;
use crate::guard::Guard;
use crate::instance::LockWait;
use crate::output::Reporter;
use crate::state::{Milestone, State};
use rum_agent::Client;
use rum_agent::protocol::RunOn;

pub fn up(instance: &Instance, reporter: &Reporter) -> Result<Exit, LifecycleError> {
    let paths = &instance.paths;
    paths.ensure_data_dir()?;
    crate::testhook::pause("before_lock");
    // The lock comes first: only its holder may judge the instance fresh and
    // own (and, on failure, remove) what is in its directory.
    let _lock = paths.lock("rum up", LockWait::No)?;
    let mut guard = Guard::new();
    let fresh = paths.is_fresh()?;
    if fresh {
        let data = paths.data.clone();
        guard.push("instance directory", move || {
            std::fs::remove_dir_all(&data).map_err(|e| e.to_string())
        });
    }
    // For `rum list` and `--instance`: which project this VM is of, and its
    // rum.toml (after the freshness check, which wants only the lock there).
    let project =
        serde_json::json!({ "config": instance.config.file, "name": instance.config.name });
    let text = std::fs::read(&instance.config.file).unwrap_or_default();
    for (path, bytes) in [
        (paths.project_record(), project.to_string().into_bytes()),
        (paths.saved_config(), text),
    ] {
        // Unchanged, it is not written: `rum up` on a full disk still gets
        // to a running VM (and to saying that the disk is full).
        if std::fs::read(&path).is_ok_and(|old| old == bytes) {
            continue;
        }
        match crate::fsutil::write_private(&path, &bytes) {
            Ok(()) => {}
            // An older copy serves until there is space again.
            Err(e) if !fresh => reporter.warn(&format!(
                "could not update {} ({e}); it stays as it was",
                path.display()
            )),
            Err(source) => return Err(super::error::UpError::Write { path, source }.into()),
        }
    }
    crate::fsutil::reserve(&paths.reserve());
    let mut state = super::snapshots::load_state(instance)?;
    let rt = runtime();
    let mut qemu = instance.qemu_pid();
    if let Some(pid) = qemu
        && instance.running()?.is_none()
    {
        // An earlier `up` was killed between starting QEMU and recording it:
        // a guest in its first seconds, started again from its disk.
        reporter.warn(&format!(
            "QEMU (pid {pid}) was started by an earlier `rum up` that stopped before recording it; starting it again"
        ));
        super::stop::stop(instance, true);
        state = super::snapshots::load_state(instance)?;
        qemu = None;
    }
    let (client, info) = match qemu {
        Some(pid) => {
            guard.disarm();
            // A `rum up` or `snapshot` killed while copying RAM left it paused.
            super::snapshots::resume_if_interrupted(instance, &rt)?;
            super::disk_full::go_on_if_paused(instance, &rt, reporter)?;
            reload::report(instance, reporter)?;
            match readiness(&state) {
                Readiness::Ready => return Ok(already_up(instance, pid, reporter)),
                Readiness::Failed(milestone) => {
                    return Ok(failed_before(instance, pid, milestone, reporter));
                }
                // Killed in the middle of provisioning: the steps go on from
                // the last checkpoint, never on top of a half-run step.
                Readiness::Unfinished(
                    Milestone::SystemProvisioned | Milestone::BootProvisioned,
                ) => {
                    reporter
                        .line("Provisioning was interrupted; going on from its last checkpoint");
                    return super::rollback::retry_locked(
                        instance,
                        super::rollback::RetryMode::Full,
                        false,
                        reporter,
                    );
                }
                Readiness::Unfinished(_) => {}
            }
            // An earlier `up` was stopped (killed, interrupted) with QEMU
            // left running: this one finishes its work on that QEMU.
            let info = instance
                .running()?
                .ok_or(UpError::NoRuntimeRecord { pid })?;
            reporter.line("Finishing what an earlier `rum up` left undone");
            let client = boot::await_guest(instance, &mut state, &info, false, &rt, reporter)?;
            (client, info)
        }
        None => {
            let Booted { client, info } =
                boot::bring_up(instance, &mut state, &mut guard, None, &rt, reporter)?;
            guard.disarm();
            // Mounts added since the VM was made are plugged in after each boot.
            let info = reload::apply_live_or_warn(instance, info, &client, &rt, reporter);
            if !fresh {
                // What this boot did not apply (it applied forwards and shares).
                reload::report(instance, reporter)?;
            }
            (client, info)
        }
    };
    let version = client.agent().clone();
    let status = after_boot(instance, &mut state, &info, client, &rt, reporter)?;
    reporter.result(
        &format!(
            "`{}` is up (pid {}, {}); `rum ssh` to log in, `rum exec -- CMD` to run a command",
            paths.id, info.pid, info.accel
        ),
        &serde_json::json!({
            "instance": paths.id,
            "pid": info.pid,
            "ssh_port": info.ssh_port,
            "agent": version.build_id,
            "provisioned": status == Exit::Success,
        }),
    );
    Ok(status)
}

fn already_up(instance: &Instance, pid: u32, reporter: &Reporter) -> Exit {
    let id = &instance.paths.id;
    reporter.result(
        &format!("`{id}` is already running (pid {pid}); `rum ssh` or `rum exec` to use it"),
        &serde_json::json!({ "instance": id, "pid": pid, "already_running": true }),
    );
    Exit::Success
}

/// A running VM whose provisioning failed is not up: said, and not
/// provisioned again on top of what the failed run left.
fn failed_before(instance: &Instance, pid: u32, milestone: Milestone, reporter: &Reporter) -> Exit {
    let id = &instance.paths.id;
    reporter.result(
        &format!(
            "`{id}` is running (pid {pid}), but its provisioning failed ({}); `rum retry` runs it again from the pre-provision snapshot, `rum status` shows the error",
            milestone.title()
        ),
        &serde_json::json!({
            "instance": id,
            "pid": pid,
            "already_running": true,
            "provisioned": false,
            "failed": milestone.key(),
        }),
    );
    Exit::Failure
}

/// The pre-provision snapshot (once per VM), then provisioning unless it
/// already completed on an earlier `up`.
fn after_boot(
    instance: &Instance,
    state: &mut State,
    info: &RuntimeInfo,
    client: Client,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<Exit, LifecycleError> {
    provisioning::ensure_pre_provision(instance, state, info, &client, rt, reporter)?;
    let done = state.is_completed(Milestone::SystemProvisioned)
        && state.is_completed(Milestone::BootProvisioned);
    if done {
        reporter.line("Ready");
        return Ok(Exit::Success);
    }
    let all = crate::provision::scripts::scripts(&instance.config)?;
    // A system phase that completed on an earlier `up` is not run again.
    let first = if state.is_completed(Milestone::SystemProvisioned) {
        all.iter().filter(|s| s.run_on == RunOn::System).count()
    } else {
        0
    };
    let run = provisioning::Run {
        all: &all,
        first,
        in_place: false,
    };
    provisioning::provision(instance, state, info, client, run, rt, reporter)
}
