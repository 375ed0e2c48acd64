//! The library's error type and the exit status each error maps to.

use crate::config::ConfigError;
use crate::instance::InstanceError;
use std::path::PathBuf;

/// What a `rum` command exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    /// The command ran and something failed.
    Failure,
    /// The command line or the config is wrong; nothing was changed.
    Usage,
    /// Passed through from a guest command (`rum exec`): its exit code, or
    /// 128 + the signal that killed it.
    Guest(u8),
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Guest(code) => i32::from(code),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Seed(#[from] crate::seed::SeedError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Up(#[from] crate::lifecycle::error::UpError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Injected(#[from] crate::lifecycle::error::Injected),
    #[error(transparent)]
    Agent(#[from] crate::lifecycle::AgentError),
    #[error(transparent)]
    Destroy(#[from] crate::lifecycle::stop::DestroyError),
    #[error(transparent)]
    Snapshot(#[from] crate::lifecycle::snapshots::SnapshotError),
    #[error(transparent)]
    Script(#[from] crate::provision::scripts::ScriptError),
    #[error("{} already exists; edit it, or pass `-c OTHER.rum.toml` to create another", .0.display())]
    ConfigExists(PathBuf),
    #[error("Cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot run {program}")]
    Ssh {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    AgentCall(#[from] rum_agent::Error),
    #[error(
        "`{0}` and `{1}` are both host paths; mark the guest side with `:`, e.g. `rum cp file.txt :/tmp/`"
    )]
    CpNoGuestSide(String, String),
    #[error("`{0}` and `{1}` are both guest paths; one side of `rum cp` is a host path")]
    CpTwoGuestSides(String, String),
    #[error("Cannot read the answer from the terminal")]
    Prompt(#[source] std::io::Error),
    #[error("Cannot determine the current directory")]
    CurrentDir(#[source] std::io::Error),
}

impl Error {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Error::Config(_)
            | Error::ConfigExists(_)
            | Error::CpNoGuestSide(..)
            | Error::CpTwoGuestSides(..) => ExitStatus::Usage,
            Error::Instance(e) if e.is_usage() => ExitStatus::Usage,
            Error::Image(e) if e.is_usage() => ExitStatus::Usage,
            Error::Seed(crate::seed::SeedError::NotEmpty(_)) => ExitStatus::Usage,
            Error::Destroy(crate::lifecycle::stop::DestroyError::HasSnapshots { .. }) => {
                ExitStatus::Usage
            }
            Error::Up(e) if e.is_usage() => ExitStatus::Usage,
            Error::Snapshot(e) if e.is_usage() => ExitStatus::Usage,
            _ => ExitStatus::Failure,
        }
    }
}
