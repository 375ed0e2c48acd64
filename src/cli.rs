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

    /// Work on this instance (an id from `rum list`) instead of finding
    /// rum.toml: for status, down, destroy, ssh, exec, cp, log, snapshot,
    /// console and wait
    #[arg(long, global = true, value_name = "ID", conflicts_with = "config")]
    pub instance: Option<String>,

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
    /// Every VM of this user on this machine, from any directory
    List,
    /// Attach to the guest's serial console (Ctrl-] detaches)
    Console,
    /// Print a shell completion script (e.g. `rum completions bash >
    /// ~/.local/share/bash-completion/completions/rum`)
    Completions { shell: clap_complete::Shell },
    /// Print rum's man page (roff), e.g. `rum manpage >
    /// ~/.local/share/man/man1/rum.1`
    Manpage,
    /// Write a commented rum.toml in the current directory
    Init {
        /// Do not ask; use the defaults (also what happens without a terminal)
        #[arg(long)]
        defaults: bool,
    },
    /// Create (or start) the VM, snapshot it, provision it; on a terminal, stay
    /// in the foreground (r: retry, Ctrl+C: stop the VM)
    Up {
        /// Return once provisioning ends (what `rum up` does without a terminal)
        #[arg(short = 'd', long)]
        detach: bool,
    },
    /// Stop the VM: ACPI power-off, then quit, then kill
    Down {
        /// Skip the power button: quit QEMU at once
        #[arg(long)]
        force: bool,
    },
    /// Stop the VM and delete its disks, seed, keys and state (never the image cache)
    Destroy {
        /// Do not ask, even when snapshots would be lost
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Show the VM's state, resources, ports, mounts and bring-up history
    Status {
        /// Keep watching: redraw on a terminal, one JSON line per change
        /// with `-o json`, until Ctrl+C
        #[arg(long)]
        watch: bool,
    },
    /// Log in over SSH with rum's key and the pinned host key
    Ssh {
        /// Arguments for ssh, after `--` (e.g. `-- -L 8080:localhost:80`)
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Print an OpenSSH config block for the VM
    SshConfig,
    /// Run a command in the guest through the agent; exits with its status
    Exec {
        /// Guest user to run as (default: the configured user)
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// Working directory in the guest
        #[arg(long)]
        cwd: Option<String>,
        /// Forward this command's stdin to the guest command
        #[arg(short = 'i', long)]
        stdin: bool,
        /// Kill the command's whole process group after this many seconds
        /// and exit 124, as timeout(1) does
        #[arg(long, value_name = "SECONDS", value_parser = positive_seconds, allow_negative_numbers = true)]
        timeout: Option<std::time::Duration>,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Copy a file into or out of the guest; `:path` names a guest path
    Cp { source: String, destination: String },
    /// Roll back to the deepest checkpoint that still matches the steps and provision the rest
    Retry {
        /// Start again at this system step (restoring the checkpoint before
        /// it), or `boot`: restore post-system and run only the boot steps
        #[arg(long, value_name = "STEP")]
        from: Option<String>,
        /// Provisioning is done: delete rum's snapshots
        #[arg(long, conflicts_with = "from")]
        done: bool,
        /// Start over from the base image with a rebuilt seed, for changes
        /// cloud-init must see ([user], [ssh], [[mounts]], hostname). A reboot,
        /// not an instant restore
        #[arg(long, conflicts_with_all = ["from", "done"])]
        reset: bool,
        /// Refuse (exit 2) before restoring when rum.toml differs in ways a
        /// retry cannot apply, instead of running and naming them (for CI)
        #[arg(long, conflicts_with = "done")]
        strict: bool,
    },
    /// Wait until the VM is up and provisioned (started by `rum up`
    /// elsewhere): exit 0, 1 when provisioning failed, 124 on timeout
    Wait {
        /// Give up after this many seconds
        #[arg(long, value_name = "SECONDS", value_parser = positive_seconds, allow_negative_numbers = true)]
        timeout: Option<std::time::Duration>,
    },
    /// Run the provisioning steps again on the running VM as it is, with no
    /// rollback (`rum retry` runs them on a clean checkpoint)
    Provision {
        /// Only the system steps
        #[arg(long, conflicts_with_all = ["boot", "step"])]
        system: bool,
        /// Only the boot steps
        #[arg(long, conflicts_with = "step")]
        boot: bool,
        /// Only this system step
        #[arg(long, value_name = "NAME")]
        step: Option<String>,
    },
    /// Apply rum.toml edits to the running VM where that can be done live
    /// (port forwards) and name the rest with what they need
    Reload {
        /// Say what would change; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Show provisioning logs: the latest attempt's, the latest failed script's, or a list
    Log {
        /// The latest failed script
        #[arg(long, conflicts_with_all = ["all", "console"])]
        failed: bool,
        /// List every script log of every attempt
        #[arg(long, conflicts_with = "console")]
        all: bool,
        /// The guest's serial console
        #[arg(long)]
        console: bool,
    },
    /// Named live snapshots of the VM (RAM and disks)
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Base images in the cache: download ahead, list, delete
    #[command(subcommand)]
    Image(ImageCommand),
    /// Inspect rum.toml
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect the cloud-init seed rum gives the VM
    #[command(subcommand)]
    Seed(SeedCommand),
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a live snapshot (default name: snap-<unix time>)
    Create { name: Option<String> },
    /// List the snapshots in the VM's disk
    List,
    /// Go back to a snapshot (live, or into a fresh QEMU if the VM is stopped)
    Restore { name: String },
    /// Delete a snapshot (also of a stopped VM)
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Download and verify an image into the cache: a name such as
    /// debian-12, or an http(s) URL
    Pull {
        base: String,
        /// The SHA-256 the image must have (else the distro's sums file is used)
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
    },
    /// List cached images: size, source, verified checksum, the VMs using each
    List,
    /// Delete a cached image; refused while a VM uses it
    Delete {
        name: String,
        /// Delete even if VMs use it (they will not start again)
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Delete every cached image no VM uses, and unfinished downloads
    Clear,
    /// Write a baked image and its checksum to one file, to hand to another
    /// machine (`rum image import FILE` there)
    Export {
        name: String,
        /// A new file
        file: std::path::PathBuf,
    },
    /// Add an exported image to the cache, once its checksum verifies
    Import {
        file: std::path::PathBuf,
        /// The name to cache it under (default: the name it was exported under)
        name: Option<String>,
        /// Replace an image of that name no VM uses
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Make the VM's disk (as it is, or at a snapshot) a base image other
    /// VMs start from (`base = "NAME"`), generalised on a throwaway copy
    Bake {
        name: String,
        /// Bake the disk as it was at this snapshot (e.g. pre-provision)
        #[arg(long, value_name = "TAG")]
        snapshot: Option<String>,
        /// Keep the guest agent and its unit in the image
        #[arg(long)]
        keep_agent: bool,
        /// Write the image compressed (smaller, slower to write)
        #[arg(long)]
        compress: bool,
        /// Replace an image of that name no VM uses
        #[arg(short = 'f', long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SeedCommand {
    /// Write the files the seed contains (user-data, meta-data, …) into DIR
    Dump {
        /// A new or empty directory
        dir: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate rum.toml and print the resolved config
    Check,
}

/// A duration in seconds, more than zero (fractions allowed).
pub fn positive_seconds(text: &str) -> Result<std::time::Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(std::time::Duration::from_secs_f64(s)),
        _ => Err(format!(
            "`{text}` is not a number of seconds above zero (e.g. 30 or 2.5)"
        )),
    }
}
