//! A guest that QEMU paused because a write to its disk found the host disk
//! full (QEMU's default on ENOSPC): told apart from an agent that died, and
//! let go on by `rum up` once there is room again.

use super::Instance;
use super::error::AgentError;
use crate::output::Reporter;
use rum_qmp::{Qmp, qmp};
use std::time::Duration;

/// Free space a paused guest should find before it is let go on: less, and
/// its next write pauses it again.
const ROOM_TO_GO_ON: u64 = 64 << 20;

const CONNECT: Duration = Duration::from_secs(5);

async fn paused_on_io_error(qmp: &Qmp) -> bool {
    matches!(
        qmp.execute(qmp::query_status {}).await,
        Ok(status) if status.status == qmp::RunState::io_error
    )
}

/// Why the agent of a running VM went quiet, when the reason is a full host
/// disk; `None` when QEMU says otherwise or cannot be asked.
pub async fn explain(instance: &Instance) -> Option<AgentError> {
    let qmp = Qmp::connect(&instance.paths.qmp_socket(), CONNECT)
        .await
        .ok()?;
    let paused = paused_on_io_error(&qmp).await;
    qmp.disconnect().await;
    paused.then(|| full(instance))
}

fn full(instance: &Instance) -> AgentError {
    let dir = instance.paths.data.clone();
    AgentError::DiskFull {
        free_mib: crate::fsutil::free_bytes(&dir).unwrap_or(0) >> 20,
        dir,
    }
}

/// For `rum up` on a running VM: one paused on a full disk goes on when
/// there is room again, and is an error (what to free) while there is not.
pub fn go_on_if_paused(
    instance: &Instance,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<(), AgentError> {
    rt.block_on(async {
        let Ok(qmp) = Qmp::connect(&instance.paths.qmp_socket(), CONNECT).await else {
            // Not answering is for the agent wait to report, with the console.
            return Ok(());
        };
        let result = if !paused_on_io_error(&qmp).await {
            Ok(())
        } else if crate::fsutil::free_bytes(&instance.paths.data).unwrap_or(0) < ROOM_TO_GO_ON {
            Err(full(instance))
        } else {
            reporter.warn("the VM had paused because the disk holding it was full; there is room again, so it goes on");
            qmp.execute(qmp::cont {})
                .await
                .map(|_| ())
                .map_err(|source| AgentError::Resume { source })
        };
        qmp.disconnect().await;
        result
    })
}
