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
    #[error("Cannot start QEMU to change the snapshots of the stopped VM: {0}")]
    Offline(String),
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is a valid out-pointer.
    (unsafe { libc::statvfs(path.as_ptr(), &mut stat) } == 0)
        .then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
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
    if let Some(free) = free_bytes(&instance.paths.data)
        && free < need
    {
        return Err(SnapshotError::NoSpace {
            dir: instance.paths.data.clone(),
            free_mib: free >> 20,
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
    qmp.snapshot_save(tag, ROOT_NODE, nodes, JOB_TIMEOUT)
        .await
        .map_err(SnapshotError::from)?;
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
pub fn delete(
    instance: &Instance,
    tags: &[String],
    nodes: &[String],
    qemu_binary: &Path,
) -> Result<(), Error> {
    let rt = super::runtime();
    if instance.qemu_pid().is_some() {
        return rt.block_on(async {
            let qmp = Qmp::connect(&instance.paths.qmp_socket(), CONNECT)
                .await
                .map_err(SnapshotError::from)?;
            for tag in tags {
                qmp.snapshot_delete(tag, nodes, JOB_TIMEOUT)
                    .await
                    .map_err(SnapshotError::from)?;
            }
            Ok(())
        });
    }
    let dir = tempfile_dir(&instance.paths.data)?;
    let socket = dir.join("qmp.sock");
    let mut cmd = Command::new(qemu_binary);
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
    for (node, path) in disk_nodes(instance, nodes) {
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
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SnapshotError::Offline(e.to_string()))?;
    let result = rt.block_on(async {
        let ready = vm::process::wait_for(Duration::from_secs(10), || socket.exists());
        if !ready {
            return Err(SnapshotError::Offline("its QMP socket did not appear".into()).into());
        }
        let qmp = Qmp::connect(&socket, CONNECT)
            .await
            .map_err(SnapshotError::from)?;
        for tag in tags {
            qmp.snapshot_delete(tag, nodes, JOB_TIMEOUT)
                .await
                .map_err(SnapshotError::from)?;
        }
        let _ = qmp.execute(qmp::quit {}).await;
        Ok::<(), Error>(())
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
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

fn tempfile_dir(parent: &Path) -> Result<std::path::PathBuf, Error> {
    let dir = parent.join(format!("offline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}
