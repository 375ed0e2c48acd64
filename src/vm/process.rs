//! Processes rum starts and later finds again by pid file: started detached
//! (own process group, no terminal), checked by pid plus command line so a reused
//! pid is never mistaken for ours, stopped with SIGTERM then SIGKILL.

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("Cannot start {}", .binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed to start:\n{log}")]
    Failed { what: String, log: String },
    #[error("Cannot write {}", .path.display())]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Starts `binary` in its own process group with output appended to `log`, writes its
/// pid to `pid_file` and returns the pid. The child is not waited for here.
pub fn spawn_detached(
    binary: &Path,
    args: &[OsString],
    log: &Path,
    pid_file: &Path,
) -> Result<u32, ProcessError> {
    let spawn_err = |source| ProcessError::Spawn {
        binary: binary.to_path_buf(),
        source,
    };
    let out = crate::fsutil::open_private(log, true).map_err(spawn_err)?;
    let err = out.try_clone().map_err(spawn_err)?;
    let mut cmd = Command::new(binary);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    // Its own process group: Ctrl+C in rum's terminal must not reach it.
    cmd.process_group(0);
    let child = cmd.spawn().map_err(spawn_err)?;
    let pid = child.id();
    // Reaped by init once rum exits; rum never waits on it.
    std::mem::forget(child);
    crate::fsutil::write_private(pid_file, format!("{pid}\n").as_bytes()).map_err(|source| {
        ProcessError::PidFile {
            path: pid_file.to_path_buf(),
            source,
        }
    })?;
    Ok(pid)
}

/// The pid in `pid_file` if that process is alive and its command line
/// contains `marker` (a path only our process would have).
pub fn find(pid_file: &Path, marker: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    (alive(pid) && cmdline.contains(marker)).then_some(pid)
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGTERM, up to `grace` to exit, then SIGKILL. Returns whether it is gone.
pub fn terminate(pid: u32, grace: Duration) -> bool {
    signal(pid, Signal::SIGTERM);
    if wait_for(grace, || !alive(pid)) {
        reap(pid);
        return true;
    }
    signal(pid, Signal::SIGKILL);
    let gone = wait_for(Duration::from_secs(5), || !alive(pid));
    reap(pid);
    gone
}

pub fn signal(pid: u32, signal: Signal) {
    // ESRCH (already gone) is what the callers check for next anyway.
    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), signal);
}

/// Reaps `pid` if it is our child (spawned by this process); a no-op otherwise.
fn reap(pid: u32) {
    let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
}

/// Polls `done` every 50 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawned_processes_are_found_by_pid_file_and_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let pid_file = dir.path().join("sleep.pid");
        let marker = dir.path().join("marker");
        // `sh -c 'sleep 60' MARKER`: the marker is in the command line.
        let args: Vec<OsString> = vec![
            "-c".into(),
            "echo started; exec sleep 60".into(),
            marker.clone().into(),
        ];
        let pid = spawn_detached(Path::new("/bin/sh"), &args, &log, &pid_file).unwrap();
        assert!(wait_for(Duration::from_secs(5), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("started")
        }));
        // While sh execs sleep, its command line reads empty for a moment.
        assert!(wait_for(Duration::from_secs(5), || find(
            &pid_file, "sleep 60"
        ) == Some(pid)));
        assert_eq!(
            find(&pid_file, "not-our-process"),
            None,
            "a pid with another command line is not ours"
        );
        assert!(terminate(pid, Duration::from_secs(5)));
        assert!(!alive(pid));
        assert_eq!(find(&pid_file, "sleep 60"), None);
    }
}
