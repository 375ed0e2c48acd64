//! `rum ssh` and `rum ssh-config`: the system ssh client with rum's key and
//! the host key rum generated and pinned (no trust on first use).

use crate::identity::host_key_alias;
use crate::lifecycle::{AgentError, Instance, RuntimeInfo};
use crate::output::Reporter;
use crate::{Error, Exit};
use std::os::unix::process::CommandExt;
use std::path::Path;

fn options(instance: &Instance, info: &RuntimeInfo) -> Vec<String> {
    let p = &instance.paths;
    vec![
        "-i".into(),
        p.ssh_key().display().to_string(),
        "-p".into(),
        info.ssh_port.to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", p.known_hosts().display()),
        "-o".into(),
        format!("HostKeyAlias={}", host_key_alias(p)),
        "-o".into(),
        "PasswordAuthentication=no".into(),
    ]
}

fn running(instance: &Instance) -> Result<RuntimeInfo, Error> {
    instance
        .running()
        .ok_or_else(|| AgentError::NotRunning(instance.paths.id.to_string()).into())
}

pub fn ssh(file: &Path, args: &[String]) -> Result<Exit, Error> {
    let instance = Instance::open(file)?;
    let info = running(&instance)?;
    let mut words = instance.config.ssh.command.split_whitespace();
    let program = words.next().unwrap_or("ssh");
    let error = std::process::Command::new(program)
        .args(words)
        .args(options(&instance, &info))
        .arg(format!("{}@127.0.0.1", instance.config.ssh.user))
        .args(args)
        .exec();
    Err(Error::Ssh {
        program: program.to_owned(),
        source: error,
    })
}

pub fn ssh_config(file: &Path, reporter: &Reporter) -> Result<Exit, Error> {
    let instance = Instance::open(file)?;
    let info = running(&instance)?;
    let p = &instance.paths;
    let host = format!("rum-{}", instance.config.name);
    let block = format!(
        "Host {host}\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking yes\n  UserKnownHostsFile {}\n  HostKeyAlias {}\n  PasswordAuthentication no",
        info.ssh_port,
        instance.config.ssh.user,
        p.ssh_key().display(),
        p.known_hosts().display(),
        host_key_alias(p)
    );
    reporter.result(&block, &serde_json::json!({ "host": host, "port": info.ssh_port, "user": instance.config.ssh.user, "config": block }));
    Ok(Exit::Success)
}
