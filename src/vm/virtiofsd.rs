//! virtiofsd, one per `[[mounts]]` entry: its command line (pure) and its
//! process, detached from rum so it outlives the command that started it.

use super::process::{self, ProcessError};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The uid (and gid) cloud-init gives the first user it creates: the guest
/// user whose files should belong to the host user.
pub const GUEST_USER_ID: u32 = 1000;
/// End (exclusive) of the guest ids treated as ordinary users.
const GUEST_ID_END: u32 = 65534;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareSpec {
    pub source: PathBuf,
    pub socket: PathBuf,
    pub readonly: bool,
    /// The host user files created by the guest user belong to.
    pub host_uid: u32,
    pub host_gid: u32,
    /// Root can sandbox virtiofsd in namespaces; other users cannot.
    pub privileged: bool,
}

pub fn virtiofsd_args(spec: &ShareSpec) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut flag = |name: &str, value: OsString| {
        let mut arg = OsString::from(format!("--{name}="));
        arg.push(value);
        args.push(arg);
    };
    flag("socket-path", spec.socket.clone().into());
    flag("shared-dir", spec.source.clone().into());
    flag(
        "sandbox",
        if spec.privileged { "namespace" } else { "none" }.into(),
    );
    flag("cache", "auto".into());
    flag("log-level", "warn".into());
    // What any guest user (ids from 1000 on) creates belongs to the host
    // user; the host user's own files show as the guest user's. A range is
    // squashed, not one id, because cloud-init may give the user's private
    // group a later gid when `[user] groups` creates groups first.
    for (kind, host) in [("uid", spec.host_uid), ("gid", spec.host_gid)] {
        let squashed = GUEST_ID_END - GUEST_USER_ID;
        let name = format!("translate-{kind}");
        flag(
            &name,
            format!("squash-guest:{GUEST_USER_ID}:{host}:{squashed}").into(),
        );
        flag(&name, format!("host:{host}:{GUEST_USER_ID}:1").into());
    }
    if spec.readonly {
        args.push("--readonly".into());
    }
    args
}

/// Starts virtiofsd in its own process group, logging to `log`, and waits until its
/// socket exists (QEMU connects to it at start-up).
pub fn start(
    binary: &Path,
    spec: &ShareSpec,
    log: &Path,
    pid_file: &Path,
) -> Result<u32, ProcessError> {
    let _ = std::fs::remove_file(&spec.socket);
    let pid = process::spawn_detached(binary, &virtiofsd_args(spec), log, pid_file)?;
    let ready = process::wait_for(Duration::from_secs(10), || {
        spec.socket.exists() || !process::alive(pid)
    });
    if !ready || !spec.socket.exists() {
        process::terminate(pid, Duration::from_secs(2));
        return Err(ProcessError::Failed {
            what: format!("virtiofsd for {}", spec.source.display()),
            log: std::fs::read_to_string(log).unwrap_or_default(),
        });
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_guest_user_to_the_host_user() {
        let spec = ShareSpec {
            source: "/home/u/project".into(),
            socket: "/run/user/1000/rum/x/fs0.sock".into(),
            readonly: true,
            host_uid: 1234,
            host_gid: 100,
            privileged: false,
        };
        let args: Vec<String> = virtiofsd_args(&spec)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--socket-path=/run/user/1000/rum/x/fs0.sock",
                "--shared-dir=/home/u/project",
                "--sandbox=none",
                "--cache=auto",
                "--log-level=warn",
                "--translate-uid=squash-guest:1000:1234:64534",
                "--translate-uid=host:1234:1000:1",
                "--translate-gid=squash-guest:1000:100:64534",
                "--translate-gid=host:100:1000:1",
                "--readonly",
            ]
        );
        let root = ShareSpec {
            privileged: true,
            readonly: false,
            ..spec
        };
        let args: Vec<String> = virtiofsd_args(&root)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"--sandbox=namespace".to_owned()));
        assert!(!args.contains(&"--readonly".to_owned()));
    }
}
