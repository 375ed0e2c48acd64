//! The library's error type and the exit status each error maps to.

use crate::config::ConfigError;
use crate::instance::InstanceError;
use std::path::PathBuf;

/// What a `rum` command exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success = 0,
    /// The command ran and something failed.
    Failure = 1,
    /// The command line or the config is wrong; nothing was changed.
    Usage = 2,
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        self as i32
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
    #[error("{} already exists; edit it, or pass `-c OTHER.rum.toml` to create another", .0.display())]
    ConfigExists(PathBuf),
    #[error("Cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot read the answer from the terminal")]
    Prompt(#[source] std::io::Error),
    #[error("Cannot determine the current directory")]
    CurrentDir(#[source] std::io::Error),
}

impl Error {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Error::Config(_) | Error::ConfigExists(_) => ExitStatus::Usage,
            Error::Instance(e) if e.is_usage() => ExitStatus::Usage,
            _ => ExitStatus::Failure,
        }
    }
}
