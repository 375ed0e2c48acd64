//! `rum up`. On a terminal (without `-d`) it stays in the foreground after
//! provisioning: `r` retries inline, `c` shows the console's last lines,
//! Ctrl+C stops the VM (single keys: the terminal is raw while it waits). The
//! instance lock is not held while it waits, so `rum retry`, `rum exec` and
//! the rest work from another terminal meanwhile.

use crate::instance::LockWait;
use crate::lifecycle::retry::{RetryMode, retry};
use crate::lifecycle::up::up;
use crate::lifecycle::{Instance, runtime, stop};
use crate::output::Reporter;
use crate::terminal::RawMode;
use crate::{Error, Exit};
use std::io::IsTerminal;
use std::path::Path;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};

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
    Console,
    Stop,
    Other,
}

/// Console lines `c` shows.
const CONSOLE_LINES: usize = 20;
const HINT: &str = "r retries provisioning, c shows the console's last lines, Ctrl+C stops the VM";

fn foreground(instance: &Instance, mut status: Exit, reporter: &Reporter) -> Result<Exit, Error> {
    reporter.note(&format!(
        "The VM runs in the foreground: {HINT} (`rum up -d` returns instead)."
    ));
    let rt = runtime();
    let mut stdin = tokio::io::stdin();
    loop {
        // Raw only while waiting for a key: what a retry prints needs the
        // terminal as it was. The guard also restores it on unwind.
        let raw = RawMode::enter();
        let input = rt.block_on(async {
            let mut key = [0u8; 1];
            let mut term = signal(SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => Input::Stop,
                _ = async { term.as_mut().expect("guarded").recv().await }, if term.is_some() => Input::Stop,
                read = stdin.read(&mut key) => match read {
                    Ok(1) => match key[0] {
                        b'r' | b'R' => Input::Retry,
                        b'c' | b'C' => Input::Console,
                        // Ctrl+C and Ctrl+D arrive as keys in raw mode.
                        0x03 | 0x04 => Input::Stop,
                        _ => Input::Other,
                    },
                    // End of input: nothing more to wait for.
                    _ => Input::Stop,
                },
            }
        });
        drop(raw);
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
                reporter.note(HINT);
            }
            Input::Console => {
                let log = instance.paths.serial_log();
                reporter.note(&format!("The console's last lines ({}):", log.display()));
                reporter.line(&crate::lifecycle::console_tail(&log, CONSOLE_LINES));
                reporter.note(HINT);
            }
            Input::Other => reporter.note(HINT),
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
