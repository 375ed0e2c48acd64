//! The calls a [`Client`] makes: one method per protocol request.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::{Call, Client, Incoming, unix_ns};
use crate::error::{Error, Result};
use crate::protocol::frame::CHUNK;
use crate::protocol::{
    AgentVersion, Event, ExecRequest, ExitStatus, FileDone, FileInfo, OutputStream,
    ProvisionRequest, ProvisionResult, PullRequest, PushRequest, Request, ReseedRequest, Script,
    ScriptState, SetTimeRequest, Status, TimeSet, hex,
};

/// What an exec produces, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The last event.
    Exited(ExitStatus),
}

/// Collected output of a finished exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A running process in the guest. Dropping it before it exited kills it.
///
/// Read its events while you write its stdin: like pipes to a local
/// process, a caller that only writes can block both sides.
pub struct Exec {
    call: Call,
    pid: u32,
}

/// What a provisioning run reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisionEvent {
    ScriptStarted {
        index: usize,
        name: String,
    },
    Output {
        index: usize,
        stream: OutputStream,
        data: Vec<u8>,
    },
    ScriptFinished {
        index: usize,
        name: String,
        state: ScriptState,
    },
}

/// How to write a pushed file.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Permission bits; default: the local file's (0644 for bytes).
    pub mode: Option<u32>,
    /// User name or uid that will own it (default root).
    pub owner: Option<String>,
    /// Create missing parent directories.
    pub create_dirs: bool,
}

impl Client {
    /// Round trip; returns who answered.
    pub async fn ping(&self) -> Result<AgentVersion> {
        let mut call = self.start(Request::Ping, &[]).await?;
        match call.recv().await?.event {
            Event::Pong(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Starts a process; returns once it runs (or with the reason it cannot).
    pub async fn exec(&self, request: ExecRequest) -> Result<Exec> {
        let mut call = self.start(Request::Exec(request), &[]).await?;
        match call.recv().await?.event {
            Event::Started { pid } => Ok(Exec { call, pid }),
            other => Err(unexpected(other)),
        }
    }

    /// Runs a process to the end and collects its output.
    pub async fn exec_output(&self, request: ExecRequest) -> Result<ExecOutput> {
        self.exec(request).await?.output().await
    }

    /// Writes `data` to `path` in the guest.
    pub async fn push_bytes(
        &self,
        data: &[u8],
        path: &str,
        options: &PushOptions,
    ) -> Result<FileDone> {
        let request = PushRequest {
            path: path.to_string(),
            mode: options.mode.unwrap_or(0o644),
            size: data.len() as u64,
            sha256: hex(&Sha256::digest(data)),
            owner: options.owner.clone(),
            create_dirs: options.create_dirs,
        };
        let mut call = self.start(Request::Push(request), &[]).await?;
        for chunk in data.chunks(CHUNK) {
            if let Some(early) = call.try_recv() {
                return Err(unexpected(early.event));
            }
            call.send(Request::Data, chunk).await?;
        }
        call.send(Request::Eof, &[]).await?;
        finish_push(&mut call).await
    }

    /// Copies the local file `local` to `path` in the guest (streamed; the
    /// file is read twice: once for its checksum, once to send it).
    pub async fn push_file(
        &self,
        local: &Path,
        path: &str,
        options: &PushOptions,
    ) -> Result<FileDone> {
        let local_err = |source| Error::Local {
            path: local.to_path_buf(),
            source,
        };
        let (size, sha256, mode) = {
            let local = local.to_path_buf();
            tokio::task::spawn_blocking(move || checksum_file(&local))
                .await
                .map_err(|e| Error::Protocol(format!("checksum task failed: {e}")))?
                .map_err(local_err)?
        };
        let request = PushRequest {
            path: path.to_string(),
            mode: options.mode.unwrap_or(mode & 0o7777),
            size,
            sha256,
            owner: options.owner.clone(),
            create_dirs: options.create_dirs,
        };
        let mut call = self.start(Request::Push(request), &[]).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
        let path_buf = local.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || {
            let mut file = match std::fs::File::open(&path_buf) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; CHUNK];
                match read_full(&mut file, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(buf)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.map_err(local_err)?;
            if let Some(early) = call.try_recv() {
                return Err(unexpected(early.event));
            }
            call.send(Request::Data, &chunk).await?;
        }
        let _ = reader.await;
        call.send(Request::Eof, &[]).await?;
        finish_push(&mut call).await
    }

    /// Reads `path` from the guest into memory, checksum verified.
    pub async fn pull_bytes(&self, path: &str) -> Result<(FileInfo, Vec<u8>)> {
        let mut data = Vec::new();
        let info = self
            .pull_with(path, |chunk| {
                data.extend_from_slice(chunk);
                Ok(())
            })
            .await?;
        Ok((info, data))
    }

    /// Copies `path` from the guest to the local file `local` (written to a
    /// temporary file beside it, checked, given the guest file's mode, then
    /// renamed into place).
    pub async fn pull_file(&self, path: &str, local: &Path) -> Result<FileInfo> {
        let local_err = |source| Error::Local {
            path: local.to_path_buf(),
            source,
        };
        let dir = local
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.rum-pull-{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp).map_err(local_err)?;
        let result = self
            .pull_with(path, |chunk| std::io::Write::write_all(&mut file, chunk))
            .await;
        let finish = result.and_then(|info| {
            file.sync_all().map_err(local_err)?;
            drop(file);
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(info.mode & 0o7777))
                .map_err(local_err)?;
            std::fs::rename(&tmp, local).map_err(local_err)?;
            Ok(info)
        });
        if finish.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        finish
    }

    /// Streams `path` from the guest into `sink` chunk by chunk.
    async fn pull_with(
        &self,
        path: &str,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<FileInfo> {
        let mut call = self
            .start(
                Request::Pull(PullRequest {
                    path: path.to_string(),
                }),
                &[],
            )
            .await?;
        let info = match call.recv().await?.event {
            Event::FileInfo(info) => info,
            other => return Err(unexpected(other)),
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            let Incoming { event, body } = call.recv().await?;
            match event {
                Event::Data => {
                    hasher.update(&body);
                    size += body.len() as u64;
                    sink(&body).map_err(|source| Error::Local {
                        path: path.into(),
                        source,
                    })?;
                }
                Event::Pulled(done) => {
                    let actual = hex(&hasher.finalize());
                    if actual != done.sha256 || size != done.size {
                        return Err(Error::Checksum {
                            what: format!("pulled file {path}"),
                            expected: done.sha256,
                            actual,
                            expected_size: done.size,
                            actual_size: size,
                        });
                    }
                    return Ok(FileInfo {
                        size,
                        mode: info.mode,
                    });
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    /// Mixes `seed` into the guest's RNG and makes it reseed at once.
    pub async fn reseed(&self, seed: &[u8]) -> Result<()> {
        let request = ReseedRequest {
            seed: seed.to_vec(),
        };
        let mut call = self.start(Request::Reseed(request), &[]).await?;
        match call.recv().await?.event {
            Event::Reseeded => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Sets the guest's wall clock to `time`.
    pub async fn set_time(&self, time: SystemTime) -> Result<TimeSet> {
        let request = SetTimeRequest {
            unix_ns: unix_ns(time),
        };
        let mut call = self.start(Request::SetTime(request), &[]).await?;
        match call.recv().await?.event {
            Event::TimeSet(set) => Ok(set),
            other => Err(unexpected(other)),
        }
    }

    /// Runs provisioning scripts, reporting progress to `on_event`; returns
    /// the run's result (a failed script is `Ok` with `ok: false`).
    pub async fn provision(
        &self,
        scripts: Vec<Script>,
        on_event: impl FnMut(ProvisionEvent),
    ) -> Result<ProvisionResult> {
        self.provision_some(scripts, None, on_event).await
    }

    /// Sends every script but runs only those at `run` (in run order); the
    /// ones before are taken to have run already. Events carry indices into
    /// the whole list.
    pub async fn provision_some(
        &self,
        scripts: Vec<Script>,
        run: Option<std::ops::Range<usize>>,
        mut on_event: impl FnMut(ProvisionEvent),
    ) -> Result<ProvisionResult> {
        let mut call = self
            .start(Request::Provision(ProvisionRequest { scripts, run }), &[])
            .await?;
        loop {
            let Incoming { event, body } = call.recv().await?;
            match event {
                Event::ScriptStarted { index, name } => {
                    on_event(ProvisionEvent::ScriptStarted { index, name })
                }
                Event::ScriptOutput { index, stream } => on_event(ProvisionEvent::Output {
                    index,
                    stream,
                    data: body,
                }),
                Event::ScriptFinished { index, name, state } => {
                    on_event(ProvisionEvent::ScriptFinished { index, name, state })
                }
                Event::Provisioned(result) => return Ok(result),
                other => return Err(unexpected(other)),
            }
        }
    }

    /// Provisioning state: sentinel, cached scripts, last results.
    pub async fn status(&self) -> Result<Status> {
        let mut call = self.start(Request::Status, &[]).await?;
        match call.recv().await?.event {
            Event::Status(status) => Ok(*status),
            other => Err(unexpected(other)),
        }
    }
}

impl Exec {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `data` to the process's stdin (the request must have `stdin: true`).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(CHUNK) {
            self.call.send(Request::Data, chunk).await?;
        }
        Ok(())
    }

    /// Closes the process's stdin.
    pub async fn close_stdin(&self) -> Result<()> {
        self.call.send(Request::Eof, &[]).await
    }

    /// Kills the process group; the exec still ends with [`ExecEvent::Exited`].
    pub async fn cancel(&self) -> Result<()> {
        self.call.cancel().await
    }

    /// The next event; `None` after [`ExecEvent::Exited`].
    pub async fn next(&mut self) -> Result<Option<ExecEvent>> {
        if self.call.done {
            return Ok(None);
        }
        let Incoming { event, body } = self.call.recv().await?;
        Ok(Some(match event {
            Event::Stdout => ExecEvent::Stdout(body),
            Event::Stderr => ExecEvent::Stderr(body),
            Event::Exited(status) => ExecEvent::Exited(status),
            other => return Err(unexpected(other)),
        }))
    }

    /// Collects output until the process exits.
    pub async fn output(mut self) -> Result<ExecOutput> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        loop {
            match self.next().await? {
                Some(ExecEvent::Stdout(d)) => stdout.extend(d),
                Some(ExecEvent::Stderr(d)) => stderr.extend(d),
                Some(ExecEvent::Exited(status)) => {
                    return Ok(ExecOutput {
                        status,
                        stdout,
                        stderr,
                    });
                }
                None => return Err(Error::Protocol("exec ended without an exit status".into())),
            }
        }
    }
}

async fn finish_push(call: &mut Call) -> Result<FileDone> {
    match call.recv().await?.event {
        Event::Pushed(done) => Ok(done),
        other => Err(unexpected(other)),
    }
}

/// An agent error as [`Error::Agent`], anything else as a protocol error.
fn unexpected(event: Event) -> Error {
    match event {
        Event::Error(e) => Error::Agent {
            kind: e.kind,
            message: e.message,
        },
        other => Error::Protocol(format!("unexpected {other:?}")),
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn checksum_file(path: &Path) -> std::io::Result<(u64, String, u32)> {
    let mut file = std::fs::File::open(path)?;
    let mode = file.metadata()?.permissions().mode();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = read_full(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize()), mode))
}
