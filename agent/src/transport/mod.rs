//! Byte streams between host and agent. The protocol runs over any of them.
//!
//! - **vsock**: the agent listens on [`crate::protocol::VSOCK_PORT`]; every
//!   host connection is its own session and ends at end of stream.
//! - **virtio-serial**: one port, `org.rum.agent.0`. In the guest a character
//!   device that stays open across host connections; on the host a Unix
//!   socket (QEMU's `-chardev socket,server=on`). End of stream in the guest
//!   only means the host went away for now.
//!
//! Both are a [`Transport`]: an async byte stream. The host reaches an agent
//! through an [`Endpoint`].

pub mod vsock;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// A connected byte stream to or from the agent.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// How the host reaches an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// AF_VSOCK to the guest's CID (the agent's port is fixed).
    Vsock { cid: u32 },
    /// The host side of the virtio-serial port: QEMU's chardev socket.
    Serial(PathBuf),
}

impl Endpoint {
    /// Opens a byte stream to the agent (no handshake yet).
    pub async fn connect(&self, timeout: Duration) -> io::Result<Box<dyn Transport>> {
        let connect = async {
            Ok::<Box<dyn Transport>, io::Error>(match self {
                Endpoint::Vsock { cid } => {
                    Box::new(vsock::connect(*cid, crate::protocol::VSOCK_PORT).await?)
                }
                Endpoint::Serial(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            })
        };
        tokio::time::timeout(timeout, connect)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {self} timed out after {timeout:?}"),
                ))
            })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Vsock { cid } => write!(f, "vsock {cid}:{}", crate::protocol::VSOCK_PORT),
            Endpoint::Serial(path) => write!(f, "virtio-serial socket {}", path.display()),
        }
    }
}
