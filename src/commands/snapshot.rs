//! `rum snapshot create|list|restore|delete`: named live snapshots besides
//! rum's own `pre-provision` and `post-system`.

use crate::disk;
use crate::instance::{InstanceLock, LockWait};
use crate::lifecycle::snapshots;
use crate::lifecycle::up::UpError;
use crate::lifecycle::{AgentError, Instance, RuntimeInfo, retry, runtime};
use crate::output::Reporter;
use crate::state::State;
use crate::{Error, ExitStatus};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotCommandError {
    #[error("There is no snapshot `{name}`; {}", if .known.is_empty() { "this VM has none".to_owned() } else { format!("there are: {}", .known.join(", ")) })]
    Unknown { name: String, known: Vec<String> },
    #[error(
        "`{0}` is not running: a snapshot holds the VM's memory, so start it first with `rum up`"
    )]
    NotRunning(String),
    #[error("A snapshot named `{0}` exists already; delete it first or choose another name")]
    Exists(String),
    #[error("`{0}` is not a valid snapshot name; use letters, digits, `.`, `_` or `-`")]
    BadName(String),
}

pub enum Action<'a> {
    Create(Option<&'a str>),
    List,
    Restore(&'a str),
    Delete(&'a str),
}

pub fn run(file: &Path, action: Action<'_>, reporter: &Reporter) -> Result<ExitStatus, Error> {
    let instance = Instance::open(file)?;
    let id = instance.paths.id.to_string();
    let on_disk = disk::snapshots(&instance.paths.overlay()).unwrap_or_default();
    if let Action::List = action {
        let state = State::load(&instance.paths.state_file())?;
        let rows: Vec<serde_json::Value> = on_disk
            .iter()
            .map(|s| {
                let rum_owned = state.snapshots.get(&s.name).is_some_and(|r| r.rum_owned);
                serde_json::json!({ "name": s.name, "date": s.date, "vm_state_size": s.vm_state_size, "rum_owned": rum_owned })
            })
            .collect();
        let text = if rows.is_empty() {
            format!("`{id}` has no snapshots")
        } else {
            rows.iter()
                .map(|r| {
                    format!(
                        "{:<24} {:>12} {:>8} MiB  {}",
                        r["name"].as_str().unwrap_or(""),
                        r["date"],
                        r["vm_state_size"].as_u64().unwrap_or(0) >> 20,
                        if r["rum_owned"] == true {
                            "rum's own"
                        } else {
                            "yours"
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        reporter.result(&text, &serde_json::json!({ "snapshots": rows }));
        return Ok(ExitStatus::Success);
    }
    if !instance.paths.exists() {
        return Err(AgentError::NotRunning(id).into());
    }
    let _lock = InstanceLock::acquire(
        &instance.paths.lock_file(),
        &id,
        "rum snapshot",
        LockWait::No,
    )?;
    let mut state = State::load(&instance.paths.state_file())?;
    let known: Vec<String> = on_disk.iter().map(|s| s.name.clone()).collect();
    let unknown = |name: &str| SnapshotCommandError::Unknown {
        name: name.into(),
        known: known.clone(),
    };
    let rt = runtime();
    match action {
        Action::List => unreachable!("handled above"),
        Action::Create(name) => {
            let name = name
                .map(str::to_owned)
                .unwrap_or_else(|| format!("snap-{}", unix_now()));
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(SnapshotCommandError::BadName(name).into());
            }
            if known.contains(&name) {
                return Err(SnapshotCommandError::Exists(name).into());
            }
            let info = match (
                instance.qemu_pid(),
                RuntimeInfo::load(&instance.paths.runtime_info()),
            ) {
                (Some(_), Some(info)) => info,
                _ => return Err(SnapshotCommandError::NotRunning(id).into()),
            };
            let step = reporter.step(format!("Saving `{name}`"));
            let saved = rt.block_on(snapshots::save(
                &instance,
                &mut state,
                &name,
                &info.devices,
                &info.snapshot_nodes,
                &info.qemu_version,
                None,
            ));
            if let Err(e) = saved {
                step.fail(&e.to_string());
                return Err(e);
            }
            step.done();
            reporter.result(
                &format!("Saved `{name}`; `rum snapshot restore {name}` goes back to it"),
                &serde_json::json!({ "created": name }),
            );
        }
        Action::Restore(name) => {
            if !known.iter().any(|k| k == name) {
                return Err(unknown(name).into());
            }
            if !state.snapshots.contains_key(name) {
                return Err(UpError::NoSnapshot(name.into()).into());
            }
            retry::restore(&instance, &mut state, name, &rt, reporter)?;
            reporter.result(
                &format!("Restored `{name}`"),
                &serde_json::json!({ "restored": name }),
            );
        }
        Action::Delete(name) => {
            if !known.iter().any(|k| k == name) {
                return Err(unknown(name).into());
            }
            let step = reporter.step(format!("Deleting `{name}`"));
            if let Err(e) = snapshots::delete(&instance, &[name.to_owned()]) {
                step.fail(&e.to_string());
                return Err(e);
            }
            step.done();
            state.snapshots.remove(name);
            state.save(&instance.paths.state_file())?;
            reporter.result(
                &format!("Deleted `{name}`"),
                &serde_json::json!({ "deleted": name }),
            );
        }
    }
    Ok(ExitStatus::Success)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl From<SnapshotCommandError> for Error {
    fn from(e: SnapshotCommandError) -> Self {
        Error::SnapshotCommand(e)
    }
}
