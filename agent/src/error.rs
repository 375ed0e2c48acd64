//! The host client's error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::ErrorKind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Cannot connect to the guest agent over {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("The guest agent did not answer the handshake within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("The guest agent did not answer {what} within {after:?}")]
    NoAnswer { what: &'static str, after: Duration },
    #[error(
        "The guest agent speaks protocol version {agent} (build {build_id}) but this rum speaks \
         version {host}; install the agent that comes with this rum"
    )]
    VersionMismatch {
        host: u32,
        agent: u32,
        build_id: String,
    },
    #[error("The connection to the guest agent closed: {0}")]
    Closed(String),
    #[error("Talking to the guest agent failed")]
    Io(#[from] io::Error),
    #[error("The guest agent sent an unexpected message: {0}")]
    Protocol(String),
    #[error("The guest agent reports {kind}: {message}")]
    Agent { kind: ErrorKind, message: String },
    #[error(
        "{what} arrived with SHA-256 {actual} and {actual_size} bytes; expected {expected} and {expected_size} bytes"
    )]
    Checksum {
        what: String,
        expected: String,
        actual: String,
        expected_size: u64,
        actual_size: u64,
    },
    #[error("Cannot access the local file {}", .path.display())]
    Local {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The agent's error kind, if the agent reported this error.
    pub fn agent_kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Agent { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}
