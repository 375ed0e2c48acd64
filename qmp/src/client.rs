//! The connection: greeting, negotiation, typed commands, and the reader
//! task that routes replies to callers and events to subscribers.

use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp::{self, Event};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::WriteHalf;
use tokio::net::UnixStream;
use tokio::sync::broadcast;

type Writer = QmpStreamTokio<WriteHalf<UnixStream>>;

/// Events kept for a slow subscriber before it starts losing the oldest.
const EVENT_BACKLOG: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("Cannot connect to QEMU's monitor at {}", .path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU's monitor at {} did not finish the handshake within {timeout:?}", .path.display())]
    HandshakeTimeout { path: PathBuf, timeout: Duration },
    #[error("QEMU's monitor closed the connection ({reason}); QEMU has probably exited")]
    Disconnected { reason: String },
    #[error("QEMU did not answer `{command}` within {timeout:?}")]
    Timeout {
        command: &'static str,
        timeout: Duration,
    },
    #[error("QEMU refused `{command}`: {message}")]
    Command {
        command: &'static str,
        message: String,
    },
    #[error("QEMU job `{id}` failed: {message}")]
    Job { id: String, message: String },
    #[error("QEMU job `{id}` disappeared before it concluded")]
    JobVanished { id: String },
}

/// The id of the command that `drain` waits for the answer to.
const DRAIN_ID: &str = "rum-drain";

/// Waits, on a connection of its own, until QEMU has answered every command
/// of an earlier client. A client killed while QEMU's main loop was busy
/// (loading a snapshot) leaves a command that QEMU answers later, to
/// whoever is connected then, with an id that may be one of ours.
async fn drain(path: &Path) -> Result<(), QmpError> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let io = |source| QmpError::Connect {
        path: path.to_path_buf(),
        source,
    };
    let stream = UnixStream::connect(path).await.map_err(io)?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    // The greeting, then capabilities: commands run in order, so its
    // answer comes after every earlier one.
    lines.next_line().await.map_err(io)?;
    let command = qapi::Execute::new(qmp::qmp_capabilities { enable: None }, Some(DRAIN_ID));
    let mut text = serde_json::to_string(&command).expect("serializes");
    text.push('\n');
    write.write_all(text.as_bytes()).await.map_err(io)?;
    while let Some(line) = lines.next_line().await.map_err(io)? {
        let reply: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if reply.get("id").and_then(|id| id.as_str()) == Some(DRAIN_ID) {
            return Ok(());
        }
    }
    Err(QmpError::Disconnected {
        reason: "it closed the connection during the handshake".into(),
    })
}

/// A negotiated QMP connection.
pub struct Qmp {
    service: QapiService<Writer>,
    events: broadcast::Sender<Event>,
    /// Why the reader stopped, once it has.
    closed: Arc<Mutex<Option<String>>>,
    reader: tokio::task::JoinHandle<()>,
    version: String,
    timeout: Duration,
    /// Called with a job's id once QEMU has started it (tests pause there).
    pub(crate) job_started: Option<fn(&str)>,
}

impl Qmp {
    /// Connects to the QMP socket at `path`, reads the greeting and
    /// negotiates capabilities, all within `timeout` (also the default
    /// timeout of every later command).
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let handshake = async {
            drain(path).await?;
            let negotiation =
                QmpStreamTokio::open_uds(path)
                    .await
                    .map_err(|source| QmpError::Connect {
                        path: path.to_path_buf(),
                        source,
                    })?;
            let q = &negotiation.capabilities.QMP.version.qemu;
            let version = format!("{}.{}.{}", q.major, q.minor, q.micro);
            let stream = negotiation
                .negotiate()
                .await
                .map_err(|e| QmpError::Disconnected {
                    reason: e.to_string(),
                })?;
            Ok::<_, QmpError>((stream, version))
        };
        let (stream, version) =
            tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| QmpError::HandshakeTimeout {
                    path: path.to_path_buf(),
                    timeout,
                })??;
        let (service, mut incoming) = stream.into_parts();
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let closed = Arc::new(Mutex::new(None));
        let reader = {
            let events = events.clone();
            let closed = closed.clone();
            tokio::spawn(async move {
                use futures_util::StreamExt;
                // Polling the stream is what delivers replies to waiting commands.
                let reason = loop {
                    match incoming.next().await {
                        Some(Ok(event)) => {
                            let _ = events.send(event);
                        }
                        Some(Err(e)) => break e.to_string(),
                        None => break "end of stream".to_owned(),
                    }
                };
                *closed.lock().expect("closed lock") = Some(reason);
            })
        };
        Ok(Self {
            service,
            events,
            closed,
            reader,
            version,
            timeout,
            job_started: None,
        })
    }

    /// Ends the connection and waits until its socket is closed: QEMU serves
    /// one monitor client at a time, and a dropped client's reader lives on
    /// until its runtime runs again (another runtime's connect would wait).
    pub async fn disconnect(mut self) {
        self.reader.abort();
        let _ = (&mut self.reader).await;
    }

    /// Has `hook` called with each job's id right after QEMU started it, so
    /// that a test can stop the caller while the job runs.
    pub fn on_job_started(mut self, hook: fn(&str)) -> Self {
        self.job_started = Some(hook);
        self
    }

    /// QEMU's version from the greeting, e.g. "10.0.2".
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Events from now on. Subscribe before the command whose events you want.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Runs `command` with the connection's default timeout.
    pub async fn execute<C>(&self, command: C) -> Result<C::Ok, QmpError>
    where
        C: qmp::QmpCommand,
    {
        self.execute_within(command, self.timeout).await
    }

    pub async fn execute_within<C>(&self, command: C, timeout: Duration) -> Result<C::Ok, QmpError>
    where
        C: qmp::QmpCommand,
    {
        let name = <C as qapi::Command>::NAME;
        if let Some(reason) = self.closed_reason() {
            return Err(QmpError::Disconnected { reason });
        }
        match tokio::time::timeout(timeout, self.service.execute(command)).await {
            Err(_) => {
                self.close(format!("`{name}` timed out earlier; reconnect"));
                Err(QmpError::Timeout {
                    command: name,
                    timeout,
                })
            }
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(qapi::ExecuteError::Qapi(e))) => Err(QmpError::Command {
                command: name,
                message: e.desc,
            }),
            Ok(Err(qapi::ExecuteError::Io(e))) => {
                let reason = self.closed_reason().unwrap_or_else(|| e.to_string());
                self.close(reason.clone());
                Err(QmpError::Disconnected { reason })
            }
        }
    }

    fn closed_reason(&self) -> Option<String> {
        self.closed.lock().expect("closed lock").clone()
    }

    /// Marks the connection unusable. qapi tracks replies by id, and QEMU's
    /// "oob" capability is not recognised by qapi-qmp 0.15, so every command
    /// has id 0: after a command whose reply never came (timeout, broken
    /// pipe), the next one would collide with it. So no next one is sent.
    fn close(&self, reason: String) {
        self.closed
            .lock()
            .expect("closed lock")
            .get_or_insert(reason);
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
