//! `rum status`.

use crate::disk;
use crate::instance::InstanceLock;
use crate::lifecycle::Instance;
use crate::lifecycle::condition::{Condition, Readiness};
use crate::output::Reporter;
use crate::state::State;
use crate::{Error, Exit};
use std::fmt::Write;

/// History entries shown to people (JSON gets them all).
const HISTORY_SHOWN: usize = 12;

pub fn run(
    target: &crate::lifecycle::Target,
    watch: bool,
    reporter: &Reporter,
) -> Result<Exit, Error> {
    let instance = Instance::open_target(target)?;
    if !watch {
        let (text, data) = describe(&instance)?;
        reporter.result(&text, &data);
        return Ok(Exit::Success);
    }
    // Redrawn on a terminal, one JSON line per change otherwise; the
    // uptime alone is no change.
    let redraw = reporter.mode() != crate::output::Mode::Json
        && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let rt = crate::lifecycle::runtime();
    let mut last = None;
    loop {
        let (text, mut data) = describe(&instance)?;
        let uptime = data["uptime_s"].take();
        if last.as_ref() != Some(&data) {
            data["uptime_s"] = uptime.clone();
            if redraw {
                print!("\x1b[H\x1b[2J");
            }
            reporter.result(&text, &data);
            data["uptime_s"] = serde_json::Value::Null;
            last = Some(data);
        }
        let stopped = rt.block_on(async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => true,
                _ = tokio::time::sleep(WATCH_EVERY) => false,
            }
        });
        if stopped {
            return Ok(Exit::Success);
        }
    }
}

/// How often `--watch` looks again.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The status for people, and as data.
fn describe(instance: &Instance) -> Result<(String, serde_json::Value), Error> {
    let paths = &instance.paths;
    let exists = paths.exists();
    let state = State::load(&paths.state_file())?;
    // QEMU is looked up once: `--watch` asks every second.
    let condition = crate::lifecycle::condition::condition(paths, &state);
    let pid = match condition {
        Condition::Running { pid, .. } => Some(pid),
        _ => None,
    };
    let info = match pid {
        Some(_) => crate::lifecycle::RuntimeInfo::load(&paths.runtime_info())?,
        None => None,
    };
    let on_disk = disk::snapshots(&paths.overlay()).unwrap_or_default();
    let recorded = super::snapshot::recorded(&on_disk, &state);
    let snapshots = recorded.len();
    let snapshot_bytes: u64 = recorded
        .iter()
        .map(|(s, r)| r.disk_bytes(s.vm_state_size))
        .sum();
    let busy = InstanceLock::current_holder(&paths.lock_file());
    let vm_state = match (exists, condition) {
        (false, _) => "not created",
        (true, Condition::Running { .. }) => "running",
        (true, Condition::Died) => "died",
        (true, Condition::Stopped) => "stopped",
    };
    let ready = match condition {
        Condition::Running { readiness, .. } => Some(readiness == Readiness::Ready),
        _ => None,
    };
    let shown_state = match condition {
        Condition::Running {
            readiness: Readiness::Unfinished(m),
            ..
        } => format!(
            "{vm_state}, not ready: {} unfinished; `rum up` finishes it",
            m.title()
        ),
        Condition::Running {
            readiness: Readiness::Failed(m),
            ..
        } => format!(
            "{vm_state}, not ready: {} failed; `rum retry` runs it again",
            m.title()
        ),
        Condition::Died if exists => format!(
            "{vm_state}: QEMU is gone and was not stopped by rum; `rum up` starts it again from its disk"
        ),
        _ => vm_state.to_owned(),
    };
    let dead_mounts = info
        .as_ref()
        .map(crate::lifecycle::condition::dead_mounts)
        .unwrap_or_default();
    let now = crate::clock::unix_now();
    let uptime = info.as_ref().map(|i| now.saturating_sub(i.started));

    let mut s = String::new();
    let _ = writeln!(s, "  {:<12}{} ({shown_state})", "instance", paths.id);
    if let Some(holder) = &busy {
        let _ = writeln!(s, "  {:<12}{holder} is working on it", "busy");
    }
    if let (Some(pid), Some(info)) = (pid, &info) {
        let _ = writeln!(
            s,
            "  {:<12}{pid}, up {}",
            "pid",
            human_duration(uptime.unwrap_or(0))
        );
        let _ = writeln!(
            s,
            "  {:<12}{} ({}), {} firmware, QEMU {}",
            "machine", info.machine, info.accel, info.firmware, info.qemu_version
        );
        let _ = writeln!(s, "  {:<12}{}", "agent", info.agent_transport);
        let _ = writeln!(s, "  {:<12}127.0.0.1:{} (`rum ssh`)", "ssh", info.ssh_port);
        for port in &info.ports {
            let _ = writeln!(s, "  {:<12}{port}", "port");
        }
        for mount in &info.mounts {
            let dead = if dead_mounts.contains(mount) {
                " — its virtiofsd is gone, the guest gets errors there; `rum down`, then `rum up`"
            } else {
                ""
            };
            let _ = writeln!(s, "  {:<12}{mount}{dead}", "mount");
        }
    }
    if condition == Condition::Died {
        let console = crate::lifecycle::console_tail(&paths.serial_log(), 5);
        let _ = writeln!(s, "  {:<12}its console ended with:", "died");
        for line in console.lines() {
            let _ = writeln!(s, "  {:<12}{line}", "");
        }
    }
    let c = &instance.config.resources;
    let _ = writeln!(
        s,
        "  {:<12}{} CPUs, {} MiB, {} disk",
        "resources", c.cpus, c.memory_mb, c.disk
    );
    let ram = match &state.ram {
        Some(ram) => format!(
            "in {} while it runs; snapshots copy it beside the disks{}",
            ram.live.display(),
            if ram.reflink {
                ", sharing unchanged blocks"
            } else {
                ""
            }
        ),
        None => "memfd; snapshots write it into the qcow2".to_owned(),
    };
    let _ = writeln!(s, "  {:<12}{ram}", "guest RAM");
    let _ = writeln!(
        s,
        "  {:<12}{snapshots} ({} MiB on disk)",
        "snapshots",
        snapshot_bytes >> 20
    );
    for (milestone, m) in &state.milestones {
        let error = m
            .error
            .as_ref()
            .map(|e| format!(": {}", e.lines().next().unwrap_or("")))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  {:<12}{} — {:?} (attempt {}){error}",
            "milestone",
            milestone.title(),
            m.status,
            m.attempts
        );
    }
    for h in state.history.iter().rev().take(HISTORY_SHOWN).rev() {
        let detail = h
            .detail
            .as_ref()
            .map(|d| format!(" — {}", d.lines().next().unwrap_or("")))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  {:<12}{} {} {}{detail}",
            "history",
            h.at_ms / 1000,
            h.milestone.title(),
            h.event
        );
    }
    let changes = crate::lifecycle::reload::changes(instance)?;
    let _ = write!(s, "{}", crate::drift::Report(&changes));
    Ok((
        s.trim_end().to_owned(),
        serde_json::json!({
            "changes": changes,
            "instance": paths.id,
            "state": vm_state,
            "ready": ready,
            "dead_mounts": dead_mounts,
            "pid": pid,
            "uptime_s": uptime,
            "runtime": info,
            "busy": busy,
            "resources": c,
            "snapshots": snapshots,
            "snapshot_disk_bytes": snapshot_bytes,
            "ram": state.ram,
            "milestones": state.milestones,
            "history": state.history,
            "data_dir": paths.data,
        }),
    ))
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}
