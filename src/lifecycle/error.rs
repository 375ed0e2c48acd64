//! What can go wrong while a VM is brought up.

use crate::{disk, vm};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(
        "Host port {port} on {bind} is already in use; free it or change `[[ports]] host = {port}` in rum.toml"
    )]
    PortTaken { bind: IpAddr, port: u16 },
    #[error(
        "KVM was asked for (`{0}`), but /dev/kvm is not usable here; use `accel = \"auto\"` or RUM_ACCEL=tcg"
    )]
    NoKvm(&'static str),
    #[error("RUM_ACCEL is `{0}`; use kvm, tcg or auto")]
    BadAccelEnv(String),
    #[error(
        "vsock was asked for, but /dev/vhost-vsock is not usable here; use `agent_transport = \"auto\"`"
    )]
    NoVsock,
    #[error("QEMU exited while the guest was booting; its console ends with:\n{0}")]
    QemuExited(String),
    #[error(
        "The guest printed nothing on its console for {0:?}: it is not booting. If /dev/kvm exists but guests hang on it (nested virtualisation), run with RUM_ACCEL=tcg"
    )]
    NoProgress(Duration),
    #[error(
        "The guest agent did not answer within {timeout:?} ({last}). The console log is {}; with a slow accelerator, try RUM_BOOT_TIMEOUT=<seconds> or RUM_ACCEL=tcg if KVM hangs", .serial_log.display()
    )]
    AgentTimeout {
        timeout: Duration,
        last: String,
        serial_log: PathBuf,
    },
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error(transparent)]
    Host(#[from] vm::host::HostError),
    #[error(transparent)]
    Firmware(#[from] rum_firmware::FirmwareError),
    #[error(transparent)]
    Process(#[from] vm::process::ProcessError),
    #[error("Cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl UpError {
    pub fn is_usage(&self) -> bool {
        matches!(self, UpError::BadAccelEnv(_))
    }
}

/// Thrown by the failure injection of the tests.
#[derive(Debug, thiserror::Error)]
#[error("Injected failure after `{0}` (RUM_TEST_FAIL_AFTER)")]
pub struct Injected(pub String);
