//! What can go wrong reading or writing a disk image.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("Cannot read disk image {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot write disk image {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} already exists; rum never overwrites a disk", .0.display())]
    Exists(PathBuf),
    #[error("{} is a qcow2 version {version} image; rum reads versions 2 and 3", .path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("Disk size {size} is too large for a qcow2 image")]
    TooLarge { size: u64 },
    #[error("Backing file path {} is longer than a qcow2 header allows", .0.display())]
    BackingPathTooLong(PathBuf),
}
