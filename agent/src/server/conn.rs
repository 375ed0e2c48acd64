//! One byte stream from the host: handshake, sessions, call dispatch.
//!
//! The reader decodes frames and starts one task per call; a single writer
//! task owns the write half. Every outgoing frame carries the generation of
//! the session that produced it, and the writer drops frames of ended
//! sessions, so a call still winding down after a reset never writes into
//! the next session.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rum_agent::Transport;
use rum_agent::protocol::frame::{self, Decoder, Frame, FrameReader, Item};
use rum_agent::protocol::{
    ErrorKind, Event, FromAgent, Hello, HelloReply, Request, TimeSet, ToAgent,
};
use serde::Deserialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::call::{Ctx, Input, OutFrame, Outbox, error, io_error};
use super::{Agent, exec, files, log, provision, serial, system};

/// Frames queued for the writer.
const OUT_QUEUE: usize = 64;
/// Input frames (stdin, push data) queued per call.
const INPUT_QUEUE: usize = 8;

/// What end of stream means on this transport.
#[derive(Debug)]
pub enum EndOfStream {
    /// The connection is over (vsock, Unix socket).
    Close,
    /// The host went away; it may come back on the same stream
    /// (virtio-serial port, polled through this fd: a duplicate of the
    /// stream's own).
    WaitForHost(OwnedFd),
}

/// Serves `stream` until it ends; an error means the stream broke (the
/// caller may reopen the device).
pub async fn serve<T: Transport>(agent: Arc<Agent>, stream: T, eos: EndOfStream) -> io::Result<()> {
    let (read, write) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(OUT_QUEUE);
    let current = Arc::new(AtomicU64::new(1));
    let writer = tokio::spawn(write_loop(write, rx, current.clone()));
    let mut conn = Conn {
        agent,
        out: tx,
        current,
        session: None,
        calls: Arc::new(Mutex::new(HashMap::new())),
    };
    let mut reader = FrameReader::new(read, Decoder::scanning());
    let result = loop {
        let item = match reader.next().await {
            Ok(Some(item)) => item,
            Ok(None) => match &eos {
                EndOfStream::Close => {
                    conn.end_session("the host disconnected");
                    break Ok(());
                }
                EndOfStream::WaitForHost(fd) => {
                    // The guest learns of a disconnect and a connect on a
                    // queue of its own, which a slow guest can read after the
                    // next host's first bytes: then this end of stream is
                    // late and the host is still there. A host back within
                    // the grace keeps the session; a new one starts with a
                    // sync marker and a hello, which ends it.
                    if serial::host_back_within(fd.as_fd(), serial::LATE_EOF_GRACE).await {
                        log!("end of stream with the host still there; the session goes on");
                        reader.decoder().mark_resume();
                    } else {
                        conn.end_session("the host disconnected");
                        serial::wait_for_host(fd.as_fd()).await;
                        reader.decoder().reset_scanning();
                    }
                    continue;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                log!("{e}; skipping to the next handshake");
                reader.decoder().resync();
                continue;
            }
            Err(e) => {
                conn.end_session("the stream broke");
                break Err(e);
            }
        };
        match item {
            Item::Sync => {}
            Item::Frame(frame) => conn.handle(frame).await,
        }
    };
    writer.abort();
    result
}

struct Conn {
    agent: Arc<Agent>,
    out: mpsc::Sender<OutFrame>,
    /// The generation of the current session; bumped when one ends.
    current: Arc<AtomicU64>,
    session: Option<String>,
    calls: Arc<Mutex<HashMap<u64, CallEntry>>>,
}

struct CallEntry {
    generation: u64,
    cancel: watch::Sender<bool>,
    input: Option<mpsc::Sender<Input>>,
}

impl Conn {
    fn calls(&self) -> MutexGuard<'_, HashMap<u64, CallEntry>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn outbox(&self, id: u64) -> Outbox {
        Outbox::new(id, self.current.clone(), self.out.clone())
    }

    /// Cancels every call of the current session and starts a new generation.
    fn end_session(&mut self, why: &str) {
        self.current.fetch_add(1, Ordering::SeqCst);
        let calls: Vec<CallEntry> = self.calls().drain().map(|(_, c)| c).collect();
        if let Some(session) = self.session.take() {
            log!(
                "session {session} ended: {why} ({} calls cancelled)",
                calls.len()
            );
        }
        for call in calls {
            let _ = call.cancel.send(true);
        }
    }

    async fn handle(&mut self, frame: Frame) {
        let msg: ToAgent = match serde_json::from_slice(&frame.header) {
            Ok(msg) => msg,
            Err(e) => {
                #[derive(Deserialize)]
                struct IdOnly {
                    id: u64,
                }
                if let Ok(IdOnly { id }) = serde_json::from_slice(&frame.header)
                    && id != 0
                    && self.session.is_some()
                {
                    let reply = error(ErrorKind::BadRequest, format!("cannot decode request: {e}"));
                    self.outbox(id).send(reply, &[]).await;
                } else {
                    log!("dropping an undecodable frame: {e}");
                }
                return;
            }
        };
        let id = msg.id;
        match msg.msg {
            Request::Hello(hello) => self.hello(hello).await,
            _ if self.session.is_none() => {
                let reply = error(ErrorKind::NoSession, "no handshake on this connection yet");
                self.outbox(id).send(reply, &[]).await;
            }
            Request::Data => self.input(id, Input::Data(frame.body)).await,
            Request::Eof => self.input(id, Input::Eof).await,
            Request::Cancel => {
                if let Some(call) = self.calls().get(&id) {
                    let _ = call.cancel.send(true);
                }
            }
            Request::Ping => {
                let pong = Event::Pong(self.agent.version.clone());
                self.outbox(id).send(pong, &[]).await;
            }
            Request::SetTime(req) => {
                let reply = match system::set_clock(req.unix_ns) {
                    Ok(previous) => {
                        log!(
                            "clock set: moved {} ms",
                            (req.unix_ns - previous) / 1_000_000
                        );
                        Event::TimeSet(TimeSet {
                            previous_unix_ns: previous,
                            applied_unix_ns: req.unix_ns,
                        })
                    }
                    Err(e) => io_error("clock_settime", &e),
                };
                self.outbox(id).send(reply, &[]).await;
            }
            Request::Reseed(req) => {
                let reply = match system::reseed(&req.seed) {
                    Ok(()) => Event::Reseeded,
                    Err(e) => io_error("reseeding the RNG", &e),
                };
                self.outbox(id).send(reply, &[]).await;
            }
            request => self.start(id, request).await,
        }
    }

    async fn hello(&mut self, hello: Hello) {
        if self.session.as_deref() != Some(hello.session.as_str()) {
            self.end_session("a new session started");
            let skew_ms = (system::now_unix_ns() - hello.host_time_unix_ns) / 1_000_000;
            log!(
                "session {} (host protocol {}, guest clock {skew_ms:+} ms from the host's)",
                hello.session,
                hello.version
            );
            self.session = Some(hello.session.clone());
        }
        let reply = FromAgent {
            id: 0,
            event: Event::Hello(HelloReply {
                agent: self.agent.version.clone(),
                session: hello.session,
                agent_time_unix_ns: system::now_unix_ns(),
            }),
        };
        let header = serde_json::to_vec(&reply).expect("events serialize");
        let mut bytes = frame::SYNC.to_vec();
        bytes.extend(frame::encode(&header, &[]));
        let _ = self
            .out
            .send(OutFrame {
                generation: self.current.load(Ordering::SeqCst),
                bytes,
            })
            .await;
    }

    async fn input(&mut self, id: u64, input: Input) {
        let tx = self.calls().get(&id).and_then(|c| c.input.clone());
        if let Some(tx) = tx {
            // Waits while the call is behind: back-pressure on the host.
            let _ = tx.send(input).await;
        }
    }

    async fn start(&mut self, id: u64, request: Request) {
        let takes_input =
            matches!(&request, Request::Exec(r) if r.stdin) || matches!(request, Request::Push(_));
        let generation = self.current.load(Ordering::SeqCst);
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let (input_tx, input_rx) = if takes_input {
            let (tx, rx) = mpsc::channel(INPUT_QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let duplicate = match self.calls().entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => true,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(CallEntry {
                    generation,
                    cancel: cancel_tx,
                    input: input_tx,
                });
                false
            }
        };
        let out = self.outbox(id);
        if duplicate {
            out.send(
                error(
                    ErrorKind::BadRequest,
                    format!("call {id} is already running"),
                ),
                &[],
            )
            .await;
            return;
        }
        let mut ctx = Ctx::new(self.agent.clone(), out, cancel_rx, input_rx);
        let calls = self.calls.clone();
        tokio::spawn(async move {
            let terminal = dispatch(&mut ctx, request).await;
            {
                let mut calls = calls.lock().unwrap_or_else(|e| e.into_inner());
                if calls.get(&id).is_some_and(|c| c.generation == generation) {
                    calls.remove(&id);
                }
            }
            drop(ctx.input.take());
            ctx.out.send(terminal, &[]).await;
        });
    }
}

async fn dispatch(ctx: &mut Ctx, request: Request) -> Event {
    match request {
        Request::Exec(req) => exec::run(ctx, req).await,
        Request::Push(req) => files::push(ctx, req).await,
        Request::Pull(req) => files::pull(ctx, req).await,
        Request::Provision(req) => provision::host_run(ctx, req).await,
        Request::Status => provision::status(&ctx.agent),
        other => error(ErrorKind::BadRequest, format!("not a call: {other:?}")),
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    mut frames: mpsc::Receiver<OutFrame>,
    current: Arc<AtomicU64>,
) {
    while let Some(frame) = frames.recv().await {
        if frame.generation != current.load(Ordering::SeqCst) {
            continue;
        }
        // A failed write loses this frame; the reader notices a dead stream.
        if let Err(e) = write.write_all(&frame.bytes).await {
            log!("write to the host failed: {e}");
        }
    }
}
