//! Live snapshots through QMP jobs, recorded in state with the QEMU version
//! and device set they need; offline deletion through a QEMU with no guest.

use super::Instance;
use crate::state::{SnapshotRecord, State};
use crate::vm::devices::DeviceSet;
use crate::vm::qemu_args::ROOT_NODE;
use crate::{Error, vm};
use rum_qmp::{Qmp, qmp};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

pub const PRE_PROVISION: &str = "pre-provision";
pub const POST_SYSTEM: &str = "post-system";
/// Saving writes all guest RAM; under TCG on a busy host that takes a while.
const JOB_TIMEOUT: Duration = Duration::from_secs(900);
const CONNECT: Duration = Duration::from_secs(10);
/// Free space under which a failed save is taken to have filled the disk.
const FULL_BELOW: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Qmp(#[from] rum_qmp::QmpError),
    #[error(
        "Only {free_mib} MiB are free in {}; a snapshot of this VM needs about {need_mib} MiB (its RAM). Free some space first", .dir.display()
    )]
    NoSpace {
        dir: std::path::PathBuf,
        free_mib: u64,
        need_mib: u64,
    },
    #[error(
        "The disk holding {} filled up while saving ({free_mib} MiB left; QEMU: {qemu}). The snapshot was not kept; the older ones are intact. Free some space (`rum snapshot delete NAME`) and try again", .dir.display()
    )]
    FilledUp {
        dir: std::path::PathBuf,
        free_mib: u64,
        qemu: String,
    },
    #[error("Cannot start QEMU to change the snapshots of the stopped VM: {0}")]
    Offline(String),
}

/// Saves `tag` on the running VM and records it.
pub async fn save(
    instance: &Instance,
    state: &mut State,
    tag: &str,
    devices: &DeviceSet,
    nodes: &[String],
    qemu_version: &str,
    system_scripts: Option<String>,
) -> Result<(), Error> {
    let need = devices.memory_mb << 20;
    // Tests lift the check to fill a disk in the middle of a save.
    let checked = std::env::var_os("RUM_TEST_SKIP_SPACE_CHECK").is_none();
    let free_before = crate::fsutil::free_bytes(&instance.paths.data).unwrap_or(u64::MAX);
    if checked && free_before < need {
        return Err(SnapshotError::NoSpace {
            dir: instance.paths.data.clone(),
            free_mib: free_before >> 20,
            need_mib: need >> 20,
        }
        .into());
    }
    let qmp = Qmp::connect(&instance.paths.qmp_socket(), CONNECT)
        .await
        .map_err(SnapshotError::from)?;
    if state.snapshots.contains_key(tag) {
        // snapshot-save refuses an existing name.
        let _ = qmp.snapshot_delete(tag, nodes, JOB_TIMEOUT).await;
    }
    if let Err(e) = qmp.snapshot_save(tag, ROOT_NODE, nodes, JOB_TIMEOUT).await {
        // QEMU reports a full disk as an I/O error; say what it was.
        let free = crate::fsutil::free_bytes(&instance.paths.data).unwrap_or(u64::MAX);
        if free < FULL_BELOW || free_before < need {
            return Err(SnapshotError::FilledUp {
                dir: instance.paths.data.clone(),
                free_mib: free >> 20,
                qemu: e.to_string(),
            }
            .into());
        }
        return Err(SnapshotError::from(e).into());
    }
    state.snapshots.insert(
        tag.to_owned(),
        SnapshotRecord {
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            qemu_version: qemu_version.to_owned(),
            devices: devices.clone(),
            rum_owned: matches!(tag, PRE_PROVISION | POST_SYSTEM),
            system_scripts,
        },
    );
    state.save(&instance.paths.state_file())?;
    Ok(())
}

/// Loads `tag` into the running (or paused) VM and lets it run.
pub async fn load_and_continue(
    qmp_socket: &Path,
    tag: &str,
    nodes: &[String],
) -> Result<(), Error> {
    let qmp = Qmp::connect(qmp_socket, CONNECT)
        .await
        .map_err(SnapshotError::from)?;
    qmp.snapshot_load(tag, ROOT_NODE, nodes, JOB_TIMEOUT)
        .await
        .map_err(SnapshotError::from)?;
    let status = qmp
        .execute(qmp::query_status {})
        .await
        .map_err(SnapshotError::from)?;
    if !status.running {
        qmp.execute(qmp::cont {})
            .await
            .map_err(SnapshotError::from)?;
    }
    Ok(())
}

/// Deletes `tags` from the VM's disks: through its QEMU when it runs, else
/// through a QEMU started just for that (no guest, only the disks).
pub fn delete(instance: &Instance, tags: &[String]) -> Result<(), Error> {
    let rt = super::runtime();
    let running = instance
        .qemu_pid()
        .and(super::RuntimeInfo::load(&instance.paths.runtime_info()));
    if let Some(info) = running {
        return rt.block_on(async {
            let qmp = Qmp::connect(&instance.paths.qmp_socket(), CONNECT)
                .await
                .map_err(SnapshotError::from)?;
            delete_all(&qmp, tags, &info.snapshot_nodes).await
        });
    }
    let nodes =
        vm::qemu_args::snapshot_nodes(instance.config.drives.iter().map(|d| d.name.as_str()));
    let qemu = vm::host::Host::probe(instance.config.advanced.qemu.as_deref())
        .map_err(|e| SnapshotError::Offline(e.to_string()))?
        .qemu;
    // The runtime dir, not the data dir: short socket paths, and the data
    // disk may be the one that is full.
    instance.paths.ensure_runtime_dir(&instance.dirs)?;
    let socket = instance.paths.runtime.join("offline-qmp.sock");
    let _ = std::fs::remove_file(&socket);
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-nodefaults",
        "-machine",
        "none",
        "-display",
        "none",
        "-S",
        "-qmp",
    ])
    .arg(format!("unix:{},server=on,wait=off", socket.display()));
    for (node, path) in disk_nodes(instance, &nodes) {
        cmd.arg("-blockdev").arg(format!(
            "driver=file,node-name={node}-file,filename={}",
            path.display()
        ));
        cmd.arg("-blockdev")
            .arg(format!("driver=qcow2,node-name={node},file={node}-file"));
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| SnapshotError::Offline(e.to_string()))?;
    let result = rt.block_on(async {
        if !vm::process::wait_for(Duration::from_secs(10), || socket.exists()) {
            return Err(SnapshotError::Offline("its QMP socket did not appear".into()).into());
        }
        let qmp = Qmp::connect(&socket, CONNECT)
            .await
            .map_err(SnapshotError::from)?;
        let deleted = delete_all(&qmp, tags, &nodes).await;
        let _ = qmp.execute(qmp::quit {}).await;
        deleted
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&socket);
    result
}

async fn delete_all(qmp: &Qmp, tags: &[String], nodes: &[String]) -> Result<(), Error> {
    for tag in tags {
        qmp.snapshot_delete(tag, nodes, JOB_TIMEOUT)
            .await
            .map_err(SnapshotError::from)?;
    }
    Ok(())
}

fn disk_nodes(instance: &Instance, nodes: &[String]) -> Vec<(String, std::path::PathBuf)> {
    nodes
        .iter()
        .map(|node| {
            let path = match node.strip_prefix("drive-") {
                Some(name) => instance.paths.drive(name),
                None => instance.paths.overlay(),
            };
            (node.clone(), path)
        })
        .collect()
}
