//! `rum ssh` and `rum ssh-config`: the system ssh client with rum's key and
//! the host key rum generated and pinned (no trust on first use).

use crate::identity::host_key_alias;
use crate::lifecycle::{AgentError, Instance, RuntimeInfo};
use crate::output::Reporter;
use crate::{Error, Exit};
use std::os::unix::process::CommandExt;

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
        .running()?
        .ok_or_else(|| AgentError::NotRunning(instance.paths.id.to_string()).into())
}

pub fn ssh(target: &crate::lifecycle::Target, args: &[String]) -> Result<Exit, Error> {
    let instance = Instance::open_target(target)?;
    let info = running(&instance)?;
    let mut words = instance.config.ssh.command.split_whitespace();
    let program = words.next().unwrap_or("ssh");
    let error = std::process::Command::new(program)
        .args(words)
        .args(options(&instance, &info))
        .arg(format!("{}@127.0.0.1", instance.config.ssh.user))
        .args(in_start_dir(instance.config.start_dir(), args))
        .exec();
    Err(Error::Ssh {
        program: program.to_owned(),
        source: error,
    })
}

/// The remote part of the ssh command line, started in the default
/// mount's directory: a login shell there (with a terminal), or the given
/// command run there. Arguments that start with an option go as they are.
fn in_start_dir(dir: Option<&str>, args: &[String]) -> Vec<String> {
    let Some(dir) = dir else {
        return args.to_vec();
    };
    let cd = format!("cd {}", rum_seed::shell::quote(dir));
    match args.first() {
        None => vec!["-t".into(), format!("{cd} && exec \"$SHELL\" -l")],
        Some(first) if !first.starts_with('-') => vec![format!("{cd} && {}", args.join(" "))],
        Some(_) => args.to_vec(),
    }
}

pub fn ssh_config(target: &crate::lifecycle::Target, reporter: &Reporter) -> Result<Exit, Error> {
    let instance = Instance::open_target(target)?;
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

#[cfg(test)]
mod tests {
    use super::in_start_dir;

    #[test]
    fn ssh_starts_in_the_default_mount() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(in_start_dir(None, &args(&["ls"])), ["ls"]);
        assert_eq!(
            in_start_dir(Some("/mnt/my project"), &[]),
            ["-t", "cd '/mnt/my project' && exec \"$SHELL\" -l"]
        );
        assert_eq!(
            in_start_dir(Some("/mnt/p"), &args(&["ls", "-l"])),
            ["cd /mnt/p && ls -l"]
        );
        assert_eq!(
            in_start_dir(Some("/mnt/p"), &args(&["-L", "8080:localhost:80"])),
            ["-L", "8080:localhost:80"]
        );
    }
}
