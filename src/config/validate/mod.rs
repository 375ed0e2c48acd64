//! One pass from `RawConfig` to `Config`: applies defaults and collects every
//! problem with the key it concerns, instead of stopping at the first. One
//! module per part of rum.toml; this one holds the pass and what they share.

mod advanced;
mod drives;
mod image;
mod mounts;
mod network;
mod provision;
mod resources;
mod users;

pub use resources::{DEFAULT_CPUS, DEFAULT_DISK, DEFAULT_MEMORY_MB};

use super::error::{Problem, Warning};
use super::model::{Config, Provision};
use super::names;
use super::raw::RawConfig;
use super::size::ByteSize;
use super::span::KeyPath;
use super::suggest::closest;
use std::path::{Path, PathBuf};

/// What validation needs to know besides the file's contents.
pub struct Context<'a> {
    /// Directory that relative paths are resolved against.
    pub dir: &'a Path,
    /// Name used when the file sets none (from the file or directory name).
    pub default_name: String,
    /// Host files the config names are taken as they are, unchecked: the
    /// copy `rum up` saved, read for `--instance` after the project went.
    pub trust_host_paths: bool,
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
    trust_host_paths: bool,
}

impl Checker {
    fn problem(&mut self, path: KeyPath, message: impl Into<String>) {
        self.problems.push(Problem {
            path,
            message: message.into(),
            help: None,
        });
    }

    fn problem_with_help(
        &mut self,
        path: KeyPath,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.problems.push(Problem {
            path,
            message: message.into(),
            help: Some(help.into()),
        });
    }

    fn ignored<T>(&mut self, value: &Option<T>, path: KeyPath, why: &str) {
        if value.is_some() {
            self.warnings.push(Warning {
                path,
                message: format!("has no effect: {why}"),
            });
        }
    }

    /// Checks a string against a config enum's names.
    fn choice<T>(
        &mut self,
        path: KeyPath,
        text: &str,
        names: &[&str],
        parse: fn(&str) -> Option<T>,
    ) -> Option<T> {
        let parsed = parse(text);
        if parsed.is_none() {
            self.not_allowed(path, text, names);
        }
        parsed
    }

    /// Reports a value outside `allowed`, suggesting the closest one.
    fn not_allowed(&mut self, path: KeyPath, text: &str, allowed: &[&str]) {
        let hint = closest(text, allowed.iter().copied())
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        self.problem_with_help(
            path,
            format!("is `{text}`, which is not an allowed value"),
            format!("{hint}Allowed: {}", allowed.join(", ")),
        );
    }
}

pub fn validate(raw: RawConfig, ctx: &Context<'_>) -> Result<(Config, Vec<Warning>), Vec<Problem>> {
    let mut c = Checker {
        trust_host_paths: ctx.trust_host_paths,
        ..Checker::default()
    };
    let root = KeyPath::root();

    let name = match raw.name {
        Some(name) => {
            if let Err(why) = names::check_name(&name) {
                c.problem(root.key("name"), why);
            }
            name
        }
        None => ctx.default_name.clone(),
    };

    let image = image::image(&mut c, raw.image, ctx.dir);
    let resources = resources::resources(&mut c, raw.resources.unwrap_or_default());
    let network = network::network(&mut c, raw.network, &name);
    let ports = network::ports(&mut c, raw.ports);
    let mounts = mounts::mounts(&mut c, raw.mounts, ctx.dir);
    let drives = drives::drives(&mut c, raw.drives);
    let filesystems = drives::filesystems(&mut c, raw.fs, &drives, &mounts);
    let (system, boot) =
        provision::steps(&mut c, raw.provision.system, raw.provision.boot, ctx.dir);
    let provision = Provision { system, boot };
    let user = users::user(&mut c, raw.user);
    let ssh = users::ssh(&mut c, raw.ssh, &user);
    let advanced = advanced::advanced(&mut c, raw.advanced, ctx.dir);

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    let config = Config {
        file: PathBuf::new(),
        dir: ctx.dir.to_path_buf(),
        name,
        image: image.expect("image is checked above"),
        resources,
        network,
        ports,
        mounts,
        drives,
        filesystems,
        provision,
        ssh,
        user,
        advanced,
    };
    Ok((config, c.warnings))
}

/// `text` as a size; one below `minimum` is reported, an unreadable one is
/// reported and read as 0.
fn size(c: &mut Checker, path: KeyPath, text: &str, minimum: u64, minimum_text: &str) -> ByteSize {
    match ByteSize::parse(text) {
        Ok(size) if size.bytes() < minimum => {
            c.problem(path, format!("is {text}; the minimum is {minimum_text}"));
            size
        }
        Ok(size) => size,
        Err(why) => {
            c.problem(path, why);
            ByteSize::from_bytes(0)
        }
    }
}
