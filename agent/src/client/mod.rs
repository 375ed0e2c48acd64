//! The host side: connect, handshake, then calls multiplexed over one stream.
//!
//! [`Client::connect`] (or [`Client::handshake`] on a stream you opened)
//! sends the hello and resends it on a short timeout until the agent answers:
//! after a snapshot restore, or while the guest is still booting, the first
//! hello may go unanswered. Bytes from before the answer (stale output of an
//! earlier session on a virtio-serial port) are skipped.
//!
//! A [`Client`] is cheap to clone; calls run concurrently. Dropping a call's
//! handle before it ended cancels it in the guest.

mod calls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use calls::{Exec, ExecEvent, ExecOutput, ProvisionEvent, PushOptions};

use crate::error::{Error, Result};
use crate::protocol::frame::{self, Decoder, FrameReader, Item};
use crate::protocol::{AgentVersion, Event, FromAgent, Hello, PROTOCOL_VERSION, Request, ToAgent};
use crate::transport::{Endpoint, Transport};

/// Events queued per call before the connection's reader waits for the caller.
const CALL_QUEUE: usize = 32;
/// Encoded frames queued for the writer.
const OUT_QUEUE: usize = 32;

/// Handshake timing.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// How long to wait for the first answer before sending the hello again
    /// (doubles up to 2 s).
    pub retry: Duration,
    /// Give up after this long (connecting included).
    pub timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            retry: Duration::from_millis(500),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A live session with an agent.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    out: mpsc::Sender<Vec<u8>>,
    calls: Mutex<HashMap<u64, mpsc::Sender<Incoming>>>,
    /// Why the connection ended, once it has.
    closed: Mutex<Option<String>>,
    next_id: AtomicU64,
    agent: AgentVersion,
    session: String,
    agent_time_unix_ns: i64,
    tasks: Vec<JoinHandle<()>>,
    /// When the last frame came from the agent, and whether the reader
    /// waits on a caller that is behind: the watchdog leaves those alone.
    heard: Mutex<Instant>,
    delivering: std::sync::atomic::AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// An event for one call, with its body.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub event: Event,
    pub body: Vec<u8>,
}

impl Client {
    /// Connects to `endpoint` and shakes hands, retrying both until
    /// `options.timeout`.
    pub async fn connect(endpoint: &Endpoint, options: &ConnectOptions) -> Result<Client> {
        let started = Instant::now();
        let stream = loop {
            match endpoint.connect(options.timeout).await {
                Ok(stream) => break stream,
                // vsock refuses until the agent listens; a serial socket may not exist yet.
                Err(_) if started.elapsed() < options.timeout => {
                    tokio::time::sleep(options.retry.min(Duration::from_millis(500))).await;
                }
                Err(source) => {
                    return Err(Error::Connect {
                        endpoint: endpoint.to_string(),
                        source,
                    });
                }
            }
        };
        let left = options.timeout.saturating_sub(started.elapsed());
        Self::handshake(
            stream,
            &ConnectOptions {
                retry: options.retry,
                timeout: left.max(options.retry),
            },
        )
        .await
    }

    /// Shakes hands over an open stream and starts the session.
    pub async fn handshake<T: Transport>(stream: T, options: &ConnectOptions) -> Result<Client> {
        let (read, mut write) = tokio::io::split(stream);
        let mut reader = FrameReader::new(read, Decoder::scanning());
        let session = new_session_id();
        let deadline = tokio::time::Instant::now() + options.timeout;
        let mut wait = options.retry;
        let reply = loop {
            let hello = encode_hello(&session);
            tokio::time::timeout_at(deadline, write.write_all(&hello))
                .await
                .map_err(|_| Error::HandshakeTimeout(options.timeout))??;
            let until = (tokio::time::Instant::now() + wait).min(deadline);
            match tokio::time::timeout_at(until, read_hello_reply(&mut reader, &session)).await {
                Ok(reply) => break reply?,
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::HandshakeTimeout(options.timeout));
                }
                Err(_) => wait = (wait * 2).min(Duration::from_secs(2)),
            }
        };
        if reply.agent.version != PROTOCOL_VERSION {
            return Err(Error::VersionMismatch {
                host: PROTOCOL_VERSION,
                agent: reply.agent.version,
                build_id: reply.agent.build_id,
            });
        }
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        Ok(Client {
            inner: Arc::new_cyclic(|weak| {
                let writer = tokio::spawn(write_loop(write, out_rx, weak.clone()));
                let reader = tokio::spawn(read_loop(reader, weak.clone()));
                let watchdog = tokio::spawn(watch(weak.clone()));
                Inner {
                    out,
                    calls: Mutex::new(HashMap::new()),
                    closed: Mutex::new(None),
                    next_id: AtomicU64::new(1),
                    agent: reply.agent,
                    session,
                    agent_time_unix_ns: reply.agent_time_unix_ns,
                    tasks: vec![writer, reader, watchdog],
                    heard: Mutex::new(Instant::now()),
                    delivering: std::sync::atomic::AtomicBool::new(false),
                }
            }),
        })
    }

    /// Who answered the handshake.
    pub fn agent(&self) -> &AgentVersion {
        &self.inner.agent
    }

    /// This session's id.
    pub fn session(&self) -> &str {
        &self.inner.session
    }

    /// The guest clock at the handshake (ns since the epoch).
    pub fn agent_time_unix_ns(&self) -> i64 {
        self.inner.agent_time_unix_ns
    }

    /// Whether the connection has ended (and why).
    pub fn closed(&self) -> Option<String> {
        lock(&self.inner.closed).clone()
    }

    /// Starts a call.
    pub(crate) async fn start(&self, msg: Request, body: &[u8]) -> Result<Call> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CALL_QUEUE);
        lock(&self.inner.calls).insert(id, tx);
        let call = Call {
            client: self.clone(),
            id,
            rx,
            done: false,
        };
        self.send(id, msg, body).await?;
        Ok(call)
    }

    async fn send(&self, id: u64, msg: Request, body: &[u8]) -> Result<()> {
        let frame = encode_request(id, msg, body);
        self.inner
            .out
            .send(frame)
            .await
            .map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> Error {
        Error::Closed(
            self.closed()
                .unwrap_or_else(|| "connection ended".to_string()),
        )
    }
}

/// One call in flight: its events, and a way to send it input.
pub(crate) struct Call {
    client: Client,
    id: u64,
    rx: mpsc::Receiver<Incoming>,
    done: bool,
}

impl Call {
    /// The next event; after the terminal one the call is done.
    pub async fn recv(&mut self) -> Result<Incoming> {
        if self.done {
            return Err(Error::Protocol("call already ended".into()));
        }
        match self.rx.recv().await {
            Some(incoming) => {
                if incoming.event.is_terminal() {
                    self.done = true;
                }
                Ok(incoming)
            }
            None => {
                self.done = true;
                Err(self.client.closed_error())
            }
        }
    }

    /// An event if one is already queued (used to notice an early error).
    pub fn try_recv(&mut self) -> Option<Incoming> {
        if self.done {
            return None;
        }
        let incoming = self.rx.try_recv().ok()?;
        if incoming.event.is_terminal() {
            self.done = true;
        }
        Some(incoming)
    }

    pub async fn send(&self, msg: Request, body: &[u8]) -> Result<()> {
        self.client.send(self.id, msg, body).await
    }

    /// Asks the agent to stop the call; it still ends with a terminal event.
    pub async fn cancel(&self) -> Result<()> {
        self.send(Request::Cancel, &[]).await
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        lock(&self.client.inner.calls).remove(&self.id);
        if !self.done {
            let frame = encode_request(self.id, Request::Cancel, &[]);
            if let Err(mpsc::error::TrySendError::Full(frame)) =
                self.client.inner.out.try_send(frame)
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                let out = self.client.inner.out.clone();
                runtime.spawn(async move {
                    let _ = out.send(frame).await;
                });
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn read_hello_reply<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    session: &str,
) -> Result<crate::protocol::HelloReply> {
    loop {
        let item = match reader.next().await {
            Ok(Some(item)) => item,
            Ok(None) => return Err(Error::Closed("end of stream during the handshake".into())),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                reader.decoder().resync();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let Item::Frame(frame) = item else { continue };
        match serde_json::from_slice::<FromAgent>(&frame.header) {
            Ok(FromAgent {
                event: Event::Hello(reply),
                ..
            }) if reply.session == session => return Ok(reply),
            // A reply to an earlier session, or stale output: skip to the next sync.
            _ => reader.decoder().resync(),
        }
    }
}

async fn write_loop<T: Transport>(
    mut write: WriteHalf<T>,
    mut frames: mpsc::Receiver<Vec<u8>>,
    inner: std::sync::Weak<Inner>,
) {
    while let Some(frame) = frames.recv().await {
        if let Err(e) = write.write_all(&frame).await {
            close(&inner, format!("write failed: {e}"));
            return;
        }
    }
}

async fn read_loop<T: Transport>(
    mut reader: FrameReader<ReadHalf<T>>,
    inner: std::sync::Weak<Inner>,
) {
    let reason = loop {
        let frame = match reader.next().await {
            Ok(Some(Item::Frame(frame))) => frame,
            Ok(Some(Item::Sync)) => continue,
            Ok(None) => break "the agent closed the connection".to_string(),
            Err(e) => break format!("read failed: {e}"),
        };
        let msg: FromAgent = match serde_json::from_slice(&frame.header) {
            Ok(msg) => msg,
            Err(e) => break format!("undecodable message from the agent: {e}"),
        };
        if msg.id == 0 {
            // A repeated hello reply (the handshake was resent).
            continue;
        }
        let Some(inner) = inner.upgrade() else { return };
        *lock(&inner.heard) = Instant::now();
        let terminal = msg.event.is_terminal();
        let sender = {
            let mut calls = lock(&inner.calls);
            if terminal {
                calls.remove(&msg.id)
            } else {
                calls.get(&msg.id).cloned()
            }
        };
        if let Some(sender) = sender {
            // Waits while the caller is behind: back-pressure on the agent.
            inner.delivering.store(true, Ordering::Relaxed);
            let weak = std::sync::Arc::downgrade(&inner);
            drop(inner);
            let _ = sender
                .send(Incoming {
                    event: msg.event,
                    body: frame.body,
                })
                .await;
            if let Some(inner) = weak.upgrade() {
                inner.delivering.store(false, Ordering::Relaxed);
            }
        }
    };
    close(&inner, reason);
}

/// How long calls may be pending before the agent is asked whether it is
/// still there, and how long it has to answer. An agent that restarted
/// mid-call (killed, crashed) serves only new sessions: without this, a
/// call of the old one would wait for ever. Generous: a guest under TCG on
/// a busy host answers slowly, and a silent long command is not a problem.
const WATCH_EVERY: Duration = Duration::from_secs(10);
const WATCH_ANSWER: Duration = Duration::from_secs(60);

/// While calls are pending, pings the agent every `WATCH_EVERY`; one that
/// goes unanswered for `WATCH_ANSWER` ends the connection.
async fn watch(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if lock(&strong.closed).is_some() {
            return;
        }
        if lock(&strong.calls).is_empty() {
            continue;
        }
        let asked = Instant::now();
        let client = Client { inner: strong };
        let answered = tokio::time::timeout(WATCH_ANSWER, client.ping())
            .await
            .is_ok();
        // Frames that came meanwhile, or a caller that stopped reading (a
        // pager), mean the agent is there.
        let heard = *lock(&client.inner.heard) > asked;
        let delivering = client.inner.delivering.load(Ordering::Relaxed);
        drop(client);
        if !answered && !heard && !delivering {
            close(
                &inner,
                format!(
                    "the guest agent stopped answering for {WATCH_ANSWER:?} (it may have restarted)"
                ),
            );
            return;
        }
    }
}

fn close(inner: &std::sync::Weak<Inner>, reason: String) {
    if let Some(inner) = inner.upgrade() {
        lock(&inner.closed).get_or_insert(reason);
        // Dropping the senders ends every pending call with `Closed`.
        lock(&inner.calls).clear();
    }
}

fn encode_request(id: u64, msg: Request, body: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(&ToAgent { id, msg }).expect("requests serialize");
    frame::encode(&header, body)
}

fn encode_hello(session: &str) -> Vec<u8> {
    let hello = Request::Hello(Hello {
        version: PROTOCOL_VERSION,
        session: session.to_string(),
        host_time_unix_ns: unix_ns(SystemTime::now()),
    });
    let mut out = frame::SYNC.to_vec();
    out.extend(encode_request(0, hello, &[]));
    out
}

/// Nanoseconds since the Unix epoch (negative before it).
pub fn unix_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// 128 random bits, hex.
fn new_session_id() -> String {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // Practically unreachable; fall back to time and pid, still unique enough per host.
        let t = unix_ns(SystemTime::now()) as u128 ^ ((std::process::id() as u128) << 64);
        bytes = t.to_le_bytes();
    }
    crate::protocol::hex(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::HelloReply;
    use tokio::io::AsyncReadExt;

    /// A stand-in agent on the far end of a duplex pipe: ignores the first
    /// `ignore` hellos, writes stale bytes, then answers as `version`.
    async fn fake_agent(mut io: tokio::io::DuplexStream, ignore: usize, version: u32) {
        let mut reader = FrameReader::new(&mut io, Decoder::scanning());
        let mut seen = 0;
        let session = loop {
            let Ok(Some(Item::Frame(f))) = reader.next().await else {
                continue;
            };
            let msg: ToAgent = serde_json::from_slice(&f.header).unwrap();
            if let Request::Hello(h) = msg.msg {
                seen += 1;
                if seen > ignore {
                    break h.session;
                }
            }
        };
        let reply = FromAgent {
            id: 0,
            event: Event::Hello(HelloReply {
                agent: AgentVersion {
                    version,
                    build_id: "feedfacefeedface".into(),
                    boot_id: "b".into(),
                },
                session,
                agent_time_unix_ns: 0,
            }),
        };
        let mut bytes = b"stale output of an old session".to_vec();
        bytes.extend(frame::SYNC);
        bytes.extend(frame::encode(&serde_json::to_vec(&reply).unwrap(), &[]));
        io.write_all(&bytes).await.unwrap();
        // Keep the pipe open and drained.
        let mut sink = [0u8; 1024];
        while io.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    }

    fn quick() -> ConnectOptions {
        ConnectOptions {
            retry: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn resends_the_hello_until_answered_and_skips_stale_bytes() {
        let (host, guest) = tokio::io::duplex(64 * 1024);
        tokio::spawn(fake_agent(guest, 2, PROTOCOL_VERSION));
        let client = Client::handshake(host, &quick()).await.unwrap();
        assert_eq!(client.agent().build_id, "feedfacefeedface");
    }

    #[tokio::test]
    async fn a_version_mismatch_is_a_clear_error() {
        let (host, guest) = tokio::io::duplex(64 * 1024);
        tokio::spawn(fake_agent(guest, 0, PROTOCOL_VERSION + 1));
        let err = Client::handshake(host, &quick()).await.err().unwrap();
        assert!(
            matches!(err, Error::VersionMismatch { agent, .. } if agent == PROTOCOL_VERSION + 1)
        );
        assert!(err.to_string().contains("protocol version"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_to_an_agent_that_stopped_answering_ends() {
        // The fake agent answers the hello and nothing after: an agent that
        // restarted mid-call, serving only new sessions.
        let (host, guest) = tokio::io::duplex(64 * 1024);
        tokio::spawn(fake_agent(guest, 0, PROTOCOL_VERSION));
        let client = Client::handshake(host, &quick()).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(600), client.ping()).await;
        let err = answer.expect("the call ends").err().unwrap();
        assert!(err.to_string().contains("stopped answering"), "{err}");
        assert!(client.closed().is_some());
    }

    #[tokio::test]
    async fn silence_times_out() {
        let (host, _guest) = tokio::io::duplex(64 * 1024);
        let options = ConnectOptions {
            retry: Duration::from_millis(20),
            timeout: Duration::from_millis(200),
        };
        let err = Client::handshake(host, &options).await.err().unwrap();
        assert!(matches!(err, Error::HandshakeTimeout(_)), "{err}");
    }
}
