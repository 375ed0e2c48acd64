//! Config errors, rendered with file, line, column and the offending key.

use super::span::{KeyPath, Location, SpanIndex};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// A value rum.toml must not have, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: KeyPath,
    /// Follows the key: "`resources.cpus` must be at least 1".
    pub message: String,
    pub help: Option<String>,
}

/// A key that loads but has no effect (kept for files written for libvirt-era rum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: KeyPath,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("No rum.toml in {} or its parents; run `rum init` to create one, or pass `-c FILE`", .dir.display())]
    NotFound { dir: PathBuf },
    #[error("Cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", Report(.file, .problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<LocatedProblem>,
    },
}

/// A problem with where it is in the file, ready to show.
#[derive(Debug, Clone)]
pub struct LocatedProblem {
    pub problem: Problem,
    pub location: Option<Location>,
    /// The source line and the columns to underline.
    pub excerpt: Option<(String, Range<usize>)>,
}

impl LocatedProblem {
    pub fn locate(problem: Problem, source: &str, index: &SpanIndex) -> Self {
        let span = index.span_of(&problem.path);
        Self::at(problem, source, span)
    }

    pub fn at(problem: Problem, source: &str, span: Option<Range<usize>>) -> Self {
        let Some(span) = span else {
            return Self {
                problem,
                location: None,
                excerpt: None,
            };
        };
        let location = Location::of_offset(source, span.start);
        let line = source
            .lines()
            .nth(location.line - 1)
            .unwrap_or("")
            .to_owned();
        let start = location.column - 1;
        let width = source[span.clone()]
            .lines()
            .next()
            .map_or(1, |first| first.chars().count().max(1));
        let end = (start + width).min(line.chars().count().max(start + 1));
        Self {
            problem,
            location: Some(location),
            excerpt: Some((line, start..end)),
        }
    }

    pub fn path(&self) -> &KeyPath {
        &self.problem.path
    }
}

struct Report<'a>(&'a PathBuf, &'a Vec<LocatedProblem>);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (file, problems) = (self.0, self.1);
        let count = problems.len();
        write!(
            f,
            "{} has {count} problem{}",
            file.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for p in problems {
            write!(f, "\n\n{}", file.display())?;
            if let Some(loc) = p.location {
                write!(f, ":{}:{}", loc.line, loc.column)?;
            }
            if p.problem.path.segments().is_empty() {
                write!(f, ": {}", p.problem.message)?;
            } else {
                write!(f, ": `{}` {}", p.problem.path, p.problem.message)?;
            }
            if let (Some((line, cols)), Some(loc)) = (&p.excerpt, p.location) {
                let gutter = loc.line.to_string().len();
                write!(
                    f,
                    "\n {:gutter$} |\n {} | {line}\n {:gutter$} | {}{}",
                    "",
                    loc.line,
                    "",
                    " ".repeat(cols.start),
                    "^".repeat(cols.len().max(1))
                )?;
            }
            if let Some(help) = &p.problem.help {
                write!(f, "\n  help: {help}")?;
            }
        }
        Ok(())
    }
}
