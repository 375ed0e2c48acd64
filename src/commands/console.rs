//! `rum console`: the guest's serial console on this terminal. QEMU keeps
//! logging it to the console log meanwhile; `Ctrl-]` detaches.

use crate::lifecycle::{AgentError, Instance};
use crate::output::Reporter;
use crate::terminal::RawMode;
use crate::{Error, Exit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `Ctrl-]`, as telnet and virsh detach.
const DETACH: u8 = 0x1d;

pub fn run(target: &crate::lifecycle::Target, reporter: &Reporter) -> Result<Exit, Error> {
    let instance = Instance::open_target(target)?;
    let id = instance.paths.id.to_string();
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(Error::NoTerminal("rum console"));
    }
    instance
        .running()
        .map_err(AgentError::from)?
        .ok_or_else(|| AgentError::NotRunning(id.clone()))?;
    let socket = instance.paths.console_socket();
    let rt = crate::lifecycle::runtime();
    let stream = rt
        .block_on(tokio::net::UnixStream::connect(&socket))
        .map_err(|source| Error::Console {
            path: socket,
            source,
        })?;
    reporter.note(&format!(
        "Connected to the console of `{id}`; Ctrl-] detaches (press Enter for a prompt)"
    ));
    let raw = RawMode::enter();
    let ended = rt.block_on(pump(stream));
    drop(raw);
    match ended {
        Ended::Detached => reporter.note("Detached from the console; the VM runs on"),
        Ended::Closed => reporter.note("The console closed: QEMU stopped"),
        Ended::Signal => reporter.note("Detached from the console (signal)"),
    }
    Ok(Exit::Success)
}

enum Ended {
    Detached,
    Closed,
    Signal,
}

/// Keys to the console until `Ctrl-]`, its output to stdout.
async fn pump(stream: tokio::net::UnixStream) -> Ended {
    let (mut from_guest, mut to_guest) = stream.into_split();
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut keys = [0u8; 1024];
    let mut output = [0u8; 64 * 1024];
    loop {
        tokio::select! {
            _ = async { term.as_mut().expect("guarded").recv().await }, if term.is_some() => return Ended::Signal,
            read = stdin.read(&mut keys) => match read {
                Ok(0) | Err(_) => return Ended::Detached,
                Ok(n) => {
                    let keys = &keys[..n];
                    let (send, detach) = match keys.iter().position(|&k| k == DETACH) {
                        Some(at) => (&keys[..at], true),
                        None => (keys, false),
                    };
                    if to_guest.write_all(send).await.is_err() {
                        return Ended::Closed;
                    }
                    if detach {
                        return Ended::Detached;
                    }
                }
            },
            read = from_guest.read(&mut output) => match read {
                Ok(0) | Err(_) => return Ended::Closed,
                Ok(n) => {
                    let _ = stdout.write_all(&output[..n]).await;
                    let _ = stdout.flush().await;
                }
            },
        }
    }
}
