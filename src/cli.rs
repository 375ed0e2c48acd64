//! The command line: arguments only; each command's work lives in `commands`.

use crate::output::OutputFormat;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "rum",
    version,
    about = "Cloud-image VMs on QEMU, with a provisioning loop that retries in seconds",
    propagate_version = true
)]
pub struct Cli {
    /// Config file to use instead of ./rum.toml (or the nearest one above)
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// How to print progress and results
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = OutputFormat::Auto)]
    pub output: OutputFormat,

    /// Debug logs on stderr (-v debug, -vv trace); RUM_LOG=LEVEL does the same
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented rum.toml in the current directory
    Init {
        /// Do not ask; use the defaults (also what happens without a terminal)
        #[arg(long)]
        defaults: bool,
    },
    /// Inspect rum.toml
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate rum.toml and print the resolved config
    Check,
}
