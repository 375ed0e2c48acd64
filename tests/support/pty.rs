//! A command on a pseudo-terminal, for what needs a terminal (`rum
//! console`): its output collected as it comes, keys typed into it.

use super::E2e;
use nix::pty::{OpenptyResult, openpty};
use nix::sys::termios::{LocalFlags, tcgetattr};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Pty {
    pub pid: u32,
    master: std::fs::File,
    slave: OwnedFd,
    output: Arc<Mutex<Vec<u8>>>,
}

impl E2e {
    /// Starts `cmd` with a pseudo-terminal as its stdin, stdout and stderr.
    pub fn spawn_on_pty(&self, cmd: &mut Command) -> Pty {
        let OpenptyResult { master, slave } = openpty(None, None).expect("openpty");
        let io = || Stdio::from(slave.try_clone().unwrap());
        cmd.stdin(io()).stdout(io()).stderr(io());
        let pid = self.procs.spawn(cmd);
        let master = std::fs::File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), output.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            pid,
            master,
            slave,
            output,
        }
    }
}

impl Pty {
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    pub fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
    }

    /// Waits until the output after `from` bytes holds `text`.
    pub fn wait_for(&self, text: &str, timeout: Duration) -> bool {
        super::wait_until(timeout, Duration::from_millis(50), || {
            self.output().contains(text)
        })
    }

    /// Whether the terminal is back in its usual (cooked, echoing) mode.
    pub fn is_cooked(&self) -> bool {
        let mode = tcgetattr(&self.slave).unwrap();
        mode.local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO)
    }
}
