//! rum's guest agent: the protocol the host and the agent share, the byte
//! streams it runs over, and the host's client.
//!
//! The agent itself (the `rum-agent` binary, run as root in the guest) lives
//! in `main.rs` and `server/`; nothing in this library runs in the guest
//! except the protocol, transport and [`os`] code the binary shares.
//!
//! ```no_run
//! # async fn demo() -> rum_agent::Result<()> {
//! use rum_agent::{Client, ConnectOptions, Endpoint, protocol::ExecRequest};
//! let endpoint = Endpoint::Serial("/run/user/1000/rum/vm/agent.sock".into());
//! let client = Client::connect(&endpoint, &ConnectOptions::default()).await?;
//! let out = client.exec_output(ExecRequest::shell("uname -a")).await?;
//! println!("{}", String::from_utf8_lossy(&out.stdout));
//! # Ok(()) }
//! ```

// Every `unsafe` block lives in `os`, each with its reason.
#![deny(unsafe_code)]

pub mod client;
pub mod error;
#[allow(unsafe_code)]
pub mod os;
pub mod protocol;
pub mod transport;

pub use client::{
    Client, ConnectOptions, Exec, ExecEvent, ExecOutput, ProvisionEvent, PushOptions,
};
pub use error::{Error, Result};
pub use transport::{Endpoint, Transport};
