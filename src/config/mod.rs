//! rum.toml: locate, parse, validate. A pipeline from what the file says
//! (`raw`) to a `Config` the rest of rum trusts (`model`).

mod error;
mod model;
mod names;
mod parse;
mod raw;
mod size;
mod span;
pub mod suggest;
pub mod template;
mod validate;

pub use error::{ConfigError, LocatedProblem, Problem, Warning};
pub use model::*;
pub use size::ByteSize;
pub use span::{KeyPath, Location};
pub use validate::{DEFAULT_CPUS, DEFAULT_DISK, DEFAULT_MEMORY_MB};

use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "rum.toml";

/// A validated config and the keys in it that have no effect.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

/// Finds the config: `explicit` if given, else `rum.toml` in `cwd` or the
/// nearest parent that has one.
pub fn locate(explicit: Option<&Path>, cwd: &Path) -> Result<PathBuf, ConfigError> {
    if let Some(path) = explicit {
        return Ok(absolute(path, cwd));
    }
    cwd.ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| ConfigError::NotFound {
            dir: cwd.to_path_buf(),
        })
}

/// Reads, parses and validates the config at `file`.
pub fn load(file: &Path) -> Result<Loaded, ConfigError> {
    let source = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    parse_str(&source, file)
}

/// Parses and validates `source` as if read from `file`.
pub fn parse_str(source: &str, file: &Path) -> Result<Loaded, ConfigError> {
    parse_with(source, file, false)
}

/// Reads the copy of a project's rum.toml that `rum up` saved, as if it were
/// the original at `original` (which may be gone, with the files it names).
pub fn load_saved(copy: &Path, original: &Path) -> Result<Loaded, ConfigError> {
    let source = std::fs::read_to_string(copy).map_err(|source| ConfigError::Read {
        path: copy.to_path_buf(),
        source,
    })?;
    parse_with(&source, original, true)
}

fn parse_with(source: &str, file: &Path, trust_host_paths: bool) -> Result<Loaded, ConfigError> {
    let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let index = span::SpanIndex::new(source);
    let invalid = |problems: Vec<LocatedProblem>| ConfigError::Invalid {
        file: file.clone(),
        problems,
    };

    let raw: raw::RawConfig = toml::from_str(source).map_err(|e| {
        let (problem, span) = parse::problem_from_toml(&e, source, &index);
        invalid(vec![LocatedProblem::at(problem, source, span)])
    })?;
    let ctx = validate::Context {
        dir: &dir,
        default_name: default_name(&file, &dir),
        trust_host_paths,
    };
    let (mut config, warnings) = validate::validate(raw, &ctx).map_err(|problems| {
        invalid(
            problems
                .into_iter()
                .map(|p| LocatedProblem::locate(p, source, &index))
                .collect(),
        )
    })?;
    config.file = file.clone();
    Ok(Loaded { config, warnings })
}

/// `dev.rum.toml` → "dev"; `rum.toml` → the directory's name.
fn default_name(file: &Path, dir: &Path) -> String {
    let file_name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(FILE_NAME);
    let stem = file_name
        .strip_suffix(".rum.toml")
        .or_else(|| file_name.strip_suffix(".toml").filter(|s| *s != "rum"));
    let raw = match stem {
        Some(stem) if !stem.is_empty() => stem.to_owned(),
        _ => dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("vm")
            .to_owned(),
    };
    names::sanitize_name(&raw)
}

fn absolute(path: &Path, cwd: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        let dir = Path::new("/home/me/My Project");
        assert_eq!(default_name(&dir.join("rum.toml"), dir), "My-Project");
        assert_eq!(default_name(&dir.join("dev.rum.toml"), dir), "dev");
        assert_eq!(default_name(&dir.join("ci.toml"), dir), "ci");
    }
}
