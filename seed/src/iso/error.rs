//! What stops an ISO image from being written.

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("Cannot write the image")]
    Io(#[from] std::io::Error),
    #[error("Cannot put `{name}` in the image: {why}")]
    BadName { name: String, why: String },
    #[error("Two files are named `{0}`")]
    Duplicate(String),
    #[error("`{name}` is {size} bytes; ISO 9660 files stop at 4 GiB - 1")]
    TooLarge { name: String, size: u64 },
    #[error("`{name}` has mode {mode:o}; give permission bits only (at most 7777)")]
    BadMode { name: String, mode: u32 },
    #[error("Volume id `{0}` must be 1 to 16 ASCII letters, digits, `_` or `-`")]
    BadVolumeId(String),
}
