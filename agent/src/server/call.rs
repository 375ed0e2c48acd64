//! What a call's handler gets and gives back: its context (the agent, where
//! its events go, its cancellation, its input) and the error events.
//!
//! Handlers (exec, files, provision) import this module, never the
//! dispatcher (`conn`), which builds these values for each call.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rum_agent::protocol::frame;
use rum_agent::protocol::{ErrorKind, ErrorReply, Event, FromAgent};
use tokio::sync::{mpsc, watch};

use super::Agent;

/// A frame queued for the connection's writer, tagged with the session
/// generation that produced it.
pub struct OutFrame {
    pub generation: u64,
    pub bytes: Vec<u8>,
}

/// Input the host streams into a call.
pub enum Input {
    Data(Vec<u8>),
    Eof,
}

/// Where a call sends its events.
#[derive(Clone)]
pub struct Outbox {
    id: u64,
    generation: u64,
    current: Arc<AtomicU64>,
    tx: mpsc::Sender<OutFrame>,
}

impl Outbox {
    /// An outbox for call `id` of the session generation `current` shows now.
    pub fn new(id: u64, current: Arc<AtomicU64>, tx: mpsc::Sender<OutFrame>) -> Outbox {
        Outbox {
            id,
            generation: current.load(Ordering::SeqCst),
            current,
            tx,
        }
    }

    /// Queues an event; false once the session is gone.
    pub async fn send(&self, event: Event, body: &[u8]) -> bool {
        if self.current.load(Ordering::SeqCst) != self.generation {
            return false;
        }
        let header =
            serde_json::to_vec(&FromAgent { id: self.id, event }).expect("events serialize");
        self.tx
            .send(OutFrame {
                generation: self.generation,
                bytes: frame::encode(&header, body),
            })
            .await
            .is_ok()
    }
}

/// What a call's task gets.
pub struct Ctx {
    pub agent: Arc<Agent>,
    pub out: Outbox,
    cancel: watch::Receiver<bool>,
    /// Present for calls that take input (exec with stdin, push).
    pub input: Option<mpsc::Receiver<Input>>,
}

impl Ctx {
    pub fn new(
        agent: Arc<Agent>,
        out: Outbox,
        cancel: watch::Receiver<bool>,
        input: Option<mpsc::Receiver<Input>>,
    ) -> Ctx {
        Ctx {
            agent,
            out,
            cancel,
            input,
        }
    }

    /// Resolves once the host cancelled the call or its session ended.
    pub async fn cancelled(&self) {
        let mut cancel = self.cancel.clone();
        let _ = cancel.wait_for(|c| *c).await;
    }
}

pub fn error(kind: ErrorKind, message: impl Into<String>) -> Event {
    Event::Error(ErrorReply {
        kind,
        message: message.into(),
    })
}

/// An I/O failure as an error event, naming `what` failed.
pub fn io_error(what: &str, e: &io::Error) -> Event {
    let kind = match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Failed,
    };
    error(kind, format!("{what}: {e}"))
}
