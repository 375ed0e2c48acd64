//! The process registry: nothing a test started outlives it, also on panic.
//!
//! It kills what the harness spawned itself (by pid), then any `qemu-system*`
//! or `virtiofsd` whose command line names a path under the test's temp root:
//! those are the ones `rum` started for the test. Other processes are never
//! touched.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// How long a process gets to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

pub struct Registry {
    /// `<root>/` as bytes, searched for in /proc/PID/cmdline.
    marker: Vec<u8>,
    children: Mutex<Vec<Child>>,
}

impl Registry {
    pub fn new(root: &Path) -> Self {
        let mut marker = root.as_os_str().as_encoded_bytes().to_vec();
        marker.push(b'/');
        Self {
            marker,
            children: Mutex::new(Vec::new()),
        }
    }

    /// Spawns `cmd` and keeps it until `stop` or the end of the test.
    pub fn spawn(&self, cmd: &mut Command) -> u32 {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let pid = child.id();
        self.children().push(child);
        pid
    }

    /// The exit status if the spawned process `pid` has exited (it is reaped).
    pub fn try_wait(&self, pid: u32) -> Option<ExitStatus> {
        let mut children = self.children();
        let child = children.iter_mut().find(|c| c.id() == pid)?;
        child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the spawned process `pid` to exit by itself.
    pub fn wait_timeout(&self, pid: u32, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        super::wait_until(timeout, POLL, || {
            status = self.try_wait(pid);
            status.is_some()
        });
        status
    }

    /// SIGTERM, a short wait, SIGKILL, reap; returns how the process ended.
    pub fn stop(&self, pid: u32) -> Option<ExitStatus> {
        let mut child = {
            let mut children = self.children();
            let index = children.iter().position(|c| c.id() == pid)?;
            children.swap_remove(index)
        };
        Some(terminate_child(&mut child))
    }

    /// Stops every spawned process, then every stray QEMU/virtiofsd of this test.
    pub fn kill_all(&self) {
        let children: Vec<Child> = self.children().drain(..).collect();
        for mut child in children {
            terminate_child(&mut child);
        }
        // A second pass catches what a process killed in the first one started meanwhile.
        for _ in 0..2 {
            for pid in self.strays() {
                eprintln!("[e2e] stopping stray process {pid}: {}", cmdline_text(pid));
                terminate_foreign(pid);
            }
        }
    }

    /// Live `qemu-system*`/`virtiofsd` processes whose command line names a
    /// path under this test's root.
    pub fn strays(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        let me = std::process::id();
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me && alive(pid))
            .filter(|&pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| is_ours(&cmdline, &self.marker))
            })
            .collect()
    }

    fn children(&self) -> MutexGuard<'_, Vec<Child>> {
        // A test that panicked while holding the lock must not stop the cleanup.
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn is_ours(cmdline: &[u8], marker: &[u8]) -> bool {
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let name = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
    let is_vm_process = name.starts_with(b"qemu-system") || name == b"virtiofsd";
    is_vm_process && cmdline.windows(marker.len()).any(|w| w == marker)
}

fn terminate_child(child: &mut Child) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        thread::sleep(POLL);
    }
    let _ = child.kill();
    child.wait().expect("reap a killed child")
}

/// For processes `rum` started: not our children, so watch /proc instead of waiting.
fn terminate_foreign(pid: u32) {
    signal(pid, libc::SIGTERM);
    if !wait_gone(pid, GRACE) {
        signal(pid, libc::SIGKILL);
        if !wait_gone(pid, GRACE) {
            eprintln!("[e2e] process {pid} survived SIGKILL");
        }
    }
    // Reaps it if it was our child after all; ECHILD otherwise, which is fine.
    unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
}

fn wait_gone(pid: u32, timeout: Duration) -> bool {
    super::wait_until(timeout, POLL, || !alive(pid))
}

/// Running or sleeping; a zombie has already exited.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name, which may contain spaces.
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        !matches!(state, Some('Z' | 'X') | None)
    })
}

fn signal(pid: u32, sig: libc::c_int) {
    // The pid came from a child handle or a fresh /proc scan of a matching process.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

fn cmdline_text(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_vm_processes_under_the_root_only() {
        let marker = b"/tmp/rum-e2e-abc/";
        assert!(is_ours(
            b"/usr/bin/qemu-system-x86_64\0-serial\0file:/tmp/rum-e2e-abc/g/serial.log\0",
            marker
        ));
        assert!(is_ours(
            b"virtiofsd\0--socket-path\0/tmp/rum-e2e-abc/run/x.sock\0",
            marker
        ));
        assert!(!is_ours(
            b"/usr/bin/qemu-system-x86_64\0/tmp/rum-e2e-abcd/x\0",
            marker
        ));
        assert!(!is_ours(b"/bin/sleep\0/tmp/rum-e2e-abc/x\0", marker));
    }
}
