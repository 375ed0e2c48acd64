//! rum.toml edits on an existing VM: what differs from what the VM has
//! (`drift`), the record kept up to date as boots, restores and `rum reload`
//! make edits hold, and what is applied live: port forwards, and mounts
//! plugged into spare PCIe ports (`shares`).

use super::agent::connect_agent;
use super::error::{LifecycleError, ReloadError};
use super::{Instance, RuntimeInfo, shares};
use crate::drift::{Applied, Applies, Change, Mounts, Report};
use crate::exit::Exit;
use crate::instance::LockWait;
use crate::output::Reporter;
use crate::record::RecordError;
use crate::state::{Plugged, ShareRecord, State};
use crate::vm::qemu_args::{NETDEV, hostfwd_rule, hostfwd_source};
use crate::vm::spec::Forward;
use rum_agent::Client;
use rum_qmp::{Qmp, qmp};
use std::time::Duration;

const CONNECT: Duration = Duration::from_secs(10);
const AGENT: Duration = Duration::from_secs(60);

/// How rum.toml differs from what the VM has.
pub fn changes(instance: &Instance) -> Result<Vec<Change>, RecordError> {
    crate::drift::changes(
        &instance.paths.applied(),
        &instance.config,
        &mounts(instance),
    )
}

/// When a mount edit applies on this VM, from its state.
fn mounts(instance: &Instance) -> Mounts {
    State::load(&instance.paths.state_file())
        .map(|state| Mounts::of(&state))
        .unwrap_or_default()
}

/// Prints the changes (one block, or a `drift` event) and returns them.
pub fn report(instance: &Instance, reporter: &Reporter) -> Result<Vec<Change>, RecordError> {
    let changes = changes(instance)?;
    show(&changes, reporter);
    Ok(changes)
}

pub fn show(changes: &[Change], reporter: &Reporter) {
    if !changes.is_empty() {
        reporter.block("drift", &Report(changes).to_string(), &changes);
    }
}

/// Records that what rum.toml states for `kinds` now holds in the VM. A
/// VM without a record gets a whole one: this is where its record starts.
pub fn record(instance: &Instance, kinds: &[Applies]) {
    record_with(instance, &mounts(instance), kinds);
}

/// `record`, for a VM whose state is not on disk yet.
pub fn record_with(instance: &Instance, mounts: &Mounts, kinds: &[Applies]) {
    let path = instance.paths.applied();
    // A damaged record is replaced: the settings just applied are the truth.
    let mut applied = Applied::load(&path).ok().flatten().unwrap_or_default();
    let kinds = if applied.facts.is_empty() {
        &Applies::ALL[..]
    } else {
        kinds
    };
    applied.update(&instance.config, mounts, kinds);
    if let Err(e) = applied.save(&path) {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}

/// `rum reload [--dry-run]`: applies what can be applied to the running
/// VM now and names the rest.
pub fn reload(
    instance: &Instance,
    dry_run: bool,
    reporter: &Reporter,
) -> Result<Exit, LifecycleError> {
    let changes = report(instance, reporter)?;
    let Some(info) = instance.running()? else {
        reporter.result(
            &format!(
                "`{}` is not running; `rum up` starts it with the port forwards and mounts of rum.toml",
                instance.paths.id
            ),
            &serde_json::json!({ "running": false, "changes": changes }),
        );
        return Ok(Exit::Success);
    };
    let live: Vec<_> = changes
        .iter()
        .filter(|c| c.applies == Applies::Live)
        .collect();
    if dry_run {
        let text = if live.is_empty() {
            "Nothing to apply live; nothing was changed".to_owned()
        } else {
            format!(
                "Would apply live: {}; nothing was changed (--dry-run)",
                live.iter()
                    .map(|c| c.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        reporter.result(
            &text,
            &serde_json::json!({ "dry_run": true, "changes": changes }),
        );
        return Ok(Exit::Success);
    }
    // Like every command that changes the VM, one at a time.
    let _lock = instance.paths.lock("rum reload", LockWait::No)?;
    let rt = super::runtime();
    let client = rt.block_on(connect_agent(instance, AGENT))?;
    apply_live(instance, &info, &client, &rt, reporter)?;
    let left: Vec<_> = changes
        .iter()
        .filter(|c| c.applies != Applies::Live && c.applies != Applies::Now)
        .collect();
    let text = match (live.is_empty(), left.is_empty()) {
        (true, true) => "Nothing to apply live".to_owned(),
        (false, true) => "Applied every change live".to_owned(),
        (_, false) => format!(
            "Applied what can be applied live; {} change(s) need more (listed above)",
            left.len()
        ),
    };
    reporter.result(
        &text,
        &serde_json::json!({ "dry_run": false, "changes": changes }),
    );
    Ok(Exit::Success)
}

/// Makes the running VM's live-applicable facts (port forwards, plugged
/// mounts) those of rum.toml, and records them; returns the updated runtime
/// record. Used by `rum reload` and after every boot or restore.
pub fn apply_live(
    instance: &Instance,
    info: &RuntimeInfo,
    client: &Client,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<RuntimeInfo, LifecycleError> {
    let info = apply_ports(instance, info, rt, reporter)?;
    let info = apply_mounts(instance, &info, client, rt, reporter)?;
    record(instance, &[Applies::Live]);
    Ok(info)
}

/// `apply_live` after a boot or a restore, where a refusal is a warning:
/// the VM is up, and a step that needs what is missing says so.
pub fn apply_live_or_warn(
    instance: &Instance,
    info: RuntimeInfo,
    client: &Client,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> RuntimeInfo {
    match apply_live(instance, &info, client, rt, reporter) {
        Ok(now) => now,
        Err(e) => {
            reporter.warn(&format!("Could not apply rum.toml's ports and mounts: {e}"));
            instance.running().ok().flatten().unwrap_or(info)
        }
    }
}

/// Plugs in the mounts rum.toml adds to those on the root bus, and unplugs
/// the plugged ones it no longer has (on a VM with spare ports).
fn apply_mounts(
    instance: &Instance,
    info: &RuntimeInfo,
    client: &Client,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<RuntimeInfo, LifecycleError> {
    let devices = &info.devices;
    if devices.hotplug_ports == 0 {
        return Ok(info.clone());
    }
    let wanted: Vec<ShareRecord> = instance
        .config
        .mounts
        .iter()
        .filter(|m| !devices.mounts.contains(&m.tag))
        .map(ShareRecord::of)
        .collect();
    let gone: Vec<Plugged> = devices
        .plugged
        .iter()
        .filter(|p| !wanted.contains(&p.share))
        .cloned()
        .collect();
    let new: Vec<ShareRecord> = wanted
        .into_iter()
        .filter(|w| !devices.plugged.iter().any(|p| &p.share == w))
        .collect();
    if gone.is_empty() && new.is_empty() {
        return Ok(info.clone());
    }
    let mut info = info.clone();
    let paths = &instance.paths;
    let qmp = rt
        .block_on(Qmp::connect(&paths.qmp_socket(), CONNECT))
        .map_err(ReloadError::from)?;
    for plugged in gone {
        let step = reporter.step(format!("Unplugging the mount at {}", plugged.share.target));
        if let Err(e) = rt.block_on(shares::unplug(paths, &qmp, client, &plugged)) {
            step.fail_with(&e);
            return Err(e);
        }
        step.done();
        info.devices.plugged.retain(|p| p.port != plugged.port);
        info.store(paths)?;
    }
    for share in new {
        let step = reporter.step(format!("Plugging in the mount at {}", share.target));
        let Some(port) = (0..devices.hotplug_ports)
            .find(|port| !info.devices.plugged.iter().any(|p| p.port == *port))
        else {
            let e = ReloadError::NoFreePort {
                target: share.target.clone(),
                ports: devices.hotplug_ports,
            };
            step.fail_with(&e);
            return Err(e.into());
        };
        match rt.block_on(shares::plug(paths, &qmp, client, &share, port)) {
            Ok(plugged) => {
                step.done();
                info.devices.plugged.push(plugged);
                info.store(paths)?;
            }
            Err(e) => {
                step.fail_with(&e);
                return Err(e);
            }
        }
    }
    Ok(info)
}

/// Makes the running VM forward rum.toml's ports.
fn apply_ports(
    instance: &Instance,
    info: &RuntimeInfo,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<RuntimeInfo, LifecycleError> {
    let wanted: Vec<Forward> = instance.config.ports.iter().map(Forward::from).collect();
    let gone: Vec<Forward> = info
        .ports
        .iter()
        .filter(|f| !wanted.contains(f))
        .cloned()
        .collect();
    let new: Vec<Forward> = wanted
        .iter()
        .filter(|f| !info.ports.contains(f))
        .cloned()
        .collect();
    let mut info = info.clone();
    if !gone.is_empty() || !new.is_empty() {
        // Every new host port is checked before anything changes.
        for f in &new {
            if !gone.iter().any(|g| g.bind == f.bind && g.host == f.host) {
                super::ports::check_port_free(f.bind, f.host)?;
            }
        }
        let step = reporter.step(ports_title(&gone, &new));
        let done = rt.block_on(async {
            let qmp = Qmp::connect(&instance.paths.qmp_socket(), CONNECT)
                .await
                .map_err(ReloadError::from)?;
            change_forwards(&qmp, &gone, &new).await
        });
        match done {
            Ok(()) => step.done(),
            Err(e) => {
                step.fail_with(&e);
                return Err(e.into());
            }
        }
        info.ports = wanted;
        info.store(&instance.paths)?;
    }
    Ok(info)
}

fn ports_title(gone: &[Forward], new: &[Forward]) -> String {
    let list = |fs: &[Forward]| {
        fs.iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (gone.is_empty(), new.is_empty()) {
        (true, _) => format!("Forwarding {}", list(new)),
        (_, true) => format!("Removing the forward {}", list(gone)),
        _ => format!("Forwarding {}; removing {}", list(new), list(gone)),
    }
}

/// Removes `gone` and adds `new`; on a refusal, undoes what was done so the
/// VM forwards what it did before.
async fn change_forwards(qmp: &Qmp, gone: &[Forward], new: &[Forward]) -> Result<(), ReloadError> {
    let mut undo: Vec<String> = Vec::new();
    let mut result = Ok(());
    for f in gone {
        if let Err(e) = hmp(
            qmp,
            format!("hostfwd_remove {NETDEV} {}", hostfwd_source(f)),
        )
        .await
        {
            result = Err(e);
            break;
        }
        undo.push(format!("hostfwd_add {NETDEV} {}", hostfwd_rule(f)));
    }
    if result.is_ok() {
        for f in new {
            if let Err(e) = hmp(qmp, format!("hostfwd_add {NETDEV} {}", hostfwd_rule(f))).await {
                result = Err(e);
                break;
            }
            undo.push(format!("hostfwd_remove {NETDEV} {}", hostfwd_source(f)));
        }
    }
    if result.is_err() {
        for command in undo.into_iter().rev() {
            let _ = hmp(qmp, command).await;
        }
    }
    result
}

/// QEMU has no QMP command for user-network forwards; the human monitor's
/// `hostfwd_add` answers nothing on success, `hostfwd_remove` that the rule
/// was removed; anything else says why it refused.
async fn hmp(qmp: &Qmp, command_line: String) -> Result<(), ReloadError> {
    let said = qmp
        .execute(qmp::human_monitor_command {
            command_line: command_line.clone(),
            cpu_index: None,
        })
        .await?;
    let said = said.trim();
    let removing = command_line.starts_with("hostfwd_remove");
    if said.is_empty() && !removing || removing && said.ends_with(" removed") {
        Ok(())
    } else {
        Err(ReloadError::Refused {
            command: command_line,
            qemu: said.to_owned(),
        })
    }
}
