//! `rum list`: every VM of this user on this machine, from any directory,
//! read from the instance directories alone. A broken one is listed with
//! its problem and never hides the others.

use crate::instance::{BaseDirs, InstanceId, InstancePaths};
use crate::lifecycle::RuntimeInfo;
use crate::output::Reporter;
use crate::state::State;
use crate::{Error, Exit};
use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize)]
struct Row {
    instance: String,
    name: String,
    /// The rum.toml it belongs to, if rum recorded it.
    config: Option<PathBuf>,
    state: &'static str,
    pid: Option<u32>,
    accel: Option<String>,
    uptime_s: Option<u64>,
    snapshots: usize,
    disk_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

pub fn run(reporter: &Reporter) -> Result<Exit, Error> {
    let dirs = BaseDirs::from_env()?;
    let mut rows: Vec<Row> = dirs
        .instance_ids()
        .into_iter()
        .map(|id| row(id, &dirs))
        .collect();
    rows.sort_by(|a, b| a.instance.cmp(&b.instance));
    let text = if rows.is_empty() {
        "No VMs; `rum up` in a project makes one".to_owned()
    } else {
        let mut lines = vec![format!(
            "{:<28} {:<20} {:>7} {:<4} {:>8} {:>5} {:>9}  {}",
            "INSTANCE", "STATE", "PID", "ACC", "UP", "SNAPS", "DISK", "CONFIG"
        )];
        lines.extend(rows.iter().map(|r| {
            let config = r
                .config
                .as_ref()
                .map_or("(not recorded)".to_owned(), |c| c.display().to_string());
            let problem = r
                .problem
                .as_ref()
                .map(|p| format!("  ({p})"))
                .unwrap_or_default();
            format!(
                "{:<28} {:<20} {:>7} {:<4} {:>8} {:>5} {:>6} MiB  {config}{problem}",
                r.instance,
                r.state,
                r.pid.map_or("-".into(), |p| p.to_string()),
                r.accel.as_deref().unwrap_or("-"),
                r.uptime_s.map_or("-".into(), |s| format!("{}m", s / 60)),
                r.snapshots,
                r.disk_bytes >> 20,
            )
        }));
        lines.join("\n")
    };
    reporter.result(&text, &serde_json::json!({ "instances": rows }));
    Ok(Exit::Success)
}

fn row(id: InstanceId, dirs: &BaseDirs) -> Row {
    let name = id
        .as_str()
        .rsplit_once('-')
        .map_or(id.as_str(), |(n, _)| n)
        .to_owned();
    let mut row = Row {
        instance: id.to_string(),
        name,
        config: None,
        state: "stopped",
        pid: None,
        accel: None,
        uptime_s: None,
        snapshots: 0,
        disk_bytes: 0,
        problem: None,
    };
    let paths = match InstancePaths::resolve(id, dirs) {
        Ok(paths) => paths,
        Err(e) => {
            row.state = "broken";
            row.problem = Some(e.to_string());
            return row;
        }
    };
    row.disk_bytes = disk_usage(&paths.data);
    row.config = paths.recorded_config();
    row.pid = crate::lifecycle::running_qemu(&paths);
    if row.pid.is_some()
        && let Ok(Some(info)) = RuntimeInfo::load(&paths.runtime_info())
    {
        row.accel = Some(info.accel.to_string());
        row.uptime_s = Some(crate::clock::unix_now().saturating_sub(info.started));
    }
    let state = match State::load(&paths.state_file()) {
        Ok(state) => state,
        Err(e) => {
            row.state = "broken";
            row.problem = Some(e.to_string());
            return row;
        }
    };
    row.snapshots = state.snapshots.len();
    row.state = crate::lifecycle::condition::condition(&paths, &state).label();
    if row.config.as_ref().is_some_and(|c| !c.exists()) {
        row.state = if row.pid.is_some() {
            "running, config gone"
        } else {
            "config gone"
        };
    }
    row
}

/// Bytes the files under `dir` take on disk (sparse files count what they hold).
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}
