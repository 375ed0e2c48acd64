//! `rum up`. On a terminal (without `-d`) it stays in the foreground after
//! provisioning: `r` + Enter retries inline, Ctrl+C stops the VM. The
//! instance lock is not held while it waits, so `rum retry`, `rum exec` and
//! the rest work from another terminal meanwhile.

use crate::instance::LockWait;
use crate::lifecycle::retry::{RetryMode, retry};
use crate::lifecycle::up::up;
use crate::lifecycle::{Instance, runtime, stop};
use crate::output::Reporter;
use crate::{Error, Exit};
use std::io::IsTerminal;
use std::path::Path;
use tokio::io::AsyncBufReadExt;

pub fn run(file: &Path, detach: bool, reporter: &Reporter) -> Result<Exit, Error> {
    let instance = Instance::open(file)?;
    for warning in &instance.warnings {
        reporter.warn(&format!("`{}` {}", warning.path, warning.message));
    }
    let was_running = instance.qemu_pid().is_some();
    let status = up(&instance, reporter)?;
    if detach || was_running || !std::io::stdin().is_terminal() || instance.qemu_pid().is_none() {
        return Ok(status);
    }
    foreground(&instance, status, reporter)
}

enum Input {
    Retry,
    Stop,
    Other,
}

fn foreground(instance: &Instance, mut status: Exit, reporter: &Reporter) -> Result<Exit, Error> {
    reporter.note("The VM runs in the foreground: type r and Enter to retry provisioning, Ctrl+C to stop the VM (`rum up -d` returns instead).");
    let rt = runtime();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        let input = rt.block_on(async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => Input::Stop,
                line = lines.next_line() => match line {
                    Ok(Some(line)) if line.trim() == "r" => Input::Retry,
                    Ok(Some(_)) => Input::Other,
                    // End of input: nothing more to wait for.
                    Ok(None) | Err(_) => Input::Stop,
                },
            }
        });
        match input {
            Input::Retry => {
                status = match retry(instance, RetryMode::Full, false, reporter) {
                    Ok(status) => status,
                    Err(e) => {
                        let e = Error::from(e);
                        reporter.error(&e, e.exit_status().code());
                        Exit::Failure
                    }
                };
            }
            Input::Other => reporter.note("Type r and Enter to retry, Ctrl+C to stop the VM."),
            Input::Stop => {
                let _lock = instance
                    .paths
                    .lock("rum up", LockWait::Up(std::time::Duration::from_secs(60)))?;
                let step = reporter.step("Stopping the VM");
                stop::stop(instance, false);
                step.done();
                return Ok(status);
            }
        }
    }
}
