//! `state.json`: the milestones of an instance's bring-up, each with its
//! status, and a history of what happened when. A milestone is marked
//! completed only after its step has finished.

mod snapshot;

pub use snapshot::{
    DeviceSet, DevicesChanged, Plugged, RamCopy, RamKind, ShareRecord, SnapshotRecord,
};

use crate::record::{self, Record, RecordError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Steps of bring-up and provisioning, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Milestone {
    ImageReady,
    OverlayCreated,
    DrivesCreated,
    SeedBuilt,
    Booted,
    AgentReady,
    SnapshotTaken,
    SystemProvisioned,
    BootProvisioned,
}

impl Milestone {
    pub const ALL: [Milestone; 9] = [
        Milestone::ImageReady,
        Milestone::OverlayCreated,
        Milestone::DrivesCreated,
        Milestone::SeedBuilt,
        Milestone::Booted,
        Milestone::AgentReady,
        Milestone::SnapshotTaken,
        Milestone::SystemProvisioned,
        Milestone::BootProvisioned,
    ];

    /// Its name in `state.json` and in `RUM_TEST_FAIL_AFTER`.
    pub fn key(self) -> &'static str {
        match self {
            Milestone::ImageReady => "image_ready",
            Milestone::OverlayCreated => "overlay_created",
            Milestone::DrivesCreated => "drives_created",
            Milestone::SeedBuilt => "seed_built",
            Milestone::Booted => "booted",
            Milestone::AgentReady => "agent_ready",
            Milestone::SnapshotTaken => "snapshot_taken",
            Milestone::SystemProvisioned => "system_provisioned",
            Milestone::BootProvisioned => "boot_provisioned",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Milestone::ImageReady => "image ready",
            Milestone::OverlayCreated => "overlay created",
            Milestone::DrivesCreated => "drives created",
            Milestone::SeedBuilt => "seed built",
            Milestone::Booted => "booted",
            Milestone::AgentReady => "agent ready",
            Milestone::SnapshotTaken => "snapshot taken",
            Milestone::SystemProvisioned => "system provisioned",
            Milestone::BootProvisioned => "boot provisioned",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InProgress,
    Completed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MilestoneState {
    pub status: Status,
    pub attempts: u32,
    /// Unix time (seconds) of the last change.
    pub updated: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub milestone: Milestone,
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What happened to a milestone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Started,
    Completed,
    Failed,
    /// A transient failure; the step goes on after a delay.
    Retrying,
    /// Forgotten, so that its step runs again.
    Reset,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Event::Started => "started",
            Event::Completed => "completed",
            Event::Failed => "failed",
            Event::Retrying => "retrying",
            Event::Reset => "reset",
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub milestones: BTreeMap<Milestone, MilestoneState>,
    pub history: Vec<HistoryEntry>,
    /// Snapshots rum took or was asked to take, by tag.
    #[serde(default)]
    pub snapshots: BTreeMap<String, SnapshotRecord>,
    /// Provisioning runs so far; each has a log directory of its own.
    #[serde(default)]
    pub provision_attempts: u32,
    /// Spare PCIe root ports for hot-plugged devices, fixed when the VM is
    /// made (part of its device set); none for VMs made before rum had them.
    #[serde(default)]
    pub hotplug_ports: u8,
    /// The shares on the root bus, fixed when the VM is made (with spare
    /// ports; `None` for older VMs, which take rum.toml's at every boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<Vec<ShareRecord>>,
    /// Guest RAM in a file, fixed when the VM is made (`None`: in memfd or
    /// QEMU's own memory, and snapshots carry it in the qcow2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<crate::ram::RamFile>,
    /// A free-page-reporting balloon, fixed when the VM is made (none for
    /// VMs made before rum had it).
    #[serde(default)]
    pub free_page_reporting: bool,
    /// A VM generation ID device, fixed when the VM is made (none for VMs
    /// made before rum had it).
    #[serde(default)]
    pub vm_generation_id: bool,
    /// Under TCG, a CPU without 5-level paging, fixed when the VM is made
    /// (5-level for VMs made before rum turned it off).
    #[serde(default)]
    pub tcg_la57_off: bool,
    /// KVM hung this VM's boot (nested virtualisation): `accel = "auto"`
    /// picks TCG for it, so its snapshots keep loading.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kvm_hangs: bool,
}

impl Record for State {
    const RECOVERY: &'static str = "move it away to start the instance's record afresh";
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("Cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Keeps the history from growing without bound over many `up`s.
const MAX_HISTORY: usize = 500;

impl State {
    /// Reads the state file; a missing file is a fresh state.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        Ok(record::load(path)?.unwrap_or_default())
    }

    /// Writes atomically (temporary file, then rename), mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        record::save(self, path).map_err(|source| StateError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn is_completed(&self, milestone: Milestone) -> bool {
        self.milestones
            .get(&milestone)
            .is_some_and(|m| m.status == Status::Completed)
    }

    pub fn start(&mut self, milestone: Milestone) {
        let entry = self.entry(milestone);
        entry.status = Status::InProgress;
        entry.attempts += 1;
        entry.error = None;
        self.record(milestone, Event::Started, None);
    }

    pub fn complete(&mut self, milestone: Milestone) {
        self.entry(milestone).status = Status::Completed;
        self.record(milestone, Event::Completed, None);
    }

    pub fn fail(&mut self, milestone: Milestone, error: &str) {
        let entry = self.entry(milestone);
        entry.status = Status::Failed;
        entry.error = Some(error.to_owned());
        self.record(milestone, Event::Failed, Some(error.to_owned()));
    }

    /// Notes a transient failure that will be retried after `delay_ms`.
    pub fn retrying(&mut self, milestone: Milestone, attempt: u32, delay_ms: u64, error: &str) {
        self.record(
            milestone,
            Event::Retrying,
            Some(format!(
                "attempt {attempt} failed ({error}); next in {delay_ms} ms"
            )),
        );
    }

    /// Forgets a milestone so that its step runs again (e.g. after `down`, `booted`).
    pub fn reset(&mut self, milestone: Milestone) {
        if self.milestones.remove(&milestone).is_some() {
            self.record(milestone, Event::Reset, None);
        }
    }

    /// Drops the records of snapshots the disk does not hold (a delete whose
    /// record could not be written): the disk is the truth. Returns them.
    pub fn reconcile(&mut self, on_disk: &[&str]) -> Vec<(String, SnapshotRecord)> {
        let gone: Vec<String> = self
            .snapshots
            .keys()
            .filter(|tag| !on_disk.contains(&tag.as_str()))
            .cloned()
            .collect();
        gone.into_iter()
            .filter_map(|tag| self.snapshots.remove_entry(&tag))
            .collect()
    }

    /// The first milestone that has failed or is still in progress.
    pub fn unfinished(&self) -> Option<(Milestone, &MilestoneState)> {
        self.milestones
            .iter()
            .find(|(_, m)| m.status != Status::Completed)
            .map(|(k, v)| (*k, v))
    }

    fn entry(&mut self, milestone: Milestone) -> &mut MilestoneState {
        self.milestones.entry(milestone).or_insert(MilestoneState {
            status: Status::InProgress,
            attempts: 0,
            updated: 0,
            error: None,
        })
    }

    fn record(&mut self, milestone: Milestone, event: Event, detail: Option<String>) {
        let now = crate::clock::since_epoch();
        self.entry(milestone).updated = now.as_secs();
        self.history.push(HistoryEntry {
            at_ms: now.as_millis() as u64,
            milestone,
            event,
            detail,
        });
        if self.history.len() > MAX_HISTORY {
            self.history.drain(..self.history.len() - MAX_HISTORY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milestones_complete_only_when_told() {
        let mut state = State::default();
        state.start(Milestone::OverlayCreated);
        assert!(!state.is_completed(Milestone::OverlayCreated));
        assert_eq!(state.unfinished().unwrap().0, Milestone::OverlayCreated);
        state.fail(Milestone::OverlayCreated, "disk full");
        assert_eq!(
            state.milestones[&Milestone::OverlayCreated]
                .error
                .as_deref(),
            Some("disk full")
        );
        state.start(Milestone::OverlayCreated);
        state.complete(Milestone::OverlayCreated);
        assert!(state.is_completed(Milestone::OverlayCreated));
        assert_eq!(state.milestones[&Milestone::OverlayCreated].attempts, 2);
        assert!(state.unfinished().is_none());
        let events: Vec<_> = state.history.iter().map(|h| h.event).collect();
        assert_eq!(
            events,
            [
                Event::Started,
                Event::Failed,
                Event::Started,
                Event::Completed
            ]
        );
        let json = serde_json::to_string(&state.history[1]).unwrap();
        assert!(json.contains(r#""event":"failed""#), "{json}");
    }

    #[test]
    fn saves_and_loads_atomically_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(State::load(&path).unwrap(), State::default());
        let mut state = State::default();
        state.start(Milestone::Booted);
        state.retrying(Milestone::AgentReady, 1, 500, "connection refused");
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), state);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&path, "{not json").unwrap();
        assert!(
            State::load(&path)
                .unwrap_err()
                .to_string()
                .contains("move it away")
        );
    }

    #[test]
    fn one_spelling_of_each_milestone() {
        for m in Milestone::ALL {
            assert_eq!(serde_json::to_value(m).unwrap(), m.key());
        }
    }

    #[test]
    fn history_is_bounded() {
        let mut state = State::default();
        for _ in 0..MAX_HISTORY + 50 {
            state.start(Milestone::AgentReady);
        }
        assert_eq!(state.history.len(), MAX_HISTORY);
    }
}
