//! The QEMU process: started daemonized (it forks once the VM is set up, so
//! a bad command line fails here with QEMU's own message), found again by
//! its pid file, and stopped politely first.

use super::process::{self, ProcessError};
use rum_qmp::{Qmp, qmp};
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts QEMU with `args` (which include `-daemonize -pidfile PID_FILE
/// -D LOG`) and returns the daemon's pid; its stderr goes to `log`, where
/// a failure to start is read back from.
pub fn start(
    binary: &Path,
    args: &[OsString],
    pid_file: &Path,
    log: &Path,
) -> Result<u32, ProcessError> {
    let _ = std::fs::remove_file(pid_file);
    let spawn_err = |source| ProcessError::Spawn {
        binary: binary.to_path_buf(),
        source,
    };
    // The latest QEMU's messages only: `-D` opens the file afresh anyway.
    let stderr = crate::fsutil::open_private(log, false).map_err(spawn_err)?;
    let status = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .status()
        .map_err(spawn_err)?;
    if !status.success() {
        let text = std::fs::read(log).unwrap_or_default();
        return Err(ProcessError::Failed {
            what: "QEMU".into(),
            log: String::from_utf8_lossy(&text).trim().to_owned(),
        });
    }
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse().ok());
    pid.ok_or_else(|| ProcessError::Failed {
        what: "QEMU".into(),
        log: format!("no pid in {}", pid_file.display()),
    })
}

/// How `stop` ended the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The guest powered off after an ACPI power button press.
    PoweredOff,
    /// QEMU quit on request (the guest ignored the button, or `--force`).
    Quit,
    /// QEMU had to be killed.
    Killed,
}

/// ACPI power button, up to `grace` for the guest to power off, then QMP
/// `quit`, then SIGKILL. `force` skips the power button.
pub async fn stop(qmp_socket: &Path, pid: u32, grace: Duration, force: bool) -> Stopped {
    let gone = |limit: Duration| async move {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if !process::alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        !process::alive(pid)
    };
    let qmp = Qmp::connect(qmp_socket, Duration::from_secs(5)).await.ok();
    if let Some(qmp) = &qmp {
        if !force && qmp.execute(qmp::system_powerdown {}).await.is_ok() && gone(grace).await {
            return Stopped::PoweredOff;
        }
        let _ = qmp.execute(qmp::quit {}).await;
        if gone(Duration::from_secs(10)).await {
            return Stopped::Quit;
        }
    }
    process::terminate(pid, Duration::from_secs(5));
    Stopped::Killed
}
