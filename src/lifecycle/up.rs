//! `rum up`: take the instance lock, bring the VM up (resuming whatever an
//! earlier `up` completed), take `pre-provision` once, and provision unless
//! that already succeeded. A failure rolls back only what this run made.

use super::boot::{self, Booted};
use super::error::LifecycleError;
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
        crate::fsutil::write_private(&path, &bytes)
            .map_err(|source| super::error::UpError::Write { path, source })?;
    }
    if let Some(pid) = instance.qemu_pid() {
        guard.disarm();
        reload::report(instance, reporter);
        reporter.result(
            &format!(
                "`{}` is already running (pid {pid}); `rum ssh` or `rum exec` to use it",
                paths.id
            ),
            &serde_json::json!({ "instance": paths.id, "pid": pid, "already_running": true }),
        );
        return Ok(Exit::Success);
    }
    let mut state = State::load(&paths.state_file())?;
    let rt = runtime();
    let Booted { client, info } =
        boot::bring_up(instance, &mut state, &mut guard, None, &rt, reporter)?;
    guard.disarm();
    // Mounts added since the VM was made are plugged in after each boot.
    let info = reload::apply_live_or_warn(instance, info, &client, &rt, reporter);
    if !fresh {
        // What this boot did not apply (the boot applied forwards and shares).
        reload::report(instance, reporter);
    }
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
