//! Live snapshots: saved through QMP jobs and recorded in state with the
//! QEMU version and device set they need; the one restore (live, or into a
//! fresh paused QEMU) with its one device-set check; deletion, offline
//! through a QEMU with no guest; and what `rum snapshot` may be asked.

use super::agent::connect_agent;
use super::boot::{self, Restoring};
use super::checkpoints::{PRE_PROVISION, is_rums};
use super::error::{LifecycleError, SnapshotError};
use super::ledger;
use super::{Instance, RuntimeInfo};
use crate::clock::unix_now;
use crate::guard::Guard;
use crate::instance::InstancePaths;
use crate::output::Reporter;
use crate::ram::RamFile;
use crate::state::{DeviceSet, RamCopy, RamKind, SnapshotRecord, State, StateError};
use crate::vm;
use crate::vm::spec::{ROOT_NODE, node_files, snapshot_nodes};
use rum_agent::Client;
use rum_qmp::{Qmp, qmp};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Saving writes all guest RAM; under TCG on a busy host that takes a while.
const JOB_TIMEOUT: Duration = Duration::from_secs(900);
const CONNECT: Duration = Duration::from_secs(10);
/// Free space under which a failed save is taken to have filled the disk.
const FULL_BELOW: u64 = 64 << 20;

/// Saves `tag` on the VM running as `info` and records it; then sets the
/// guest clock through `client`, which stood still while the VM was stopped.
pub async fn save(
    instance: &Instance,
    state: &mut State,
    tag: &str,
    info: &RuntimeInfo,
    client: Option<&Client>,
    recorded: Recorded,
    reporter: &Reporter,
) -> Result<(), LifecycleError> {
    let paths = &instance.paths;
    let ram = ram_file(state, &info.devices);
    // A RAM copy writes at most what the guest touched; a stream all RAM.
    let need = ram
        .as_ref()
        .map_or(info.devices.memory_mb << 20, RamFile::touched);
    // Tests lift the check to fill a disk in the middle of a save.
    let checked = std::env::var_os("RUM_TEST_SKIP_SPACE_CHECK").is_none();
    let free_before = crate::fsutil::free_bytes(&paths.data).unwrap_or(u64::MAX);
    if checked && free_before < need {
        return Err(SnapshotError::NoSpace {
            dir: paths.data.clone(),
            free_mib: free_before >> 20,
            need_mib: need >> 20,
        }
        .into());
    }
    let qmp = connect(&paths.qmp_socket()).await?;
    resume_interrupted(instance, &qmp).await?;
    // The old record goes first: a rum killed from here on leaves a tag
    // with no record, which nothing restores, never a record of new state.
    if state.snapshots.remove(tag).is_some() {
        ledger::with_room(paths, || state.save(&paths.state_file()))?.warn(paths, reporter);
    }
    // snapshot-save refuses an existing name; one can be on disk without a
    // record (a save whose rum was killed before it recorded it).
    if crate::disk::snapshots(&paths.overlay())
        .map_or(true, |all| all.iter().any(|s| s.name == tag))
    {
        let _ = qmp
            .snapshot_delete(tag, &info.snapshot_nodes, JOB_TIMEOUT)
            .await;
    }
    let copy = match &ram {
        None => {
            let saved = qmp
                .snapshot_save(tag, ROOT_NODE, &info.snapshot_nodes, JOB_TIMEOUT)
                .await;
            saved.map_err(|e| filled_up(paths, free_before < need, e.into()))?;
            None
        }
        Some(ram) => Some(save_with_ram(instance, state, &qmp, tag, info, ram).await?),
    };
    state.snapshots.insert(
        tag.to_owned(),
        SnapshotRecord {
            created: unix_now(),
            qemu_version: info.qemu_version.clone(),
            devices: info.devices.clone(),
            rum_owned: is_rums(tag),
            system_scripts: recorded.system_scripts,
            key: recorded.key,
            ram: copy,
        },
    );
    // A snapshot nothing records is one nothing restores: it goes again.
    match ledger::with_room(paths, || state.save(&paths.state_file())) {
        Ok(room) => room.warn(paths, reporter),
        Err(e) => {
            if let Some(copy) = state.snapshots.remove(tag).and_then(|r| r.ram) {
                crate::ram::remove_copy(&copy.file);
            }
            let _ = qmp
                .snapshot_delete(tag, &info.snapshot_nodes, JOB_TIMEOUT)
                .await;
            return Err(SnapshotError::Unrecorded {
                tag: tag.to_owned(),
                source: e,
            }
            .into());
        }
    }
    if let Some(client) = client
        && let Err(e) = super::guest::set_clock(client).await
    {
        tracing::warn!("could not set the guest clock after the save: {e}");
    }
    Ok(())
}

/// The VM's RAM file when its snapshots keep RAM in files of their own.
fn ram_file(state: &State, devices: &DeviceSet) -> Option<RamFile> {
    match devices.ram {
        RamKind::File => state.ram.clone(),
        RamKind::Stream => None,
    }
}

/// A failed save named as what it most likely was: a full disk.
fn filled_up(paths: &InstancePaths, short: bool, error: SnapshotError) -> LifecycleError {
    let free = crate::fsutil::free_bytes(&paths.data).unwrap_or(u64::MAX);
    if free < FULL_BELOW || short {
        return SnapshotError::FilledUp {
            dir: paths.data.clone(),
            free_mib: free >> 20,
            qemu: error.to_string(),
        }
        .into();
    }
    error.into()
}

/// With the VM paused: device state and disks into the qcow2 (RAM left
/// out), then the RAM file copied beside them; the VM goes on after.
async fn save_with_ram(
    instance: &Instance,
    state: &State,
    qmp: &Qmp,
    tag: &str,
    info: &RuntimeInfo,
    ram: &RamFile,
) -> Result<RamCopy, LifecycleError> {
    let paths = &instance.paths;
    let file = paths.ram_checkpoint(tag);
    let dir = file.parent().expect("a checkpoint has a directory");
    crate::instance::dirs::create_private_dir(dir)?;
    // Copies of earlier checkpoints share blocks with the newest (reflink).
    let base = ram
        .reflink
        .then(|| newest_ram_copy(state, tag))
        .flatten()
        .filter(|c| c.file.exists());
    crate::ram::remove_copy(&file);
    crate::ram::remove_partial(dir);
    let paused = Paused::pause(paths, qmp).await?;
    let started = std::time::Instant::now();
    let saved = async {
        qmp.snapshot_save(tag, ROOT_NODE, &info.snapshot_nodes, JOB_TIMEOUT)
            .await
            .map_err(|e| filled_up(paths, false, e.into()))?;
        tracing::debug!("device state saved after {:?}", started.elapsed());
        crate::testhook::pause("ram_copy");
        Ok::<_, LifecycleError>(ram.save(&file, base.as_ref()))
    }
    .await;
    tracing::debug!("RAM copied after {:?}", started.elapsed());
    paused.resume(qmp).await?;
    // Synced with the VM running again: it waits for the copy, not the disk.
    let copied = saved?.and_then(crate::ram::Unsynced::finish);
    tracing::debug!("RAM copy synced after {:?}", started.elapsed());
    match copied {
        Ok(copy) => Ok(copy),
        Err(e) => {
            let _ = qmp
                .snapshot_delete(tag, &info.snapshot_nodes, JOB_TIMEOUT)
                .await;
            Err(filled_up(paths, e.is_disk_full(), e.into()))
        }
    }
}

/// The RAM copy of the newest recorded snapshot other than `tag`.
fn newest_ram_copy(state: &State, tag: &str) -> Option<RamCopy> {
    state
        .snapshots
        .iter()
        .filter(|(t, _)| *t != tag)
        .filter_map(|(_, r)| Some((r.created, r.ram.as_ref()?)))
        .max_by_key(|(created, _)| *created)
        .map(|(_, copy)| copy.clone())
}

/// The VM paused by rum (to copy its RAM), marked on disk while it is.
struct Paused {
    marker: PathBuf,
    was_running: bool,
}

impl Paused {
    /// Also leaves shared RAM out of the snapshot to come. One command
    /// after another: futures joined are not sent in a fixed order.
    async fn pause(paths: &InstancePaths, qmp: &Qmp) -> Result<Self, SnapshotError> {
        qmp.leave_shared_ram_out().await?;
        let was_running = qmp.execute(qmp::query_status {}).await?.running;
        let marker = paths.paused_marker();
        if was_running {
            let _ = std::fs::write(&marker, b"");
            qmp.execute(qmp::stop {}).await?;
        }
        Ok(Self {
            marker,
            was_running,
        })
    }

    async fn resume(self, qmp: &Qmp) -> Result<(), SnapshotError> {
        if self.was_running {
            qmp.execute(qmp::cont {}).await?;
            let _ = std::fs::remove_file(&self.marker);
        }
        Ok(())
    }
}

/// `resume_interrupted` for a command that has no QMP connection open: it
/// connects only when the marker says a killed rum left the VM paused.
pub fn resume_if_interrupted(
    instance: &Instance,
    rt: &tokio::runtime::Runtime,
) -> Result<(), LifecycleError> {
    if !instance.paths.paused_marker().exists() {
        return Ok(());
    }
    rt.block_on(async {
        let qmp = connect(&instance.paths.qmp_socket()).await?;
        let resumed = resume_interrupted(instance, &qmp).await;
        qmp.disconnect().await;
        resumed
    })?;
    Ok(())
}

/// Lets a VM go on that a killed rum left paused in the middle of a RAM copy.
async fn resume_interrupted(instance: &Instance, qmp: &Qmp) -> Result<(), SnapshotError> {
    let marker = instance.paths.paused_marker();
    if !marker.exists() {
        return Ok(());
    }
    if !qmp.execute(qmp::query_status {}).await?.running {
        tracing::warn!("a checkpoint was interrupted with the VM paused; it goes on now");
        qmp.execute(qmp::cont {}).await?;
    }
    let _ = std::fs::remove_file(&marker);
    Ok(())
}

/// What a checkpoint's record holds besides the device set (`Default` for
/// `pre-provision` and the user's snapshots).
#[derive(Debug, Default)]
pub struct Recorded {
    /// `post-system`: the hash of the system scripts that had run.
    pub system_scripts: Option<String>,
    /// A step checkpoint's key (`checkpoints::chain`).
    pub key: Option<String>,
}

/// Restores `tag`: live on a running VM, else into a fresh QEMU with the
/// same devices, started paused. Then the guest clock is set to now.
pub fn restore(
    instance: &Instance,
    state: &mut State,
    tag: &str,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<(Client, RuntimeInfo), LifecycleError> {
    let record = state
        .snapshots
        .get(tag)
        .cloned()
        .ok_or_else(|| SnapshotError::NotRecorded(tag.into()))?;
    let check = |devices: &DeviceSet| -> Result<(), LifecycleError> {
        Ok(record
            .check_loadable(tag, devices)
            .map_err(SnapshotError::from)?)
    };
    // A RAM copy deleted or cut short is found before the VM is touched.
    let ram = match (&record.ram, ram_file(state, &record.devices)) {
        (Some(copy), Some(live)) => {
            crate::ram::check(tag, copy, record.devices.memory_mb)?;
            Some((live, copy.clone()))
        }
        _ => None,
    };
    let running = match instance.running()? {
        // Other shares plugged in than the snapshot had: a QEMU started
        // afresh with the snapshot's loads it; this one cannot.
        Some(info) if record.devices.differs_only_in_plugged(&info.devices) => {
            let step = reporter.step("Stopping QEMU to start it with the snapshot's mounts");
            super::stop::stop(instance, true);
            step.done();
            None
        }
        running => running,
    };
    let (client, info) = match running {
        Some(info) => {
            check(&info.devices)?;
            if info.qemu_version != record.qemu_version {
                reporter.warn(&format!(
                    "The snapshot was taken with QEMU {}; this is QEMU {}",
                    record.qemu_version, info.qemu_version
                ));
            }
            let put_back = ram.as_ref().map(|(live, copy)| Ram::PutBack(live, copy));
            load(instance, &info, tag, put_back, rt, reporter)?;
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
        None => {
            let mut guard = Guard::new();
            let fill = || ram.as_ref().map(|(live, copy)| live.fill(tag, copy));
            let load = |info: &RuntimeInfo, filling: Option<crate::ram::Filling>| {
                load(instance, info, tag, filling.map(Ram::Filling), rt, reporter)
            };
            let restoring = Restoring {
                check: &check,
                fill: &fill,
                load: &load,
                plugged: &record.devices.plugged,
            };
            let booted =
                boot::bring_up(instance, state, &mut guard, Some(restoring), rt, reporter)?;
            guard.disarm();
            (booted.client, booted.info)
        }
    };
    super::guest::after_restore(&client, rt, reporter);
    // The snapshot has the mounts it was taken with; rum.toml's go on top.
    let info = super::reload::apply_live_or_warn(instance, info, &client, rt, reporter);
    Ok((client, info))
}

/// How a snapshot's RAM copy gets into the VM's RAM file.
enum Ram<'a> {
    /// Put back (the pages that differ) once the running VM is paused.
    PutBack(&'a RamFile, &'a RamCopy),
    /// Already on its way into a new QEMU's file, since before it started.
    Filling(crate::ram::Filling),
}

/// Loads `tag` into the running (or paused) VM and lets it run; with
/// `ram`, the snapshot's RAM copy is in the VM's RAM file first, with the
/// VM paused.
fn load(
    instance: &Instance,
    info: &RuntimeInfo,
    tag: &str,
    ram: Option<Ram>,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<(), LifecycleError> {
    let step = reporter.step(format!("Restoring the `{tag}` snapshot"));
    let loaded = rt.block_on(async {
        let qmp = connect(&instance.paths.qmp_socket()).await?;
        resume_interrupted(instance, &qmp).await?;
        if let Some(ram) = ram {
            // Left paused (marked, for a rum killed before the end): `cont`
            // below lets it run.
            qmp.leave_shared_ram_out().await?;
            let _ = std::fs::write(instance.paths.paused_marker(), b"");
            qmp.execute(qmp::stop {}).await?;
            let started = std::time::Instant::now();
            match ram {
                Ram::PutBack(live, copy) => live.load(tag, copy)?,
                Ram::Filling(filling) => filling.wait()?,
            }
            tracing::debug!("RAM put back after {:?} more", started.elapsed());
        }
        let started = std::time::Instant::now();
        qmp.snapshot_load(tag, ROOT_NODE, &info.snapshot_nodes, JOB_TIMEOUT)
            .await
            .map_err(SnapshotError::from)?;
        tracing::debug!("device state loaded in {:?}", started.elapsed());
        // Whether the load left it paused or not: `cont` on a running VM
        // does nothing, and asking first costs a round trip.
        qmp.execute(qmp::cont {})
            .await
            .map_err(SnapshotError::from)?;
        let _ = std::fs::remove_file(instance.paths.paused_marker());
        Ok::<(), SnapshotError>(())
    });
    match loaded {
        Ok(()) => {
            step.done();
            Ok(())
        }
        Err(e) => {
            step.fail_with(&e);
            Err(e.into())
        }
    }
}

/// Forgets `tags` and deletes them from the VM's disks. The records go
/// first, so a rum killed halfway leaves snapshots nothing restores rather
/// than records of snapshots that are gone; they come back if QEMU refuses.
pub fn delete(
    instance: &Instance,
    state: &mut State,
    tags: &[String],
) -> Result<Deleted, LifecycleError> {
    let file = instance.paths.state_file();
    let records: Vec<_> = tags
        .iter()
        .filter_map(|t| state.snapshots.remove_entry(t))
        .collect();
    // Records first, so a killed delete never leaves one naming a deleted
    // snapshot; on a full disk the delete goes on, as it is what frees space.
    let unrecorded = state.save(&file).err();
    // Nearly full: QEMU gets the reserve before it starts, as a delete that
    // fails half-way on ENOSPC leaks clusters (`qemu-img check` exit 3).
    let reserve = instance.paths.reserve();
    if unrecorded.is_some()
        || crate::fsutil::free_bytes(&instance.paths.data).is_some_and(|b| b < 64 << 20)
    {
        crate::fsutil::release_reserve(&reserve);
    }
    let mut deleted = delete_from_disks(instance, tags);
    // QEMU's own words for ENOSPC: the reserve gives it the room to delete.
    let no_space = |r: &Result<(), LifecycleError>| {
        r.as_ref()
            .is_err_and(|e| e.to_string().contains("No space left on device"))
    };
    if no_space(&deleted) && crate::fsutil::release_reserve(&reserve) {
        deleted = delete_from_disks(instance, tags);
    }
    if let Err(e) = deleted {
        state.snapshots.extend(records);
        if unrecorded.is_none() {
            state.save(&file)?;
        }
        return Err(e);
    }
    for (_, record) in records {
        if let Some(copy) = record.ram {
            crate::ram::remove_copy(&copy.file);
        }
    }
    let unrecorded = match unrecorded {
        Some(_) => state.save(&file).err(),
        None => None,
    };
    crate::fsutil::reserve(&reserve);
    Ok(Deleted { unrecorded })
}

/// The VM's state, its snapshot records made to agree with the snapshots
/// the overlay holds (a delete or a save may have happened on a disk too
/// full for its record). A RAM copy whose snapshot is gone is removed, and
/// without `pre-provision` the snapshot milestone is undone.
pub fn load_state(instance: &Instance) -> Result<State, LifecycleError> {
    let paths = &instance.paths;
    let mut state = State::load(&paths.state_file())?;
    if state.snapshots.is_empty() {
        return Ok(state);
    }
    let Ok(on_disk) = crate::disk::snapshots(&paths.overlay()) else {
        return Ok(state);
    };
    let names: Vec<&str> = on_disk.iter().map(|s| s.name.as_str()).collect();
    let gone = state.reconcile(&names);
    if gone.is_empty() {
        return Ok(state);
    }
    for (tag, record) in &gone {
        // Said as a retry's fallback says it, and kept in the history.
        let why = format!(
            "the `{tag}` checkpoint could not be loaded: the overlay has no such snapshot; its record is dropped"
        );
        tracing::warn!("{why}");
        state.retrying(crate::state::Milestone::SnapshotTaken, 0, 0, &why);
        if let Some(copy) = &record.ram {
            crate::ram::remove_copy(&copy.file);
        }
    }
    if !state.snapshots.contains_key(PRE_PROVISION) {
        state.reset(crate::state::Milestone::SnapshotTaken);
    }
    if let Err(e) = state.save(&paths.state_file()) {
        tracing::warn!("{e}");
    }
    Ok(state)
}

/// Snapshots deleted from the disks; their records possibly not.
#[must_use]
pub struct Deleted {
    /// Why `state.json` could not be written (a full disk); the next
    /// command takes the snapshots on disk as the truth.
    pub unrecorded: Option<StateError>,
}

impl Deleted {
    /// Warns when the record of the delete could not be written.
    pub fn warn(&self, reporter: &Reporter) {
        if let Some(e) = &self.unrecorded {
            reporter.warn(&format!(
                "The snapshot is deleted, but its record could not be updated ({e}); the next command goes by the snapshots the disk holds"
            ));
        }
    }
}

/// Deletes `tags` through the VM's QEMU when it runs, else through a QEMU
/// started just for that (no guest, only the disks).
fn delete_from_disks(instance: &Instance, tags: &[String]) -> Result<(), LifecycleError> {
    let rt = super::runtime();
    if let Some(info) = instance.running()? {
        return rt.block_on(async {
            let qmp = connect(&instance.paths.qmp_socket()).await?;
            delete_all(&qmp, tags, &info.snapshot_nodes).await
        });
    }
    let paths = &instance.paths;
    let nodes = snapshot_nodes(instance.config.drives.iter().map(|d| d.name.as_str()));
    let qemu = vm::host::Host::probe(instance.config.advanced.qemu.as_deref())
        .map_err(|e| SnapshotError::Offline(e.to_string()))?
        .qemu;
    paths.ensure_runtime_dir(&instance.dirs)?;
    let socket = paths.offline_qmp_socket();
    let _ = std::fs::remove_file(&socket);
    let disks = node_files(&nodes, &paths.overlay(), |name| paths.drive(name));
    let mut child = Command::new(qemu)
        .args(vm::qemu_args::offline_args(&socket, &disks))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| SnapshotError::Offline(e.to_string()))?;
    let result = rt.block_on(async {
        if !vm::process::wait_for(Duration::from_secs(10), || socket.exists()) {
            return Err(SnapshotError::Offline("its QMP socket did not appear".into()).into());
        }
        let qmp = connect(&socket).await?;
        let deleted = delete_all(&qmp, tags, &nodes).await;
        let _ = qmp.execute(qmp::quit {}).await;
        deleted
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&socket);
    result
}

async fn delete_all(qmp: &Qmp, tags: &[String], nodes: &[String]) -> Result<(), LifecycleError> {
    for tag in tags {
        qmp.snapshot_delete(tag, nodes, JOB_TIMEOUT)
            .await
            .map_err(SnapshotError::from)?;
    }
    Ok(())
}

async fn connect(socket: &Path) -> Result<Qmp, SnapshotError> {
    let qmp = Qmp::connect(socket, CONNECT).await?;
    Ok(qmp.on_job_started(crate::testhook::job_started))
}

/// A name `rum snapshot create` may use, or the default `snap-<time>`; one
/// that exists already (in `known`) is refused.
pub fn new_name(name: Option<&str>, known: &[String]) -> Result<String, SnapshotError> {
    let name = name
        .map(str::to_owned)
        .unwrap_or_else(|| format!("snap-{}", unix_now()));
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(SnapshotError::BadName(name));
    }
    if known.contains(&name) {
        return Err(SnapshotError::Exists(name));
    }
    if is_rums(&name) {
        return Err(SnapshotError::Reserved(name));
    }
    Ok(name)
}

/// `name` must be among the snapshots on disk (`known`).
pub fn existing(name: &str, known: &[String]) -> Result<(), SnapshotError> {
    if known.iter().any(|k| k == name) {
        return Ok(());
    }
    Err(SnapshotError::Unknown {
        name: name.into(),
        known: known.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_runs() {
        let known = vec!["pre-provision".to_owned(), "mine".to_owned()];
        assert_eq!(new_name(Some("v1.2_x-y"), &known).unwrap(), "v1.2_x-y");
        assert!(new_name(None, &known).unwrap().starts_with("snap-"));
        assert!(matches!(
            new_name(Some("a b"), &known),
            Err(SnapshotError::BadName(_))
        ));
        assert!(matches!(
            new_name(Some(""), &known),
            Err(SnapshotError::BadName(_))
        ));
        assert!(matches!(
            new_name(Some("mine"), &known),
            Err(SnapshotError::Exists(_))
        ));
        assert!(existing("mine", &known).is_ok());
        let err = existing("gone", &known).unwrap_err();
        assert!(err.is_usage());
        assert_eq!(
            err.to_string(),
            "There is no snapshot `gone`; there are: pre-provision, mine"
        );
    }
}
