//! One module per command; `run` dispatches.

mod config_check;
mod init;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::output::Reporter;
use crate::{Error, ExitStatus};
use std::path::PathBuf;

pub fn run(cli: &Cli, reporter: &Reporter) -> Result<ExitStatus, Error> {
    let cwd = std::env::current_dir().map_err(Error::CurrentDir)?;
    match &cli.command {
        Command::Init { defaults } => init::run(cli.config.as_deref(), &cwd, *defaults, reporter),
        Command::Config(ConfigCommand::Check) => {
            config_check::run(&config_file(cli, &cwd)?, reporter)
        }
    }
}

fn config_file(cli: &Cli, cwd: &std::path::Path) -> Result<PathBuf, Error> {
    Ok(crate::config::locate(cli.config.as_deref(), cwd)?)
}
