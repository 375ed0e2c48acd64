//! `rum exec -- CMD…`: runs a command in the guest through the agent,
//! streaming its output; rum exits with the command's status.

use crate::lifecycle::agent::connect_agent;
use crate::lifecycle::{Instance, runtime};
use crate::{Error, Exit};
use rum_agent::ExecEvent;
use rum_agent::protocol::ExecRequest;
use std::io::Write;
use std::time::Duration;
use tokio::io::AsyncReadExt;

pub fn run(
    target: &crate::lifecycle::Target,
    user: Option<&str>,
    cwd: Option<&str>,
    stdin: bool,
    timeout: Option<Duration>,
    command: &[String],
) -> Result<Exit, Error> {
    let instance = Instance::open_target(target)?;
    runtime().block_on(async {
        let client = connect_agent(&instance, Duration::from_secs(30)).await?;
        let mut request = ExecRequest::argv(command.iter().cloned());
        request.user = Some(user.unwrap_or(&instance.config.user.name).to_owned());
        // An explicit --cwd wins over the default mount.
        request.cwd = cwd.or(instance.config.start_dir()).map(str::to_owned);
        request.stdin = stdin;
        request.timeout_ms = timeout.map(|t| t.as_millis().max(1) as u64);
        let mut exec = client.exec(request).await?;
        let mut stdin = stdin.then(tokio::io::stdin);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                read = async { stdin.as_mut().expect("guarded").read(&mut buf).await }, if stdin.is_some() => {
                    match read {
                        Ok(0) | Err(_) => {
                            stdin = None;
                            exec.close_stdin().await?;
                        }
                        Ok(n) => exec.write_stdin(&buf[..n]).await?,
                    }
                }
                event = exec.next() => match event? {
                    Some(ExecEvent::Stdout(data)) => write_all(&mut std::io::stdout(), &data),
                    Some(ExecEvent::Stderr(data)) => write_all(&mut std::io::stderr(), &data),
                    Some(ExecEvent::Exited(status)) if status.timed_out => {
                        eprintln!(
                            "rum: `{}` ran out of its {:?} and was killed",
                            command.join(" "),
                            timeout.unwrap_or_default()
                        );
                        return Ok(Exit::TimedOut);
                    }
                    Some(ExecEvent::Exited(status)) => {
                        let code = match (status.code, status.signal) {
                            (Some(code), _) => code,
                            (None, Some(signal)) => 128 + signal,
                            (None, None) => 1,
                        };
                        return Ok(Exit::Guest(code.clamp(0, 255) as u8));
                    }
                    None => return Ok(Exit::Failure),
                },
            }
        }
    })
}

fn write_all(out: &mut impl Write, data: &[u8]) {
    let _ = out.write_all(data).and_then(|()| out.flush());
}
