//! The system `ssh` client, configured for throwaway guests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// An ed25519 key pair made with `ssh-keygen` for one test.
pub struct SshKey {
    pub private: PathBuf,
    pub public: String,
}

impl SshKey {
    /// Generates `<dir>/<name>` and `<dir>/<name>.pub` without a passphrase.
    pub fn generate(dir: &Path, name: &str) -> Self {
        let private = dir.join(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "rum-e2e", "-f"])
            .arg(&private)
            .stdin(Stdio::null())
            .status()
            .expect("run ssh-keygen (openssh-client; scripts/install-prereqs)");
        assert!(status.success(), "ssh-keygen failed: {status}");
        let public = fs::read_to_string(dir.join(format!("{name}.pub")))
            .expect("read the generated public key")
            .trim()
            .to_string();
        Self { private, public }
    }
}

/// What `ssh` does with an unknown or changed host key (`StrictHostKeyChecking`).
#[derive(Clone, Copy, Debug)]
pub enum HostKeys {
    /// `accept-new`: pin the key on first contact, refuse a changed one.
    AcceptNew,
    /// `yes`: only keys already in the known-hosts file.
    Pinned,
}

/// Where and as whom to log in.
#[derive(Clone, Debug)]
pub struct Ssh {
    pub user: String,
    pub port: u16,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub host_keys: HostKeys,
    pub connect_timeout: Duration,
}

impl Ssh {
    /// Runs `command` in the guest (through its login shell) and returns its output.
    pub fn run(&self, command: &str) -> Output {
        self.command(command)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh (openssh-client; scripts/install-prereqs)")
    }

    /// Like `run`, but panics with both streams unless it succeeds; returns stdout.
    pub fn check(&self, command: &str) -> String {
        let out = self.run(command);
        assert!(
            out.status.success(),
            "ssh {}@127.0.0.1:{} {command:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.user,
            self.port,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `ssh` invocation, for callers that need their own stdio.
    pub fn command(&self, command: &str) -> Command {
        let strict = match self.host_keys {
            HostKeys::AcceptNew => "accept-new",
            HostKeys::Pinned => "yes",
        };
        let mut cmd = Command::new("ssh");
        // -F /dev/null: the developer's ~/.ssh/config must not change what the test does.
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(&self.key)
            .args(["-p", &self.port.to_string()])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "LogLevel=ERROR"])
            .arg("-o")
            .arg(format!("StrictHostKeyChecking={strict}"))
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .arg("-o")
            .arg(format!(
                "ConnectTimeout={}",
                self.connect_timeout.as_secs().max(1)
            ))
            .arg(format!("{}@127.0.0.1", self.user))
            .arg(command);
        cmd
    }
}
