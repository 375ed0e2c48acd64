//! rum-qmp: an async QMP client on the `qapi` crate's generated types.
//!
//! `Qmp::connect` reads QEMU's greeting and negotiates capabilities before it
//! returns, so a `Qmp` is always ready for commands. Replies and events are
//! kept apart: commands return their typed reply; events go to subscribers
//! of `events()`. When QEMU exits or the socket closes, pending and later
//! commands fail with `QmpError::Disconnected` instead of hanging, and every
//! command has a timeout.

mod client;
mod devices;
mod jobs;

pub use client::{Qmp, QmpError};
pub use qapi::qmp;
