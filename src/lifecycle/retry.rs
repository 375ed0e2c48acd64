//! `rum retry`: restore the snapshot taken before provisioning (live on a
//! running VM, into a fresh paused QEMU on a stopped one), set the guest
//! clock, re-read rum.toml and the scripts, and provision again.

use super::provisioning::{self, From};
use super::snapshots::{self, POST_SYSTEM, PRE_PROVISION};
use super::up::{UpError, UpOptions, up_restoring};
use super::{Instance, RuntimeInfo, connect_agent, runtime};
use crate::instance::{InstanceLock, LockWait};
use crate::output::Reporter;
use crate::provision::scripts::{scripts, system_hash};
use crate::state::{Milestone, State};
use crate::{Error, ExitStatus};
use std::time::{Duration, SystemTime};

pub struct RetryOptions {
    pub from_boot: bool,
    pub done: bool,
    /// Start over from the base image with a rebuilt seed: a reboot.
    pub reset: bool,
}

pub fn retry(
    instance: &Instance,
    options: &RetryOptions,
    reporter: &Reporter,
) -> Result<ExitStatus, Error> {
    let paths = &instance.paths;
    if !paths.exists() {
        return Err(UpError::NoSnapshot(PRE_PROVISION.into()).into());
    }
    if options.reset {
        reset(instance, reporter)?;
        return super::up::up(instance, &UpOptions::from_env(), reporter);
    }
    let _lock = InstanceLock::acquire(
        &paths.lock_file(),
        paths.id.as_str(),
        "rum retry",
        LockWait::No,
    )?;
    let mut state = State::load(&paths.state_file())?;
    if options.done {
        return drop_snapshots(instance, &mut state, reporter);
    }
    if !state.snapshots.contains_key(PRE_PROVISION) {
        return Err(UpError::NoSnapshot(PRE_PROVISION.into()).into());
    }
    let (tag, from) = if options.from_boot {
        choose_from_boot(instance, &state, reporter)?
    } else {
        (PRE_PROVISION, From::Start)
    };
    reporter.note("Files under [[mounts]] live on the host: the rollback does not touch them.");

    let rt = runtime();
    let (client, info) = restore(instance, &mut state, tag, &rt, reporter)?;
    reset_provisioning(&mut state, from);
    let status =
        provisioning::provision(instance, &mut state, &info, &client, from, &rt, reporter)?;
    let ok = status == ExitStatus::Success;
    reporter.result(
        if ok { "Provisioned after the rollback" } else { "Provisioning failed after the rollback" },
        &serde_json::json!({ "instance": paths.id, "restored": tag, "provisioned": ok, "attempt": state.provision_attempts }),
    );
    Ok(status)
}

/// Restores `tag`: live on a running VM, else into a fresh QEMU with the
/// same devices, started paused. Then the guest clock is set to now.
pub fn restore(
    instance: &Instance,
    state: &mut State,
    tag: &str,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<(rum_agent::Client, RuntimeInfo), Error> {
    let paths = &instance.paths;
    let record = state
        .snapshots
        .get(tag)
        .cloned()
        .ok_or_else(|| UpError::NoSnapshot(tag.into()))?;
    let (client, info) = match (
        instance.qemu_pid(),
        RuntimeInfo::load(&paths.runtime_info()),
    ) {
        (Some(_), Some(info)) => {
            let changes = record.devices.differences(&info.devices);
            if !changes.is_empty() {
                return Err(UpError::DevicesChanged {
                    tag: tag.into(),
                    changes: changes.join("; "),
                }
                .into());
            }
            if info.qemu_version != record.qemu_version {
                reporter.warn(&format!(
                    "The snapshot was taken with QEMU {}; this is QEMU {}",
                    record.qemu_version, info.qemu_version
                ));
            }
            let step = reporter.step(format!("Restoring the `{tag}` snapshot"));
            if let Err(e) = rt.block_on(snapshots::load_and_continue(
                &paths.qmp_socket(),
                tag,
                &info.snapshot_nodes,
            )) {
                step.fail(&e.to_string());
                return Err(e);
            }
            step.done();
            let step = reporter.step("Reconnecting to the guest agent");
            match rt.block_on(connect_agent(instance, Duration::from_secs(60))) {
                Ok(client) => {
                    step.done();
                    (client, info)
                }
                Err(e) => {
                    step.fail(&e.to_string());
                    return Err(e.into());
                }
            }
        }
        _ => {
            let options = UpOptions {
                restore: Some(tag.to_owned()),
                ..UpOptions::from_env()
            };
            let booted = up_restoring(instance, &options, state, rt, reporter)?;
            (booted.client, booted.info)
        }
    };
    set_clock(&client, rt, reporter);
    Ok((client, info))
}

/// `--from boot` needs a `post-system` checkpoint taken after the same
/// system scripts as now; otherwise it says why and does a full retry.
fn choose_from_boot(
    instance: &Instance,
    state: &State,
    reporter: &Reporter,
) -> Result<(&'static str, From), Error> {
    let now = system_hash(&scripts(&instance.config)?);
    match state.snapshots.get(POST_SYSTEM) {
        Some(record) if record.system_scripts.as_deref() == Some(now.as_str()) => {
            Ok((POST_SYSTEM, From::Boot))
        }
        Some(_) => {
            reporter.warn(
                "The system scripts changed since the post-system checkpoint; doing a full retry",
            );
            Ok((PRE_PROVISION, From::Start))
        }
        None => {
            reporter.warn("There is no post-system checkpoint yet (no system phase has succeeded); doing a full retry");
            Ok((PRE_PROVISION, From::Start))
        }
    }
}

/// After a restore the guest clock shows the snapshot's time.
fn set_clock(client: &rum_agent::Client, rt: &tokio::runtime::Runtime, reporter: &Reporter) {
    if let Err(e) = rt.block_on(client.set_time(SystemTime::now())) {
        reporter.warn(&format!("Could not set the guest clock: {e}"));
    }
}

fn reset_provisioning(state: &mut State, from: From) {
    if from == From::Start {
        state.reset(Milestone::SystemProvisioned);
    }
    state.reset(Milestone::BootProvisioned);
}

/// `--done`: the provisioning loop is over; rum's snapshots go.
fn drop_snapshots(
    instance: &Instance,
    state: &mut State,
    reporter: &Reporter,
) -> Result<ExitStatus, Error> {
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
        return Ok(ExitStatus::Success);
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
    Ok(ExitStatus::Success)
}

/// `--reset`: the root disk starts over from the base image and cloud-init
/// runs again with a rebuilt seed and a new instance-id. Keys, drives and
/// the provisioning history stay.
fn reset(instance: &Instance, reporter: &Reporter) -> Result<(), Error> {
    let paths = &instance.paths;
    let _lock = InstanceLock::acquire(
        &paths.lock_file(),
        paths.id.as_str(),
        "rum retry --reset",
        LockWait::No,
    )?;
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
                return Err(Error::Write {
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
