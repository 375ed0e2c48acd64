//! `exec`: runs a process in its own process group, streams its output,
//! feeds its stdin, and kills the whole group on timeout or cancel.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use rum_agent::protocol::{Command, ErrorKind, Event, ExecRequest, ExitStatus, OutputStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::call::{Ctx, Input, Outbox, error, io_error};
use super::system::{self, User};

/// Read size for process output.
const OUTPUT_CHUNK: usize = 64 * 1024;
/// After the process exits, how long to keep reading output that its
/// background children may still write to the same pipes.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a process is set up; shared with provisioning.
pub struct Spec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub user: Option<User>,
    pub stdin: bool,
}

/// Builds and spawns the process: own process group, privileges dropped for `user`.
pub fn spawn(spec: &Spec) -> std::io::Result<Child> {
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", DEFAULT_PATH);
    }
    let home = spec.user.as_ref().map_or("/root", |u| u.home.as_str());
    if let Some(user) = &spec.user {
        cmd.env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .env("SHELL", &user.shell);
    } else if std::env::var_os("HOME").is_none() {
        cmd.env("HOME", home);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    match &spec.cwd {
        Some(cwd) => {
            cmd.current_dir(cwd);
        }
        None if spec.user.is_some() && std::path::Path::new(home).is_dir() => {
            cmd.current_dir(home);
        }
        None => {
            cmd.current_dir("/");
        }
    }
    if let Some(user) = &spec.user {
        rum_agent::os::drop_privileges_on_exec(&mut cmd, user.uid, user.gid, &user.groups);
    }
    cmd.spawn()
}

pub async fn run(ctx: &mut Ctx, req: ExecRequest) -> Event {
    let (program, args) = match req.command {
        Command::Argv(argv) if !argv.is_empty() => (argv[0].clone(), argv[1..].to_vec()),
        Command::Argv(_) => return error(ErrorKind::BadRequest, "empty argv"),
        Command::Shell(script) => ("/bin/sh".to_string(), vec!["-c".to_string(), script]),
    };
    let user = match req.user.as_deref().map(system::lookup_user).transpose() {
        Ok(u) => u,
        Err(e) => return io_error("user", &e),
    };
    let spec = Spec {
        program: program.clone(),
        args,
        env: req.env.into_iter().collect(),
        cwd: req.cwd,
        user,
        stdin: req.stdin,
    };
    let mut child = match spawn(&spec) {
        Ok(child) => child,
        Err(e) => return io_error(&format!("cannot run {program}"), &e),
    };
    let pid = child.id().unwrap_or(0);
    if !ctx.out.send(Event::Started { pid }, &[]).await {
        system::kill_group(pid);
        let _ = child.wait().await;
        return error(ErrorKind::Cancelled, "session ended");
    }
    let stdin = child.stdin.take();
    let input = ctx.input.take();
    let feeder = tokio::spawn(feed_stdin(stdin, input));
    let out = ctx.out.clone();
    let pumps = vec![
        pump(
            child.stdout.take(),
            Some(out.clone()),
            Stream::Exec(OutputStream::Stdout),
            None,
        ),
        pump(
            child.stderr.take(),
            Some(out),
            Stream::Exec(OutputStream::Stderr),
            None,
        ),
    ];
    let timeout = req.timeout_ms.map(Duration::from_millis);
    let status = wait(&mut child, pid, timeout, pumps, ctx.cancelled()).await;
    feeder.abort();
    Event::Exited(status)
}

/// Waits for the process (killing its group on timeout or cancel), then for
/// its output to drain.
pub async fn wait(
    child: &mut Child,
    pid: u32,
    timeout: Option<Duration>,
    pumps: Vec<JoinHandle<()>>,
    cancelled: impl Future<Output = ()>,
) -> ExitStatus {
    let mut status = ExitStatus::default();
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let exit = tokio::select! {
        exit = child.wait() => exit,
        () = deadline => {
            status.timed_out = true;
            system::kill_group(pid);
            child.wait().await
        }
        () = cancelled => {
            status.cancelled = true;
            system::kill_group(pid);
            child.wait().await
        }
    };
    if let Ok(exit) = exit {
        status.code = exit.code();
        status.signal = exit.signal();
    }
    let grace = if status.timed_out || status.cancelled {
        Duration::from_millis(200)
    } else {
        DRAIN_GRACE
    };
    let mut pumps = pumps;
    let drained = tokio::time::timeout(grace, async {
        for p in pumps.iter_mut() {
            let _ = p.await;
        }
    })
    .await;
    if drained.is_err() {
        for p in &pumps {
            p.abort();
        }
    }
    status
}

/// Where a pump sends what it reads.
#[derive(Clone, Copy)]
pub enum Stream {
    Exec(OutputStream),
    Script { index: usize, stream: OutputStream },
}

/// Forwards one output pipe to the host (if any) and to `log` (if given).
pub fn pump<R: AsyncRead + Unpin + Send + 'static>(
    pipe: Option<R>,
    out: Option<Outbox>,
    stream: Stream,
    log: Option<mpsc::UnboundedSender<Vec<u8>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(mut pipe) = pipe else { return };
        let mut buf = vec![0u8; OUTPUT_CHUNK];
        let mut host = out;
        loop {
            let n = match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if let Some(log) = &log {
                let _ = log.send(buf[..n].to_vec());
            }
            if let Some(out) = &host {
                let event = match stream {
                    Stream::Exec(OutputStream::Stdout) => Event::Stdout,
                    Stream::Exec(OutputStream::Stderr) => Event::Stderr,
                    Stream::Script { index, stream } => Event::ScriptOutput { index, stream },
                };
                // Without a host, keep reading so the process never blocks on a full pipe.
                if !out.send(event, &buf[..n]).await {
                    host = None;
                }
            }
        }
    })
}

/// Copies host input to the process's stdin; keeps draining input after the
/// process stopped reading, so the connection never stalls on this call.
async fn feed_stdin(mut stdin: Option<ChildStdin>, input: Option<mpsc::Receiver<Input>>) {
    let Some(mut input) = input else { return };
    while let Some(item) = input.recv().await {
        match item {
            Input::Data(data) => {
                if let Some(pipe) = stdin.as_mut()
                    && pipe.write_all(&data).await.is_err()
                {
                    stdin = None;
                }
            }
            Input::Eof => stdin = None,
        }
    }
}
