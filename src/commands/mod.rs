//! One module per command; `run` dispatches.

mod config_check;
mod cp;
mod destroy;
mod down;
mod exec;
mod image;
mod init;
mod log;
mod seed_dump;
mod snapshot;
mod ssh;
mod status;
mod up;

use crate::cli::{Cli, Command, ConfigCommand, ImageCommand, SeedCommand, SnapshotCommand};
use crate::output::Reporter;
use crate::{Error, Exit};
use std::path::PathBuf;

pub fn run(cli: &Cli, reporter: &Reporter) -> Result<Exit, Error> {
    let cwd = std::env::current_dir().map_err(Error::CurrentDir)?;
    match &cli.command {
        Command::Init { defaults } => init::run(cli.config.as_deref(), &cwd, *defaults, reporter),
        Command::Config(ConfigCommand::Check) => {
            config_check::run(&config_file(cli, &cwd)?, reporter)
        }
        Command::Up { detach } => up::run(&config_file(cli, &cwd)?, *detach, reporter),
        Command::Down { force } => down::run(&config_file(cli, &cwd)?, *force, reporter),
        Command::Destroy { force } => destroy::run(&config_file(cli, &cwd)?, *force, reporter),
        Command::Status => status::run(&config_file(cli, &cwd)?, reporter),
        Command::Ssh { args } => ssh::ssh(&config_file(cli, &cwd)?, args),
        Command::SshConfig => ssh::ssh_config(&config_file(cli, &cwd)?, reporter),
        Command::Exec {
            user,
            cwd: dir,
            stdin,
            command,
        } => {
            let args = exec::ExecArgs {
                user: user.as_deref(),
                cwd: dir.as_deref(),
                stdin: *stdin,
                command,
            };
            exec::run(&config_file(cli, &cwd)?, &args)
        }
        Command::Cp {
            source,
            destination,
        } => cp::run(&config_file(cli, &cwd)?, source, destination, reporter),
        Command::Retry { from, done, reset } => {
            use crate::lifecycle::retry::RetryMode;
            let mode = match (from, done, reset) {
                (Some(crate::cli::RetryFrom::Boot), _, _) => RetryMode::FromBoot,
                (_, true, _) => RetryMode::Done,
                (_, _, true) => RetryMode::Reset,
                _ => RetryMode::Full,
            };
            let instance = crate::lifecycle::Instance::open(&config_file(cli, &cwd)?)?;
            Ok(crate::lifecycle::retry::retry(&instance, mode, reporter)?)
        }
        Command::Log {
            failed,
            all,
            console,
        } => {
            let which = match (failed, all, console) {
                (true, _, _) => log::Which::Failed,
                (_, true, _) => log::Which::All,
                (_, _, true) => log::Which::Console,
                _ => log::Which::Latest,
            };
            log::run(&config_file(cli, &cwd)?, which, reporter)
        }
        Command::Snapshot(action) => {
            let action = match action {
                SnapshotCommand::Create { name } => snapshot::Action::Create(name.as_deref()),
                SnapshotCommand::List => snapshot::Action::List,
                SnapshotCommand::Restore { name } => snapshot::Action::Restore(name),
                SnapshotCommand::Delete { name } => snapshot::Action::Delete(name),
            };
            snapshot::run(&config_file(cli, &cwd)?, action, reporter)
        }
        Command::Image(action) => match action {
            ImageCommand::Pull { base, sha256 } => image::pull(base, sha256.as_deref(), reporter),
            ImageCommand::List => image::list(reporter),
            ImageCommand::Delete { name, force } => image::delete(name, *force, reporter),
            ImageCommand::Clear => image::clear(reporter),
        },
        Command::Seed(SeedCommand::Dump { dir }) => {
            seed_dump::run(&config_file(cli, &cwd)?, &cwd.join(dir), reporter)
        }
    }
}

fn config_file(cli: &Cli, cwd: &std::path::Path) -> Result<PathBuf, Error> {
    Ok(crate::config::locate(cli.config.as_deref(), cwd)?)
}
