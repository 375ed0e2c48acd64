//! One module per command; `run` dispatches.

mod config_check;
mod console;
mod cp;
mod destroy;
mod down;
mod exec;
mod image;
mod init;
mod list;
mod log;
mod seed_dump;
mod snapshot;
mod ssh;
mod status;
mod up;

use crate::cli::{Cli, Command, ConfigCommand, ImageCommand, SeedCommand};
use crate::output::Reporter;
use crate::{Error, Exit};
use std::path::PathBuf;

pub fn run(cli: &Cli, reporter: &Reporter) -> Result<Exit, Error> {
    let cwd = std::env::current_dir().map_err(Error::CurrentDir)?;
    match &cli.command {
        Command::List => list::run(reporter),
        Command::Console => console::run(&target(cli, &cwd)?, reporter),
        Command::Completions { shell } => completions(*shell),
        Command::Manpage => {
            let command = <Cli as clap::CommandFactory>::command();
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(Error::Stdout)?;
            print_bytes(&page)
        }
        Command::Init { defaults } => init::run(cli.config.as_deref(), &cwd, *defaults, reporter),
        Command::Config(ConfigCommand::Check) => {
            config_check::run(&config_file(cli, &cwd)?, reporter)
        }
        Command::Up { detach } => up::run(&config_file(cli, &cwd)?, *detach, reporter),
        Command::Down { force } => down::run(&target(cli, &cwd)?, *force, reporter),
        Command::Destroy { force } => destroy::run(&target(cli, &cwd)?, *force, reporter),
        Command::Status { watch } => status::run(&target(cli, &cwd)?, *watch, reporter),
        Command::Ssh { args } => ssh::ssh(&target(cli, &cwd)?, args),
        Command::SshConfig => ssh::ssh_config(&target(cli, &cwd)?, reporter),
        Command::Exec {
            user,
            cwd: dir,
            stdin,
            timeout,
            command,
        } => exec::run(
            &target(cli, &cwd)?,
            user.as_deref(),
            dir.as_deref(),
            *stdin,
            *timeout,
            command,
        ),
        Command::Cp {
            source,
            destination,
        } => cp::run(&target(cli, &cwd)?, source, destination, reporter),
        Command::Retry {
            from,
            done,
            reset,
            strict,
        } => {
            use crate::lifecycle::retry::{RetryMode, retry};
            let mode = RetryMode::from_flags(from.as_deref(), *done, *reset);
            let instance = crate::lifecycle::Instance::open(&config_file(cli, &cwd)?)?;
            Ok(retry(&instance, mode, *strict, reporter)?)
        }
        Command::Wait { timeout } => {
            let instance = crate::lifecycle::Instance::open_target(&target(cli, &cwd)?)?;
            Ok(crate::lifecycle::wait::wait(&instance, *timeout, reporter)?)
        }
        Command::Provision { system, boot, step } => {
            use crate::lifecycle::in_place::{Which, provision};
            let which = Which::from_flags(*system, *boot, step.as_deref());
            let instance = crate::lifecycle::Instance::open(&config_file(cli, &cwd)?)?;
            Ok(provision(&instance, &which, reporter)?)
        }
        Command::Reload { dry_run } => {
            let instance = crate::lifecycle::Instance::open(&config_file(cli, &cwd)?)?;
            Ok(crate::lifecycle::reload::reload(
                &instance, *dry_run, reporter,
            )?)
        }
        Command::Log {
            failed,
            all,
            console,
        } => log::run(&target(cli, &cwd)?, *failed, *all, *console, reporter),
        Command::Snapshot(action) => snapshot::run(&target(cli, &cwd)?, action, reporter),
        Command::Image(action) => match action {
            ImageCommand::Pull { base, sha256 } => image::pull(base, sha256.as_deref(), reporter),
            ImageCommand::List => image::list(reporter),
            ImageCommand::Delete { name, force } => image::delete(name, *force, reporter),
            ImageCommand::Clear => image::clear(reporter),
            ImageCommand::Export { name, file } => image::export(name, file, reporter),
            ImageCommand::Import { file, name, force } => {
                image::import(file, name.as_deref(), *force, reporter)
            }
            ImageCommand::Bake {
                name,
                snapshot,
                keep_agent,
                compress,
                force,
            } => {
                use crate::lifecycle::bake::{Request, bake};
                let instance = crate::lifecycle::Instance::open_target(&target(cli, &cwd)?)?;
                let request = Request {
                    name,
                    snapshot: snapshot.as_deref(),
                    keep_agent: *keep_agent,
                    compress: *compress,
                    force: *force,
                };
                Ok(bake(&instance, &request, reporter)?)
            }
        },
        Command::Seed(SeedCommand::Dump { dir }) => {
            seed_dump::run(&config_file(cli, &cwd)?, &cwd.join(dir), reporter)
        }
    }
}

/// The variable through which a shell asks rum for completions.
const COMPLETE_VAR: &str = "COMPLETE";

/// Answers a shell that asks for completions, then exits; otherwise returns.
/// Step names (`--from`, `--step`) come from the rum.toml found from here.
pub fn complete_if_asked() {
    clap_complete::CompleteEnv::with_factory(completing_command)
        .var(COMPLETE_VAR)
        .complete();
}

fn completing_command() -> clap::Command {
    use clap_complete::engine::ArgValueCandidates;
    <Cli as clap::CommandFactory>::command()
        .mut_subcommand("retry", |c| {
            c.mut_arg("from", |a| a.add(ArgValueCandidates::new(step_names)))
        })
        .mut_subcommand("provision", |c| {
            c.mut_arg("step", |a| a.add(ArgValueCandidates::new(step_names)))
        })
}

/// The system steps of the rum.toml found from the current directory, and
/// `boot`; nothing where there is none.
fn step_names() -> Vec<clap_complete::engine::CompletionCandidate> {
    let steps = std::env::current_dir()
        .ok()
        .and_then(|cwd| crate::config::locate(None, &cwd).ok())
        .and_then(|file| crate::config::load(&file).ok())
        .map(|loaded| loaded.config.provision.system)
        .unwrap_or_default();
    steps
        .iter()
        .map(|s| s.name.as_str())
        .chain(["boot"])
        .map(clap_complete::engine::CompletionCandidate::new)
        .collect()
}

/// The script that has `shell` ask rum for completions as you type.
fn completions(shell: clap_complete::Shell) -> Result<Exit, Error> {
    use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Zsh => &Zsh,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::PowerShell => &Powershell,
        _ => &Bash,
    };
    let exe = std::env::current_exe().map_err(Error::CurrentDir)?;
    let mut script = Vec::new();
    completer
        .write_registration(
            COMPLETE_VAR,
            "rum",
            "rum",
            &exe.to_string_lossy(),
            &mut script,
        )
        .map_err(Error::Stdout)?;
    print_bytes(&script)
}

fn print_bytes(bytes: &[u8]) -> Result<Exit, Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(Error::Stdout)?;
    Ok(Exit::Success)
}

/// The project's rum.toml; a command that changes or creates the VM from
/// it takes no `--instance`.
fn config_file(cli: &Cli, cwd: &std::path::Path) -> Result<PathBuf, Error> {
    if cli.instance.is_some() {
        return Err(Error::NeedsProject);
    }
    Ok(crate::config::locate(cli.config.as_deref(), cwd)?)
}

/// The instance `--instance` names, else the project's rum.toml.
fn target(cli: &Cli, cwd: &std::path::Path) -> Result<crate::lifecycle::Target, Error> {
    Ok(match &cli.instance {
        Some(id) => crate::lifecycle::Target::Id(id.clone()),
        None => crate::lifecycle::Target::File(crate::config::locate(cli.config.as_deref(), cwd)?),
    })
}
