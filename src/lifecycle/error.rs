//! What can go wrong in the life of a VM: the layer's error, wrapping the
//! errors of the layers below, and the bring-up's own.

use crate::{config, disk, identity, image, instance, provision, seed, state, vm};
use state::DevicesChanged;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
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
    #[error(
        "QEMU exited while the guest was booting; its console ends with:\n{console}\nand QEMU said:\n{qemu}"
    )]
    QemuExited { console: String, qemu: String },
    #[error(
        "QEMU runs (pid {pid}) but rum has no record of how it was started (an earlier `rum up` was stopped right after starting it); `rum down --force`, then `rum up`"
    )]
    NoRuntimeRecord { pid: u32 },
    #[error(
        "The guest printed nothing on its console for {0:?}: it is not booting. If /dev/kvm exists but guests hang on it (nested virtualisation), run with RUM_ACCEL=tcg"
    )]
    NoProgress(Duration),
    #[error(
        "The guest stopped booting: its console printed nothing new for {}s (its last line came {}s after QEMU started) and its agent does not answer.\nLast console lines:\n{console}\n{}",
        .silent.as_secs(), .last_output.as_secs(), stall_hint(*.accel)
    )]
    Stalled {
        silent: Duration,
        last_output: Duration,
        accel: crate::vm::spec::Accel,
        console: String,
    },
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

/// Reaching the guest agent of a running VM.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
    #[error("`{0}` is not running; start it with `rum up`")]
    NotRunning(String),
    #[error(
        "Cannot reach the guest agent of `{instance}` ({source}); `rum status` shows the VM's state, `rum log` the guest console"
    )]
    Unreachable {
        instance: String,
        #[source]
        source: rum_agent::Error,
    },
    #[error(
        "The VM is paused: QEMU could not write its disk because the disk holding {} is full ({free_mib} MiB free). Free some space, then `rum up` lets the VM go on", .dir.display()
    )]
    DiskFull { dir: PathBuf, free_mib: u64 },
    #[error("The VM paused on a full disk and could not be let go on")]
    Resume {
        #[source]
        source: rum_qmp::QmpError,
    },
}

/// Saving, loading and deleting snapshots, and what `rum snapshot` is asked.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
    #[error(transparent)]
    Qmp(#[from] rum_qmp::QmpError),
    #[error(transparent)]
    Ram(#[from] crate::ram::RamError),
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
    #[error(
        "`{tag}` was saved, but its record could not be written ({source}), so it was deleted again. Free some space and try again"
    )]
    Unrecorded {
        tag: String,
        #[source]
        source: state::StateError,
    },
    #[error("Cannot start QEMU to change the snapshots of the stopped VM: {0}")]
    Offline(String),
    #[error("There is no `{0}` snapshot; `rum up` takes `pre-provision` before it provisions")]
    NotRecorded(String),
    #[error(transparent)]
    DevicesChanged(#[from] DevicesChanged),
    #[error("There is no snapshot `{name}`; {}", if .known.is_empty() { "this VM has none".to_owned() } else { format!("there are: {}", .known.join(", ")) })]
    Unknown { name: String, known: Vec<String> },
    #[error(
        "`{0}` is not running: a snapshot holds the VM's memory, so start it first with `rum up`"
    )]
    NotRunning(String),
    #[error("A snapshot named `{0}` exists already; delete it first or choose another name")]
    Exists(String),
    #[error("`{0}` is not a valid snapshot name; use letters, digits, `.`, `_` or `-`")]
    BadName(String),
    #[error(
        "`{0}` is a name of rum's own snapshots (pre-provision, post-system, step-…); choose another"
    )]
    Reserved(String),
}

impl SnapshotError {
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            SnapshotError::DevicesChanged(_)
                | SnapshotError::Unknown { .. }
                | SnapshotError::BadName(_)
                | SnapshotError::Exists(_)
                | SnapshotError::Reserved(_)
        )
    }
}

/// Applying rum.toml edits to a running VM.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Qmp(#[from] rum_qmp::QmpError),
    #[error("QEMU refused `{command}`: {qemu}; the VM forwards what it did before")]
    Refused { command: String, qemu: String },
    #[error("The guest could not {what}: {output}")]
    Guest { what: String, output: String },
    #[error(
        "No spare PCIe port is left for the mount at {target} (this VM has {ports}); `rum retry --reset` starts it with rum.toml's mounts"
    )]
    NoFreePort { target: String, ports: u8 },
    #[error(
        "rum.toml differs in ways `rum retry` cannot apply ({0}); without --strict the retry runs and names them, or apply them as listed above"
    )]
    Strict(String),
}

impl ReloadError {
    pub fn is_usage(&self) -> bool {
        matches!(self, ReloadError::Strict(_))
    }
}

/// `rum destroy`.
#[derive(Debug, thiserror::Error)]
pub enum DestroyError {
    #[error("`{instance}` has {count} snapshot{}; pass -f to destroy them with it", if *.count == 1 { "" } else { "s" })]
    HasSnapshots { instance: String, count: u32 },
    #[error("Kept `{0}`: destroy was not confirmed")]
    NotConfirmed(String),
    #[error("Cannot remove {}", .path.display())]
    Remove {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DestroyError {
    pub fn is_usage(&self) -> bool {
        matches!(self, DestroyError::HasSnapshots { .. })
    }
}

/// Baking a VM's disk into a base image (`rum image bake`).
#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    #[error(transparent)]
    Name(#[from] image::baked::NameError),
    #[error("An image `{0}` exists already; `--force` replaces it, or choose another name")]
    Exists(String),
    #[error("The image `{0}` is in use by {1}; destroy those VMs first")]
    InUse(String, String),
    #[error(
        "Only {free_mib} MiB are free in {}; the baked image needs about {need_mib} MiB. Free some space first", .dir.display()
    )]
    NoSpace {
        dir: PathBuf,
        free_mib: u64,
        need_mib: u64,
    },
    #[error("`{0}` has no disk yet; `rum up` creates it")]
    NoDisk(String),
    #[error("{tool} failed: {message}")]
    Tool { tool: String, message: String },
    #[error("The throwaway copy did not boot to its agent within {0:?}; its console is in {1}")]
    NoAgent(std::time::Duration, String),
    #[error("Generalising the throwaway copy failed (exit {0}): {1}")]
    Generalise(i32, String),
}

impl BakeError {
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            BakeError::Name(_) | BakeError::Exists(_) | BakeError::NoSpace { .. }
        )
    }
}

/// The error of everything in `lifecycle/`.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Instance(#[from] instance::InstanceError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Seed(#[from] seed::SeedError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Up(#[from] UpError),
    #[error(transparent)]
    Injected(#[from] Injected),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    AgentCall(#[from] rum_agent::Error),
    #[error(transparent)]
    Destroy(#[from] DestroyError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Provision(#[from] provision::ProvisionError),
    #[error(transparent)]
    Reload(#[from] ReloadError),
    #[error(transparent)]
    Bake(#[from] BakeError),
    #[error("There is no instance `{id}`; {}", if .known.is_empty() { "there are none (`rum list`)".to_owned() } else { format!("there are: {}", .known.join(", ")) })]
    UnknownInstance { id: String, known: Vec<String> },
    #[error(
        "`{0}` was made before rum kept a copy of its rum.toml; run the command in its project directory"
    )]
    NoSavedConfig(String),
    #[error("There is no system step `{name}`; {}{}", if .known.is_empty() { "rum.toml has none".to_owned() } else { format!("there are: {}, or `boot` for the boot steps", .known.join(", ")) }, crate::config::suggest::closest(name, .known.iter().map(String::as_str)).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default())]
    UnknownStep { name: String, known: Vec<String> },
    #[error("Cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::ram::RamError> for LifecycleError {
    fn from(e: crate::ram::RamError) -> Self {
        LifecycleError::Snapshot(e.into())
    }
}

impl From<provision::scripts::ScriptError> for LifecycleError {
    fn from(e: provision::scripts::ScriptError) -> Self {
        LifecycleError::Provision(e.into())
    }
}

impl LifecycleError {
    /// The user's command line, config or environment is wrong: exit 2.
    pub fn is_usage(&self) -> bool {
        match self {
            LifecycleError::Config(_)
            | LifecycleError::UnknownStep { .. }
            | LifecycleError::UnknownInstance { .. }
            | LifecycleError::NoSavedConfig(_) => true,
            LifecycleError::Instance(e) => e.is_usage(),
            LifecycleError::Seed(e) => e.is_usage(),
            LifecycleError::Image(e) => e.is_usage(),
            LifecycleError::Up(e) => e.is_usage(),
            LifecycleError::Destroy(e) => e.is_usage(),
            LifecycleError::Snapshot(e) => e.is_usage(),
            LifecycleError::Provision(e) => e.is_usage(),
            LifecycleError::Reload(e) => e.is_usage(),
            LifecycleError::Bake(e) => e.is_usage(),
            LifecycleError::Identity(_)
            | LifecycleError::State(_)
            | LifecycleError::Record(_)
            | LifecycleError::Injected(_)
            | LifecycleError::Agent(_)
            | LifecycleError::AgentCall(_)
            | LifecycleError::Write { .. } => false,
        }
    }
}

fn stall_hint(accel: crate::vm::spec::Accel) -> &'static str {
    match accel {
        crate::vm::spec::Accel::Kvm => {
            "KVM may not run guests on this host (nested virtualisation often hangs them): run with RUM_ACCEL=tcg or set `[advanced] accel = \"tcg\"`"
        }
        crate::vm::spec::Accel::Tcg => {
            "Under TCG a busy host can be slow: RUM_STALL_TIMEOUT=<seconds> waits longer for the console"
        }
    }
}
