//! `rum snapshot create|list|restore|delete`: named live snapshots besides
//! rum's own `pre-provision` and `post-system`.

use crate::cli::SnapshotCommand;
use crate::disk;
use crate::instance::LockWait;
use crate::lifecycle::agent::connect_agent;
use crate::lifecycle::{AgentError, Instance, SnapshotError, runtime};
use crate::lifecycle::{checkpoints, snapshots};
use crate::output::Reporter;
use crate::state::State;
use crate::{Error, Exit};
use std::time::Duration;

pub fn run(
    target: &crate::lifecycle::Target,
    command: &SnapshotCommand,
    reporter: &Reporter,
) -> Result<Exit, Error> {
    let action = match command {
        SnapshotCommand::Create { name } => Action::Create(name.as_deref()),
        SnapshotCommand::List => Action::List,
        SnapshotCommand::Restore { name } => Action::Restore(name),
        SnapshotCommand::Delete { name } => Action::Delete(name),
    };
    let instance = Instance::open_target(target)?;
    let id = instance.paths.id.to_string();
    let on_disk = disk::snapshots(&instance.paths.overlay()).unwrap_or_default();
    if let Action::List = action {
        let state = State::load(&instance.paths.state_file())?;
        let steps = crate::provision::scripts::scripts(&instance.config)
            .map(|all| checkpoints::matches_now(&state, &all))
            .unwrap_or_default();
        list(&id, &on_disk, &state, &steps, reporter);
        return Ok(Exit::Success);
    }
    if !instance.paths.exists() {
        return Err(AgentError::NotRunning(id).into());
    }
    let _lock = instance.paths.lock("rum snapshot", LockWait::No)?;
    let mut state = snapshots::load_state(&instance)?;
    let known: Vec<String> = on_disk.iter().map(|s| s.name.clone()).collect();
    let rt = runtime();
    match action {
        Action::List => {}
        Action::Create(name) => {
            // A save a killed rum left unrecorded does not hold the name:
            // the save deletes it first.
            let taken: Vec<String> = state.snapshots.keys().cloned().collect();
            let name = snapshots::new_name(name, &taken)?;
            let info = instance
                .running()
                .map_err(SnapshotError::from)?
                .ok_or_else(|| SnapshotError::NotRunning(id.clone()))?;
            // For the clock after the save; a snapshot is taken without it too.
            let client = rt
                .block_on(connect_agent(&instance, Duration::from_secs(10)))
                .ok();
            let step = reporter.step(format!("Saving `{name}`"));
            if let Err(e) = rt.block_on(snapshots::save(
                &instance,
                &mut state,
                &name,
                &info,
                client.as_ref(),
                snapshots::Recorded::default(),
                reporter,
            )) {
                step.fail(&e.to_string());
                return Err(e.into());
            }
            step.done();
            reporter.result(
                &format!("Saved `{name}`; `rum snapshot restore {name}` goes back to it"),
                &serde_json::json!({ "created": name }),
            );
        }
        Action::Restore(name) => {
            snapshots::existing(name, &known)?;
            snapshots::restore(&instance, &mut state, name, &rt, reporter)?;
            reporter.result(
                &format!("Restored `{name}`"),
                &serde_json::json!({ "restored": name }),
            );
        }
        Action::Delete(name) => {
            snapshots::existing(name, &known)?;
            let step = reporter.step(format!("Deleting `{name}`"));
            let deleted = match snapshots::delete(&instance, &mut state, &[name.to_owned()]) {
                Ok(deleted) => deleted,
                Err(e) => {
                    step.fail(&e.to_string());
                    return Err(e.into());
                }
            };
            step.done();
            deleted.warn(reporter);
            reporter.result(
                &format!("Deleted `{name}`"),
                &serde_json::json!({ "deleted": name }),
            );
        }
    }
    Ok(Exit::Success)
}

enum Action<'a> {
    Create(Option<&'a str>),
    List,
    Restore(&'a str),
    Delete(&'a str),
}

/// The snapshots on disk that rum recorded: complete ones. A save whose
/// rum was killed leaves a tag without a record, which nothing restores.
pub fn recorded<'a>(
    on_disk: &'a [disk::SnapshotInfo],
    state: &'a State,
) -> Vec<(&'a disk::SnapshotInfo, &'a crate::state::SnapshotRecord)> {
    on_disk
        .iter()
        .filter_map(|s| Some((s, state.snapshots.get(&s.name)?)))
        .collect()
}

fn list(
    id: &str,
    on_disk: &[disk::SnapshotInfo],
    state: &State,
    steps: &[(String, Option<String>)],
    reporter: &Reporter,
) {
    let now = crate::clock::unix_now();
    let shown = recorded(on_disk, state);
    let rows: Vec<serde_json::Value> = shown
        .iter()
        .map(|(s, record)| {
            // A step checkpoint: which step of today's scripts it follows, if any.
            let checkpoint = steps
                .iter()
                .find(|(tag, _)| tag == &s.name)
                .map(|(_, step)| step);
            serde_json::json!({
                "name": s.name,
                "date": s.date,
                "age_s": now.saturating_sub(s.date),
                "vm_state_size": s.vm_state_size,
                "ram_file": record.ram.as_ref().map(|r| &r.file),
                "disk_bytes": record.disk_bytes(s.vm_state_size),
                "rum_owned": record.rum_owned,
                "checkpoint": checkpoint.is_some(),
                "step": checkpoint.cloned().flatten(),
                "current": checkpoint.map(|step| step.is_some()),
            })
        })
        .collect();
    let text = if rows.is_empty() {
        format!("`{id}` has no snapshots")
    } else {
        shown
            .iter()
            .zip(&rows)
            .map(|((s, record), r)| {
                let owner = if record.rum_owned {
                    "rum's own"
                } else {
                    "yours"
                };
                let step = match (r["checkpoint"].as_bool(), r["step"].as_str()) {
                    (Some(true), Some(step)) => format!(", after step `{step}`"),
                    (Some(true), None) => ", stale (matches no step now)".to_owned(),
                    _ => String::new(),
                };
                format!(
                    "{:<24} {:>12} {:>8} MiB  {:<12} {owner}{step}, {} old",
                    s.name,
                    r["date"],
                    record.disk_bytes(s.vm_state_size) >> 20,
                    record.kind(),
                    age(now.saturating_sub(s.date))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    reporter.result(&text, &serde_json::json!({ "snapshots": rows }));
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}
