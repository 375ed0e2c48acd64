//! virtiofs shares: the virtiofsd behind each, and shares plugged into and
//! out of a running VM — the device on a spare PCIe root port, the mount in
//! the guest through the agent, and the way back. A failed step undoes the
//! ones before it, so the VM is left as it was.

use super::error::{LifecycleError, ReloadError, UpError};
use super::plan;
use crate::instance::InstancePaths;
use crate::state::{Plugged, ShareRecord};
use crate::vm::process::{self, ProcessError};
use crate::vm::qemu_args::{hotplug_bus, plugged_chardev as chardev, plugged_device as device};
use crate::vm::spec::{Share, plugged_index};
use crate::vm::{host, virtiofsd};
use rum_agent::Client;
use rum_agent::protocol::ExecRequest;
use rum_qmp::Qmp;
use std::path::Path;
use std::time::Duration;

/// The guest releases an unplugged device in seconds; TCG on a busy host
/// takes longer.
const UNPLUG_TIMEOUT: Duration = Duration::from_secs(60);
/// The guest mounts a share once its kernel has found the new device.
const MOUNT: &str = r#"mkdir -p "$2" || exit 1
for i in $(seq 150); do mount -t virtiofs $3 "$1" "$2" 2>/dev/null && exit 0; sleep 0.2; done
mount -t virtiofs $3 "$1" "$2""#;
const UNMOUNT: &str = r#"! mountpoint -q "$1" || umount "$1""#;

/// Starts the virtiofsd serving `share` (its files numbered by `index`).
pub fn serve(
    paths: &InstancePaths,
    binary: &Path,
    share: &Share,
    index: usize,
) -> Result<u32, ProcessError> {
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let spec = virtiofsd::ShareSpec {
        source: share.source.clone(),
        socket: share.socket.clone(),
        readonly: share.readonly,
        host_uid: uid,
        host_gid: gid,
        privileged: uid == 0,
    };
    virtiofsd::start(
        binary,
        &spec,
        &paths.virtiofsd_log(index),
        &paths.virtiofsd_pid(index),
    )
}

/// Plugs `share` into spare port `port` and mounts it in the guest.
pub async fn plug(
    paths: &InstancePaths,
    qmp: &Qmp,
    client: &Client,
    share: &ShareRecord,
    port: u8,
) -> Result<Plugged, LifecycleError> {
    let spec = plan::plugged_share(paths, share, port);
    let index = plugged_index(port);
    let binary = host::find_virtiofsd().map_err(UpError::from)?;
    let pid = serve(paths, &binary, &spec, index).map_err(UpError::from)?;
    let stop = || process::terminate(pid, Duration::from_secs(2));
    if let Err(e) = qmp.add_socket_chardev(&chardev(port), &spec.socket).await {
        stop();
        return Err(ReloadError::from(e).into());
    }
    let added = qmp
        .add_device(
            "vhost-user-fs-pci",
            &device(port),
            &hotplug_bus(port),
            &[("chardev", &chardev(port)), ("tag", &share.tag)],
        )
        .await;
    if let Err(e) = added {
        let _ = qmp.remove_chardev(&chardev(port)).await;
        stop();
        return Err(ReloadError::from(e).into());
    }
    let options = if share.readonly { "-o ro" } else { "" };
    let what = format!("mount `{}` at {}", share.tag, share.target);
    if let Err(e) = guest(client, &what, MOUNT, &[&share.tag, &share.target, options]).await {
        let _ = qmp.remove_device(&device(port), UNPLUG_TIMEOUT).await;
        let _ = qmp.remove_chardev(&chardev(port)).await;
        stop();
        return Err(e);
    }
    Ok(Plugged {
        port,
        share: share.clone(),
    })
}

/// Unmounts `plugged` in the guest and takes it out of the VM.
pub async fn unplug(
    paths: &InstancePaths,
    qmp: &Qmp,
    client: &Client,
    plugged: &Plugged,
) -> Result<(), LifecycleError> {
    let what = format!("unmount {}", plugged.share.target);
    guest(client, &what, UNMOUNT, &[&plugged.share.target]).await?;
    qmp.remove_device(&device(plugged.port), UNPLUG_TIMEOUT)
        .await
        .map_err(ReloadError::from)?;
    qmp.remove_chardev(&chardev(plugged.port))
        .await
        .map_err(ReloadError::from)?;
    let index = plugged_index(plugged.port);
    let marker = paths.virtiofs_socket(index);
    if let Some(pid) = process::find(&paths.virtiofsd_pid(index), &marker.to_string_lossy()) {
        process::terminate(pid, Duration::from_secs(2));
    }
    Ok(())
}

/// Runs `script` as root in the guest with `args` as `$1`, `$2`, …
async fn guest(
    client: &Client,
    what: &str,
    script: &str,
    args: &[&str],
) -> Result<(), LifecycleError> {
    let mut argv = vec!["sh", "-c", script, "sh"];
    argv.extend_from_slice(args);
    let output = client.exec_output(ExecRequest::argv(argv)).await?;
    if output.status.success() {
        return Ok(());
    }
    Err(ReloadError::Guest {
        what: what.to_owned(),
        output: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    }
    .into())
}
