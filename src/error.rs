//! The error type of the commands (the CLI edge) and the exit status each
//! error maps to.

use crate::Exit;
use crate::config::ConfigError;
use crate::instance::InstanceError;
use crate::lifecycle::LifecycleError;
use std::path::PathBuf;

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
    Record(#[from] crate::record::RecordError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
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
    #[error("Cannot write to stdout")]
    Stdout(#[source] std::io::Error),
    #[error(
        "This command works from the project's rum.toml; `--instance` goes with status, down, destroy, ssh, exec, cp, log, snapshot, console and wait"
    )]
    NeedsProject,
    #[error("`{0}` needs a terminal; run it in one (its output is also in `rum log --console`)")]
    NoTerminal(&'static str),
    #[error("Cannot attach to the console at {}", .path.display())]
    Console {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The lifecycle's own errors reach the CLI through its layer's error.
macro_rules! through_lifecycle {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for Error {
            fn from(e: $error) -> Self {
                Error::Lifecycle(e.into())
            }
        })*
    };
}

through_lifecycle!(
    crate::lifecycle::error::UpError,
    crate::lifecycle::error::Injected,
    crate::lifecycle::error::AgentError,
    crate::lifecycle::error::DestroyError,
    crate::lifecycle::error::SnapshotError,
    crate::provision::ProvisionError,
    crate::provision::scripts::ScriptError,
);

impl Error {
    pub fn exit_status(&self) -> Exit {
        let usage = match self {
            Error::Config(_)
            | Error::ConfigExists(_)
            | Error::CpNoGuestSide(..)
            | Error::CpTwoGuestSides(..) => true,
            Error::Instance(e) => e.is_usage(),
            Error::Image(e) => e.is_usage(),
            Error::Seed(e) => e.is_usage(),
            Error::Lifecycle(e) => e.is_usage(),
            Error::Identity(_)
            | Error::State(_)
            | Error::Record(_)
            | Error::Write { .. }
            | Error::Ssh { .. }
            | Error::AgentCall(_)
            | Error::Prompt(_)
            | Error::CurrentDir(_)
            | Error::Console { .. }
            | Error::Stdout(_) => false,
            Error::NoTerminal(_) | Error::NeedsProject => true,
        };
        if usage { Exit::Usage } else { Exit::Failure }
    }
}
