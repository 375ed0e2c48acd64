//! What can go wrong with a base image, in words that say what to do.

use super::checksum::{Checksum, SUMS_FILES};
use super::known;
use super::source::SourceError;
use crate::disk;
use indicatif::HumanBytes;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("`{name}` is not an image name rum knows; use one of {}, an image `rum image bake` made (`rum image list`), a URL, or a path such as ./{name}", known::names().collect::<Vec<_>>().join(", "))]
    UnknownName { name: String },
    #[error("`{0}` is an image `rum image bake` made; it is in the cache already")]
    Baked(String),
    #[error("{url} does not exist (HTTP 404); check `[image] base` in rum.toml")]
    NotFound { url: String },
    #[error("{url} answered HTTP {status}; check `[image] base` in rum.toml")]
    Http { url: String, status: u16 },
    #[error("Cannot fetch {url}: {error}")]
    Request { url: String, error: String },
    #[error(
        "Downloading {url} failed {attempts} times in a row (last: {last}); check the network and run the command again: the download resumes where it stopped"
    )]
    GaveUp {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error(
        "{url} does not match its checksum: expected {expected} (from {against}), got {actual}. The download was deleted and nothing was cached; if the image changed upstream, update `[image] sha256`"
    )]
    Mismatch {
        url: String,
        expected: Checksum,
        against: String,
        actual: String,
    },
    #[error(
        "{file} is not listed in {sums_url}, so rum cannot verify it; set `[image] sha256 = \"…\"` in rum.toml (`--sha256` for `rum image pull`)"
    )]
    NotInSums { file: String, sums_url: String },
    #[error(
        "No published checksum for {url} (looked for {} beside it); set `[image] sha256 = \"…\"` in rum.toml (`--sha256` for `rum image pull`) to the image's SHA-256", SUMS_FILES.join(" and ")
    )]
    NoChecksum { url: String },
    #[error(
        "{} has SHA-256 {actual}, but `[image] sha256` in rum.toml says {expected}", .path.display()
    )]
    LocalMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "The cached image `{name}` has SHA-256 {actual}, but `[image] sha256` in rum.toml says {expected}; `rum image delete {name}` to download it again, or fix the checksum"
    )]
    CachedMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error(
        "Not enough space in {} for the image: it needs {} more, {} are free. Free some space or point XDG_CACHE_HOME at a larger disk", .dir.display(), HumanBytes(*.needed), HumanBytes(*.free)
    )]
    DiskFull {
        dir: PathBuf,
        needed: u64,
        free: u64,
    },
    #[error(
        "{what} is {kind}-compressed; rum needs a qcow2 or raw image: decompress it and point `[image] base` at the result"
    )]
    Compressed { what: String, kind: &'static str },
    #[error("No cached image `{name}`; `rum image list` shows what is cached")]
    NotCached { name: String },
    #[error(
        "`{name}` is used by {}; `rum destroy` them first, or pass --force (they will not start again)", .users.join(", ")
    )]
    InUse { name: String, users: Vec<String> },
    #[error(
        "`{name}` is in use by {holder} (downloading it, or creating a VM on it); try again in a moment"
    )]
    Busy { name: String, holder: String },
    #[error("`{0}` is not a SHA-256; give the 64 hex digits `sha256sum IMAGE` prints")]
    BadSha256(String),
    #[error("`{0}` is a local file; rum uses it where it is, there is nothing to download")]
    LocalPath(String),
    #[error(transparent)]
    Source(SourceError),
    #[error("Cannot write {}", .path.display())]
    CacheWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// `rum image export | import`.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "`{0}` was downloaded, not baked; on the other machine `rum image pull {0}` fetches and verifies it (export is for images `rum image bake` made)"
    )]
    NotBaked(String),
    #[error("{} exists already; choose another file, or remove it first", .0.display())]
    Exists(PathBuf),
    #[error("{} is not an image `rum image export` wrote: {why}", .path.display())]
    NotAnExport { path: PathBuf, why: String },
    #[error(
        "{} is damaged: {what}; nothing was imported. Copy the file again", .path.display()
    )]
    Damaged { path: PathBuf, what: String },
    #[error(
        "{} does not hold a standalone qcow2 ({why}), so it is not an image rum baked; nothing was imported", .path.display()
    )]
    NotStandalone { path: PathBuf, why: String },
    #[error(transparent)]
    BadName(#[from] super::baked::NameError),
    #[error(
        "The cache holds an image `{0}` already; give the import another NAME, or pass --force to replace it"
    )]
    Taken(String),
}

impl ExportError {
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            ExportError::Damaged { .. } | ExportError::NotStandalone { .. }
        )
    }
}

impl ImageError {
    /// Errors in what the user asked for, not in what happened.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ImageError::UnknownName { .. }
                | ImageError::Baked(_)
                | ImageError::NotCached { .. }
                | ImageError::InUse { .. }
                | ImageError::LocalPath(_)
                | ImageError::Source(_)
                | ImageError::BadSha256(_)
        ) || matches!(self, ImageError::Export(e) if e.is_usage())
    }
}

impl From<SourceError> for ImageError {
    fn from(error: SourceError) -> Self {
        match error {
            SourceError::UnknownName(name) => ImageError::UnknownName { name },
            other => ImageError::Source(other),
        }
    }
}
