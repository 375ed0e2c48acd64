//! The wire protocol: one definition of every message, shared by the host
//! client and the agent.
//!
//! Every frame ([`frame`]) carries a JSON header — a [`ToAgent`] from the
//! host, a [`FromAgent`] from the agent — and an optional raw body (file data,
//! process output, stdin). A call is a request with an id the host picks;
//! everything the agent sends for it carries that id and ends with exactly one
//! terminal event ([`Event::is_terminal`]). Calls run concurrently; the host
//! cancels one with [`Request::Cancel`].
//!
//! A connection starts with the handshake: sync marker + `hello` from the
//! host, sync marker + `hello` reply from the agent, both with id 0. A hello
//! with a new session id resets the session (the agent cancels the calls of
//! the previous one); the same session id again only repeats the reply, so
//! the host may resend its hello until it gets an answer.

pub mod frame;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change; both sides must agree.
pub const PROTOCOL_VERSION: u32 = 1;
/// The AF_VSOCK port the agent listens on: "rum" in ASCII.
pub const VSOCK_PORT: u32 = 0x0072_756d;
/// Name of the virtio-serial port (`virtserialport,name=…`).
pub const SERIAL_PORT_NAME: &str = "org.rum.agent.0";
/// Where the guest sees that port.
pub const GUEST_SERIAL_PATH: &str = "/dev/virtio-ports/org.rum.agent.0";
/// The agent's state root in the guest.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rum";

/// Header of a frame from the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToAgent {
    /// The call; 0 for the handshake.
    pub id: u64,
    #[serde(flatten)]
    pub msg: Request,
}

/// What the host asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    Hello(Hello),
    /// → [`Event::Pong`].
    Ping,
    /// → `started`, `stdout`/`stderr`…, [`Event::Exited`]. With
    /// `stdin: true`, the host sends [`Request::Data`] frames, then [`Request::Eof`].
    Exec(ExecRequest),
    /// Followed by [`Request::Data`] frames with the content, then
    /// [`Request::Eof`] → [`Event::Pushed`].
    Push(PushRequest),
    /// → [`Event::FileInfo`], [`Event::Data`]…, [`Event::Pulled`].
    Pull(PullRequest),
    /// → [`Event::TimeSet`].
    SetTime(SetTimeRequest),
    /// → [`Event::Reseeded`].
    Reseed(ReseedRequest),
    /// → script events, [`Event::Provisioned`].
    Provision(ProvisionRequest),
    /// → [`Event::Status`].
    Status,
    /// Body: input for call `id` (stdin of an exec, content of a push).
    Data,
    /// End of call `id`'s input.
    Eof,
    /// Stop call `id`; it still ends with a terminal event.
    Cancel,
}

/// Header of a frame from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FromAgent {
    pub id: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// What the agent sends back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Hello(HelloReply),
    Pong(AgentVersion),
    /// The process runs.
    Started {
        pid: u32,
    },
    /// Body: process output.
    Stdout,
    Stderr,
    Exited(ExitStatus),
    FileInfo(FileInfo),
    /// Body: file content.
    Data,
    Pulled(FileDone),
    Pushed(FileDone),
    TimeSet(TimeSet),
    /// The kernel's random number generator took the host's seed and
    /// reseeded.
    Reseeded,
    ScriptStarted {
        index: usize,
        name: String,
    },
    /// Body: script output.
    ScriptOutput {
        index: usize,
        stream: OutputStream,
    },
    ScriptFinished {
        index: usize,
        name: String,
        state: ScriptState,
    },
    Provisioned(ProvisionResult),
    Status(Box<Status>),
    Error(ErrorReply),
}

impl Event {
    /// Whether this event ends its call.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Event::Pong(_)
                | Event::Exited(_)
                | Event::Pulled(_)
                | Event::Pushed(_)
                | Event::TimeSet(_)
                | Event::Reseeded
                | Event::Provisioned(_)
                | Event::Status(_)
                | Event::Error(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// Fresh for every host connection (hex).
    pub session: String,
    pub host_time_unix_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloReply {
    #[serde(flatten)]
    pub agent: AgentVersion,
    /// The session this answers.
    pub session: String,
    pub agent_time_unix_ns: i64,
}

/// Who answers: protocol version and which binary, on which boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentVersion {
    pub version: u32,
    /// First 16 hex digits of the SHA-256 of the agent's executable.
    pub build_id: String,
    /// The guest kernel's boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Executed directly, searched in `PATH`.
    Argv(Vec<String>),
    /// Run with `sh -c`.
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub command: Command,
    /// Added to (or overriding) the agent's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// User name or numeric uid to run as (default: root).
    #[serde(default)]
    pub user: Option<String>,
    /// Whether the host sends stdin (otherwise it is `/dev/null`).
    #[serde(default)]
    pub stdin: bool,
    /// Kill the process group after this long.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl ExecRequest {
    pub fn argv<I: IntoIterator<Item = S>, S: Into<String>>(argv: I) -> Self {
        Self::new(Command::Argv(argv.into_iter().map(Into::into).collect()))
    }

    pub fn shell(script: impl Into<String>) -> Self {
        Self::new(Command::Shell(script.into()))
    }

    fn new(command: Command) -> Self {
        Self {
            command,
            env: BTreeMap::new(),
            cwd: None,
            user: None,
            stdin: false,
            timeout_ms: None,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExitStatus {
    #[serde(default)]
    pub code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    /// Killed because the timeout passed.
    #[serde(default)]
    pub timed_out: bool,
    /// Killed because the host cancelled the call.
    #[serde(default)]
    pub cancelled: bool,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}")?,
            (None, Some(signal)) => write!(f, "signal {signal}")?,
            (None, None) => write!(f, "unknown status")?,
        }
        if self.timed_out {
            write!(f, " (timed out)")?;
        }
        if self.cancelled {
            write!(f, " (cancelled)")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    /// Absolute path in the guest; written atomically (temp file + rename).
    pub path: String,
    /// Permission bits (e.g. 0o644).
    pub mode: u32,
    pub size: u64,
    /// Hex SHA-256 of the content; the agent checks it before the rename.
    pub sha256: String,
    /// Owner (user name or uid; the group is the user's primary group).
    #[serde(default)]
    pub owner: Option<String>,
    /// Create missing parent directories (0755, root).
    #[serde(default)]
    pub create_dirs: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDone {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTimeRequest {
    /// The wall-clock time to set, in nanoseconds since the Unix epoch, as
    /// read by the host just before sending.
    pub unix_ns: i64,
}

/// Random bytes from the host for the guest's RNG: a restored snapshot
/// would otherwise go on from the state its RNG had when it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReseedRequest {
    pub seed: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeSet {
    /// The guest clock just before the change.
    pub previous_unix_ns: i64,
    /// What it was set to.
    pub applied_unix_ns: i64,
}

impl TimeSet {
    /// How far the clock jumped (positive: forward).
    pub fn offset_ns(&self) -> i64 {
        self.applied_unix_ns - self.previous_unix_ns
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOn {
    /// Once per VM.
    System,
    /// On every boot.
    Boot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    pub name: String,
    pub content: String,
    pub order: i64,
    pub run_on: RunOn,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionRequest {
    /// Every script of the run's phases, in run order: the agent caches them all.
    pub scripts: Vec<Script>,
    /// Which of them to run now (indices into `scripts` once sorted); the
    /// ones before ran on an earlier call whose checkpoint the VM was restored
    /// to. All when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<std::ops::Range<usize>>,
}

/// What became of one script in a provisioning run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ScriptState {
    Succeeded,
    Failed {
        exit: ExitStatus,
    },
    /// A system script on a VM that is already system-provisioned.
    Skipped,
    /// After an earlier failure.
    NotRun,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptOutcome {
    pub name: String,
    pub run_on: RunOn,
    pub order: i64,
    #[serde(flatten)]
    pub state: ScriptState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedScript {
    pub name: String,
    pub exit: ExitStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionResult {
    pub ok: bool,
    /// In the order they ran.
    pub scripts: Vec<ScriptOutcome>,
    pub failed: Option<FailedScript>,
    /// The run's log in the guest (under `<state>/logs/`).
    pub log: String,
}

/// Who started a provisioning run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A `provision` call.
    Host,
    /// The agent itself, at boot, from the cached boot scripts.
    Boot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub trigger: Trigger,
    pub boot_id: String,
    pub started_unix_ms: i64,
    pub finished_unix_ms: i64,
    pub result: ProvisionResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedScript {
    pub name: String,
    pub order: i64,
    pub run_on: RunOn,
    /// Its file in the guest.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    #[serde(flatten)]
    pub agent: AgentVersion,
    pub state_dir: String,
    /// The sentinel exists: every system script succeeded once.
    pub system_provisioned: bool,
    /// Cached scripts in run order.
    pub scripts: Vec<CachedScript>,
    /// A run (the boot run or a `provision` call) is in progress.
    pub running: bool,
    /// The boot id whose boot scripts have run (by either trigger).
    pub boot_scripts_ran_for: Option<String>,
    pub last_provision: Option<RunRecord>,
    pub last_boot_run: Option<RunRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Malformed or unknown request.
    BadRequest,
    /// No handshake on this connection yet.
    NoSession,
    NotFound,
    PermissionDenied,
    /// Content did not match its size or checksum.
    Checksum,
    Cancelled,
    /// Anything else that failed in the guest.
    Failed,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ErrorKind::BadRequest => "bad request",
            ErrorKind::NoSession => "no session",
            ErrorKind::NotFound => "not found",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Checksum => "checksum mismatch",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Failed => "failed",
        };
        f.write_str(s)
    }
}

/// Lowercase hex of `bytes`, as checksums travel in messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An agent's build id: the first 16 hex digits of its executable's SHA-256.
/// The agent computes it of itself and rum of the agent it embeds, so the
/// two compare equal exactly when the guest runs that agent.
pub fn build_id_of(executable: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(executable)[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_flat_json() {
        let msg = ToAgent {
            id: 7,
            msg: Request::Exec(ExecRequest::argv(["true"])),
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert!(json.starts_with(r#"{"id":7,"type":"exec","command":{"argv":["true"]}"#));
        assert_eq!(serde_json::from_str::<ToAgent>(&json).unwrap(), msg);
        let ping: ToAgent = serde_json::from_str(r#"{"id":1,"type":"ping"}"#).unwrap();
        assert_eq!(ping.msg, Request::Ping);
        let ev = FromAgent {
            id: 3,
            event: Event::ScriptFinished {
                index: 0,
                name: "a".into(),
                state: ScriptState::Failed {
                    exit: ExitStatus {
                        code: Some(3),
                        ..Default::default()
                    },
                },
            },
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(serde_json::from_str::<FromAgent>(&json).unwrap(), ev);
    }

    #[test]
    fn terminal_events() {
        assert!(Event::Exited(ExitStatus::default()).is_terminal());
        assert!(!Event::Stdout.is_terminal());
        assert!(
            !Event::Hello(HelloReply {
                agent: AgentVersion {
                    version: 1,
                    build_id: String::new(),
                    boot_id: String::new()
                },
                session: String::new(),
                agent_time_unix_ns: 0
            })
            .is_terminal()
        );
    }
}
